"""Each serving choice measured against the defaults: one setting changed at a time.

    .venv/bin/python -m bench.choices [--duration 5]

Runs single-item JSON, batch-64 JSON and batch-64 npy `/reconstruct` (8 connections) on the
default model for the service's defaults and for each variant, one server at a time, and
writes `bench/CHOICES.md`. It is how the defaults in `service/settings.py` were chosen.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from bench import servers, wrk
from bench.bodies import Body, write_bodies
from bench.models import load_model
from bench.shared import ROOT

OUT = ROOT / "bench" / "out" / "choices"
VENV_BIN = ROOT / ".venv" / "bin"
SCENARIOS = {"S1 json x1": "json1", "S2 json x64": "json64", "S3 npy x64": "npy64"}


@dataclass(frozen=True)
class Variant:
    label: str
    why: str
    env: dict[str, str]
    command: list[str] | None = None  # None: vae-serve


VARIANTS = [
    Variant("defaults", "workers auto (one per core), 1 intra-op thread, inline <= 4096", {}),
    Variant("VAE_WORKERS=1", "one process for both cores", {"VAE_WORKERS": "1"}),
    Variant("VAE_INTRA_OP_THREADS=2", "parallel kernels per call", {"VAE_INTRA_OP_THREADS": "2"}),
    Variant(
        "VAE_INLINE_MAX_VALUES=0",
        "every call handed to a thread",
        {"VAE_INLINE_MAX_VALUES": "0"},
    ),
    Variant(
        "VAE_FAST_PATH=false", "array routes through FastAPI's router", {"VAE_FAST_PATH": "false"}
    ),
    Variant(
        "asyncio loop + h11",
        "uvicorn without uvloop and httptools",
        {},
        [
            str(VENV_BIN / "python"), "-m", "uvicorn", "service.server.cli:app_from_environment",
            "--factory", "--host", "127.0.0.1", "--port", "{port}", "--workers", "2",
            "--loop", "asyncio", "--http", "h11", "--no-access-log", "--log-level", "warning",
        ],
    ),
]  # fmt: skip


def measure(
    variant: Variant, repository: Path, bodies: dict[str, Body], duration: int
) -> dict[str, wrk.WrkResult | str]:
    env = {
        "VAE_MODEL_REPOSITORY": str(repository),
        "VAE_HOST": "127.0.0.1",
        "VAE_PORT": "{port}",
        "VAE_LOG_LEVEL": "warning",
        **variant.env,
    }
    command = variant.command or [str(VENV_BIN / "vae-serve")]
    spec = servers.ServerSpec(variant.label, command, env, "GET", "/readyz")
    results: dict[str, wrk.WrkResult | str] = {}
    try:
        with servers.running(spec, OUT, ROOT) as server:
            for scenario, key in SCENARIOS.items():
                lua = wrk.write_lua(OUT / f"{key}.lua", bodies[key].path, bodies[key].headers)
                url = f"{server.base_url}/reconstruct"
                wrk.run(url, lua, duration_s=1, connections=8, threads=1)  # warm-up
                results[scenario] = wrk.run(url, lua, duration_s=duration, connections=8, threads=1)
    except (servers.ServerFailed, wrk.WrkFailed) as error:
        results = dict.fromkeys(SCENARIOS, f"failed: {error}".splitlines()[0])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    model = load_model("default")
    bodies = write_bodies(model.rows, OUT / "bodies", 64)
    rows = []
    for variant in VARIANTS:
        print(f"== {variant.label}", flush=True)
        results = measure(variant, model.repository, bodies, args.duration)
        cells = []
        for scenario, key in SCENARIOS.items():
            result = results[scenario]
            if isinstance(result, str):
                cells.append(result)
                continue
            items = result.ok_requests_per_s * bodies[key].items
            cells.append(
                f"{result.ok_requests_per_s:,.0f} req/s, {items:,.0f} items/s, "
                f"p99 {result.p99_ms:.1f} ms"
                + (f", {result.errors} errors" if result.errors else "")
            )
            print(f"   {scenario}: {cells[-1]}", flush=True)
        rows.append(f"| {variant.label} | {variant.why} | " + " | ".join(cells) + " |")
    header = "| variant | what changes | " + " | ".join(SCENARIOS) + " |"
    text = "\n".join(
        [
            "# Serving choices, measured",
            "",
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, model "
            f"`{model.name}` (64 inputs), `/reconstruct` at 8 connections, wrk -t1 on the same "
            f"cores, {args.duration} s per run after a 1 s warm-up, one server at a time.",
            "",
            f"Command: `.venv/bin/python -m bench.choices --duration {args.duration}`",
            "",
            header,
            "|" + "---|" * (2 + len(SCENARIOS)),
            *rows,
            "",
        ]
    )
    (ROOT / "bench" / "CHOICES.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
