"""Request bodies: how large one may be, how many bytes of them a worker holds, and reading one.

The limit is known before a byte is read: it follows from the model the path names, the route
and the body's format (`array_body_limit`), capped by VAE_MAX_BODY_BYTES. A declared
Content-Length above it is refused at once, a streamed body as soon as it passes it. Every body
held at once in a worker is charged to one `BodyBudget`, so slow uploads cannot add up to more
memory than VAE_MAX_BODY_BUFFER_BYTES. A body that never finishes is the HTTP protocol's to
cut off (service.server.http_limits: 408 once VAE_REQUEST_TIMEOUT_S has passed since its
head), where a
timer costs a microsecond; one here cost 3-7 us a request (bench/HOSTILE.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from service.errors import MalformedBody, Overloaded, PayloadTooLarge, RequestBodyTimeout, excerpt
from service.models.served_model import ServedModel
from service.settings import ServiceSettings

Receive = Callable[[], Awaitable[Mapping[str, Any]]]

# The longest number the JSON limit allows for, on average: float64's longest repr is 24
# characters ("-2.2250738585072014e-308"), then a separator and some indentation.
JSON_BYTES_PER_NUMBER = 32
# The widest dtype an npy body or a v2 binary tensor may carry (float64, int64).
BINARY_BYTES_PER_NUMBER = 8
# Keys and parameters of a JSON body, an npy header, a v2 JSON header: all far below this.
BODY_SLACK_BYTES = 64 * 1024
# An image pixel at its widest (16-bit RGBA), and a multipart upload's part headers.
IMAGE_BYTES_PER_PIXEL = 8
IMAGE_SLACK_BYTES = 1024 * 1024


def array_body_limit(numbers: int, body_format: str, max_image_pixels: int) -> int:
    """Bytes a body may take to carry `numbers` numbers in `body_format` ("json", "npy",
    "image"; anything else is answered 415 later, so it gets the JSON limit)."""
    if body_format == "npy":
        return numbers * BINARY_BYTES_PER_NUMBER + BODY_SLACK_BYTES
    if body_format == "image":
        return max_image_pixels * IMAGE_BYTES_PER_PIXEL + IMAGE_SLACK_BYTES
    return numbers * JSON_BYTES_PER_NUMBER + BODY_SLACK_BYTES


def body_format(content_type: str | None) -> str:
    """Which limit a Content-Type gets: "npy", "image" (PNG, JPEG, multipart) or "json" (any
    other type too: it is refused with 415 once read, and JSON's limit is the larger)."""
    media = "" if content_type is None else content_type.partition(";")[0].strip().lower()
    if media == "application/x-npy":
        return "npy"
    if media.startswith(("image/", "multipart/")):
        return "image"
    return "json"


class BodyBudget:
    """Bytes of request bodies one worker holds at once; all of it runs on the event loop."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.held = 0
        self.retry_after = str(retry_after_s)

    def reserve(self, size: int) -> None:
        if self.held + size > self.limit:
            raise Overloaded(
                f"this worker holds {self.held} bytes of request bodies; {size} more would pass "
                f"VAE_MAX_BODY_BUFFER_BYTES ({self.limit}); retry later",
                {"held": self.held, "limit": self.limit},
                headers={"Retry-After": self.retry_after},
            )
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


class BodyReader:
    """One request's body: read once, up to a limit, charged to the worker's budget until
    `release`. Its time limit is the HTTP protocol's (service.server.http_limits): a body still
    arriving VAE_REQUEST_TIMEOUT_S after its head is answered 408 there, and this reader sees
    the request end early."""

    def __init__(
        self, receive: Receive, content_length: str | None, budget: BodyBudget | None
    ) -> None:
        self.receive = receive
        self.content_length = content_length
        self.budget = budget
        self.charged = 0
        self.received = 0

    async def read(self, limit: int, what: str = "VAE_MAX_BODY_BYTES") -> bytes:
        """The whole body, or 413 above `limit`, 503 over budget, 408 when it stops short."""
        declared = self._declared_length()
        if declared is not None and declared > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes is above the limit of {limit} for this "
                f"request ({what})",
                {"limit": limit},
                headers={"Connection": "close"},
            )
        if declared is not None:
            self._charge(declared)
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if declared is not None and received < declared:
                    raise RequestBodyTimeout(
                        f"the request body stopped after {received} of {declared} bytes: the "
                        "client went away, or it did not arrive within VAE_REQUEST_TIMEOUT_S",
                        headers={"Connection": "close"},
                    )
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            self.received = received
            if received > limit:
                raise PayloadTooLarge(
                    f"request body is above the limit of {limit} bytes for this request",
                    {"limit": limit},
                    headers={"Connection": "close"},
                )
            if declared is None:
                self._charge(len(chunk))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def hold(self, size: int, limit: int, what: str = "VAE_MAX_BODY_BYTES") -> None:
        """A body its transport has read whole already (a gRPC message): 413 above `limit`,
        503 over budget, else charged like a body read here."""
        if size > limit:
            raise PayloadTooLarge(
                f"request message of {size} bytes is above the limit of {limit} for this "
                f"request ({what})",
                {"limit": limit},
            )
        self._charge(size)
        self.received = size

    def _declared_length(self) -> int | None:
        text = self.content_length
        if text is None:
            return None
        if text.isdigit() and text.isascii() and len(text) <= 15:
            return int(text)  # what every client sends
        text = text.strip()
        # Digits only, and few: int() of a 5,000-digit header would raise (a 500), and no body
        # we take has 16 digits of bytes.
        if not text.isascii() or not text.isdigit() or len(text) > 15:
            raise MalformedBody(
                f"Content-Length {excerpt(self.content_length)} is not a byte count",
                headers={"Connection": "close"},
            )
        return int(text)

    def _charge(self, size: int) -> None:
        if self.budget is not None:
            self.budget.reserve(size)
            self.charged += size

    def release(self) -> None:
        if self.budget is not None and self.charged:
            self.budget.release(self.charged)
            self.charged = 0


def route_body_limit(
    settings: ServiceSettings, model: ServedModel, route: str, content_type: str | None
) -> int:
    """The largest body this route of this model can need (service.dataplane.body), within
    VAE_MAX_BODY_BYTES."""
    fmt = body_format(content_type)
    if route == "sample":
        numbers, fmt = 0, "json"  # parameters only
    elif route == "decode":
        numbers = settings.max_batch_size * model.latent_dim
    else:
        numbers = settings.max_batch_size * model.feature_count
    derived = array_body_limit(numbers, fmt, settings.max_image_pixels)
    return min(settings.max_body_bytes, derived)
