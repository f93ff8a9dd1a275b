"""A gRPC inference for the payload log (service.observability.payload_log): the request
message and its answer as protobuf bytes (or the error as the v2 REST error body), so a sink
stores gRPC calls beside HTTP ones, told apart by content type and `ce-vaeroute`.

Serialising costs a copy of each message, paid only with VAE_PAYLOAD_LOG_URL set; a message
above VAE_PAYLOAD_LOG_MAX_BYTES is measured (ByteSize, no copy) and sent without data.
"""

from __future__ import annotations

import orjson
from google.protobuf.message import Message

from service.grpc import inference_pb2 as pb
from service.observability.payload_log import Exchange, PayloadLogger
from service.observability.request_context import current_request

REQUEST_TYPE = "application/x-protobuf; messageType=inference.ModelInferRequest"
RESPONSE_TYPE = "application/x-protobuf; messageType=inference.ModelInferResponse"
ERROR_TYPE = "application/json"


def _bytes(message: Message, limit: int) -> bytes | None:
    return None if message.ByteSize() > limit else message.SerializeToString()


def log_grpc_exchange(
    logger: PayloadLogger,
    request: pb.ModelInferRequest,
    status: int,
    response: pb.ModelInferResponse | None,
    error: str | None,
) -> None:
    """Queue the call's two events; a call that named no served model logs nothing, as on
    HTTP. `status` is the HTTP status of the same answer over REST."""
    record = current_request()
    if record.model is None:
        return
    limit = logger.max_bytes
    if response is not None:
        answer_type, answer = RESPONSE_TYPE, _bytes(response, limit)
    else:
        answer_type, answer = ERROR_TYPE, orjson.dumps({"error": error or ""})
    logger.submit(
        Exchange(
            request_id=record.request_id,
            model=record.model,
            version=record.version or "",
            route=record.route or "",
            status=status,
            request_type=REQUEST_TYPE,
            request_body=_bytes(request, limit),
            response_type=answer_type,
            response_body=answer if answer is None or len(answer) <= limit else None,
        )
    )
