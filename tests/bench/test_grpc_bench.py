"""bench/grpc_bench.py and bench/perf_analyzer.py's pure parts: the CSV perf_analyzer writes,
the targets judged on a hand-made results dict, and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.grpc_bench import checks, markdown, parse_args
from bench.perf_analyzer import parse_csv, write_input_data


def test_perf_analyzers_csv_is_read_in_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "G4.csv"
    path.write_text(
        "Concurrency,Inferences/Second,Client Send,Client Recv,p50 latency,p90 latency,"
        "p95 latency,p99 latency\n8,76879.9,3,1,6606,7100,7400,8002\n"
    )
    result = parse_csv(path, batch=64, streaming=False)
    assert result.concurrency == 8
    assert result.inferences_per_s == pytest.approx(76879.9)
    assert result.requests_per_s == pytest.approx(76879.9 / 64)
    assert result.p50_ms == pytest.approx(6.606)
    assert result.p99_ms == pytest.approx(8.002)


def test_input_data_holds_real_rows(tmp_path: Path) -> None:
    rows = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    path = write_input_data(rows, "x", tmp_path / "input.json")
    data = json.loads(path.read_text())["data"]
    assert len(data) == 256  # a bounded file, cycled through by the client
    assert data[1] == {"x": [4.0, 5.0, 6.0, 7.0]}


def _grpc(rps: float, p99: float = 3.0, batch: int = 1) -> dict[str, Any]:
    return {"requests_per_s": rps, "inferences_per_s": rps * batch, "p50_ms": 1.0, "p99_ms": p99}


def _results(ours_g1: float, triton_g1: float, stream: float, rest: float) -> dict[str, Any]:
    return {
        "date": "2026-12-06",
        "command": "python -m bench.grpc_bench",
        "machine": {"nproc": 2, "cpu_model": "x", "kernel": "k", "python": "3.11"},
        "client": "Perf Analyzer Version 2.41.0",
        "models": [
            {
                "key": "default",
                "name": "digits-vae",
                "features": 64,
                "ours": {
                    "grpc": {
                        "G1": {**_grpc(ours_g1, 4.0), "runs_requests_per_s": [1.0, ours_g1]},
                        "G3": _grpc(stream),
                        "G4": _grpc(1000, batch=64),
                    },
                    "rest": {
                        "R1": {
                            "title": "fast path",
                            "wrk": {"ok_requests_per_s": rest, "p50_ms": 1.0, "p99_ms": 2.0},
                        }
                    },
                },
                "pytriton": {"grpc": {"G1": _grpc(triton_g1), "G2": {"error": "failed"}}},
            }
        ],
    }


def test_targets_are_judged_as_the_issue_says() -> None:
    passing = {c.target: c.ok for c in checks(_results(2400, 1100, 3700, 2300))}
    assert all(passing.values()), passing
    assert len(passing) == 4
    failing = {c.target: c.ok for c in checks(_results(2000, 1100, 2900, 7000))}
    assert failing == {
        "default: G1 >= 2x Triton's gRPC requests/s": False,  # 1.82x
        "default: G1 >= the REST fast path's requests/s (R1)": False,
        "default: streaming (G3) >= 1.5x unary (G1)": False,  # 1.45x
        "default: G1 p99 under 5 ms": True,
    }


def test_the_report_shows_every_row_its_runs_and_the_errors() -> None:
    text = markdown(_results(2000, 1100, 2900, 7000))
    assert "| G1 single-item unary, 8 callers | 2,000 (2,000 items/s)" in text
    assert "[runs 1, 2,000]" in text
    assert "| G4 batch-64 unary, 8 callers | 1,000 (64,000 items/s)" in text
    assert "pytriton G2: failed" in text
    assert "| R1 REST:" in text
    assert "**FAIL**" in text


def test_options() -> None:
    options = parse_args(["--models", "784", "--peers", "none", "--g1-repeats", "0"])
    assert (options.models, options.peers, options.g1_repeats) == (["784"], [], 1)
    with pytest.raises(SystemExit):
        parse_args(["--peers", "kserve"])
