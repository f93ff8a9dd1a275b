"""One soak run end to end: the server up, every kind probed, then the load beside slow
clients while memory is sampled."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import memory, servers, wrk
from bench.hostile_mix import ConnectionPressure
from bench.models import load_model
from bench.shared import ROOT, utc_stamp
from bench.soak.analysis import kind_results, memory_report, scan_log
from bench.soak.config import HEAD_TIMEOUT_S, OUT, SILENT, TRICKLING
from bench.soak.kinds import Kind, build_kinds
from bench.soak.lua import parse_counts, write_lua
from bench.soak.probe import probe_all
from bench.soak.server import process_roles, server_spec, soak_repository, wait_for_workers


@dataclass
class Options:
    seconds: int
    connections: int
    models: list[str]
    log_level: str
    out: Path
    argv: list[str]


def run(options: Options) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("server-soak-*.log"):  # ~10 MB per 2 minutes with the access log on
        old.unlink()
    models = [load_model(key) for key in options.models]
    kinds = build_kinds(models)
    repository = soak_repository(models)
    default_model = models[0].name if len(models) > 1 else None
    spec = server_spec(repository, default_model, options.log_level)
    expected_workers = os.cpu_count() or 1
    result: dict[str, Any] = {
        "date": utc_stamp(),
        "command": shlex.join([".venv/bin/python", "-m", "bench.soak", *options.argv]),
        "seconds": options.seconds,
        "connections": options.connections,
        "models": [
            {
                "key": m.key,
                "name": m.name,
                "features": m.features,
                "bundle": str(m.bundle.relative_to(ROOT)),
            }
            for m in models
        ],
        "server_settings": spec.settings,
        "nproc": os.cpu_count(),
        "kinds": [
            {
                "key": k.key,
                "title": k.title,
                "method": k.method,
                "path": k.path,
                "expected_status": k.status,
                "valid": k.valid,
                "body_bytes": len(k.body) if k.body is not None else 0,
            }
            for k in kinds
        ],
        "probes": [],
        "load": None,
    }
    lua = write_lua(OUT / "soak.lua", kinds, OUT / "bodies", OUT / "expected")
    server: servers.RunningServer | None = None
    try:
        with servers.running(spec, OUT, ROOT) as server:
            result["server_log_path"] = str(server.log_path.relative_to(ROOT))
            result["server_start_s"] = round(server.started_s, 2)
            roles = wait_for_workers(server, expected_workers, options.log_level)
            probes = probe_all(server.base_url, kinds, OUT / "expected")
            result["probes"] = [asdict(p) for p in probes.values()]
            if any(p.problem for p in probes.values()):
                result["error"] = "a probe did not get its documented answer; no load was run"
            else:
                result["load"], result["memory"], result["workers"] = load(
                    server, lua, kinds, roles, options
                )
    except (servers.ServerFailed, wrk.WrkFailed) as error:
        result["error"] = str(error)
    if server is not None:
        result["server_exit_code"] = server.process.returncode
        result["server_log"] = scan_log(server.log_path)
    return result


def load(
    server: servers.RunningServer,
    lua: Path,
    kinds: Sequence[Kind],
    roles: dict[int, str],
    options: Options,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    print(
        f"soak: {options.seconds} s, {options.connections} connections against "
        f"{server.base_url} (pid {server.pid})",
        flush=True,
    )
    sampler = memory.MemorySampler(server.pid)
    sampler.start()
    pressure = ConnectionPressure(
        server.base_url, trickling=TRICKLING, silent=SILENT, head_timeout_s=HEAD_TIMEOUT_S
    )
    pressure.start()
    raw = OUT / "wrk.txt"
    began = time.perf_counter()
    try:
        # One thread per connection: the Lua script attributes answers by thread.
        outcome = wrk.run(
            server.base_url,
            lua,
            duration_s=options.seconds,
            connections=options.connections,
            threads=options.connections,
            raw_path=raw,
        )
    finally:
        pressured = pressure.stop()
        sampler.stop()
    wall = time.perf_counter() - began
    roles_after = process_roles(server.pid)
    try:
        ready_after: int | str = httpx.get(server.base_url + "/readyz", timeout=10).status_code
    except httpx.HTTPError as error:
        ready_after = f"{type(error).__name__}"
    counts = parse_counts(raw.read_text())
    rows = kind_results(kinds, counts, outcome.duration_s)
    answered = sum(k["answered"] for k in rows)
    load_result = {
        "wrk": outcome.to_dict(),
        "wall_s": round(wall, 1),
        "connections": options.connections,
        "wrk_threads": options.connections,
        "sent": sum(counts.sent.values()),
        "answered": answered,
        "per_s": round(answered / outcome.duration_s, 1),
        "unattributed": {str(s): n for s, n in counts.unattributed.items()},
        "kinds": rows,
        "pressure": pressured,
    }
    workers = {
        "before": sorted(p for p, r in roles.items() if r == "worker"),
        "after": sorted(p for p, r in roles_after.items() if r == "worker"),
        "ready_after": ready_after,
    }
    return load_result, memory_report(sampler.samples, roles, roles_after), workers
