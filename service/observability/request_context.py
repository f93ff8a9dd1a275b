"""The request being answered: its id, and what the layers below learn while answering it.

`service.observability.observe` (the outermost ASGI layer) makes one `RequestRecord` per HTTP
request current
for the task that answers it, in a context variable, so no signature between the transport and
the inference layer has to carry it. The fast path and the routes write the route template, the
operations the model, item count and codec times, `Inference` the queue wait and model time;
when the response has gone, the record becomes the metrics and the request's log line.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar, Token

REQUEST_ID_HEADER = b"x-request-id"
# A client's id is kept when it is 1 to 128 visible ASCII characters: enough for a UUID, a
# W3C trace id or a load balancer's trace header, and short enough that it cannot bloat every
# log line. Anything else (spaces, control or non-ASCII characters that could forge log
# content, an empty or endless value) is replaced by a generated id.
MAX_REQUEST_ID_LENGTH = 128
_VALID_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_REQUEST_ID_LENGTH)


def accepted_request_id(value: bytes) -> str | None:
    """The client's X-Request-ID when it is safe to echo and log, else None."""
    if _VALID_REQUEST_ID.fullmatch(value) is None:
        return None
    return value.decode("ascii")


def new_request_id() -> str:
    # 128 random bits as 32 hex characters: unique without coordination between workers, and
    # measured at a third of uuid4's cost here (uuid4 builds a UUID object first).
    return os.urandom(16).hex()


class RequestRecord:
    """What is known about one request; None where a stage did not happen."""

    __slots__ = (
        "anomalies",
        "arrived",
        "batch_size",
        "decode_s",
        "encode_s",
        "inference_s",
        "items",
        "model",
        "protocol",
        "queue_s",
        "request_id",
        "route",
        "status",
        "version",
    )

    def __init__(self, request_id: str, protocol: str = "http") -> None:
        self.request_id = request_id
        self.protocol = protocol  # "http" or "grpc": the metrics' protocol label
        self.arrived: float | None = None  # event-loop time the request came in
        self.route: str | None = None  # the route template, never the raw path
        self.status: int | None = None
        self.model: str | None = None  # a model that resolved; never a name a client made up
        self.version: str | None = None
        self.items: int | None = None  # items the answer carries
        self.batch_size: int | None = None  # items of the dynamic batch that carried them
        self.anomalies: int | None = None  # items flagged as anomalies
        self.queue_s: float | None = None  # waiting for a model slot, a batch, a thread
        self.inference_s: float | None = None  # the model call: onnxruntime + numpy maths
        self.decode_s: float | None = None  # request body -> arrays
        self.encode_s: float | None = None  # result -> response body

    def served_by(self, name: str, version: str) -> None:
        self.model, self.version = name, version


_current: ContextVar[RequestRecord | None] = ContextVar("vae_request", default=None)


def current_request() -> RequestRecord:
    """The record of the request this task answers. Outside one (a direct call in a test or a
    benchmark), a throwaway record, so that callers never need to check."""
    record = _current.get()
    return record if record is not None else RequestRecord("-")


def current_request_id() -> str | None:
    record = _current.get()
    return None if record is None else record.request_id


def enter_request(record: RequestRecord) -> Token[RequestRecord | None]:
    return _current.set(record)


def leave_request(token: Token[RequestRecord | None]) -> None:
    _current.reset(token)
