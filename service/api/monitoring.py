"""GET /models/{name}/monitoring (and per version): is the model still right for what it
sees? The verdicts of the model version's monitor (service.monitoring) over every worker's
window of scored items. POST /models/{name}/feedback: labels for items scored earlier, by the
request id their answer carried, which the report turns into precision and recall.

Both run their work in a thread (a report reads every worker's window and runs a few dozen
two-sample tests; labels are joined with every worker's ring: milliseconds), never on the event
loop that answers requests. The feedback body is read as any body is: bounded, and charged to
the worker's body budget.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.api import openapi
from service.api.deps import ReadyRepository, ServedState
from service.api.responses import json_response
from service.codecs.feedback import FEEDBACK_BODY_BYTES, read_feedback
from service.dataplane.monitor_flush import MONITOR_FLUSH_S
from service.dataplane.state import ServiceState
from service.errors import OperationNotSupported
from service.models.served_model import ServedModel
from service.monitoring.feedback import MAX_ITEM
from service.monitoring.monitor import ModelMonitor
from service.observability.request_context import current_request


def _monitor_of(model: ServedModel) -> ModelMonitor:
    current_request().served_by(model.name, model.version)
    if model.monitor is None:
        raise OperationNotSupported(
            "monitoring is off (VAE_MONITORING=false): nothing is recorded to report on",
            {"setting": "VAE_MONITORING"},
        )
    return model.monitor


async def _report(model: ServedModel) -> Response:
    return json_response(await run_in_threadpool(_monitor_of(model).report))


# Request ids the answer lists back when their items were not found.
UNKNOWN_LISTED = 20


async def _feedback(
    request: Request, state: ServiceState, name: str, version: str | None
) -> Response:
    with state.serving() as call:
        model = call.repository.resolve(name, version)
        monitor = _monitor_of(model)
        body = await call.read_body(
            request.receive, request.headers.get("content-length"), FEEDBACK_BODY_BYTES
        )
        max_item = min(MAX_ITEM, state.settings.max_batch_size - 1)
        labels = read_feedback(body, max_item)
        accepted, unknown = await run_in_threadpool(monitor.label, labels)
        if unknown:
            # Answers another worker gave moments ago are in its files once it has written
            # them (every MONITOR_FLUSH_S): look again then, waiting on the loop, not a thread.
            await asyncio.sleep(1.5 * MONITOR_FLUSH_S)
            again = [labels[i] for i in unknown]
            found, still = await run_in_threadpool(monitor.label, again)
            accepted += found
            unknown = [unknown[j] for j in still]
        return json_response(
            {
                "accepted": accepted,
                "unknown": len(unknown),
                "unknown_labels": unknown[:UNKNOWN_LISTED],
            }
        )


def register_monitoring_routes(app: FastAPI) -> None:
    @app.get(
        "/models/{name}/monitoring",
        tags=["monitoring"],
        summary="Drift and anomaly-rate verdicts of the served version",
        responses=openapi.monitoring_responses(),
    )
    async def model_monitoring(name: str, repository: ReadyRepository) -> Response:
        return await _report(repository.resolve(name, None))

    @app.post(
        "/models/{name}/feedback",
        tags=["monitoring"],
        summary="Label items scored earlier (by request id) as anomalies or not",
        responses=openapi.feedback_responses(),
        openapi_extra=openapi.feedback_request_body(),
    )
    async def model_feedback(name: str, request: Request, state: ServedState) -> Response:
        return await _feedback(request, state, name, None)

    @app.post(
        "/models/{name}/versions/{version}/feedback",
        tags=["monitoring"],
        summary="Label items one version scored earlier",
        responses=openapi.feedback_responses(),
        openapi_extra=openapi.feedback_request_body(),
    )
    async def version_feedback(
        name: str, version: str, request: Request, state: ServedState
    ) -> Response:
        return await _feedback(request, state, name, version)

    @app.get(
        "/models/{name}/versions/{version}/monitoring",
        tags=["monitoring"],
        summary="Drift and anomaly-rate verdicts of one version",
        responses=openapi.monitoring_responses(),
    )
    async def version_monitoring(name: str, version: str, repository: ReadyRepository) -> Response:
        return await _report(repository.resolve(name, version))
