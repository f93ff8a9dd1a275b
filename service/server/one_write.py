"""Send an answer's headers and body in one write.

uvicorn writes the status line and headers when the app sends `http.response.start` and the
body when it sends `http.response.body`: two writes, a few microseconds apart. A replica killed
between them (SIGKILL, the OOM killer, a crash) leaves the balancer holding headers it has
already passed on to the client, and no balancer can retry a response it has begun: the client
gets an answer cut short (docs/deployment.md, Serving many replicas: seen under
`scripts/replicas-smoke.sh`'s SIGKILL).
Held back until the body comes, the headers leave with it, so a replica that dies mid-answer
has sent nothing, and nginx retries the request on another replica.

Each request's transport is wrapped: the first write of a final (non-1xx) header block is held
and joined to the next write. HEAD answers (no body write follows) and `100 Continue` pass
straight through; closing the transport flushes whatever is held. One write fewer per answer,
too. Used where uvicorn's httptools parser runs (the serve extra installs it); uvicorn's h11
fallback keeps its own behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_END = b"\r\n\r\n"


def is_final_header_block(data: bytes | bytearray | memoryview) -> bool:
    """Only a status line and headers, of a final (not 1xx) response."""
    block = bytes(data)
    return (
        block.startswith((b"HTTP/1.1 ", b"HTTP/1.0 "))
        and block[9:10] != b"1"
        and block.endswith(HEADER_END)
        and block.find(HEADER_END) == len(block) - len(HEADER_END)
    )


class HeadersWithBody:
    """One request's transport: holds its response headers until the body is written."""

    def __init__(
        self, transport: asyncio.Transport, hold: bool, closer: Callable[[], None] | None = None
    ) -> None:
        self._transport = transport
        self._hold = hold  # until the first final header block has been seen
        self._held: bytes | None = None
        # What closing means for the connection (service.server.http_limits may linger first).
        self._close = closer or transport.close

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            joined, self._held = self._held + bytes(data), None
            self._transport.write(joined)
            return
        if self._hold and is_final_header_block(data):
            self._hold = False
            self._held = bytes(data)
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:  # headers without a body: the app stopped; send what it said
            held, self._held = self._held, None
            self._transport.write(held)
        self._close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the real one's
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with each request's headers sent together with its body."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            hold = cycle.scope["method"] != "HEAD"
            cycle.transport = HeadersWithBody(  # type: ignore[assignment]
                self.transport, hold, self.close_after_answer
            )

    def close_after_answer(self) -> None:
        """Close the connection once an answer that ends it has been written."""
        self.transport.close()
