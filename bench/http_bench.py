"""Benchmark this service against the servers users would pick instead and the ceilings, in
one run.

    .venv/bin/python -m bench.http_bench [--duration 10] [--workers auto] [--memory-seconds 60]
        [--models default,784] [--scenarios S1,S2,S3,S4,S5,S6] [--peers KEY,...|none]

Every server runs alone on 127.0.0.1 (started, measured, stopped before the next starts), and
wrk shares the machine's cores with it. The peers (bench/peers/: KServe, MLServer, Triton,
BentoML, Ray Serve, FastAPI) run in their own venvs, built on first use, and each is checked
for a correct answer before it is timed. Writes bench/RESULTS.md, bench/results.json,
bench/results.png and the raw wrk outputs under bench/out/.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import inprocess, memory, peers, report, servers, wrk
from bench.bodies import Body, write_bodies
from bench.models import BenchModel, load_model
from bench.peers import check as peer_check
from bench.shared import BENCH, ROOT, VENV_BIN, machine, utc_stamp, write_json

OUT = BENCH / "out"
BATCH = 64

BATCHING_ENV = {
    "VAE_DYNAMIC_BATCHING": "true",
    "VAE_BATCHING_MAX_BATCH_SIZE": "64",
    "VAE_BATCHING_MAX_DELAY_US": "500",
}


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    route: str
    body: str  # key of bench.bodies.write_bodies
    connections: int
    servers: tuple[str, ...]
    with_peers: bool = False  # the peers too, each with the same items in its own protocol


SCENARIOS = {
    "S1": Scenario(
        "S1", "single-item JSON /reconstruct", "reconstruct", "json1", 8, ("ours", "noop"),
        with_peers=True,
    ),
    "S2": Scenario(
        "S2", f"batch-{BATCH} JSON /reconstruct", "reconstruct", "json64", 8,
        ("ours", "baseline"),
    ),
    "S3": Scenario(
        "S3", f"batch-{BATCH} npy /reconstruct", "reconstruct", "npy64", 8, ("ours",)
    ),
    "S4": Scenario(
        "S4", "single-item JSON /anomaly-score", "anomaly-score", "json1", 64,
        ("ours", "ours-batching", "baseline"),
    ),
    "S5": Scenario(
        "S5", f"batch-{BATCH} v2 binary infer (reconstruction)", "v2/models/{model}/infer",
        "v2bin64", 8, ("ours",),
    ),
    "S6": Scenario(
        "S6", "single-item JSON /reconstruct, 64 connections", "reconstruct", "json1", 64,
        ("ours", "noop"), with_peers=True,
    ),
}  # fmt: skip
SERVER_ORDER = ("ours", "ours-batching", "baseline", "noop")  # then the peers


@dataclass
class Measurement:
    model: str
    scenario: str
    server: str
    url_path: str
    connections: int
    items_per_request: int
    result: wrk.WrkResult | None = None
    error: str | None = None  # the server did not start, the probe failed, wrk failed
    probe: str | None = None  # status and start of the answer of one request before the load

    @property
    def items_per_s(self) -> float | None:
        if self.result is None:
            return None
        return self.result.ok_requests_per_s * self.items_per_request

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "scenario": self.scenario,
            "server": self.server,
            "url_path": self.url_path,
            "connections": self.connections,
            "items_per_request": self.items_per_request,
            "items_per_s": self.items_per_s,
            "wrk": self.result.to_dict() if self.result else None,
            "error": self.error,
            "probe": self.probe,
        }


@dataclass
class Options:
    duration: int
    workers: str
    memory_seconds: int
    models: list[str]
    scenarios: list[str]
    wrk_threads: int
    warmup: int
    inprocess_seconds: float
    peers: list[str] = field(default_factory=list)  # keys of bench.peers to run
    argv: list[str] = field(default_factory=list)


def batching_supported() -> bool | None:
    """Whether the service's settings know VAE_DYNAMIC_BATCHING (None: cannot tell)."""
    try:
        from service.settings import ServiceSettings
    except Exception:
        return None
    return "dynamic_batching" in ServiceSettings.model_fields


def server_specs(model: BenchModel, workers: str) -> dict[str, servers.ServerSpec]:
    ours_env = {
        "VAE_MODEL_REPOSITORY": str(model.repository.relative_to(ROOT)),
        "VAE_HOST": "127.0.0.1",
        "VAE_PORT": "{port}",
        "VAE_WORKERS": workers,
        # Every other setting is the service's default: info-level JSON request lines included,
        # written to the log file (the peers run with their access logs off).
    }
    ours_command = [str(VENV_BIN / "vae-serve")]
    uvicorn = [str(VENV_BIN / "python"), "-m", "uvicorn"]
    cores = os.cpu_count() or 1
    ours_settings = {
        **{k: v for k, v in ours_env.items() if k != "VAE_PORT"},
        "VAE_WORKERS": f"auto (one per core: {cores})" if workers == "auto" else workers,
        "VAE_INTRA_OP_THREADS": "unset (service default: 1 per session)",
    }
    return {
        "ours": servers.ServerSpec(
            "ours", ours_command, ours_env, "GET", "/readyz", settings=ours_settings
        ),
        "ours-batching": servers.ServerSpec(
            "ours-batching",
            ours_command,
            {**ours_env, **BATCHING_ENV},
            "GET",
            "/readyz",
            settings={**ours_settings, **BATCHING_ENV},
        ),
        "baseline": servers.ServerSpec(
            "baseline",
            [*uvicorn, "bench.baseline_app:app", "--host", "127.0.0.1", "--port", "{port}"],
            {"BASELINE_MODEL_REPOSITORY": str(model.repository.relative_to(ROOT))},
            "GET",
            "/openapi.json",
            settings={
                "command": "uvicorn bench.baseline_app:app (1 worker, every other uvicorn "
                "setting default: loop/http auto = uvloop/httptools, access log on, to a file)",
                "BASELINE_MODEL_REPOSITORY": str(model.repository.relative_to(ROOT)),
                "onnxruntime": "one InferenceSession per graph, default SessionOptions",
            },
        ),
        "noop": servers.ServerSpec(
            "noop",
            [
                *uvicorn, "bench.noop_app:app", "--host", "127.0.0.1", "--port", "{port}",
                "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                "--log-level", "warning",
            ],
            {},
            "POST",
            "/noop",
            settings={
                "command": "uvicorn bench.noop_app:app --workers 1 --loop uvloop --http "
                "httptools --log-level warning"
            },
        ),
    }  # fmt: skip


def url_path(server: str, route: str, model_name: str) -> str:
    return "/noop" if server == "noop" else "/" + route.format(model=model_name)


def probe(base_url: str, path: str, body: Body) -> str | None:
    """One request before the load: None when it answers 200, else what went wrong."""
    try:
        response = httpx.post(
            base_url + path, content=body.read(), headers=body.headers, timeout=30
        )
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    return None


def load(
    url: str, lua: Path, seconds: int, connections: int, options: Options, raw: Path
) -> wrk.WrkResult:
    return wrk.run(
        url,
        lua,
        duration_s=seconds,
        connections=connections,
        threads=options.wrk_threads,
        raw_path=raw,
    )


def peer_body(peer: peers.Peer, model: BenchModel, folder: Path) -> Body:
    """One item in the peer's own protocol, written where wrk's Lua script reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"body-{peer.key}.json"
    path.write_bytes(peer.body(model.rows[:1]))
    headers = dict(peer.headers)
    content_type = headers.pop("Content-Type", "application/json")
    return Body(path, content_type, "*/*", 1, headers)


def measure_on(
    server: servers.RunningServer,
    pairs: list[Measurement],
    body_of: dict[str, Body],
    lua_dir: Path,
    options: Options,
    verify: Callable[[str], str | None] | None = None,
) -> None:
    """Time each scenario on a running server. `body_of`: the request body by scenario;
    `verify` (a peer's): None when its answer is right, else why not, and then it is not
    timed."""
    wrong = verify(server.base_url) if verify is not None else None
    for m in pairs:
        body = body_of[m.scenario]
        tag = f"{m.model}-{m.scenario}-{m.server}"
        m.probe = wrong or probe(server.base_url, m.url_path, body)
        if m.probe is not None:
            print(f"    {tag}: probe failed: {m.probe}", flush=True)
            if wrong is not None:
                m.error = f"wrong answer, not timed: {wrong}"
                continue
        lua = wrk.write_lua(lua_dir / f"{tag}.lua", body.path, body.headers)
        url = server.base_url + m.url_path
        try:
            if options.warmup > 0:
                load(url, lua, options.warmup, m.connections, options, OUT / f"{tag}.warmup.txt")
            m.result = load(url, lua, options.duration, m.connections, options, OUT / f"{tag}.txt")
        except wrk.WrkFailed as error:
            m.error = str(error)
        if server.process.poll() is not None:
            m.error = (m.error or "") + f" server exited with {server.process.returncode}"
        r = m.result
        if r is not None:
            print(
                f"    {tag:<28} {r.requests_per_s:>9.1f} req/s {m.items_per_s or 0:>10.1f} "
                f"items/s  p50 {r.p50_ms or 0:.2f} ms  p99 {r.p99_ms or 0:.2f} ms  "
                f"errors {r.errors}",
                flush=True,
            )


def _verify_peer(peer: peers.Peer, model: BenchModel, base_url: str) -> str | None:
    return peer_check.verify(peer, base_url, model)


def run_model(model: BenchModel, options: Options) -> dict[str, Any]:
    print(f"== model {model.key}: {model.name} ({model.features} inputs)", flush=True)
    model_out = OUT / model.key
    bodies = write_bodies(model.rows, model_out / "bodies", BATCH)

    print(f"  in-process onnxruntime ({options.inprocess_seconds:g} s per point)", flush=True)
    in_process = inprocess.measure(
        model.bundle, model.rows, batches=(1, BATCH), min_seconds=options.inprocess_seconds
    )
    for r in in_process:
        print(f"    batch {r.batch:>3} threads {r.intra_op_threads}: "
              f"{r.items_per_s:>10.1f} items/s", flush=True)  # fmt: skip

    chosen = [peers.peer(key) for key in options.peers]
    measurements: list[Measurement] = []
    for key in options.scenarios:
        scenario = SCENARIOS[key]
        for label in scenario.servers:
            measurements.append(
                Measurement(
                    model=model.key,
                    scenario=key,
                    server=label,
                    url_path=url_path(label, scenario.route, model.name),
                    connections=scenario.connections,
                    items_per_request=bodies[scenario.body].items,
                )
            )
        for candidate in chosen if scenario.with_peers else []:
            measurements.append(
                Measurement(
                    model=model.key,
                    scenario=key,
                    server=candidate.key,
                    url_path=peer_check.request_path(candidate, model),
                    connections=scenario.connections,
                    items_per_request=1,
                )
            )
    specs = server_specs(model, options.workers)
    body_of = {key: bodies[SCENARIOS[key].body] for key in options.scenarios}
    started: dict[str, float] = {}
    for label in [*SERVER_ORDER, *(candidate.key for candidate in chosen)]:
        pairs = [m for m in measurements if m.server == label]
        if not pairs:
            continue
        print(f"  server {label}", flush=True)
        peer = next((p for p in chosen if p.key == label), None)
        verify: Callable[[str], str | None] | None = None
        server_bodies = body_of
        if peer is not None:
            try:
                specs[label] = peer_check.server_spec(peer, model)
            except Exception as error:  # its venv could not be built
                print(f"    {label} FAILED TO START: {error}", flush=True)
                for m in pairs:
                    m.error = f"server failed to start: {type(error).__name__}: {error}"
                continue
            body = peer_body(peer, model, model_out / "bodies")
            server_bodies = {m.scenario: body for m in pairs}
            verify = functools.partial(_verify_peer, peer, model)
        timeout = peer.start_timeout_s if peer is not None else 90.0
        for attempt in (1, 2):  # a second start: PyTriton's start-up handshake fails now and then
            for m in pairs:
                m.error = None
            try:
                with servers.running(specs[label], model_out, ROOT, timeout) as server:
                    started[label] = round(server.started_s, 2)
                    measure_on(server, pairs, server_bodies, model_out, options, verify)
                break
            except servers.ServerFailed as error:
                print(f"    {label} FAILED TO START (attempt {attempt}): {error}", flush=True)
                for m in pairs:
                    m.error = f"server failed to start: {error}"
    return {
        "key": model.key,
        "name": model.name,
        "features": model.features,
        "bundle": str(model.bundle.relative_to(ROOT)),
        "repository": str(model.repository.relative_to(ROOT)),
        "in_process": [r.to_dict() for r in in_process],
        "measurements": [m.to_dict() for m in measurements],
        "server_start_s": started,
        "server_settings": {label: spec.settings for label, spec in specs.items()},
        "server_titles": {
            peer.key: peer.title.replace("{workers}", str(peer_check.workers())) for peer in chosen
        },
    }


def run_memory(model: BenchModel, options: Options) -> dict[str, Any]:
    seconds = options.memory_seconds
    print(f"== memory: ours, {seconds} s of S1-like load, model {model.key}", flush=True)
    model_out = OUT / model.key
    bodies = write_bodies(model.rows, model_out / "bodies", BATCH)
    body = bodies["json1"]
    lua = wrk.write_lua(model_out / "json1.lua", body.path, body.headers)
    spec = server_specs(model, options.workers)["ours"]
    try:
        with servers.running(spec, model_out, ROOT) as server:
            url = server.base_url + "/reconstruct"
            if options.warmup > 0:
                load(url, lua, options.warmup, 8, options, OUT / "memory-S1-ours.warmup.txt")
            sampler = memory.MemorySampler(server.pid)
            sampler.start()
            try:
                result = load(url, lua, seconds, 8, options, OUT / "memory-S1-ours.txt")
            finally:
                sampler.stop()
    except (servers.ServerFailed, wrk.WrkFailed) as error:
        print(f"    memory run failed: {error}", flush=True)
        return {"error": str(error), "model": model.key, "seconds": seconds}
    summary = memory.summarise(sampler.samples)
    print(
        f"    RSS first {summary.first_mb:.1f} MB, max {summary.max_mb:.1f} MB, last "
        f"{summary.last_mb:.1f} MB (PSS max {summary.max_pss_mb or 0:.1f} MB), slope "
        f"{summary.slope_mb_per_min:+.2f} MB/min, "
        f"{summary.processes} process(es); load {result.requests_per_s:.0f} req/s, "
        f"errors {result.errors}",
        flush=True,
    )
    return {
        "model": model.key,
        "seconds": seconds,
        "workers": options.workers,
        "load": result.to_dict(),
        "rss": summary.to_dict(),
    }


def wrk_version() -> str:
    try:
        first = subprocess.run(
            [wrk.WRK, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"
    return first.split(" Copyright")[0].strip()


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_bench",
        description="Benchmark vae-serve against a plain FastAPI baseline, a no-op FastAPI app "
        "and in-process onnxruntime; writes bench/RESULTS.md, results.json, results.png.",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per run")
    parser.add_argument(
        "--workers", default="auto", help="VAE_WORKERS of our service (default: its own, auto)"
    )
    parser.add_argument(
        "--memory-seconds", type=int, default=60, help="length of the RSS run (0: skip it)"
    )
    parser.add_argument("--models", default="default,784", help="default and/or 784")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"any of {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--wrk-threads", type=int, default=1, choices=(1, 2), help="wrk threads (2 cores here)"
    )
    known_peers = [peer.key for peer in peers.all_peers()]
    parser.add_argument(
        "--peers",
        default="all",
        help=f"peers to run in S1 and S6: all, none, or any of {','.join(known_peers)}",
    )
    parser.add_argument("--warmup", type=int, default=1, help="seconds of discarded load first")
    parser.add_argument(
        "--inprocess-seconds", type=float, default=2.0, help="timing per in-process point"
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    for m in models:
        if m not in ("default", "784"):
            parser.error(f"--models: unknown {m!r}; use default and/or 784")
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"--scenarios: unknown {s!r}; use {','.join(SCENARIOS)}")
    if args.peers == "all":
        chosen_peers = known_peers
    elif args.peers == "none":
        chosen_peers = []
    else:
        chosen_peers = [key.strip() for key in args.peers.split(",") if key.strip()]
        for key in chosen_peers:
            if key not in known_peers:
                parser.error(f"--peers: unknown {key!r}; use all, none or {known_peers}")
    workers_ok = args.workers == "auto" or (args.workers.isdigit() and int(args.workers) >= 1)
    if args.duration < 1 or not workers_ok or args.memory_seconds < 0:
        parser.error("--duration >= 1, --workers auto or >= 1, --memory-seconds >= 0")
    return Options(
        duration=args.duration,
        workers=args.workers,
        memory_seconds=args.memory_seconds,
        models=models,
        scenarios=scenarios,
        wrk_threads=args.wrk_threads,
        warmup=args.warmup,
        inprocess_seconds=args.inprocess_seconds,
        peers=chosen_peers,
        argv=list(argv if argv is not None else sys.argv[1:]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    began = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    command = shlex.join([".venv/bin/python", "-m", "bench.http_bench", *options.argv])
    results: dict[str, Any] = {
        "date": utc_stamp(),
        "command": command,
        "machine": machine(
            ("fastapi", "starlette", "uvicorn", "onnxruntime", "numpy", "pydantic"),
            wrk=wrk_version(),
        ),
        "options": {
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "workers": options.workers,
            "memory_seconds": options.memory_seconds,
            "models": options.models,
            "scenarios": options.scenarios,
            "wrk_threads": options.wrk_threads,
            "inprocess_seconds": options.inprocess_seconds,
            "batch": BATCH,
            "peers": options.peers,
        },
        "scenarios": {
            key: {"title": s.title, "connections": s.connections, "servers": list(s.servers)}
            for key, s in SCENARIOS.items()
            if key in options.scenarios
        },
        "batching_env": BATCHING_ENV,
        "batching_supported": batching_supported(),
        "models": {},
        "memory": None,
    }
    loaded = {key: load_model(key) for key in options.models}
    for key, model in loaded.items():
        results["models"][key] = run_model(model, options)
    if options.memory_seconds > 0:
        results["memory"] = run_memory(loaded.get("default") or load_model("default"), options)
    results["wall_s"] = round(time.perf_counter() - began, 1)
    results["checks"] = [c.as_dict(report.CHECK_KEYS) for c in report.checks(results)]

    write_json(BENCH / "results.json", results)
    report.plot(results, BENCH / "results.png")
    (BENCH / "RESULTS.md").write_text(report.markdown(results))
    print(f"wrote bench/RESULTS.md, bench/results.json, bench/results.png ({results['wall_s']} s)")
    for check in results["checks"]:
        print(f"  {check['status']:<4} {check['model']:<8} {check['target']}: {check['measured']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
