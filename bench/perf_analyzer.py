"""Triton's own load generator, perf_analyzer, as the gRPC benchmark's second client (row P1).

bench/h2load.py drives every other gRPC row; this one is the client Triton's users measure
Triton with, written in C++ (one process, a thread per concurrent caller), so its figure is a
second opinion from a client nobody here wrote. It costs more CPU a call than h2load (105 us
against 33, measured here at 8 callers on the same server), which the server's two cores share
with it, and it puts up to six callers on one channel (connection): its 8 callers come on 2
connections, which land on one worker of ours or on both. It speaks the Open Inference Protocol
over gRPC and asks a model's ModelConfig before it sends anything (the service answers it:
service/grpc/servicer.py).

It ships inside tritonclient's manylinux wheel (the dev extra installs it as
.venv/bin/perf_analyzer) and needs two shared libraries: libb64 (Debian's libb64-0d,
scripts/bench-tools.sh) and libcudart.so.12, which it links although it never touches a GPU
here (the nvidia-cuda-runtime-cu12 wheel, 3.5 MB, in the bench extra).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.shared import VENV_BIN


class PerfAnalyzerFailed(RuntimeError):
    pass


def binary() -> Path:
    found = VENV_BIN / "perf_analyzer"
    if found.is_file():
        return found
    on_path = shutil.which("perf_analyzer")
    if on_path is None:
        raise PerfAnalyzerFailed(
            "perf_analyzer not found: `make setup` installs tritonclient's wheel, which has it"
        )
    return Path(on_path)


def library_path() -> str:
    """LD_LIBRARY_PATH with the folder of the pip-installed libcudart.so.12 in front."""
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    folders = [] if spec is None or spec.submodule_search_locations is None else [
        str(Path(location) / "lib") for location in spec.submodule_search_locations
    ]  # fmt: skip
    existing = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    return ":".join(dict.fromkeys([*folders, *existing]))


def version() -> str:
    try:
        done = subprocess.run(
            [str(binary()), "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "LD_LIBRARY_PATH": library_path()},
        )
    except (OSError, PerfAnalyzerFailed, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    return (done.stdout.strip() or done.stderr.strip()).splitlines()[0]


def write_input_data(rows: np.ndarray[Any, Any], input_name: str, path: Path) -> Path:
    """Real rows as perf_analyzer's input data file: one entry per item, cycled through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{input_name: [float(v) for v in row]} for row in rows[:256]]
    path.write_text(json.dumps({"data": entries}))
    return path


@dataclass(frozen=True)
class PerfResult:
    concurrency: int
    batch: int
    streaming: bool
    inferences_per_s: float  # items a second
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.inferences_per_s / self.batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "batch": self.batch,
            "streaming": self.streaming,
            "inferences_per_s": self.inferences_per_s,
            "requests_per_s": self.requests_per_s,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
        }


def parse_csv(path: Path, batch: int, streaming: bool) -> PerfResult:
    """perf_analyzer's -f file: one row per concurrency, latencies in microseconds."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise PerfAnalyzerFailed(f"{path} holds no measurement")
    row = rows[-1]

    def ms(column: str) -> float:
        return float(row[column]) / 1000.0

    return PerfResult(
        concurrency=int(row["Concurrency"]),
        batch=batch,
        streaming=streaming,
        inferences_per_s=float(row["Inferences/Second"]),
        p50_ms=ms("p50 latency"),
        p90_ms=ms("p90 latency"),
        p99_ms=ms("p99 latency"),
    )


def run(
    *,
    target: str,
    model: str,
    input_data: Path,
    concurrency: int,
    batch: int,
    streaming: bool,
    window_ms: int,
    out: Path,
) -> PerfResult:
    """One measurement: `concurrency` callers (threads of perf_analyzer) each with one request
    in flight, until three windows in a row agree within 20% (at most 8 windows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".csv")
    command = [
        str(binary()),
        "-m", model,
        "-u", target,
        "-i", "grpc",
        "-b", str(batch),
        "--concurrency-range", str(concurrency),
        "--input-data", str(input_data),
        "--measurement-interval", str(window_ms),
        "--stability-percentage", "20",
        "--max-trials", "8",
        "-f", str(csv_path),
        *(["--streaming"] if streaming else []),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=max(60, 12 * window_ms // 1000 + 60),
        env={**os.environ, "LD_LIBRARY_PATH": library_path()},
    )
    out.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0 or not csv_path.is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise PerfAnalyzerFailed(f"perf_analyzer exited {done.returncode}: {' | '.join(tail)}")
    return parse_csv(csv_path, batch, streaming)
