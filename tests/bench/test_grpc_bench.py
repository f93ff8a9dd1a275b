"""bench/grpc_bench.py, bench/h2load.py and bench/perf_analyzer.py's pure parts: what the
clients print and write, the check that each timed call was answered whole, the targets judged
on a hand-made results dict, and the report."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import h2load
from bench.grpc_bench import checks, markdown, parse_args
from bench.perf_analyzer import parse_csv, write_input_data
from service.grpc import inference_pb2 as pb


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


H2LOAD_SUMMARY = """
finished in 2.00s, 3660.50 req/s, 1.12MB/s
requests: 7323 total, 7323 started, 7321 done, 7321 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 7321 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.99MB (3133524) total, 228.78KB (234272) headers (space savings 15.79%), 2.14MB (2247547) data
"""  # noqa: E501  (h2load's own line)


def test_h2loads_summary_is_read() -> None:
    assert h2load.parse(H2LOAD_SUMMARY) == (2.0, 7321, 7321, 0, 2247547)
    assert h2load.parse(H2LOAD_SUMMARY.replace("2.00s", "500.5ms"))[0] == pytest.approx(0.5005)
    with pytest.raises(h2load.H2loadFailed, match="no summary"):
        h2load.parse("connect: Connection refused")


def test_a_run_counts_only_when_every_call_carried_a_whole_answer(tmp_path: Path) -> None:
    body = h2load.Body(h2load.INFER_PATH, tmp_path / "b.bin", 1, answer_bytes=307)
    h2load.check_answers(7321, 7321, 0, 7321 * 307, body, 8, tmp_path)  # exact
    h2load.check_answers(7321, 7321, 0, 7323 * 307, body, 8, tmp_path)  # two still open
    # A gRPC error is HTTP 200 with no DATA (its status in the trailers): bytes fall short.
    with pytest.raises(h2load.H2loadFailed, match="answered with an error"):
        h2load.check_answers(7321, 7321, 0, 7320 * 307, body, 8, tmp_path)
    with pytest.raises(h2load.H2loadFailed, match="answered with an error"):
        h2load.check_answers(100, 100, 0, 110 * 307, body, 8, tmp_path)  # more than open calls
    with pytest.raises(h2load.H2loadFailed, match="1 failed"):
        h2load.check_answers(100, 99, 1, 100 * 307, body, 8, tmp_path)
    with pytest.raises(h2load.H2loadFailed):
        h2load.check_answers(0, 0, 0, 0, body, 8, tmp_path)


def test_the_body_is_the_protocols_framing_of_a_real_request() -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    message = h2load.infer_message("m", "x", rows, ["reconstruction"])
    wire = h2load.framed(message)
    assert wire[0] == 0
    assert struct.unpack(">I", wire[1:5])[0] == len(message) == len(wire) - 5
    request = pb.ModelInferRequest.FromString(wire[5:])
    assert (request.model_name, request.inputs[0].name, request.inputs[0].datatype) == (
        "m",
        "x",
        "FP32",
    )
    assert list(request.inputs[0].shape) == [2, 3]
    assert (
        np.frombuffer(request.raw_input_contents[0], np.float32).tolist() == rows.ravel().tolist()
    )
    assert [o.name for o in request.outputs] == ["reconstruction"]


def test_latencies_come_from_the_log_in_milliseconds(tmp_path: Path) -> None:
    log = tmp_path / "calls.tsv"
    log.write_text("1796591042406839\t200\t672\n1796591042406826\t200\t1500\n")
    assert h2load.latencies_ms(log).tolist() == [0.672, 1.5]


def _grpc(rps: float, p99: float = 3.0, batch: int = 1, messages: int = 1) -> dict[str, Any]:
    return {
        "calls_per_s": rps,
        "items_per_s": rps * batch * messages,
        "p50_ms": 1.0,
        "p99_ms": p99,
        "client_cpu_us": 30.0,
    }


def _results(ours_g1: float, triton_g1: float, stream_items: float, rest: float) -> dict[str, Any]:
    return {
        "date": "2026-12-06",
        "command": "python -m bench.grpc_bench",
        "machine": {"nproc": 2, "cpu_model": "x", "kernel": "k", "python": "3.11"},
        "client": "h2load nghttp2/1.52.0",
        "second_client": "Perf Analyzer Version 2.41.0",
        "models": [
            {
                "key": "default",
                "name": "digits-vae",
                "features": 64,
                "ours": {
                    "grpc": {
                        "G1": {**_grpc(ours_g1, 4.0), "runs_calls_per_s": [1.0, ours_g1]},
                        "G3": _grpc(stream_items / 1000, 400.0, messages=1000),
                        "G4": _grpc(1000, batch=64),
                        "P1": _grpc(900),
                    },
                    "rest": {
                        "R1": {
                            "title": "fast path",
                            "wrk": {"ok_requests_per_s": rest, "p50_ms": 1.0, "p99_ms": 2.0},
                            "runs_requests_per_s": [rest - 500, rest, rest + 100],
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
        "default: streaming (G3 items/s) >= 1.5x unary (G1)": False,  # 1.45x
        "default: G1 p99 under 5 ms": True,
    }


def test_the_report_shows_every_row_its_runs_and_the_errors() -> None:
    text = markdown(_results(2000, 1100, 2900, 7000))
    assert "| G1 single-item unary, 8 callers | 2,000, p50 1.00 / p99 4.00 ms" in text
    assert "[runs 1, 2,000]" in text
    assert "| G4 batch-64 unary, 8 callers | 1,000 (64,000 items/s)" in text
    assert "2,900 items/s (2.9 calls/s)" in text  # a stream: its items first
    assert "| P1 G1 through perf_analyzer" in text
    assert "pytriton G2: failed" in text
    assert "| R1 REST: single-item JSON POST /reconstruct" in text
    assert "7,000, p50 1.00 / p99 2.00 ms [runs 6,500, 7,000, 7,100] |" in text
    assert "**FAIL**" in text


def test_options() -> None:
    options = parse_args(["--models", "784", "--peers", "none", "--g1-repeats", "0"])
    assert (options.models, options.peers, options.g1_repeats) == (["784"], [], 1)
    with pytest.raises(SystemExit):
        parse_args(["--peers", "kserve"])
