"""The Open Inference Protocol over gRPC: this service against Triton's own gRPC endpoint
(PyTriton, the same model and cores), in one run, with the same client for every server.

    .venv/bin/python -m bench.grpc_bench [--seconds 8] [--models default,784]
        [--peers ours-grpcio,pytriton|none] [--workers auto]

For each model, each server runs alone on 127.0.0.1 (started, measured, stopped) and h2load
(bench/h2load.py: C, about a wrk's CPU a call, which is why it) sends real rows as gRPC calls:

- G1 single-item unary ModelInfer, 8 callers (8 connections, one call in flight each), asking
  for the reconstruction: the work of the REST fast path (R1) and of Triton's model;
- G1s the same asking for the reconstruction and the anomaly score (ours only: R2's work);
- G2 single-item unary, 64 callers;
- G3 single items streamed on ModelStreamInfer, 8 callers, each call 1,000 items sent without
  waiting for their answers (why one streams), answers on the same call;
- G4 batch-64 unary, 8 callers;
- P1 G1 again through perf_analyzer, Triton's own client (bench/perf_analyzer.py), which puts
  the 8 callers on 2 connections and spends ~3x h2load's CPU a call: a second opinion.

"ours" is the service as it ships (VAE_GRPC_SERVER=native: HTTP/2 framed by the service);
"ours-grpcio" the same service with grpcio's asyncio server carrying gRPC, for the difference.

Beside them, in the same run and on the same server process, the REST figures the gRPC ones
are held to: wrk on the single-item JSON fast path (POST /reconstruct, make bench's S1) and
on the single-item v2 JSON infer (reconstruction and score, G1s' work). Writes bench/GRPC.md,
bench/grpc.json and the raw outputs under bench/out/grpc/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

from bench import h2load, perf_analyzer, servers, wrk
from bench.bodies import write_bodies
from bench.models import BenchModel, load_model
from bench.peers import check as peer_check
from bench.peers import peer
from bench.shared import BENCH, ROOT, VENV_BIN, machine, machine_text, utc_stamp, write_json

OUT = BENCH / "out" / "grpc"
STREAM_ITEMS = 1000  # single-item messages a G3 call streams


@dataclass(frozen=True)
class GrpcScenario:
    key: str
    title: str
    callers: int
    batch: int
    streaming: bool = False
    with_score: bool = False  # ask ours for the anomaly score beside the reconstruction


SCENARIOS = {
    "G1": GrpcScenario("G1", "single-item unary, 8 callers", 8, 1),
    "G1s": GrpcScenario("G1s", "single-item unary with the anomaly score, 8 callers", 8, 1,
                        with_score=True),
    "G2": GrpcScenario("G2", "single-item unary, 64 callers", 64, 1),
    "G3": GrpcScenario("G3", f"single items streamed ({STREAM_ITEMS:,} a call), 8 callers", 8, 1,
                       streaming=True),
    "G4": GrpcScenario("G4", "batch-64 unary, 8 callers", 8, 64),
}  # fmt: skip
PERF_ANALYZER_ROW = ("P1", "G1 through perf_analyzer (Triton's client, 8 callers on 2 connections)")
REST_SCENARIOS = {
    "R1": ("single-item JSON POST /reconstruct (the REST fast path, make bench's S1)", "json1"),
    "R2": ("single-item v2 JSON infer, reconstruction and score (G1s' work)", "v2json1"),
}
REST_CONNECTIONS = 8


@dataclass
class Options:
    seconds: int
    models: list[str]
    peers: list[str]
    workers: str
    rest_seconds: int
    g1_repeats: int = 3
    window_ms: int = 3000  # perf_analyzer's measurement window (P1)
    argv: list[str] = field(default_factory=list)


GRPCIO = "ours-grpcio"  # the same service with grpcio's server carrying gRPC


def ours_spec(
    model: BenchModel, workers: str, grpc_port: int, transport: str = "native"
) -> servers.ServerSpec:
    env = {
        "VAE_MODEL_REPOSITORY": str(model.repository.relative_to(ROOT)),
        "VAE_HOST": "127.0.0.1",
        "VAE_PORT": "{port}",
        "VAE_GRPC_PORT": str(grpc_port),
        "VAE_GRPC_SERVER": transport,
        "VAE_WORKERS": workers,
    }
    settings = {k: v for k, v in env.items() if k != "VAE_PORT"}
    settings["VAE_WORKERS"] = "auto (one per core)" if workers == "auto" else workers
    settings["gRPC"] = (
        "every worker serves VAE_GRPC_PORT (SO_REUSEPORT, connections balanced over the "
        "workers: VAE_GRPC_BALANCE_CONNECTIONS=true); all else default"
    )
    return servers.ServerSpec(
        "ours", [str(VENV_BIN / "vae-serve")], env, "GET", "/readyz", settings=settings
    )


def triton_spec(model: BenchModel, grpc_port: int) -> servers.ServerSpec:
    spec = peer_check.server_spec(peer("pytriton"), model)
    return servers.ServerSpec(
        "pytriton",
        [*spec.command, "--grpc-port", str(grpc_port)],
        spec.env,
        spec.ready_method,
        spec.ready_path,
        settings={**spec.settings, "protocol": "gRPC on 127.0.0.1 (Triton's own front end)"},
    )


def v2_json_body(model: BenchModel, folder: Path) -> Path:
    row = model.rows[:1]
    tensor = {"name": "x", "datatype": "FP32", "shape": list(row.shape)}
    body = {"inputs": [{**tensor, "data": row.ravel().tolist()}]}
    path = folder / "body-v2json1.json"
    path.write_bytes(orjson.dumps(body))
    return path


R = TypeVar("R")


def quiet_runs(count: int, stem: Path, run: Callable[..., R], path_keyword: str = "out") -> list[R]:
    """`count` runs, their raw outputs beside `stem` (`G1-0.txt`...), each once the cores are
    idle: the calls a timed run leaves open at its end are abandoned, and a server may go on
    with them for seconds (grpcio's did with G3's streams, so that the next run started no
    call at all)."""
    found = []
    for attempt in range(count):
        servers.wait_for_quiet(max_wait_s=30.0)
        found.append(run(**{path_keyword: stem.with_name(f"{stem.name}-{attempt}.txt")}))
    return found


def median(runs: list[R], rate: Callable[[R], float]) -> R:
    """The median run by its rate (sorts `runs` in place, so a report lists them in order)."""
    runs.sort(key=rate)
    return runs[len(runs) // 2]


def measure_rest(
    server: servers.RunningServer, model: BenchModel, options: Options, out: Path
) -> dict[str, Any]:
    bodies = write_bodies(model.rows, out / "bodies", 64)
    v2_path = v2_json_body(model, out / "bodies")
    found: dict[str, Any] = {}
    for key, (title, body_key) in REST_SCENARIOS.items():
        if body_key == "json1":
            body = bodies["json1"]
            lua = wrk.write_lua(out / "rest-json1.lua", body.path, body.headers)
            url = server.base_url + "/reconstruct"
        else:
            headers = {"Content-Type": "application/json"}
            lua = wrk.write_lua(out / "rest-v2json1.lua", v2_path, headers)
            url = f"{server.base_url}/v2/models/{model.name}/infer"
        wrk.run(
            url, lua, duration_s=1, connections=REST_CONNECTIONS, threads=2,
            raw_path=out / f"{key}.warmup.txt",
        )  # fmt: skip
        # R1 as often as G1, which it is held to: each run places its connections anew.
        count = options.g1_repeats if key == "R1" else 1
        run = partial(
            wrk.run, url, lua, duration_s=options.rest_seconds, connections=REST_CONNECTIONS,
            threads=2,
        )  # fmt: skip
        runs = quiet_runs(count, out / key, run, path_keyword="raw_path")
        result = median(runs, lambda run: run.ok_requests_per_s)
        found[key] = {
            "title": title,
            "wrk": result.to_dict(),
            "runs_requests_per_s": [r.ok_requests_per_s for r in runs],
        }
        print(f"    {key} {title}: {result.ok_requests_per_s:,.0f} req/s", flush=True)
    return found


def scenario_messages(scenario: GrpcScenario, model: BenchModel, ours: bool) -> list[bytes]:
    """The messages of one call: real rows, different ones for each item of a stream. Ours is
    asked for the reconstruction (and the score where the scenario says); Triton's model has
    the reconstruction only and is asked for every output."""
    outputs = ("reconstruction", "anomaly_score") if scenario.with_score else ("reconstruction",)
    wanted = outputs if ours else ()
    if scenario.streaming:
        rows = np.resize(model.rows, (STREAM_ITEMS, model.rows.shape[1]))
        return [
            h2load.infer_message(model.name, "x", rows[i : i + 1], wanted)
            for i in range(STREAM_ITEMS)
        ]
    return [h2load.infer_message(model.name, "x", model.rows[: scenario.batch], wanted)]


def measure_grpc(
    target: str, model: BenchModel, ours: bool, options: Options, out: Path
) -> dict[str, Any]:
    """Each scenario once, G1 `options.g1_repeats` times: each run's connections are placed on
    the workers anew (a peer's by the kernel's hash, ours balanced), and the median run is the
    figure. A body is checked through grpcio before it is timed (bench/h2load.py: probe)."""
    found: dict[str, Any] = {}
    for key, scenario in SCENARIOS.items():
        if scenario.with_score and not ours:
            continue
        try:
            path = h2load.STREAM_PATH if scenario.streaming else h2load.INFER_PATH
            messages = scenario_messages(scenario, model, ours)
            body = h2load.prepare(target, path, messages, out / "bodies" / f"{key}.bin")
            h2load.warm_up(target, body, scenario.callers)
            count = options.g1_repeats if key == "G1" else 1
            run = partial(
                h2load.run, target, body, connections=scenario.callers,
                seconds=options.seconds, items=scenario.batch,
            )  # fmt: skip
            runs = quiet_runs(count, out / key, run)
        except Exception as error:  # a refused body (grpc.RpcError), a failed or wrong run
            print(f"    {key} FAILED: {type(error).__name__}: {error}", flush=True)
            found[key] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            continue
        result = median(runs, lambda run: run.calls_per_s)
        found[key] = {**result.to_dict(), "runs_calls_per_s": [r.calls_per_s for r in runs]}
        print(
            f"    {key} {scenario.title}: {result.calls_per_s:,.1f} calls/s "
            f"({result.items_per_s:,.0f} items/s), p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, client {result.client_cpu_us:.0f} us CPU a call",
            flush=True,
        )
    return found


def measure_perf_analyzer(
    target: str, model: BenchModel, options: Options, out: Path
) -> dict[str, Any]:
    """P1: G1 through Triton's own client, once."""
    key, title = PERF_ANALYZER_ROW
    input_data = perf_analyzer.write_input_data(model.rows, "x", out / "input-data.json")
    try:
        result = perf_analyzer.run(
            target=target,
            model=model.name,
            input_data=input_data,
            concurrency=8,
            batch=1,
            streaming=False,
            window_ms=options.window_ms,
            out=out / f"{key}.txt",
        )
    except (perf_analyzer.PerfAnalyzerFailed, OSError, subprocess.TimeoutExpired) as error:
        print(f"    {key} FAILED: {error}", flush=True)
        return {key: {"error": str(error)[:300]}}
    print(f"    {key} {title}: {result.requests_per_s:,.0f} calls/s", flush=True)
    found = result.to_dict()
    return {key: {**found, "calls_per_s": found["requests_per_s"],
                  "items_per_s": found["inferences_per_s"]}}  # fmt: skip


def run_model(model: BenchModel, options: Options) -> dict[str, Any]:
    print(f"== model {model.key}: {model.name} ({model.features} inputs)", flush=True)
    out = OUT / model.key
    entry: dict[str, Any] = {"key": model.key, "name": model.name, "features": model.features}
    labels = ["ours", *options.peers]
    for label in labels:
        grpc_port = servers.free_port()
        try:
            if label == "ours":
                spec = ours_spec(model, options.workers, grpc_port)
            elif label == GRPCIO:
                spec = ours_spec(model, options.workers, grpc_port, "grpcio")
            else:
                spec = triton_spec(model, grpc_port)
        except Exception as error:  # a peer's venv could not be built
            entry[label] = {"error": f"{type(error).__name__}: {error}"}
            continue
        print(f"  server {label}", flush=True)
        timeout = 180.0 if label != "ours" else 90.0
        target = f"127.0.0.1:{grpc_port}"
        for attempt in (1, 2):  # a second start: PyTriton's start-up handshake fails now and then
            try:
                with servers.running(spec, out, ROOT, timeout) as server:
                    result: dict[str, Any] = {"settings": spec.settings}
                    ours = label in ("ours", GRPCIO)
                    result["grpc"] = measure_grpc(target, model, ours, options, out / label)
                    found = measure_perf_analyzer(target, model, options, out / label)
                    result["grpc"].update(found)
                    if label == "ours":
                        result["rest"] = measure_rest(server, model, options, out / label)
                    entry[label] = result
                break
            except servers.ServerFailed as error:
                print(f"    {label} FAILED TO START (attempt {attempt}): {error}", flush=True)
                entry[label] = {"error": f"server failed to start: {error}"}
    return entry


# --------------------------------------------------------------------------- report


def _grpc(entry: dict[str, Any], label: str, key: str) -> dict[str, Any] | None:
    found = entry.get(label, {}).get("grpc", {}).get(key)
    return None if found is None or "error" in found else found


def _rest_rps(entry: dict[str, Any], key: str) -> float | None:
    found = entry.get("ours", {}).get("rest", {}).get(key)
    return None if found is None else float(found["wrk"]["ok_requests_per_s"])


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    ok: bool


def checks(results: dict[str, Any]) -> list[Check]:
    """The issue's targets, each on like work: G1 and R1 both answer the reconstruction of one
    item, as Triton's model does; G3's items/s against G1's calls/s (one item a call)."""
    found: list[Check] = []
    for entry in results["models"]:
        name = entry["key"]
        g1, triton_g1 = _grpc(entry, "ours", "G1"), _grpc(entry, "pytriton", "G1")
        if g1 is not None and triton_g1 is not None:
            ratio = g1["calls_per_s"] / triton_g1["calls_per_s"]
            found.append(Check(
                f"{name}: G1 >= 2x Triton's gRPC requests/s",
                f"{g1['calls_per_s']:,.0f} vs {triton_g1['calls_per_s']:,.0f} ({ratio:.2f}x)",
                ratio >= 2.0,
            ))  # fmt: skip
        rest = _rest_rps(entry, "R1")
        if g1 is not None and rest is not None:
            found.append(Check(
                f"{name}: G1 >= the REST fast path's requests/s (R1)",
                f"{g1['calls_per_s']:,.0f} vs {rest:,.0f} ({g1['calls_per_s'] / rest:.2f}x)",
                g1["calls_per_s"] >= rest,
            ))  # fmt: skip
        g3 = _grpc(entry, "ours", "G3")
        if g1 is not None and g3 is not None:
            ratio = g3["items_per_s"] / g1["items_per_s"]
            found.append(Check(
                f"{name}: streaming (G3 items/s) >= 1.5x unary (G1)",
                f"{g3['items_per_s']:,.0f} vs {g1['items_per_s']:,.0f} ({ratio:.2f}x)",
                ratio >= 1.5,
            ))  # fmt: skip
        if g1 is not None and name == "default":
            found.append(Check(
                f"{name}: G1 p99 under 5 ms",
                f"{g1['p99_ms']:.2f} ms",
                g1["p99_ms"] < 5.0,
            ))  # fmt: skip
    return found


def _runs_text(runs: list[float]) -> str:
    return f" [runs {', '.join(f'{r:,.0f}' for r in runs)}]" if len(runs) > 1 else ""


def _cell(found: dict[str, Any] | None, batch: int, streaming: bool) -> str:
    if found is None:
        return "-"
    runs = found.get("runs_calls_per_s", [])
    spread = _runs_text(runs)
    rate = f"{found['calls_per_s']:,.0f}"
    if streaming:
        rate = f"{found['items_per_s']:,.0f} items/s ({found['calls_per_s']:,.1f} calls/s)"
    elif batch > 1:
        rate += f" ({found['items_per_s']:,.0f} items/s)"
    latency = f"p50 {found['p50_ms']:.2f} / p99 {found['p99_ms']:.2f} ms"
    client = found.get("client_cpu_us")
    cpu = "" if client is None or streaming else f", client {client:.0f} us a call"
    return f"{rate}, {latency}{cpu}{spread}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# gRPC: the Open Inference Protocol over gRPC, ours against Triton's",
        "",
        "Generated by `python -m bench.grpc_bench` (`make bench` runs it after "
        "`bench.http_bench`); overwritten on every run. Raw outputs: `bench/out/grpc/`.",
        "",
        f"- date: {results['date']}",
        f"- command: `{results['command']}`",
        f"- machine: {machine_text(results['machine'])}; the client shares its cores with the "
        "server",
        f"- client: {results['client']}, one call in flight per caller, each caller its own "
        "connection (bench/h2load.py says why this one and how each run is checked); "
        f"REST rows: wrk, {REST_CONNECTIONS} connections; P1: {results.get('second_client', '')}",
        "- each cell: calls answered a second (items/s for batches and streams), latency of a "
        "call as the client saw it (a G3 call is a whole stream of "
        f"{STREAM_ITEMS:,} items), the client's own CPU a call",
        "- the same work everywhere: ours is asked for the reconstruction, as R1 answers and as "
        "Triton's model (PyTriton) does; G1s and R2 add the anomaly score (ours only)",
        "",
    ]
    for entry in results["models"]:
        lines += [
            f"## Model {entry['key']}: {entry['name']} ({entry['features']} inputs)",
            "",
            "| scenario | ours | ours on grpcio's server | Triton (PyTriton) |",
            "|---|---|---|---|",
        ]
        for key, scenario in SCENARIOS.items():
            cells = [
                _cell(_grpc(entry, label, key), scenario.batch, scenario.streaming)
                for label in ("ours", GRPCIO, "pytriton")
            ]
            lines.append(f"| {key} {scenario.title} | {' | '.join(cells)} |")
        key, title = PERF_ANALYZER_ROW
        cells = [
            _cell(_grpc(entry, label, key), 1, False) for label in ("ours", GRPCIO, "pytriton")
        ]
        lines.append(f"| {key} {title} | {' | '.join(cells)} |")
        for key, (title, _) in REST_SCENARIOS.items():
            found = entry.get("ours", {}).get("rest", {}).get(key)
            if found is not None:
                w = found["wrk"]
                runs = found.get("runs_requests_per_s", [])
                spread = _runs_text(runs)
                lines.append(
                    f"| {key} REST: {title} | {w['ok_requests_per_s']:,.0f}, "
                    f"p50 {w['p50_ms'] or 0:.2f} / p99 {w['p99_ms'] or 0:.2f} ms{spread} | - | - |"
                )
        errors = {
            f"{label} {key}": found["error"]
            for label in ("ours", GRPCIO, "pytriton")
            for key, found in entry.get(label, {}).get("grpc", {}).items()
            if "error" in found
        }
        for label in ("ours", GRPCIO, "pytriton"):
            if "error" in entry.get(label, {}):
                errors[label] = entry[label]["error"]
        lines += ["", *(f"- {k}: {v}" for k, v in errors.items()), ""]
    lines += ["## Targets (issue 23)", "", "| target | measured | |", "|---|---|---|"]
    for check in checks(results):
        verdict = "pass" if check.ok else "**FAIL**"
        lines.append(f"| {check.target} | {check.measured} | {verdict} |")
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="h2load seconds per run")
    parser.add_argument("--models", default="default,784", help="default and/or 784")
    parser.add_argument(
        "--peers",
        default=f"{GRPCIO},pytriton",
        help=f"any of {GRPCIO} (ours with VAE_GRPC_SERVER=grpcio) and pytriton, or none",
    )
    parser.add_argument("--workers", default="auto", help="ours' VAE_WORKERS")
    parser.add_argument("--rest-seconds", type=int, default=8, help="wrk seconds per REST row")
    parser.add_argument(
        "--g1-repeats", type=int, default=3, help="runs of G1 and R1 (the median is the figure)"
    )
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer's (P1)")
    args = parser.parse_args(argv)
    peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
    if set(peers) - {"pytriton", GRPCIO}:
        parser.error(f"--peers: {GRPCIO}, pytriton or none")
    return Options(
        seconds=max(1, args.seconds),
        models=[m for m in args.models.split(",") if m],
        peers=peers,
        workers=args.workers,
        rest_seconds=args.rest_seconds,
        g1_repeats=max(1, args.g1_repeats),
        window_ms=args.window_ms,
        argv=list(argv if argv is not None else sys.argv[1:]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    results: dict[str, Any] = {
        "date": utc_stamp(),
        "command": " ".join(["python -m bench.grpc_bench", *options.argv]),
        "machine": machine(("grpcio", "tritonclient", "onnxruntime")),
        "client": h2load.version(),
        "second_client": perf_analyzer.version(),
        "models": [run_model(load_model(key), options) for key in options.models],
    }
    results["checks"] = [check.__dict__ for check in checks(results)]
    write_json(BENCH / "grpc.json", results)
    (BENCH / "GRPC.md").write_text(markdown(results), encoding="utf-8")
    for check in checks(results):
        print(f"[grpc] {'pass' if check.ok else 'FAIL'}: {check.target}: {check.measured}")
    print(f"[grpc] wrote {BENCH / 'GRPC.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
