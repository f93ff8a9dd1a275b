"""Where a burst of connections lands on two worker processes: one listening socket shared by
both (as uvicorn shares its HTTP port) against a socket each with SO_REUSEPORT (our gRPC
port). Each worker is a uvloop process answering its pid; each burst opens 8 connections at
once, as a load generator's 8 callers do.

    .venv/bin/python -m bench.placement [--bursts 30] [--connections 8]

Prints, for each way, how many bursts split the connections how (8/0, 7/1, ...)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import socket
import time
from collections.abc import Sequence

import uvloop


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def splits(shared: bool, bursts: int, connections: int) -> collections.Counter[str]:
    port = _free_port()
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__)
    parser.add_argument("--bursts", type=int, default=30)
    parser.add_argument("--connections", type=int, default=8)
    options = parser.parse_args(argv)
    for shared in (True, False):
        found = splits(shared, options.bursts, options.connections)
        label = "one shared socket" if shared else "SO_REUSEPORT"
        text = ", ".join(f"{split}: {n}" for split, n in sorted(found.items(), reverse=True))
        print(f"{label:18} {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
