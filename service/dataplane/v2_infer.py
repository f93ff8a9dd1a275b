"""The Open Inference Protocol's infer, independent of the transport: decode once, operate,
encode once, as the native routes (service.dataplane.operations) do, under the same serving
scope (the body's limit and budget, admission control, the deadline)."""

from __future__ import annotations

import time

from bundle.arrays import FloatArray
from service.codecs.v2_json import (
    DecodedInfer,
    decodes_inline,
    infer_response,
    read_infer_request,
)
from service.codecs.wire import RawResponse
from service.dataplane.body import Receive, array_body_limit
from service.dataplane.inference import Plan
from service.dataplane.state import ServiceState
from service.models.results import TensorsResult
from service.models.v2_views import V2Model, find_model
from service.observability.request_context import current_request
from service.settings import ServiceSettings


def infer_body_limit(settings: ServiceSettings, view: V2Model) -> int:
    """The largest body this v2 model can need: its batch limit of tensors as JSON numbers
    (the larger of the two encodings) plus the JSON header's slack (service.dataplane.body)."""
    per_item = view.model.latent_dim if view.role == "decoder" else view.model.feature_count
    numbers = settings.max_batch_size * per_item
    return min(settings.max_body_bytes, array_body_limit(numbers, "json", 0))


async def serve_infer(
    state: ServiceState,
    name: str,
    version: str | None,
    header_length: str | None,
    content_length: str | None,
    receive: Receive,
) -> RawResponse:
    """One v2 infer request, from its head and body to the answer's bytes; a failure is raised
    (service.errors: V2Error or a domain error) for the transport to answer in the protocol's
    body. The model is resolved before the body is read, so its limit is the model's."""
    record = current_request()
    with state.serving() as call:
        view = find_model(call.repository, name, version)
        record.served_by(view.model.name, view.model.version)
        limit = infer_body_limit(state.settings, view)
        body = await call.read_body(receive, content_length, limit)
        max_depth = state.settings.max_json_depth
        decoded: list[DecodedInfer] = []  # what decode() read, for the answer

        def decode() -> Plan:
            request = read_infer_request(view, body, header_length, max_depth)
            decoded.append(request)
            names = [w.spec.name for w in request.wanted]

            def compute(batch: FloatArray) -> TensorsResult:
                return view.compute(batch, names, request.score_type)

            items = request.items
            values = len(items) * view.model.feature_count
            return Plan(compute, items, tuple(items.shape[1:]), None, values)

        result = await call.inference.run(decode, inline=decodes_inline(body, header_length))
        assert isinstance(result, TensorsResult)
        record.items = result.item_count()
        began = time.perf_counter()
        response = infer_response(view, decoded[0].request, decoded[0].wanted, result)
        record.encode_s = time.perf_counter() - began
        return call.answered(response)
