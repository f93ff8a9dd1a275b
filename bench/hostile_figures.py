"""What each hostile request of the suite costs a real server: status, time to refuse, peak
memory, error size (issue 18).

    .venv/bin/python -m bench.hostile_figures

The attacks are the hostile-client suite's own (tests/e2e/test_hostile_clients.py), against a
server started the way the suite starts it (two workers, API keys on), so the figures are for
exactly what the tests hold to their bounds. Each is sent three times; the table shows the
worst. Peak memory is the worker's kernel high-water mark (VmHWM), reset before each request,
minus its resident size just before: page-granular, so small requests read 0. Writes
bench/HOSTILE.md and prints it.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import httpx

from tests.e2e.hostile import MIB, can_reset_peaks, measured, worker_pids
from tests.e2e.processes import running_server
from tests.e2e.test_hostile_clients import ATTACKS, AUTH, ENV, Attack

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3


def main() -> int:
    if not can_reset_peaks():
        print("this kernel does not let a process reset its peak memory (clear_refs)")
        return 1
    rows = []
    with running_server(ENV) as (base, process), httpx.Client(timeout=60) as client:
        pids = worker_pids(process)
        for _ in range(40):  # warm both workers, as the suite does
            client.post(base + "/reconstruct", json={"inputs": [[1.0] * 64] * 64}, headers=AUTH)
        for name in sorted(ATTACKS, key=lambda key: -len(ATTACKS[key].body())):
            attack = ATTACKS[name]
            body = attack.body()
            worst_seconds, worst_peak, status, error_bytes = 0.0, 0, 0, 0

            def send(attack: Attack = attack, body: bytes = body) -> httpx.Response:
                return client.request(
                    attack.method, base + attack.path, content=body, headers=attack.headers
                )

            for _ in range(REPEATS):
                response, cost = measured(pids, send)
                assert isinstance(response, httpx.Response)
                status, error_bytes = response.status_code, len(response.content)
                worst_seconds = max(worst_seconds, cost.seconds)
                worst_peak = max(worst_peak, cost.peak_extra)
            ratio = worst_peak / len(body) if body else 0.0
            rows.append(
                f"| {name} | {len(body) / 1e6:,.3f} | {status} | {worst_seconds * 1000:,.1f} | "
                f"{worst_peak / MIB:,.1f} | {ratio:.1f}x | {error_bytes} |"
            )
    lines = [
        "# What hostile requests cost",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores. Command: "
        "`.venv/bin/python -m bench.hostile_figures`. A real `vae-serve` (two workers, API keys "
        f"on), each request sent {REPEATS} times, the worst shown. Targets (issue 18): a 4xx "
        "within 1 s, under 8x the body in extra memory (with a 16 MiB floor for what any "
        "request costs), an error body that never echoes the request.",
        "",
        "| request | body MB | status | ms to answer | peak extra MiB | x body | error bytes |",
        "|---|--:|--:|--:|--:|--:|--:|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    (ROOT / "bench" / "HOSTILE.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
