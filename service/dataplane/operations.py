"""The array routes, independent of the web framework: decode once, operate, encode once.

Both ways in call `serve_operation`: the ASGI fast path (`service.api.fastpath`, the hot path)
and the FastAPI routes (which also carry the OpenAPI documentation). It resolves the model,
agrees the answer's format, reads the body within the model's limit, has the codec decode it
into a typed request (service.codecs.wire), turns that into a `Plan` for `Inference` (admission
control, the deadline, inline or executor, optional dynamic batching), and has the codec encode
the typed result. A failure is raised as a domain error (service.errors) for the transport to
answer in its protocol.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from service.codecs.wire import (
    RawRequest,
    RawResponse,
    decode_request,
    decodes_inline,
    encode_result,
    negotiate,
)
from service.dataplane.body import Receive
from service.dataplane.inference import Plan
from service.dataplane.state import ServiceState
from service.models.requests import (
    DecodeRequest,
    EncodeRequest,
    OperationRequest,
    ReconstructRequest,
    SampleRequest,
    ScoreRequest,
)
from service.models.results import ScoreResult
from service.models.served_model import ServedModel, check_seed
from service.observability.request_context import current_request


class RequestHead(NamedTuple):
    """What a transport knows of an array request before its body is read. (Tuples: made for
    every request, a frozen dataclass cost ~1 us more each.)"""

    content_type: str | None
    accept: str | None
    query: Mapping[str, str]
    content_length: str | None


async def serve_operation(
    state: ServiceState,
    route: str,
    name: str | None,
    version: str | None,
    head: RequestHead,
    receive: Receive,
) -> RawResponse:
    """One array request, from its head and body to the answer's bytes. The model is resolved
    and the response format agreed before the body is read, so the body's limit is the model's
    (`route_body_limit`) and a 404 or 406 costs no read. What it learns (model, items,
    anomalies, codec times) goes to the request's record."""
    record = current_request()
    with state.serving() as call:
        model = call.repository.resolve(name, version)
        record.served_by(model.name, model.version)
        wanted = negotiate(model, route, head.accept)
        limit = state.body_limit(model, route, head.content_type)
        body = await call.read_body(receive, head.content_length, limit)
        raw = RawRequest(head.content_type, head.accept, head.query, body)

        def decode() -> Plan:
            return plan(model, decode_request(model, route, raw, state.settings, wanted))

        result = await call.inference.run(decode, inline=decodes_inline(raw))
        record.items = result.item_count()
        if isinstance(result, ScoreResult):
            record.anomalies = int(np.count_nonzero(result.is_anomaly))
            model.remember_scored(record.request_id, result.score_type, result.scores)
        began = time.perf_counter()
        response = encode_result(result, model, route, wanted, head.query)
        record.encode_s = time.perf_counter() - began
        return call.answered(response)


def plan(model: ServedModel, request: OperationRequest) -> Plan:
    """Check the request against the model and decide how it runs. Only operations whose result
    for an item depends on that item alone may share a batch (a `batch_key`): no seeded
    sampling. `values` (items x features the model touches) decides inline or executor."""
    if isinstance(request, SampleRequest):
        n, seed, temperature = request.n, request.seed, request.temperature
        return Plan(
            lambda _: model.sample(n=n, seed=seed, temperature=temperature),
            np.zeros((0,), np.float32),
            (),
            None,
            values=max(n, 0) * model.feature_count,
        )
    key_base = (id(model), type(request))
    if isinstance(request, DecodeRequest):
        z = model.check_latents(request.latents)
        return Plan(model.decode, z, tuple(z.shape[1:]), key_base, len(z) * model.feature_count)
    x = request.inputs
    layout = tuple(x.shape[1:])
    items = model.check_inputs(x)
    values = len(x) * model.feature_count
    if isinstance(request, EncodeRequest):
        seed = check_seed(request.seed)
        if request.sample:
            return Plan(
                lambda v: model.encode(v, sample=True, seed=seed), items, layout, None, values
            )
        return Plan(
            lambda v: model.encode(v, sample=False, seed=None), items, layout, key_base, values
        )
    if isinstance(request, ReconstructRequest):
        samples, seed = request.samples, check_seed(request.seed)
        return Plan(
            lambda v: model.reconstruct(v, samples=samples, seed=seed),
            items,
            layout,
            key_base if samples is None else None,
            values * (samples or 1),
        )
    assert isinstance(request, ScoreRequest)
    score_type, per_feature = request.score_type, request.per_feature
    return Plan(
        lambda v: model.score(v, score_type=score_type, per_feature=per_feature),
        items,
        layout,
        (*key_base, score_type, per_feature),
        values * (model.manifest.anomaly.elbo_samples if score_type == "neg_elbo" else 1),
    )
