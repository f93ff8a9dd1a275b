"""`vae-score` as a person runs it (the console script's module, a real process) against a real
`vae-serve` on the same bundles: the same rows get the same scores to the last bit, whatever
the input format or the number of processes; bad rows are listed and skipped; an interrupted
job goes on without redoing what it finished; memory stays within the setting whatever the
input's size."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.datasets import load_digits

from tests.batch_scoring.helpers import (
    IMAGE_MODEL,
    TABLE_MODEL,
    assert_scored_as_the_service,
    cancer_frame,
    cancer_table,
    csv_with_two_bad_rows,
    digit_pictures,
    read_results,
    service_image_score,
    service_scores,
    summary,
    vae_score,
)
from tests.bundles import COMMITTED_BUNDLE
from tests.e2e.processes import REPO_ROOT


def test_table_scores_equal_the_services_to_the_bit(
    service: str, table_bundle: Path, tmp_path: Path
) -> None:
    rows, names = cancer_frame()
    table = cancer_table(rows, names)  # an id column, the features reversed: picked by name
    csv_path, parquet_path = tmp_path / "rows.csv", tmp_path / "rows.parquet"
    pacsv.write_csv(table, csv_path)
    pq.write_table(table, parquet_path)
    expected = service_scores(service, TABLE_MODEL, rows, per_feature=True)
    for source, output, workers in (
        (csv_path, tmp_path / "from-csv.parquet", 1),
        (parquet_path, tmp_path / "from-parquet.csv", 2),
    ):
        done = summary(
            vae_score(table_bundle, source, output, "--per-feature", "--workers", workers)
        )
        assert (done["rows"], done["written"], done["bad_rows"]) == (len(rows), len(rows), 0)
        results = read_results(output)
        assert results.column("row").to_pylist() == list(range(len(rows)))
        assert_scored_as_the_service(results, expected, names)
        assert done["flagged"] == sum(expected["is_anomaly"])


def test_image_scores_equal_the_services_to_the_bit(service: str, tmp_path: Path) -> None:
    images = load_digits().images.astype(np.float32)  # (N, 8, 8): one of the model's layouts
    path = tmp_path / "digits.npy"
    np.save(path, images)
    expected = service_scores(service, IMAGE_MODEL, images.reshape(len(images), -1))
    for score_type in (None, "neg_elbo"):
        extra = [] if score_type is None else ["--score-type", score_type]
        wanted = (
            expected
            if score_type is None
            else service_scores(
                service, IMAGE_MODEL, images.reshape(len(images), -1), score_type=score_type
            )
        )
        output = tmp_path / f"scores-{score_type}.parquet"
        done = summary(vae_score(COMMITTED_BUNDLE, path, output, *extra, "--workers", 2))
        assert read_results(output).column("score").to_pylist() == wanted["scores"]
        assert done["score_type"] == (score_type or "recon_complexity")
    flagged = tmp_path / "flagged.csv"
    summary(vae_score(COMMITTED_BUNDLE, path, flagged, "--only-flagged", "--workers", 1))
    rows = read_results(flagged).column("row").to_pylist()
    assert rows == [i for i, flag in enumerate(expected["is_anomaly"]) if flag]


def test_a_bad_row_in_the_middle_is_listed_and_skipped(table_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    rows, names = csv_with_two_bad_rows(path, with_id=False)
    output = tmp_path / "scores.parquet"
    done = summary(vae_score(table_bundle, path, output, "--memory-mb", 16, "--workers", 1))
    assert (done["written"], done["bad_rows"]) == (len(rows) - 2, 2)
    assert 250 not in read_results(output).column("row").to_pylist()
    listed = (tmp_path / "scores.parquet.bad-rows.csv").read_text().splitlines()
    assert listed == [
        "row,reason",
        f"250,column '{names[4]}': not a number 'oops'",
        "300,28 fields where the file has 30",
    ]
    strict = vae_score(table_bundle, path, tmp_path / "strict.parquet", "--strict")
    assert strict.returncode == 3
    assert "row 250" in strict.stderr
    assert not (tmp_path / "strict.parquet").exists()


def big_table(path: Path, rows: int) -> np.ndarray:
    """`rows` breast-cancer-like rows (the real ones, tiled, a little noise), as float32."""
    data, _ = cancer_frame()
    generator = np.random.default_rng(0)
    tiled = data[generator.integers(0, len(data), rows)]
    tiled *= generator.uniform(0.95, 1.05, tiled.shape).astype(np.float32)
    np.save(path, tiled)
    return tiled


def test_an_interrupted_job_goes_on_where_it_stopped(table_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.npy"
    big_table(source, 400_000)
    output = tmp_path / "scores.parquet"
    parts = tmp_path / "scores.parquet.parts"
    command = [sys.executable, "-m", "batch_scoring.cli", str(table_bundle), str(source)]
    running = subprocess.Popen(
        [*command, str(output), "--memory-mb", "16", "--workers", "1", "--quiet"], cwd=REPO_ROOT
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(parts.glob("part-*.parquet"))) < 3:
            assert running.poll() is None, "finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        running.send_signal(signal.SIGKILL)  # no chance to tidy up: as a lost machine
        running.wait()
    finished = sorted(parts.glob("part-*.parquet"))
    assert not output.exists()
    # Mark a finished chunk: if the rerun redid it, the mark would be gone.
    first = pq.read_table(finished[0])
    marked = first.set_column(1, "score", pa.array(np.full(first.num_rows, -1.0)))
    pq.write_table(marked, finished[0])

    done = summary(vae_score(table_bundle, source, output, "--memory-mb", 16, "--workers", 1))
    assert done["resumed_chunks"] == len(finished)
    assert done["chunks"] > done["resumed_chunks"]
    results = read_results(output)
    assert results.column("row").to_pylist() == list(range(400_000))
    scores = results.column("score").to_numpy()
    assert (scores[: first.num_rows] == -1.0).all()  # the finished chunk was not redone
    assert not parts.exists()

    # Uninterrupted, the rest is the same to the bit.
    straight = tmp_path / "straight.parquet"
    summary(vae_score(table_bundle, source, straight, "--memory-mb", 16, "--workers", 2))
    again = read_results(straight).column("score").to_numpy()
    np.testing.assert_array_equal(scores[first.num_rows :], again[first.num_rows :])


def peak_rss_mb(*args: object) -> float:
    """The peak resident memory of a vae-score run (and of its worker processes)."""
    probe = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True); "
        "assert done.returncode == 0, done.stderr; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [sys.executable, "-m", "batch_scoring.cli", *map(str, args), "--quiet"]
    measured = subprocess.run(
        [sys.executable, "-c", probe, *command], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert measured.returncode == 0, measured.stderr
    return int(measured.stdout) / 1024


def test_memory_stays_within_the_setting_on_a_larger_input(
    table_bundle: Path, tmp_path: Path
) -> None:
    small, large = tmp_path / "small.npy", tmp_path / "large.npy"
    big_table(small, 1_000)
    big_table(large, 1_500_000)  # 180 MB of float32
    memory = 32
    baseline = peak_rss_mb(table_bundle, small, tmp_path / "small.parquet", "--memory-mb", memory)
    peak = peak_rss_mb(table_bundle, large, tmp_path / "large.parquet", "--memory-mb", memory)
    assert large.stat().st_size > 5 * memory * 2**20
    # The input is memory-mapped and read a chunk at a time: what the large run holds beyond
    # the small one's (the interpreter, numpy, onnxruntime, Arrow) is the setting's.
    assert peak - baseline < memory + 16, (baseline, peak)
    assert pq.ParquetFile(tmp_path / "large.parquet").metadata.num_rows == 1_500_000
    # The same rows as Parquet, in row groups of 16,384 rows (Arrow reads a group at a time,
    # 4 MB here, which the chunks make room for); Arrow's pre-buffering once kept every group
    # it had read: 1.5 GB for a 1.4 GB file.
    for source, name in ((small, "small-in.parquet"), (large, "large-in.parquet")):
        rows = np.load(source)
        table = pa.table({f"f{j}": rows[:, j] for j in range(rows.shape[1])})
        pq.write_table(table, tmp_path / name, row_group_size=16_384)
        del rows, table
    baseline, peak = (
        peak_rss_mb(table_bundle, tmp_path / name, tmp_path / f"out-{name}", "--memory-mb", memory)
        for name in ("small-in.parquet", "large-in.parquet")
    )
    assert peak - baseline < memory + 16, (baseline, peak)


def test_a_bundle_from_a_url_is_checked_like_a_local_one(
    table_bundle: Path, tmp_path: Path
) -> None:
    rows, _ = cancer_frame()
    source = tmp_path / "rows.npy"
    np.save(source, rows[:50])
    local = summary(vae_score(table_bundle, source, tmp_path / "local.parquet", "--workers", 1))
    remote = summary(
        vae_score(table_bundle.as_uri(), source, tmp_path / "remote.parquet", "--workers", 1)
    )
    assert remote["written"] == local["written"] == 50
    assert read_results(tmp_path / "remote.parquet").equals(
        read_results(tmp_path / "local.parquet")
    )
    tampered = tmp_path / "tampered"
    shutil.copytree(table_bundle, tampered)
    encoder = tampered / "encoder.onnx"
    encoder.write_bytes(encoder.read_bytes()[:-1] + b"\0")
    refused = vae_score(tampered.as_uri(), source, tmp_path / "tampered.parquet")
    assert refused.returncode == 2
    assert "sha256" in refused.stderr


def test_jobs_that_cannot_run_are_refused_by_name(table_bundle: Path, tmp_path: Path) -> None:
    rows, _ = cancer_frame()
    source = tmp_path / "rows.npy"
    np.save(source, rows[:10])
    output = tmp_path / "scores.parquet"
    summary(vae_score(table_bundle, source, output))
    one_group = tmp_path / "one-group.parquet"  # 200,000 rows in one row group: ~48 MB to read
    noise = np.random.default_rng(0).random((200_000, 30), dtype=np.float32)
    pq.write_table(pa.table({f"f{j}": noise[:, j] for j in range(30)}), one_group)
    cases = [
        ((table_bundle, source, output), "exists"),
        ((table_bundle, source, tmp_path / "x.parquet", "--score-type", "recon_complexity"),
         "offers"),
        ((table_bundle, source, tmp_path / "x.json"), "--format"),
        ((table_bundle, source, tmp_path / "x.parquet", "--memory-mb", 1), "at least 16"),
        ((tmp_path / "nowhere", source, tmp_path / "x.parquet"), "no model.json"),
        ((table_bundle, tmp_path / "missing.npy", tmp_path / "x.parquet"), "no such file"),
        ((table_bundle, one_group, tmp_path / "x.parquet", "--memory-mb", 16), "leaves no room"),
    ]  # fmt: skip
    for args, words in cases:
        refused = vae_score(*args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert words in refused.stderr, (args, refused.stderr)
    # The parts of an interrupted job are another job's for other options.
    parts = tmp_path / "other.parquet.parts"
    parts.mkdir()
    (parts / "job.json").write_text(json.dumps({"chunk_rows": 5, "input": "elsewhere"}))
    refused = vae_score(table_bundle, source, tmp_path / "other.parquet")
    assert refused.returncode == 2
    assert "another job" in refused.stderr
    summary(vae_score(table_bundle, source, tmp_path / "other.parquet", "--restart"))


def test_an_image_folder_scores_as_the_services_image_bodies(
    service: str, table_bundle: Path, tmp_path: Path
) -> None:
    """PNG files in nested folders, larger than the model's 8x8: each decoded, mapped and
    resized as the service decodes the same file sent as an image/png body; files that are no
    image are bad rows naming the file."""
    folder = tmp_path / "images"
    names = digit_pictures(folder, 24)
    (folder / "broken.png").write_bytes(b"\x89PNG but not one")
    (folder / "notes.txt").write_text("not an image: not a row")
    output = tmp_path / "scores.parquet"
    done = summary(vae_score(COMMITTED_BUNDLE, folder, output, "--workers", 2))
    assert (done["rows"], done["written"], done["bad_rows"]) == (25, 24, 1)
    results = read_results(output)
    assert sorted(results.column("path").to_pylist()) == sorted(names)
    for path, score in zip(
        results.column("path").to_pylist(), results.column("score").to_pylist(), strict=True
    ):
        assert service_image_score(service, folder / path) == score, path  # to the last bit
    bad = (tmp_path / "scores.parquet.bad-rows.csv").read_text()
    assert "broken.png" in bad
    refused = vae_score(table_bundle, folder, tmp_path / "table.parquet")
    assert refused.returncode == 2
    assert "a folder of images, but model cancer takes tabular inputs" in refused.stderr
