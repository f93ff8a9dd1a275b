"""vae-score on Apache Spark, in local mode: a real engine (its JVM, its Python workers on two
cores, Arrow batches through `mapInArrow`), not a mock. The same rows get the service's scores
(to the last bit: the executors run the local path's code), bad rows are listed with why, and
a team's own DataFrame job gets the same through `score_dataframe`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.batch_scoring.helpers import (
    TABLE_MODEL,
    assert_scored_as_the_service,
    cancer_frame,
    cancer_table,
    csv_with_two_bad_rows,
    digit_pictures,
    service_image_score,
    service_scores,
    summary,
    vae_score,
)
from tests.bundles import COMMITTED_BUNDLE
from tests.e2e.processes import REPO_ROOT


def on_spark(*args: object) -> dict[str, object]:
    return summary(vae_score(*args, "--engine", "spark", "--workers", 2))


def spark_csv(folder: Path, types: dict[str, pa.DataType]) -> pa.Table:
    """A folder of CSV parts as Spark writes them, the named columns as `types` say."""
    options = pacsv.ConvertOptions(column_types=types)
    parts = [pacsv.read_csv(part, convert_options=options) for part in sorted(folder.glob("*.csv"))]
    return pa.concat_tables(part for part in parts if part.num_rows)  # a part may be empty


def test_table_scores_on_spark_equal_the_services(
    service: str, table_bundle: Path, tmp_path: Path
) -> None:
    rows, names = cancer_frame()
    table = cancer_table(rows, names)
    folder = tmp_path / "rows"  # two Parquet files: rows known by file and row index
    folder.mkdir()
    pq.write_table(table.slice(0, 300), folder / "a.parquet")
    pq.write_table(table.slice(300), folder / "b.parquet")
    csv_path = tmp_path / "rows.csv"
    pacsv.write_csv(table, csv_path)
    expected = service_scores(service, TABLE_MODEL, rows, per_feature=True)

    done = on_spark(table_bundle, folder, tmp_path / "from-parquet.parquet", "--per-feature")
    assert (done["rows"], done["written"], done["bad_rows"]) == (len(rows), len(rows), 0)
    assert done["engine"] == "spark"
    results = pq.read_table(tmp_path / "from-parquet.parquet").sort_by("id")
    ids = results.column("id").to_numpy()
    assert ids.tolist() == list(range(len(rows)))
    in_b = np.array(["b.parquet" in p for p in results.column("path").to_pylist()])
    np.testing.assert_array_equal(results.column("row").to_numpy(), ids - 300 * in_b)
    assert_scored_as_the_service(results, expected, names)

    output = tmp_path / "from-csv.csv"
    done = on_spark(table_bundle, csv_path, output, "--only-flagged", "--keep", "id")
    flagged = [i for i, flag in enumerate(expected["is_anomaly"]) if flag]
    assert (done["written"], done["flagged"]) == (len(flagged), len(flagged))
    results = spark_csv(output, {"id": pa.int64(), "score": pa.float64()}).sort_by("id")
    assert results.column_names == ["id", "score", "is_anomaly", "tail_probability"]
    assert results.column("id").to_pylist() == flagged
    assert results.column("score").to_pylist() == [expected["scores"][i] for i in flagged]


def test_image_files_on_spark_score_as_the_services_image_bodies(
    service: str, tmp_path: Path
) -> None:
    """PNG files read by Spark's binaryFile source; one that does not decode and one larger
    than the memory setting lets a file be (never read) are bad rows naming the file."""
    folder = tmp_path / "images"
    names = digit_pictures(folder, 12)
    (folder / "broken.png").write_bytes(b"\x89PNG but not one")
    noise = np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8)
    Image.fromarray(noise, mode="L").save(folder / "large.png")  # ~160 kB of noise
    (folder / "notes.txt").write_text("not an image: not a row")
    output = tmp_path / "scores.parquet"
    # --memory-mb 16 on 2 workers: 4 MB a task, a file may have 4 MB / 32 = 128 kB.
    done = on_spark(COMMITTED_BUNDLE, folder, output, "--memory-mb", 16)
    assert (done["rows"], done["written"], done["bad_rows"]) == (14, 12, 2)
    results = pq.read_table(output)
    paths = [p.removeprefix("file:") for p in results.column("path").to_pylist()]
    assert sorted(Path(p).relative_to(folder).as_posix() for p in paths) == sorted(names)
    for path, score in zip(paths, results.column("score").to_pylist(), strict=True):
        assert service_image_score(service, Path(path)) == score, path  # to the last bit
    bad = spark_csv(Path(f"{output}.bad-rows"), {})
    reasons = dict(
        zip(bad.column("path").to_pylist(), bad.column("bad_reason").to_pylist(), strict=True)
    )
    assert len(reasons) == 2
    large = next(reason for path, reason in reasons.items() if path.endswith("large.png"))
    assert "bytes, above the 131072 a file may have" in large
    assert any(path.endswith("broken.png") for path in reasons)


def test_bad_rows_on_spark_are_listed_and_strict_stops(table_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    rows, names = csv_with_two_bad_rows(path, with_id=True)
    output = tmp_path / "scores.parquet"
    done = on_spark(table_bundle, path, output)
    assert (done["rows"], done["written"], done["bad_rows"]) == (len(rows), len(rows) - 2, 2)
    ids = pq.read_table(output).column("id").to_pylist()
    assert sorted(int(i) for i in ids) == [i for i in range(len(rows)) if i not in (250, 300)]
    bad = spark_csv(Path(f"{output}.bad-rows"), {"id": pa.int64()}).sort_by("id")
    assert bad.column("id").to_pylist() == [250, 300]
    assert bad.column("bad_reason").to_pylist() == [
        f"column '{names[4]}': not a number 'oops'",
        f"column '{names[-2]}': empty",
    ]
    strict = vae_score(
        table_bundle, path, tmp_path / "strict.parquet", "--engine", "spark", "--strict"
    )
    assert strict.returncode == 3, strict.stderr
    assert "id=250" in strict.stderr or "id=300" in strict.stderr
    assert not (tmp_path / "strict.parquet").exists()


def test_jobs_that_cannot_run_on_spark_are_refused_by_name(
    table_bundle: Path, tmp_path: Path
) -> None:
    rows, names = cancer_frame()
    source = tmp_path / "rows.parquet"
    pq.write_table(cancer_table(rows[:20], names), source)
    scored_before = tmp_path / "scored-before.parquet"  # a column named as a result is
    pq.write_table(
        cancer_table(rows[:20], names).append_column("score", pa.array([0.0] * 20)), scored_before
    )
    mixed = tmp_path / "mixed"  # as much CSV as Parquet: which is it?
    mixed.mkdir()
    pq.write_table(cancer_table(rows[:20], names), mixed / "a.parquet")
    pacsv.write_csv(cancer_table(rows[:20], names), mixed / "b.csv")
    output = tmp_path / "scores.parquet"
    on_spark(table_bundle, source, output)
    cases = [
        ((table_bundle, source, output), "exists; --restart replaces it"),
        ((table_bundle, tmp_path / "missing.parquet", tmp_path / "x.parquet"), "Spark cannot read"),
        ((table_bundle, source, tmp_path / "x.parquet", "--keep", "nope"), "no column 'nope'"),
        ((table_bundle, scored_before, tmp_path / "x.parquet"), "'score' is a result column"),
        ((table_bundle, mixed, tmp_path / "x.parquet"), "--input-format"),
        ((COMMITTED_BUNDLE, source, tmp_path / "x.parquet"), "the model takes 64"),
    ]  # fmt: skip
    for args, words in cases:
        refused = vae_score(*args, "--engine", "spark")
        assert refused.returncode == 2, (args, refused.stderr)
        assert words in refused.stderr, (args, refused.stderr)
    local_only = vae_score(table_bundle, source, tmp_path / "y.parquet", "--keep", "id")
    assert local_only.returncode == 2
    assert "--keep: with --engine spark" in local_only.stderr
    on_spark(table_bundle, source, output, "--restart")  # replaced


@pytest.fixture(scope="module")
def spark_session() -> Iterator[object]:
    """A team's own session, in this process: local mode on two cores."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("a team's job")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_a_dataframe_job_scores_through_score_dataframe(
    service: str, table_bundle: Path, spark_session: object, tmp_path: Path
) -> None:
    """Rows made in the job itself (no file), the bundle by a file:// URL (fetched through
    fsspec on the driver and broadcast), the result a lazy DataFrame to filter and collect."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from batch_scoring.spark import score_dataframe

    assert isinstance(spark_session, SparkSession)
    rows, names = cancer_frame()
    frame = spark_session.createDataFrame(
        cancer_table(rows, names).to_pandas().astype({n: "float64" for n in names})
    ).repartition(3)
    scored = score_dataframe(frame, f"file://{table_bundle}", keep=["id"])
    assert scored.columns == ["id", "score", "is_anomaly", "tail_probability", "bad_reason"]
    flagged = scored.filter(F.col("is_anomaly")).select("id", "score").collect()
    expected = service_scores(service, TABLE_MODEL, rows)
    wanted = {i: s for i, s in enumerate(expected["scores"]) if expected["is_anomaly"][i]}
    assert {row["id"]: row["score"] for row in flagged} == wanted


def parents() -> dict[int, int]:
    """Every process's parent, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return found


def python_workers(job: int) -> list[int]:
    """The Python workers of the Spark job that process `job` started: the children of a
    pyspark.daemon descended from it (another session's workers, such as this module's
    in-process session's, are not)."""
    parent = parents()

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == job:
                return True
            pid = parent.get(pid, 0)
        return False

    daemons = set()
    for pid in parent:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pyspark.daemon" in command and descends(pid):
            daemons.add(pid)
    return [pid for pid, up in parent.items() if up in daemons]


def test_a_python_worker_killed_mid_job_is_retried_without_losing_rows(
    table_bundle: Path, tmp_path: Path
) -> None:
    """Spark's own recovery, from a real crash: a Python worker SIGKILLed while it scores; with
    local[2,3] (three tries a task) the job ends with every row exactly once, each scored as a
    run nobody disturbed scores it."""
    data, names = cancer_frame()
    generator = np.random.default_rng(1)
    rows = data[generator.integers(0, len(data), 1_500_000)]
    rows *= generator.uniform(0.97, 1.03, rows.shape).astype(np.float32)
    source = tmp_path / "rows.parquet"
    pq.write_table(cancer_table(rows, names), source, row_group_size=100_000)
    output = tmp_path / "scores.parquet"
    command = [
        sys.executable, "-m", "batch_scoring.cli", str(table_bundle), str(source), str(output),
        "--engine", "spark", "--spark-master", "local[2,3]", "--quiet",
    ]  # fmt: skip
    job = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and job.poll() is None and time.monotonic() < deadline:
        workers = python_workers(job.pid)
        if workers:
            time.sleep(1.0)  # scoring under way: the bundle loaded, batches flowing
            survivors = [pid for pid in python_workers(job.pid) if pid in workers]
            if survivors:
                os.kill(survivors[0], signal.SIGKILL)
                killed = survivors[0]
        time.sleep(0.05)
    stdout, stderr = job.communicate(timeout=300)
    assert killed is not None, "no Python worker was seen to kill"
    assert job.returncode == 0, stderr
    assert "Lost task" in stderr  # the killed worker's task failed, and was run again
    done = json.loads(stdout)
    assert (done["rows"], done["written"], done["bad_rows"]) == (len(rows), len(rows), 0)
    results = pq.read_table(output, columns=["id", "score"]).sort_by("id")
    assert results.column("id").to_numpy().tolist() == list(range(len(rows)))  # once each
    undisturbed = tmp_path / "undisturbed.parquet"
    summary(vae_score(table_bundle, source, undisturbed))  # the local path: the service's bits
    np.testing.assert_array_equal(
        results.column("score").to_numpy(), pq.read_table(undisturbed).column("score").to_numpy()
    )
