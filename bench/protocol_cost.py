"""What the HTTP protocol class costs per request, apart from the app and the network.

    .venv/bin/python -m bench.protocol_cost

One keep-alive connection on uvloop with a transport that discards what it is given; the same
1.2 kB JSON request (the S1 body of `make bench`) is fed to the protocol again and again and a
do-nothing ASGI app answers it. Compared: uvicorn's own httptools protocol, ours with one-write
answers (service.server.one_write) and ours under the connection limits
(service.server.http_limits, what
vae-serve runs). CPU time per request, best of five rounds of 20,000.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.server.http_limits import LimitedHttpToolsProtocol
from service.server.one_write import OneWriteHttpToolsProtocol

ROUNDS, REQUESTS = 5, 20_000
BODY = b'{"inputs": [[' + b", ".join(b"%.15f" % (i / 7) for i in range(64)) + b"]]}"
REQUEST = (
    b"POST /reconstruct HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"Accept: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY


async def _answer(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


class _DiscardingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _per_request_us(protocol_class: type[HttpToolsProtocol]) -> float:
    config = Config(app=_answer, log_level="warning", access_log=False, lifespan="off")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(_DiscardingTransport())

    async def one() -> None:
        protocol.data_received(REQUEST)
        while protocol.cycle is None or not protocol.cycle.response_complete:
            await asyncio.sleep(0)

    for _ in range(2_000):
        await one()
    best = float("inf")
    for _ in range(ROUNDS):
        began = time.process_time()
        for _ in range(REQUESTS):
            await one()
        best = min(best, (time.process_time() - began) / REQUESTS * 1e6)
    protocol.connection_lost(None)
    return best


CANDIDATES: dict[str, type[HttpToolsProtocol]] = {
    "uvicorn's httptools protocol": HttpToolsProtocol,
    "one-write answers (service.server.one_write)": OneWriteHttpToolsProtocol,
    "under the connection limits (service.server.http_limits: what vae-serve runs)": (
        LimitedHttpToolsProtocol
    ),
}


def protocol_section() -> list[str]:
    figures = {name: uvloop.run(_per_request_us(cls)) for name, cls in CANDIDATES.items()}
    base = figures["one-write answers (service.server.one_write)"]
    rows = [
        "## The HTTP protocol's own cost, in-process",
        "",
        "`.venv/bin/python -m bench.protocol_cost`: one keep-alive connection on uvloop, a "
        f"{len(REQUEST):,}-byte JSON request fed {REQUESTS:,} times, a do-nothing app; CPU "
        f"per request, best of {ROUNDS} rounds. The transport's writes cost nothing here, so "
        "what one-write answers save (a write call per answer) does not show, only what they "
        "add; the limits add their callbacks' work. Runs differ by about 1.5 us.",
        "",
        "| protocol | us per request | vs one-write |",
        "|---|--:|--:|",
    ]
    for name, us in figures.items():
        rows.append(f"| {name} | {us:.1f} | {us - base:+.1f} |")
    return [*rows, ""]


if __name__ == "__main__":
    print("\n".join(protocol_section()))
