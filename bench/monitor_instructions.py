"""CPU instructions monitoring adds to a single-item /anomaly-score, counted by valgrind's
callgrind: where the timings of bench.asgi_cost move by +-1 us between runs, a count of
instructions in one process moves by less than 0.2%.

    .venv/bin/python -m bench.monitor_instructions [--requests 2048] [--rounds 2]

One process runs under callgrind: the app `vae-serve` builds (as bench.asgi_cost builds it, on
the default bench model) warms up, then serves phases of N single-item requests with the
models' monitors detached (off) and attached (on) in turn, `rounds` of each. The app's timer
writes what monitoring kept aside every 0.25 s; here, the timer stopped, a write follows every
`--write-every` requests: 1,024 by default, one worker's full rate (~4,000 requests a second)
written as often as the timer would; `--write-every 25`, a worker serving 100 requests a
second, shows what a write's fixed part costs each item at low traffic. Callgrind counts only
the phases (`callgrind_control`: zeroed before each, dumped after) and only the serving
thread. Within one process the layout of memory is the same for both modes, so what moves the
count between processes (addresses that hash) cancels. Needs valgrind
(scripts/bench-tools.sh); a run takes about a minute a phase.

To count another checkout OTHER (its service/ and bench/), run
`PYTHONPATH=OTHER .venv/bin/python bench/monitor_instructions.py` from this one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

WRITE_EVERY = 1024  # requests between the writes the app's timer makes at full rate (above)
SETTLE = 300  # requests after a switch, before the count starts


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise SystemExit(f"the counted process ended ({process.returncode}) before {path.name}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {path.name} after {timeout_s:.0f} s")
        time.sleep(0.2)


def _handshake(folder: Path, name: str) -> None:
    """The counted process's side: say `name` is reached, wait until the counter answers."""
    (folder / f"{name}.ready").touch()
    while not (folder / f"{name}.go").exists():
        time.sleep(0.01)


async def _serve_phases(requests: int, write_every: int, folder: Path, phases: list[str]) -> None:
    """The counted process: warm up, then each phase's requests between two handshakes."""
    import service.dataplane.monitor_flush as timer
    from bench.asgi_cost import monitored_app

    # The app's timer stopped: under callgrind a request takes ~50 times as long, so its
    # writes every 0.25 s would come every ~25 requests, each costing its fixed part (a write
    # of few items costs ~60 us, bench/MONITORING.md); here they come every `write_every`.
    timer.MONITOR_FLUSH_S = 1e9

    async with monitored_app("default", 4000) as (one, attach, write_kept):
        for number, mode in enumerate(phases):
            attach(mode == "on")
            for _ in range(SETTLE):
                await one()
            write_kept()
            _handshake(folder, f"start{number}")
            for i in range(requests):
                await one()
                if i % write_every == write_every - 1:
                    write_kept()
            _handshake(folder, f"stop{number}")


def _control(control: str, *arguments: str | int) -> None:
    """Tell the counted process's callgrind to start, zero or dump its counts."""
    subprocess.run([control, *map(str, arguments)], check=True, capture_output=True)


def _thread_totals(dump: Path) -> int:
    """Instructions in one callgrind dump (its `totals:` line)."""
    match = re.search(r"^totals:\s+(\d+)", dump.read_text(errors="replace"), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{dump}: no totals line")
    return int(match.group(1))


def count(requests: int, rounds: int, write_every: int) -> list[tuple[str, float]]:
    """(mode, instructions per request) for each phase, in the order run."""
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        raise SystemExit("valgrind is not installed: scripts/bench-tools.sh installs it")
    phases = ["off", "on"] * rounds
    with tempfile.TemporaryDirectory(prefix="vae-instructions-") as name:
        folder = Path(name)
        environment = {
            **os.environ,
            "PYTHONHASHSEED": "0",
            "VAE_LOG_LEVEL": "warning",
            "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).parent.parent)),
        }
        command = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            f"--callgrind-out-file={folder / 'counts'}",
            sys.executable,
            str(Path(__file__).resolve()),  # this file, whichever tree PYTHONPATH names
            "--child",
            str(folder),
            "--requests",
            str(requests),
            "--write-every",
            str(write_every),
            *phases,
        ]
        log = (folder / "valgrind.log").open("wb")
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            for number in range(len(phases)):
                _wait_for(folder / f"start{number}.ready", process)
                switch = ["-i", "on"] if number == 0 else ["-z"]
                subprocess.run(
                    [control, *switch, str(process.pid)], check=True, capture_output=True
                )
                (folder / f"start{number}.go").touch()
                _wait_for(folder / f"stop{number}.ready", process)
                _control(control, "-d", process.pid)
                (folder / f"stop{number}.go").touch()
            if process.wait(timeout=600) != 0:
                raise SystemExit((folder / "valgrind.log").read_text(errors="replace")[-3000:])
        finally:
            if process.poll() is None:
                process.kill()
        # Dump k of thread 1 (the event loop's, which serves every request here): counts.k-01
        return [
            (mode, _thread_totals(folder / f"counts.{number + 1}-01") / requests)
            for number, mode in enumerate(phases)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.monitor_instructions", description=__doc__
    )
    parser.add_argument("--requests", type=int, default=2048, help="requests a phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases of each mode")
    parser.add_argument(
        "--write-every", type=int, default=WRITE_EVERY, help="requests between writes"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("phases", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child is not None:  # the process callgrind counts
        asyncio.run(
            _serve_phases(options.requests, options.write_every, options.child, options.phases)
        )
        return 0
    import service

    print(f"service from {Path(service.__file__).parent}", flush=True)  # which tree is counted
    measured = count(options.requests, options.rounds, options.write_every)
    for mode, per_request in measured:
        print(f"{mode}: {per_request:,.0f} instructions per request")
    off = statistics.fmean(value for mode, value in measured if mode == "off")
    on = statistics.fmean(value for mode, value in measured if mode == "on")
    print(
        f"monitoring: {on - off:+,.0f} instructions per single-item request "
        f"({(on - off) / off:+.2%} of {off:,.0f}), a write every {options.write_every}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
