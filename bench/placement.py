"""Where a burst of connections lands on two worker processes; each burst opens 8 connections at
once, as a load generator's 8 callers do.

    .venv/bin/python -m bench.placement [--bursts 30] [--connections 8] [--g1-rounds 4]

Toy servers first (each worker a uvloop process answering its pid): one listening socket shared
by both (as uvicorn shares its HTTP port) against a socket each with SO_REUSEPORT. Then a real
`vae-serve` (2 workers, the committed bundle) on its gRPC port, connections balanced
(VAE_GRPC_BALANCE_CONNECTIONS=true, the default) and not: which worker holds each connection is
read from /proc (`connections_by_process`). Prints, for each way, how many bursts split the
connections how (8/0, 7/1, ...). With --g1-rounds, what the split costs: bench.grpc_bench's G1
through h2load against a fresh server each run, unbalanced and balanced in turn."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import uvloop

from bench.servers import ServerSpec, free_port, running


def _serve(listener: socket.socket) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(str(os.getpid()).encode().ljust(8))
        await writer.drain()
        writer.close()

    async def main() -> None:
        await asyncio.start_server(answer, sock=listener)
        await asyncio.sleep(3600)

    uvloop.run(main())


def _listener(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def splits(shared: bool, bursts: int, connections: int) -> collections.Counter[str]:
    port = free_port()
    one = _listener(port, reuse_port=False) if shared else None
    workers = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # a worker: serves until killed
            _serve(one if one is not None else _listener(port, reuse_port=True))
            os._exit(0)
        workers.append(pid)
    try:
        time.sleep(1.0)  # both listening
        found: collections.Counter[str] = collections.Counter()
        for _ in range(bursts):
            opened = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
            for sock in opened:
                sock.sendall(b"?")
            pids = collections.Counter(sock.recv(8) for sock in opened)
            for sock in opened:
                sock.close()
            most = max(pids.values())
            found[f"{most}/{connections - most}"] += 1
            time.sleep(0.02)
        return found
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if one is not None:
            one.close()


def _socket_owners(pids: Iterable[int]) -> dict[int, int]:
    """Socket inode -> the pid (of `pids`) holding it, from each process's /proc/PID/fd."""
    owner: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        owner[int(target[8:-1])] = pid
    return owner


def _sockets_on(port: int) -> Iterator[tuple[str, int]]:
    """(state, inode) of each TCP socket whose local port is `port` (/proc/net/tcp, tcp6);
    state 01 is established, 0A listening."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    yield fields[3], int(fields[9])


def connections_by_process(
    port: int, pids: Iterable[int], established: bool = True
) -> collections.Counter[int]:
    """How many TCP connections to local `port` each of `pids` holds (their server side):
    established ones, or any (those the client closed and the server not yet)."""
    pids = list(pids)
    owner = _socket_owners(pids)
    held: collections.Counter[int] = collections.Counter({pid: 0 for pid in pids})
    for state, inode in _sockets_on(port):
        fits = state == "01" or (not established and state != "0A")
        if fits and inode in owner:
            held[owner[inode]] += 1
    return held


def listening(port: int, pids: Iterable[int]) -> set[int]:
    """Which of `pids` listen on `port` (a server's workers, not its helpers)."""
    owner = _socket_owners(pids)
    return {owner[inode] for state, inode in _sockets_on(port) if state == "0A" and inode in owner}


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (a server's workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def burst_split(port: int, workers: set[int], connections: int) -> collections.Counter[int]:
    """Open `connections` at once to `port`, wait until the workers hold them all, and say
    how many each holds; then close them and wait until the workers let them go."""
    opened = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    try:
        deadline = time.monotonic() + 5.0
        last: collections.Counter[int] = collections.Counter()
        while True:
            held = connections_by_process(port, workers)
            # All held, and the same twice 50 ms apart: no socket still on its way.
            settled = held == last and sum(held.values()) >= connections
            if settled or time.monotonic() > deadline:
                return held
            last = held
            time.sleep(0.05)
    finally:
        for sock in opened:
            sock.close()
        deadline = time.monotonic() + 5.0
        while sum(connections_by_process(port, workers, established=False).values()) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        # A worker forgets a connection a loop turn after closing its socket: a burst opened
        # at once would meet the last one's connections still counted.
        time.sleep(0.1)


@contextlib.contextmanager
def vae_serve(balance: bool) -> Iterator[tuple[int, set[int]]]:
    """A `vae-serve` of 2 workers on the committed bundle: its gRPC port and worker pids."""
    from tests.bundles import committed_repository  # the bundle the tests serve

    grpc_port = free_port()
    env = {
        "VAE_MODEL_REPOSITORY": str(committed_repository()),
        "VAE_PORT": "{port}",
        "VAE_GRPC_PORT": str(grpc_port),
        "VAE_WORKERS": "2",
        "VAE_LOG_LEVEL": "warning",
        "VAE_GRPC_BALANCE_CONNECTIONS": str(balance).lower(),
    }
    serve = str(Path(sys.executable).with_name("vae-serve"))
    spec = ServerSpec(f"placement-{balance}", [serve], env, "GET", "/readyz")
    with tempfile.TemporaryDirectory() as logs, running(spec, Path(logs), Path.cwd()) as server:
        time.sleep(1.0)  # both workers listening (readyz answers from one)
        yield grpc_port, listening(grpc_port, children(server.pid))


def served_splits(balance: bool, bursts: int, connections: int) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    with vae_serve(balance) as (port, workers):
        for _ in range(bursts):
            held = burst_split(port, workers, connections)
            most = max(held.values())
            found[f"{most}/{sum(held.values()) - most}"] += 1
    return found


def _count_into(split: collections.Counter[int], port: int, workers: set[int]) -> None:
    split.update(connections_by_process(port, workers))


def g1_rounds(rounds: int, seconds: int) -> dict[str, list[tuple[float, list[int]]]]:
    """G1 of `python -m bench.grpc_bench` (single-item ModelInfer, the reconstruction, 8
    callers through h2load) against a fresh 2-worker server each run, balanced and not in
    turn: calls a second and how the 8 connections were split (read 3 s into the run)."""
    import threading

    import numpy as np
    from sklearn.datasets import load_digits

    from bench import h2load

    row = load_digits().data[:1].astype(np.float32)
    message = h2load.infer_message("digits-vae", "x", row, ("reconstruction",))
    found: dict[str, list[tuple[float, list[int]]]] = {"false": [], "true": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for balance in (False, True):
                with vae_serve(balance) as (port, workers):
                    target = f"127.0.0.1:{port}"
                    body = h2load.prepare(
                        target, h2load.INFER_PATH, [message], Path(folder) / "G1.bin"
                    )
                    h2load.warm_up(target, body, 8)
                    split: collections.Counter[int] = collections.Counter()
                    peek = threading.Timer(3.0, _count_into, (split, port, workers))
                    peek.start()
                    run = h2load.run(
                        target, body, connections=8, seconds=seconds, items=1,
                        out=Path(folder) / "run.txt",
                    )  # fmt: skip
                    peek.join()
                    held = sorted(split.values(), reverse=True)
                    found[str(balance).lower()].append((run.calls_per_s, held))
                    print(
                        f"G1 balanced={str(balance).lower()}: {run.calls_per_s:,.0f} calls/s, "
                        f"p99 {run.p99_ms:.2f} ms, connections {'/'.join(map(str, held))}",
                        flush=True,
                    )
    return found


def _text(found: collections.Counter[str]) -> str:
    return ", ".join(f"{split}: {n}" for split, n in sorted(found.items(), reverse=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__)
    parser.add_argument("--bursts", type=int, default=30)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--no-toys", action="store_true", help="vae-serve only")
    parser.add_argument(
        "--g1-rounds", type=int, default=0,
        help="then this many rounds of G1 (h2load, 8 callers), unbalanced and balanced in turn",
    )  # fmt: skip
    parser.add_argument("--g1-seconds", type=int, default=8)
    options = parser.parse_args(argv)
    if not options.no_toys:
        for shared in (True, False):
            found = splits(shared, options.bursts, options.connections)
            label = "one shared socket" if shared else "SO_REUSEPORT"
            print(f"{label:34} {_text(found)}", flush=True)
    for balance in (False, True):
        found = served_splits(balance, options.bursts, options.connections)
        label = f"vae-serve gRPC, balanced={str(balance).lower()}"
        print(f"{label:34} {_text(found)}", flush=True)
    if options.g1_rounds:
        runs = g1_rounds(options.g1_rounds, options.g1_seconds)
        for label, results in runs.items():
            rates = ", ".join(f"{rate:,.0f}" for rate, _ in results)
            print(f"G1 balanced={label}: {rates} calls/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
