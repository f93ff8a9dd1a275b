"""Payload logging (KServe's "inference logger"): each inference request and its answer sent
as two CloudEvents, HTTP binary mode, to VAE_PAYLOAD_LOG_URL, for a store or a drift
pipeline of the user's own.

The request never waits for the sink: events go into a bounded queue (VAE_PAYLOAD_LOG_QUEUE)
that a few sender tasks empty. When the sink is slow or down the queue fills and new events are
dropped and counted (`vae_payload_log_events_total{outcome="dropped"}`), as are failed sends
(`outcome="failed"`); a body above VAE_PAYLOAD_LOG_MAX_BYTES is sent without its data
(`ce-vaedataomitted: too-large`), so memory held stays bounded by queue x max bytes.

Event attributes: `ce-id` the request id (X-Request-ID), `ce-type`
`org.kubeflow.serving.inference.request` or `.response` (KServe's), `ce-source`
`/models/<name>/versions/<version>`, `ce-time`, and the extensions `ce-vaemodel`,
`ce-vaeversion`, `ce-vaeroute`, `ce-vaestatus` (on responses); `content-type` the body's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

import httpx

from service.observability.metrics import ServiceMetrics

log = logging.getLogger("vae_service.payload_log")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
# Sends at once per worker: a sink answering in 1 ms then takes ~4,000 events a second.
SENDERS = 4


@dataclass(frozen=True)
class Exchange:
    """One inference request and its answer, as captured (bodies None: above the limit)."""

    request_id: str
    model: str
    version: str
    route: str
    status: int
    request_type: str
    request_body: bytes | None
    response_type: str
    response_body: bytes | None


def _events(exchange: Exchange) -> list[tuple[dict[str, str], bytes]]:
    now = dt.datetime.now(dt.UTC).isoformat()
    common = {
        "ce-specversion": "1.0",
        "ce-id": exchange.request_id,
        "ce-source": f"/models/{exchange.model}/versions/{exchange.version}",
        "ce-time": now,
        "ce-vaemodel": exchange.model,
        "ce-vaeversion": exchange.version,
        "ce-vaeroute": exchange.route,
    }
    events = []
    for kind, content_type, body in (
        (REQUEST_TYPE, exchange.request_type, exchange.request_body),
        (RESPONSE_TYPE, exchange.response_type, exchange.response_body),
    ):
        headers = {**common, "ce-type": kind, "content-type": content_type}
        if kind == RESPONSE_TYPE:
            headers["ce-vaestatus"] = str(exchange.status)
        if body is None:
            headers["ce-vaedataomitted"] = "too-large"
        events.append((headers, body or b""))
    return events


class PayloadLogger:
    def __init__(
        self,
        url: str,
        queue_size: int,
        max_bytes: int,
        timeout_s: float,
        metrics: ServiceMetrics | None,
    ) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue(queue_size)
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}  # this worker's, for tests too
        self._client: httpx.AsyncClient | None = None
        self._senders: list[asyncio.Task[None]] = []

    def submit(self, exchange: Exchange) -> None:
        """Queue both events of an exchange, or drop them and count it; never waits."""
        for event in _events(exchange):
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._count("dropped")

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        if self.metrics is not None:
            self.metrics.payload_log_events.labels(outcome).inc()

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout_s)
        loop = asyncio.get_running_loop()
        self._senders = [loop.create_task(self._send_forever()) for _ in range(SENDERS)]

    async def _send_forever(self) -> None:
        assert self._client is not None
        while True:
            headers, body = await self.queue.get()
            try:
                answer = await self._client.post(self.url, content=body, headers=headers)
                self._count("sent" if answer.status_code < 300 else "failed")
            except httpx.HTTPError as error:
                self._count("failed")
                log.debug("payload log event not sent: %s", error)

    async def stop(self) -> None:
        for task in self._senders:
            task.cancel()
        for task in self._senders:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._senders = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
