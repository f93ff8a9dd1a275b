"""The Open Inference Protocol over gRPC: this service against Triton's own gRPC endpoint
(PyTriton, the same model and cores), in one run, with Triton's own client.

    .venv/bin/python -m bench.grpc_bench [--window-ms 4000] [--models default,784]
        [--peers pytriton|none] [--workers auto]

For each model, each server runs alone on 127.0.0.1 (started, measured, stopped) and
perf_analyzer (bench/perf_analyzer.py: C++, Triton's benchmark client) drives it:

- G1 single-item unary ModelInfer, 8 concurrent callers;
- G2 the same, 64 callers;
- G3 single items on ModelStreamInfer streams, 8 callers (one stream each);
- G4 batch-64 unary, 8 callers.

"ours" is the service as it ships (VAE_GRPC_SERVER=native: HTTP/2 framed by the service);
"ours-grpcio" the same service with grpcio's asyncio server carrying gRPC, for the difference.

Beside them, in the same run and on the same server process, the REST figures the gRPC ones
are held to: wrk on the single-item JSON fast path (POST /reconstruct, make bench's S1) and
on the single-item v2 JSON infer of the same model gRPC calls (same outputs, same work).
Every request is real data (the model's rows). Writes bench/GRPC.md, bench/grpc.json and the
raw outputs under bench/out/grpc/.

What each server computes per item differs in one way, stated in the report: ours' v2 model
`<name>` answers the reconstruction *and* the anomaly score (one onnxruntime call, then the
score's numpy maths); the Triton model answers the reconstruction only, as in make bench.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import perf_analyzer, servers, wrk
from bench.bodies import write_bodies
from bench.models import BenchModel, load_model
from bench.peers import check as peer_check
from bench.peers import peer
from bench.shared import BENCH, ROOT, VENV_BIN, machine, machine_text, utc_stamp, write_json

OUT = BENCH / "out" / "grpc"


@dataclass(frozen=True)
class GrpcScenario:
    key: str
    title: str
    concurrency: int
    batch: int
    streaming: bool


SCENARIOS = {
    "G1": GrpcScenario("G1", "single-item unary, 8 callers", 8, 1, False),
    "G2": GrpcScenario("G2", "single-item unary, 64 callers", 64, 1, False),
    "G3": GrpcScenario("G3", "single items on streams, 8 callers", 8, 1, True),
    "G4": GrpcScenario("G4", "batch-64 unary, 8 callers", 8, 64, False),
}
REST_SCENARIOS = {
    "R1": ("single-item JSON POST /reconstruct (the REST fast path, make bench's S1)", "json1"),
    "R2": ("single-item v2 JSON infer, same model and outputs as gRPC", "v2json1"),
}
REST_CONNECTIONS = 8


@dataclass
class Options:
    window_ms: int
    models: list[str]
    peers: list[str]
    workers: str
    rest_seconds: int
    g1_repeats: int = 3
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
    settings["gRPC"] = "every worker serves VAE_GRPC_PORT (SO_REUSEPORT); all else default"
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
        load = {"connections": REST_CONNECTIONS, "threads": 2}
        wrk.run(url, lua, duration_s=1, raw_path=out / f"{key}.warmup.txt", **load)
        result = wrk.run(
            url, lua, duration_s=options.rest_seconds, raw_path=out / f"{key}.txt", **load
        )
        found[key] = {"title": title, "wrk": result.to_dict()}
        print(f"    {key} {title}: {result.ok_requests_per_s:,.0f} req/s", flush=True)
    return found


def measure_grpc(
    target: str, model_name: str, input_data: Path, options: Options, out: Path
) -> dict[str, Any]:
    """Each scenario once, G1 `options.g1_repeats` times: perf_analyzer shares a channel
    (one connection) between up to six callers, so G1's 8 callers come on 2 connections,
    which the kernel places on one worker of ours or on both (SO_REUSEPORT hashes each
    connection); each run is a new placement, and the median run is the figure."""
    found: dict[str, Any] = {}
    for key, scenario in SCENARIOS.items():
        runs: list[perf_analyzer.PerfResult] = []
        for attempt in range(options.g1_repeats if key == "G1" else 1):
            try:
                runs.append(
                    perf_analyzer.run(
                        target=target,
                        model=model_name,
                        input_data=input_data,
                        concurrency=scenario.concurrency,
                        batch=scenario.batch,
                        streaming=scenario.streaming,
                        window_ms=options.window_ms,
                        out=out / f"{key}-{attempt}.txt",
                    )
                )
            except (perf_analyzer.PerfAnalyzerFailed, OSError) as error:
                print(f"    {key} FAILED: {error}", flush=True)
        if not runs:
            found[key] = {"error": "every run failed (bench/out/grpc/: its output)"}
            continue
        runs.sort(key=lambda run: run.requests_per_s)
        result = runs[len(runs) // 2]
        found[key] = {**result.to_dict(), "runs_requests_per_s": [r.requests_per_s for r in runs]}
        print(
            f"    {key} {scenario.title}: {result.requests_per_s:,.0f} req/s "
            f"({result.inferences_per_s:,.0f} items/s), p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms",
            flush=True,
        )
    return found


def run_model(model: BenchModel, options: Options) -> dict[str, Any]:
    print(f"== model {model.key}: {model.name} ({model.features} inputs)", flush=True)
    out = OUT / model.key
    input_data = perf_analyzer.write_input_data(model.rows, "x", out / "input-data.json")
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
        try:
            with servers.running(spec, out, ROOT, timeout) as server:
                result: dict[str, Any] = {"settings": spec.settings}
                result["grpc"] = measure_grpc(
                    f"127.0.0.1:{grpc_port}", model.name, input_data, options, out / label
                )
                if label == "ours":
                    result["rest"] = measure_rest(server, model, options, out / label)
                entry[label] = result
        except servers.ServerFailed as error:
            print(f"    {label} FAILED TO START: {error}", flush=True)
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
    found: list[Check] = []
    for entry in results["models"]:
        name = entry["key"]
        g1, triton_g1 = _grpc(entry, "ours", "G1"), _grpc(entry, "pytriton", "G1")
        if g1 is not None and triton_g1 is not None:
            ratio = g1["requests_per_s"] / triton_g1["requests_per_s"]
            found.append(Check(
                f"{name}: G1 >= 2x Triton's gRPC requests/s",
                f"{g1['requests_per_s']:,.0f} vs {triton_g1['requests_per_s']:,.0f} "
                f"({ratio:.2f}x)",
                ratio >= 2.0,
            ))  # fmt: skip
        rest = _rest_rps(entry, "R1")
        if g1 is not None and rest is not None:
            found.append(Check(
                f"{name}: G1 >= the REST fast path's requests/s (R1)",
                f"{g1['requests_per_s']:,.0f} vs {rest:,.0f} ({g1['requests_per_s'] / rest:.2f}x)",
                g1["requests_per_s"] >= rest,
            ))  # fmt: skip
        g3 = _grpc(entry, "ours", "G3")
        if g1 is not None and g3 is not None:
            ratio = g3["requests_per_s"] / g1["requests_per_s"]
            found.append(Check(
                f"{name}: streaming (G3) >= 1.5x unary (G1)",
                f"{g3['requests_per_s']:,.0f} vs {g1['requests_per_s']:,.0f} ({ratio:.2f}x)",
                ratio >= 1.5,
            ))  # fmt: skip
        if g1 is not None and name == "default":
            found.append(Check(
                f"{name}: G1 p99 under 5 ms",
                f"{g1['p99_ms']:.2f} ms",
                g1["p99_ms"] < 5.0,
            ))  # fmt: skip
    return found


def _cell(found: dict[str, Any] | None) -> str:
    if found is None:
        return "-"
    runs = found.get("runs_requests_per_s", [])
    spread = f" [runs {', '.join(f'{r:,.0f}' for r in runs)}]" if len(runs) > 1 else ""
    return (
        f"{found['requests_per_s']:,.0f} ({found['inferences_per_s']:,.0f} items/s), "
        f"p50 {found['p50_ms']:.2f} / p99 {found['p99_ms']:.2f} ms{spread}"
    )


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
        f"- client: {results['client']} (bench/perf_analyzer.py says why this one); REST "
        f"figures with wrk, {REST_CONNECTIONS} connections",
        "- requests/s per row: requests answered a second (items/s in brackets: x64 for G4); "
        "latencies as the client saw them",
        "- ours answers reconstruction **and** anomaly score for each item; Triton (PyTriton) "
        "the reconstruction only",
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
            lines.append(
                f"| {key} {scenario.title} | {_cell(_grpc(entry, 'ours', key))} | "
                f"{_cell(_grpc(entry, GRPCIO, key))} | {_cell(_grpc(entry, 'pytriton', key))} |"
            )
        for key, (title, _) in REST_SCENARIOS.items():
            found = entry.get("ours", {}).get("rest", {}).get(key)
            if found is not None:
                w = found["wrk"]
                lines.append(
                    f"| {key} REST: {title} | {w['ok_requests_per_s']:,.0f}, "
                    f"p50 {w['p50_ms'] or 0:.2f} / p99 {w['p99_ms'] or 0:.2f} ms | - | - |"
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
    parser.add_argument("--window-ms", type=int, default=4000, help="perf_analyzer window")
    parser.add_argument("--models", default="default,784", help="default and/or 784")
    parser.add_argument(
        "--peers",
        default=f"{GRPCIO},pytriton",
        help=f"any of {GRPCIO} (ours with VAE_GRPC_SERVER=grpcio) and pytriton, or none",
    )
    parser.add_argument("--workers", default="auto", help="ours' VAE_WORKERS")
    parser.add_argument("--rest-seconds", type=int, default=8, help="wrk seconds per REST row")
    parser.add_argument(
        "--g1-repeats", type=int, default=3, help="runs of G1 (its median is the figure)"
    )
    args = parser.parse_args(argv)
    peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
    if set(peers) - {"pytriton", GRPCIO}:
        parser.error(f"--peers: {GRPCIO}, pytriton or none")
    return Options(
        window_ms=args.window_ms,
        models=[m for m in args.models.split(",") if m],
        peers=peers,
        workers=args.workers,
        rest_seconds=args.rest_seconds,
        g1_repeats=max(1, args.g1_repeats),
        argv=list(argv if argv is not None else sys.argv[1:]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    results: dict[str, Any] = {
        "date": utc_stamp(),
        "command": " ".join(["python -m bench.grpc_bench", *options.argv]),
        "machine": machine(("grpcio", "tritonclient", "onnxruntime")),
        "client": perf_analyzer.version(),
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
