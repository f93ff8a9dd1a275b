"""What each hostile request of the suite costs a real server: status, time to refuse, peak
memory, error size (issue 18).

    .venv/bin/python -m bench.hostile_figures

The attacks are the hostile-client suite's own (tests/e2e/test_hostile_clients.py), against a
server started the way the suite starts it (two workers, API keys on), so the figures are for
exactly what the tests hold to their bounds. Each is sent three times; the table shows the
worst. Peak memory is the worker's kernel high-water mark (VmHWM), reset before each request,
minus its resident size just before: page-granular, so small requests read 0. Then, in this
process, what the JSON reader's two paths and the body reader cost on valid bodies (the
figures behind their choices). Writes bench/HOSTILE.md and prints it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import tracemalloc
from collections.abc import Callable

import httpx
import numpy as np
import orjson

from bench.protocol_cost import protocol_section
from bench.shared import ROOT, per_call_us
from service.codecs import json_read
from service.dataplane.body import BodyReader
from tests.e2e.hostile import MIB, can_reset_peaks, measured, worker_pids
from tests.e2e.processes import running_server
from tests.e2e.test_hostile_clients import ATTACKS, AUTH, ENV, Attack

REPEATS = 3
TIMING_S = 0.5  # per in-process figure


def peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def in_process_section() -> list[str]:
    """The costs behind the JSON reader's and the body reader's choices, in-process: each way
    of reading a valid body (whole when small, cut and chunked otherwise), the scan for number
    arrays against a regex, and a read under an asyncio timeout against one without."""
    rng = np.random.default_rng(0)
    rows = [
        "## Reading a body, in-process",
        "",
        "JSON bodies of random values in 0..16 (orjson's output), one call at a time in this "
        "process. `whole`: parsed whole by orjson, the path of bodies up to "
        f"{json_read.SMALL_BODY_BYTES // 1024} kB whose quotes prove no string sits in a list; "
        "`cut`: number arrays cut out and parsed in chunks, the path of every other body. Peak: "
        "tracemalloc's, over the body's size.",
        "",
        "| body | bytes | whole us | whole peak | cut us | cut peak |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for items, features in ((1, 64), (1, 784), (64, 64), (64, 784), (4096, 64)):
        values = (rng.random((items, features)) * 16).astype(np.float32)
        body = orjson.dumps({"inputs": values.tolist()})

        def read(body: bytes = body) -> object:
            return json_read.array_field(json_read.parse_json_object(body), "inputs")

        cells = []
        for small in (json_read.SMALL_BODY_BYTES, -1):
            saved, json_read.SMALL_BODY_BYTES = json_read.SMALL_BODY_BYTES, small
            try:
                if small < 0 or len(body) <= saved:
                    cells += [
                        f"{per_call_us(read, TIMING_S):,.1f}",
                        f"{peak_bytes(read) / len(body):.1f}x",
                    ]
                else:
                    cells += ["(cut)", ""]
            finally:
                json_read.SMALL_BODY_BYTES = saved
        rows.append(f"| {items} x {features} | {len(body):,} | " + " | ".join(cells) + " |")
    span = b'{"inputs": ' + orjson.dumps((rng.random((4096, 64)) * 16).tolist()) + b"}"
    start = span.index(b"[")

    def scan() -> object:
        return json_read._number_array_at(span, start)

    def regex() -> object:
        run = json_read._NUMBER_RUN.match(span, start)
        assert run is not None
        end = span.rfind(b"]", start, run.end()) + 1
        return span.count(b"[", start, end) == span.count(b"]", start, end)

    scan_ns, regex_ns = (per_call_us(call, TIMING_S) * 1000 / len(span) for call in (scan, regex))
    rows += [
        "",
        f"Finding a {len(span) / 1e6:.1f} MB array of numbers: `_number_array_at` "
        f"{scan_ns:.2f} ns a byte; a regex over it and two bracket "
        f"counts {regex_ns:.2f} ns a byte.",
        "",
        *reader_costs(),
        "",
    ]
    return rows


def reader_costs() -> list[str]:
    """Reading an already-arrived body with `BodyReader`, alone and inside the asyncio timeout
    that would bound it in the app (uvloop, as the server runs)."""
    import asyncio

    import uvloop

    body = b"x" * 1200

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def measure() -> tuple[float, float]:
        loop = asyncio.get_running_loop()

        async def plain() -> bytes:
            return await BodyReader(receive, "1200", None).read(1 << 20)

        async def timed() -> bytes:
            async with asyncio.timeout_at(loop.time() + 30):
                return await BodyReader(receive, "1200", None).read(1 << 20)

        results = []
        for call in (plain, timed):
            for _ in range(1000):
                await call()
            began = time.perf_counter()
            for _ in range(20_000):
                await call()
            results.append((time.perf_counter() - began) / 20_000 * 1e6)
        return results[0], results[1]

    plain, timed = uvloop.run(measure())
    return [
        f"Reading a 1.2 kB body that has arrived: {plain:.1f} us; inside `asyncio.timeout_at` "
        f"{timed:.1f} us. The body's deadline is therefore a timer in the HTTP protocol "
        "(service.server.http_limits), not an asyncio timeout around the read."
    ]


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
    lines += in_process_section()
    lines += protocol_section()
    text = "\n".join(lines)
    (ROOT / "bench" / "HOSTILE.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
