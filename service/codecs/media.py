"""Content negotiation: which body format a Content-Type names, which answer format an Accept
header picks among those a route offers (RFC 9110 media ranges and q-values).

Every cache here is keyed by a client's header, so each is bounded in bytes as well as
entries: values longer than `CACHEABLE_BYTES` are worked out every time and never kept.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

from service.errors import NotAcceptable, UnsupportedMediaType, excerpt

JSON_MEDIA_TYPE = "application/json"
NPY_MEDIA_TYPE = "application/x-npy"
NPZ_MEDIA_TYPE = "application/x-npz"
PNG_MEDIA_TYPE = "image/png"

BodyFormat = Literal["json", "npy"]
ResponseFormat = Literal["json", "npy", "npz", "png"]
# What every array route can send; image models add "png" on some routes (service.codecs.images).
ARRAY_FORMATS: tuple[ResponseFormat, ...] = ("json", "npy", "npz")

_REQUEST_TYPES: dict[str, BodyFormat] = {JSON_MEDIA_TYPE: "json", NPY_MEDIA_TYPE: "npy"}
# Order is the tie-break of last resort in `response_format`: JSON is the default format.
_RESPONSE_TYPES: tuple[tuple[str, ResponseFormat], ...] = (
    (JSON_MEDIA_TYPE, "json"),
    (NPY_MEDIA_TYPE, "npy"),
    (NPZ_MEDIA_TYPE, "npz"),
    (PNG_MEDIA_TYPE, "png"),
)
# RFC 9110 qvalue grammar; anything else (e.g. "q=nan", "q=2") makes that media range invalid.
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")

# Header values (Content-Type, Accept) and npy headers up to this many bytes are memoised:
# clients send the same few over and over. 256 entries of at most this size: ~100 kB a cache.
CACHEABLE_BYTES = 256


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ('' when there is none)."""
    return "" if content_type is None else content_type.partition(";")[0].strip().lower()


def request_format(content_type: str | None) -> BodyFormat:
    """The body format named by a Content-Type header; a missing header means JSON.

    Memoised for short headers (module docstring; errors are never cached)."""
    if content_type is not None and len(content_type) > CACHEABLE_BYTES:
        return _request_format(content_type)
    return _cached_request_format(content_type)


def _request_format(content_type: str | None) -> BodyFormat:
    if content_type is None:
        return "json"
    media = content_type.partition(";")[0].strip().lower()
    if not media:
        return "json"
    try:
        return _REQUEST_TYPES[media]
    except KeyError:
        accepted = list(_REQUEST_TYPES)
        raise UnsupportedMediaType(
            f"unsupported Content-Type {excerpt(media)}; send one of: {', '.join(accepted)}",
            {"content_type": excerpt(content_type), "accepted": accepted},
        ) from None


_cached_request_format = functools.lru_cache(maxsize=256)(_request_format)


def response_format(
    accept: str | None, offered: tuple[ResponseFormat, ...] = ARRAY_FORMATS
) -> ResponseFormat:
    """Pick the response format from an Accept header (RFC 9110 media ranges with q-values).

    `offered` is what this route can send for this model (PNG only for image models).
    `*/*` and `application/*` only make JSON acceptable: a client that wants binary arrays names
    the type; `image/*` makes PNG acceptable. Per offered type the most specific matching range
    decides its q (so
    `application/json;q=0, */*` refuses JSON). Highest q wins; at equal q a type named
    explicitly beats one matched by a wildcard, then the range listed first wins. Memoised
    for short headers (module docstring).
    """
    if accept is not None and len(accept) > CACHEABLE_BYTES:
        return _response_format(accept, offered)
    return _cached_response_format(accept, offered)


def _response_format(accept: str | None, offered: tuple[ResponseFormat, ...]) -> ResponseFormat:
    if accept is None or not accept.strip():
        return "json"
    ranges: list[tuple[str, float, int]] = []
    for position, part in enumerate(accept.split(",")):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        if not media:
            continue
        q: float | None = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else None
                break  # parameters after q are accept-extensions, which we ignore
        if q is not None:  # a malformed range is ignored rather than failing the request
            ranges.append((media, q, position))

    candidates: list[tuple[float, bool, int, ResponseFormat]] = []
    for offered_type, fmt in _RESPONSE_TYPES:
        if fmt not in offered:
            continue
        best: tuple[int, float, int] | None = None  # (specificity, q, position)
        for media, q, position in ranges:
            if media == offered_type:
                specificity = 2
            elif (fmt == "json" and media == "application/*") or (
                fmt == "png" and media == "image/*"
            ):
                specificity = 1
            elif fmt == "json" and media == "*/*":
                specificity = 0
            else:
                continue
            if best is None or specificity > best[0]:
                best = (specificity, q, position)
        if best is not None and best[1] > 0:
            candidates.append((best[1], best[0] == 2, -best[2], fmt))
    if not candidates:
        available = [media for media, fmt in _RESPONSE_TYPES if fmt in offered]
        raise NotAcceptable(
            f"cannot produce any media type in Accept {excerpt(accept)}; available: "
            f"{', '.join(available)}",
            {"accept": excerpt(accept), "available": available},
        )
    return max(candidates)[3]


_cached_response_format = functools.lru_cache(maxsize=256)(_response_format)
