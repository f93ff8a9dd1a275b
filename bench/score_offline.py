"""vae-score against what it is built on, in one run: rows a second and peak memory.

    .venv/bin/python -m bench.score_offline [--rows 10000000] [--http-rows 1000000]

A 30-feature VAE (breast-cancer, trained here once, cached in bench/models/score-table) and a
generated input of `--rows` rows x 30 float32 columns (the real rows, tiled with a few percent
of noise) as a .npy. Then, each on the same rows:

1. in-process onnxruntime: the bundle's mean path and score on batches of 4,096 rows read
   from the memory-mapped file, onnxruntime on every core, no output written (the ceiling);
2. `vae-score` with `--workers 1` (one process, onnxruntime's threads) and with one process
   per core (one onnxruntime thread each), writing Parquet, with its peak RSS;
3. the same rows as Parquet, through `vae-score` locally and with `--engine spark` (Spark's
   local mode on every core: the engine path's rows/s);
4. the same rows through `vae-serve` (one worker per core) as npy bodies of 4,096 rows from
   as many client threads, on the first `--http-rows` rows.

The target: vae-score at least 70% of (1) on all cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from bench import servers
from bench.servers import ServerSpec, free_port
from bench.shared import BENCH, ROOT, VENV_BIN
from bundle.runtime import OnnxBundle

BUNDLE = BENCH / "models" / "score-table" / "table" / "1"
BATCH = 4096
FEATURES = 30


def table_bundle() -> Path:
    if not (BUNDLE / "model.json").exists():
        command = [
            str(VENV_BIN / "vae-train"),
            "--dataset", "breast-cancer", "--epochs", "60", "--out", str(BUNDLE), "--quiet",
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return BUNDLE


def generated_rows(path: Path, rows: int) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data.astype(np.float32)
    generator = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    for start in range(0, rows, 1_000_000):
        stop = min(rows, start + 1_000_000)
        block = data[generator.integers(0, len(data), stop - start)]
        out[start:stop] = block * generator.uniform(0.97, 1.03, block.shape).astype(np.float32)
    out.flush()
    del out


def as_parquet(npy: Path, path: Path) -> None:
    """The same rows as a Parquet file of 1,000,000-row groups (Spark splits a file by them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = np.load(npy, mmap_mode="r", allow_pickle=False)
    names = [f"f{j}" for j in range(FEATURES)]
    schema = pa.schema([pa.field(name, pa.float32()) for name in names])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(rows), 1_000_000):
            block = np.ascontiguousarray(rows[start : start + 1_000_000])
            writer.write_table(pa.table(dict(zip(names, block.T, strict=True)), schema=schema))


def in_process(bundle_dir: Path, path: Path) -> float:
    bundle = OnnxBundle(bundle_dir)
    score_type = bundle.manifest.anomaly.default_score
    rows = np.load(path, mmap_mode="r", allow_pickle=False)
    began = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        batch = np.ascontiguousarray(rows[start : start + BATCH])
        bundle.path_scores(bundle.run_mean_path(batch), score_type)
    return len(rows) / (time.perf_counter() - began)


def vae_score(
    bundle_dir: Path, path: Path, out: Path, workers: int, *extra: str
) -> tuple[float, float]:
    """Rows a second (the job's own summary, which counts from its start: on Spark, the JVM's
    start, the reading, scoring, counting and writing) and the peak RSS in MB of the largest of
    its processes (the run, its workers, Spark's JVM)."""
    probe = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "assert done.returncode == 0, done.stderr; "
        "print(done.stdout.strip()); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [
        str(VENV_BIN / "vae-score"), str(bundle_dir), str(path), str(out),
        "--workers", str(workers), "--quiet", "--restart", *extra,
    ]  # fmt: skip
    if out.is_dir():
        shutil.rmtree(out)
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True
    )
    summary_line, rss = done.stdout.strip().splitlines()
    summary = json.loads(summary_line)
    return float(summary["rows_per_second"]), int(rss) / 1024


def over_http(bundle_dir: Path, path: Path, rows: int, workers: int) -> float:
    data = np.load(path, mmap_mode="r", allow_pickle=False)[:rows]
    bodies = []
    for begin in range(0, len(data), BATCH):
        body = io.BytesIO()
        np.save(body, np.ascontiguousarray(data[begin : begin + BATCH]), allow_pickle=False)
        bodies.append(body.getvalue())
    with tempfile.TemporaryDirectory() as folder:
        repository = Path(folder)
        (repository / "table").mkdir()
        (repository / "table" / "1").symlink_to(bundle_dir, target_is_directory=True)
        command = [str(VENV_BIN / "vae-serve"), "--model-repository", str(repository)]
        spec = ServerSpec(
            label="ours",
            command=[*command, "--host", "127.0.0.1", "--port", "{port}"],
            env={
                "VAE_WORKERS": str(workers),
                "VAE_GRPC_PORT": "0",
                "VAE_LOG_LEVEL": "warning",
                "VAE_MAX_BATCH_SIZE": str(BATCH),
            },
            ready_method="GET",
            ready_path="/readyz",
        )
        server = servers.start(spec, free_port(), repository / "logs", ROOT)
        try:
            url = f"{server.base_url}/models/table/anomaly-score"
            headers = {"content-type": "application/x-npy", "accept": "application/x-npy"}
            next_body = iter(range(len(bodies)))
            lock = threading.Lock()

            def client() -> None:
                with httpx.Client(timeout=60.0) as http:
                    while True:
                        with lock:
                            index = next(next_body, None)
                        if index is None:
                            return
                        http.post(url, content=bodies[index], headers=headers).raise_for_status()

            threads = [threading.Thread(target=client) for _ in range(2 * workers)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return len(data) / (time.perf_counter() - began)
        finally:
            servers.stop(server)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.score_offline", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--http-rows", type=int, default=1_000_000)
    options = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    bundle_dir = table_bundle()
    with tempfile.TemporaryDirectory(prefix="score-offline-") as folder:
        path = Path(folder) / "rows.npy"
        generated_rows(path, options.rows)
        size_mb = path.stat().st_size / 2**20
        print(f"{options.rows:,} rows x {FEATURES} float32 ({size_mb:,.0f} MB), {cores} cores")
        ceiling = in_process(bundle_dir, path)
        print(f"in-process onnxruntime, batches of {BATCH}: {ceiling:,.0f} rows/s", flush=True)
        out = Path(folder) / "scores.parquet"
        for workers in sorted({1, cores}):
            rate, rss = vae_score(bundle_dir, path, out, workers)
            print(
                f"vae-score --workers {workers}: {rate:,.0f} rows/s ({rate / ceiling:.0%} of "
                f"in-process), peak RSS {rss:,.0f} MB",
                flush=True,
            )
        shutil.rmtree(Path(folder) / "scores.parquet.parts", ignore_errors=True)
        parquet = Path(folder) / "rows.parquet"
        as_parquet(path, parquet)
        for engine in ("local", "spark"):
            rate, rss = vae_score(bundle_dir, parquet, out, cores, "--engine", engine)
            # Spark's JVM and its Python workers are not this probe's waited-for children:
            # their memory is not in the figure, so none is printed for the engine.
            memory = f", peak RSS {rss:,.0f} MB" if engine == "local" else ""
            print(
                f"vae-score --engine {engine} --workers {cores}, from Parquet: {rate:,.0f} "
                f"rows/s ({rate / ceiling:.0%} of in-process){memory}",
                flush=True,
            )
        if out.is_dir():
            shutil.rmtree(out)
        rate = over_http(bundle_dir, path, min(options.http_rows, options.rows), cores)
        print(f"vae-serve ({cores} workers), npy bodies of {BATCH} rows: {rate:,.0f} rows/s")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"this bench's own peak RSS (in-process run included): {own:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
