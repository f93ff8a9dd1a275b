"""Header blocks: a client's read with the `hpack` library (bounded, and each distinct block
decoded once per state of the connection's table), ours written as constant bytes.

A gRPC client sends the same headers on every call; once its first call put them in the
connection's dynamic table, later blocks are the same bytes (references into the table).
Decoding such a block changes nothing, so its result is kept and reused until a block that
changes the table comes. Measured on this transport's first prototype (canned answers,
perf_analyzer at 8 callers, one sitting): 28,556 calls a second with the reuse, 16,356 decoding
every block with hpack.

Our own blocks use only the static table and literals that are never indexed (RFC 7541 6.2.2),
so they never change the client's table and can be built once and sent as they are.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from hpack import Decoder
from hpack.exceptions import HPACKError

from service.grpc.native.frames import COMPRESSION_ERROR, ConnectionError_

# Our SETTINGS_HEADER_TABLE_SIZE (the default) and the largest header list we read.
TABLE_BYTES = 4096
MAX_HEADER_LIST_BYTES = 16_384
_REUSED_BLOCKS = 64  # distinct blocks remembered per table state (a client repeats a few)

Headers = tuple[tuple[bytes, bytes], ...]


class HeaderReader:
    def __init__(self) -> None:
        self.decoder = Decoder(max_header_list_size=MAX_HEADER_LIST_BYTES)
        self.decoder.max_allowed_table_size = TABLE_BYTES
        self.generation = 0
        self.known: dict[bytes, Headers] = {}

    def read(self, block: bytes) -> Headers:
        found = self.known.get(block)
        if found is not None:
            return found
        table = self.decoder.header_table
        before = (len(table.dynamic_entries), table.maxsize, _first(table.dynamic_entries))
        try:
            headers = tuple(
                (bytes(name), bytes(value)) for name, value in self.decoder.decode(block, raw=True)
            )
        except HPACKError as error:  # a bad block leaves the table unknown: the connection ends
            raise ConnectionError_(COMPRESSION_ERROR, f"header block: {error}") from None
        after = (len(table.dynamic_entries), table.maxsize, _first(table.dynamic_entries))
        if after != before or after[2] is not before[2]:
            self.known.clear()  # the table changed: the same bytes may now mean other headers
        elif len(self.known) < _REUSED_BLOCKS:
            self.known[block] = headers
        return headers


def _first(entries: object) -> object:
    return entries[0] if entries else None  # type: ignore[index]


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """RFC 7541 5.1: `value` in a prefix of `prefix_bits` bits, the byte's other bits `flags`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0x00) + data  # not Huffman-coded


def literal(name: bytes, value: bytes) -> bytes:
    """A field as a literal never indexed, with a new name (RFC 7541 6.2.3)."""
    return b"\x10" + _string(name) + _string(value)


# :status 200 is static entry 8, one byte (RFC 7541 Appendix A).
RESPONSE_HEADERS = b"\x88" + literal(b"content-type", b"application/grpc")


def _percent_encoded(message: str) -> bytes:
    """grpc-message's encoding (gRPC over HTTP/2): UTF-8, bytes outside 0x20-0x7E and % as %XX."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def metadata_field(key: str, value: str | bytes) -> bytes:
    name = key.lower().encode("ascii")
    if key.endswith("-bin"):
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        return literal(name, base64.b64encode(raw).rstrip(b"="))
    text = value if isinstance(value, str) else value.decode("ascii", "replace")
    return literal(name, text.encode("ascii", "replace"))


def trailers(
    code: int, message: str, metadata: Iterable[tuple[str, str | bytes]], only: bool
) -> bytes:
    """The block that ends a call: grpc-status, grpc-message and the trailing metadata; with
    `only` (no message was sent) the response's own headers first (a Trailers-Only answer)."""
    block = bytearray(RESPONSE_HEADERS if only else b"")
    block += literal(b"grpc-status", str(code).encode("ascii"))
    if message:
        block += literal(b"grpc-message", _percent_encoded(message))
    for key, value in metadata:
        block += metadata_field(key, value)
    return bytes(block)


OK_TRAILERS = trailers(0, "", (), only=False)
