"""API keys, checked the same way by every transport (HTTP: service.api.security; gRPC:
service.grpc.servicer): where a request carries its key, and whether it is one of ours.

Keys come as `Authorization: Bearer KEY` or `X-API-Key: KEY` (HTTP headers or gRPC metadata;
never a query string, which access logs and proxies record). The presented key is hashed and
compared with the hash of every configured key with `hmac.compare_digest`, always all of them,
so neither the match position nor a key's length shows in the response time. No key is ever
logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries, from `Authorization: Bearer` or `X-API-Key` (lower-case
    names, as HTTP/2 and the ASGI scope give them)."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
    return None


class ApiKeys:
    """The configured keys, kept only as hashes."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key.encode()) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def allows(self, key: bytes) -> bool:
        digest = _digest(key)
        matched = False
        for expected in self._digests:  # every key, whatever matched before
            matched |= hmac.compare_digest(digest, expected)
        return matched
