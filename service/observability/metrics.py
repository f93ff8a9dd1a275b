"""Prometheus metrics, served at `GET /metrics` in the Prometheus (or OpenMetrics) text format.

Names follow Prometheus' conventions: a `vae_` prefix, the unit in the name, `_total` on
counters. Every label value is bounded: `route` is a route template (`/models/{name}/encode`),
never the raw path, `model` the name of a model that resolved, else "-", so no request can mint
new series.

uvicorn runs one process per worker and a scrape reaches only one of them. `vae-serve` gives its
workers a private folder in PROMETHEUS_MULTIPROC_DIR (`multiprocess_folder`); prometheus_client
then keeps each worker's values in memory-mapped files there, and a scrape of any worker adds up
every worker's files (its multiprocess mode, chosen when prometheus_client is imported). Without
that variable (tests, plain uvicorn) each app counts in its own in-memory registry.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.concurrency import run_in_threadpool

from service.observability.request_context import RequestRecord
from service.processes import process_exists

if TYPE_CHECKING:
    from service.models.repository import ModelRepository

log = logging.getLogger("vae_service.metrics")

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# How stale another worker's counts may be at a scrape: far below any scrape interval, and a
# flush with nothing new costs nothing.
FLUSH_INTERVAL_S = 1.0

# Seconds. A single-item request is answered in well under a millisecond, a batch of thousands
# in tens of milliseconds, and nothing waits longer than the request timeout (30 s by default).
REQUEST_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip
# One stage of a request (queueing, the model call, a codec) starts at tens of microseconds.
STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 10,
)  # fmt: skip
# Why service.server.http_limits closed a connection before the app saw a request.
CONNECTION_REFUSALS = ("too_many_connections", "head_too_large", "head_timeout", "body_timeout")
# Items per merged onnxruntime call: powers of two up to the largest request (4096 by default).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


# The app's metrics, for what the HTTP protocol refuses before any request reaches the app
# (service.server.http_limits): set by the app when metrics are on.
_connection_metrics: ServiceMetrics | None = None


def count_connection_refusals(metrics: ServiceMetrics | None) -> None:
    global _connection_metrics
    _connection_metrics = metrics


def connection_refused(reason: str) -> None:
    if _connection_metrics is not None:
        _connection_metrics.connection_refused(reason)


def multiprocess_folder() -> str | None:
    """The folder every worker's values live in, when prometheus_client runs in multiprocess
    mode (decided at its import, from PROMETHEUS_MULTIPROC_DIR), else None."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(MULTIPROCESS_VARIABLE)


@contextlib.contextmanager
def workers_share_metrics(workers: int) -> Iterator[None]:
    """Around the server's run: PROMETHEUS_MULTIPROC_DIR for its workers, so that a scrape of
    any one of them counts them all. A folder the operator set is used as it is; otherwise a
    private one lives and dies with the server (stale files would add a past run's counts)."""
    given = os.environ.get(MULTIPROCESS_VARIABLE)
    if given:
        # prometheus_client needs the folder to exist; every worker would fail without it.
        Path(given).mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(Path(given).glob("*.db")):
            log.warning(
                "%s=%s holds files from an earlier run: its counts are included; empty the "
                "folder before starting the server to count from zero",
                MULTIPROCESS_VARIABLE,
                given,
            )
        yield
        return
    if workers == 1:
        # uvicorn serves in this very process, whose prometheus_client is imported already and
        # counts in memory: nothing to share.
        yield
        return
    with tempfile.TemporaryDirectory(prefix="vae-serve-metrics-") as folder:
        os.environ[MULTIPROCESS_VARIABLE] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_VARIABLE]


def _mark_process_dead(pid: int, folder: str) -> None:
    # prometheus_client's multiprocess module has no annotations.
    mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


class _CounterBuffer:
    """A counter child's increments since the last flush."""

    __slots__ = ("amount", "child")

    def __init__(self, child: Counter):
        self.child = child
        self.amount = 0.0

    def flush(self) -> None:
        if self.amount:
            self.child.inc(self.amount)
            self.amount = 0.0


class _HistogramBuffer:
    """A histogram child's observations since the last flush, already sorted into its buckets.

    prometheus_client offers only `observe(value)`: a sum and a bucket write each, a file write
    each in multiprocess mode (measured: ~90 us a request for this service's observations).
    A flush writes each bucket's count once, through the child's own sum and bucket values;
    tests/service/observability/test_metrics.py checks that the result equals `observe`'s.
    """

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Histogram, buckets: tuple[float, ...]):
        self.child = child
        self.bounds = (*buckets, math.inf)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Bucket i counts values <= bounds[i]: the first bound not below the value.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        child = self.child
        child._sum.inc(self.total)
        for index, count in enumerate(counts):
            if count:
                child._buckets[index].inc(count)
                counts[index] = 0
        self.total = 0.0


class _Outcome:
    __slots__ = ("duration", "requests")

    def __init__(self, requests: _CounterBuffer, duration: _HistogramBuffer):
        self.requests = requests
        self.duration = duration


class ServiceMetrics:
    """The service's metrics, one set per app.

    A request costs the hot path a few dictionary lookups and additions (`record_request`) and
    two integer updates (`active`): its figures are added up into buffers per label child and
    written out by `flush`, every FLUSH_INTERVAL_S (from `start`), before each scrape and at
    shutdown. A scrape therefore sees this worker exactly and the server's other workers as of
    their last flush. `start` and `stop` bracket a worker's life.
    """

    def __init__(self) -> None:
        # `_created` series double the series count and exist only without multiprocess mode;
        # left out, both modes expose the same series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.folder = multiprocess_folder()
        self.registry = CollectorRegistry()
        own: CollectorRegistry | None = self.registry
        if self.folder is not None:
            # The metrics write their files; the collector reads every worker's at a scrape.
            MultiProcessCollector(self.registry, path=self.folder)  # type: ignore[no-untyped-call]
            own = None
        self.requests = Counter(
            "vae_requests_total",
            "Requests answered, by route template (a gRPC call: its method), model, status "
            "(a gRPC call: the HTTP status of the same answer over REST) and protocol",
            ["route", "model", "status", "protocol"],
            registry=own,
        )
        self.request_seconds = Histogram(
            "vae_request_duration_seconds",
            "Time from a request's arrival to its answer, by route template, model and protocol",
            ["route", "model", "protocol"],
            buckets=REQUEST_BUCKETS,
            registry=own,
        )
        self.queue_seconds = Histogram(
            "vae_queue_wait_seconds",
            "Time a request waited for a model slot, a dynamic batch and a thread before its "
            "model call started",
            buckets=STAGE_BUCKETS,
            registry=own,
        )
        self.inference_seconds = Histogram(
            "vae_inference_seconds",
            "Time of the model call that carried a request (onnxruntime and the numpy maths "
            "around it; a dynamic batch's call counts once for each request in it)",
            ["model"],
            buckets=STAGE_BUCKETS,
            registry=own,
        )
        self.codec_seconds = Histogram(
            "vae_codec_seconds",
            "Time turning request bodies into arrays (decode) and results into response "
            "bodies (encode)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=own,
        )
        self.batch_size = Histogram(
            "vae_batch_size",
            "Items in each merged onnxruntime call: the dynamic batcher's, and inline calls "
            "coalesced in one event-loop turn",
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self.items = Counter(
            "vae_items_total",
            "Items (rows of a batch, or samples drawn) in successful answers",
            ["route", "model"],
            registry=own,
        )
        self.anomalies = Counter(
            "vae_anomalies_total",
            "Items /anomaly-score flagged as anomalies (score above the model's threshold)",
            ["model"],
            registry=own,
        )
        self.model_info = Gauge(
            "vae_model_info",
            "1 for each model version loaded (by any live worker)",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=own,
        )
        self.in_flight = Gauge(
            "vae_requests_in_flight",
            "Requests being answered now, over all live workers (scrapes of /metrics left out)",
            multiprocess_mode="livesum",
            registry=own,
        )
        self.rejected = Counter(
            "vae_rejected_total",
            "Requests answered 503 by admission control: the queue was full (overloaded) or "
            "the request timeout passed (timeout)",
            ["reason"],
            registry=own,
        )
        # Created up front: a refusal count of 0 is an answer, a missing series is not.
        # Refusals are rare and counted at once.
        self.overloaded = self.rejected.labels("overloaded")
        self.timed_out = self.rejected.labels("timeout")
        self.connections_refused = Counter(
            "vae_connections_refused_total",
            "Connections answered and closed before any request reached the app "
            "(service.server.http_limits): too many open, a request head too large or too slow",
            ["reason"],
            registry=own,
        )
        for reason in CONNECTION_REFUSALS:
            self.connections_refused.labels(reason)
        self.payload_log_events = Counter(
            "vae_payload_log_events",
            "Payload log events (VAE_PAYLOAD_LOG_URL): sent, failed (the sink refused or did not "
            "answer) or dropped (the queue was full)",
            ["outcome"],
            registry=own,
        )
        self.active = 0  # requests being answered by this worker now
        self._published_active = 0
        self._batch_sizes = _HistogramBuffer(self.batch_size, BATCH_BUCKETS)
        self._queue = _HistogramBuffer(self.queue_seconds, STAGE_BUCKETS)
        self._decode = _HistogramBuffer(self.codec_seconds.labels("decode"), STAGE_BUCKETS)
        self._encode = _HistogramBuffer(self.codec_seconds.labels("encode"), STAGE_BUCKETS)
        # Label children, made on first use: a series appears once it has something to say.
        self._outcomes: dict[tuple[str, str, int, str], _Outcome] = {}
        self._items: dict[tuple[str, str], _CounterBuffer] = {}
        self._anomalies: dict[str, _CounterBuffer] = {}
        self._inference: dict[str, _HistogramBuffer] = {}
        self._loaded: set[tuple[str, str]] = set()
        self._flusher: asyncio.Task[None] | None = None

    # --- the hot path: additions into buffers, no prometheus_client call ---

    def record_request(self, record: RequestRecord, route: str, seconds: float) -> None:
        # Added up at once, into plain buffers. Kept in a list until the flush instead, a
        # second's records (thousands) survived into the garbage collector's older generations
        # and were added up in one stall of several milliseconds: make bench's S1 request (2
        # workers, wrk c=8) was answered 6,452 req/s with a p99 of 4.30 ms (metrics off: 7,139
        # and 1.93 ms); added up at once, 7,577 and 1.57 ms.
        self._add(record, route, seconds)

    def record_batch(self, size: int) -> None:
        self._batch_sizes.observe(size)

    def connection_refused(self, reason: str) -> None:
        if reason in CONNECTION_REFUSALS:  # a fixed set: labels stay few
            self.connections_refused.labels(reason).inc()

    # --- flushing ---

    def flush(self) -> None:
        """Add up the requests recorded since the last flush and write them out. On the event
        loop, which the hot path's appends also run on."""
        for buffer in self._buffers():
            buffer.flush()
        if self.active != self._published_active:
            self.in_flight.set(self.active)
            self._published_active = self.active

    def _add(self, record: RequestRecord, route: str, seconds: float) -> None:
        model = record.model or "-"
        status = record.status or 500
        protocol = record.protocol
        outcome = self._outcomes.get((route, model, status, protocol))
        if outcome is None:
            outcome = self._outcomes[(route, model, status, protocol)] = _Outcome(
                _CounterBuffer(self.requests.labels(route, model, str(status), protocol)),
                _HistogramBuffer(
                    self.request_seconds.labels(route, model, protocol), REQUEST_BUCKETS
                ),
            )
        outcome.requests.amount += 1
        outcome.duration.observe(seconds)
        if record.queue_s is not None:
            self._queue.observe(record.queue_s)
        if record.inference_s is not None:
            inference = self._inference.get(model)
            if inference is None:
                inference = self._inference[model] = _HistogramBuffer(
                    self.inference_seconds.labels(model), STAGE_BUCKETS
                )
            inference.observe(record.inference_s)
        if record.decode_s is not None:
            self._decode.observe(record.decode_s)
        if record.encode_s is not None:
            self._encode.observe(record.encode_s)
        if status >= 400:
            return
        if record.items:
            items = self._items.get((route, model))
            if items is None:
                items = self._items[(route, model)] = _CounterBuffer(
                    self.items.labels(route, model)
                )
            items.amount += record.items
        if record.anomalies:
            anomalies = self._anomalies.get(model)
            if anomalies is None:
                anomalies = self._anomalies[model] = _CounterBuffer(self.anomalies.labels(model))
            anomalies.amount += record.anomalies

    def _buffers(self) -> Iterator[_CounterBuffer | _HistogramBuffer]:
        for outcome in self._outcomes.values():
            yield outcome.requests
            yield outcome.duration
        yield from self._items.values()
        yield from self._anomalies.values()
        yield from self._inference.values()
        yield from (self._queue, self._decode, self._encode, self._batch_sizes)

    def start(self) -> None:
        """At worker start-up (the app's lifespan): flush every FLUSH_INTERVAL_S from now."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # a metrics bug must stop neither the counting nor the service
                log.exception("flushing the metrics failed")

    # --- the rest ---

    def models_loaded(self, repository: ModelRepository) -> None:
        """After every load and hot reload of this worker: the versions it serves now."""
        loaded = {(model.name, model.version) for model in repository}
        for name, version in self._loaded - loaded:
            if self.folder is None:
                self.model_info.remove(name, version)
            else:
                # Files cannot forget a series; 0 reads as "not loaded" once no live worker
                # has it (livemax).
                self.model_info.labels(name, version).set(0)
        for name, version in loaded - self._loaded:
            self.model_info.labels(name, version).set(1)
        self._loaded = loaded

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape: every worker's values in the format the Accept header asks for. Call
        `flush` first, on the event loop."""
        if self.folder is not None:
            self._forget_dead_workers()
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def _forget_dead_workers(self) -> None:
        # A worker that stops cleanly marks itself dead (`close`); one that was killed cannot,
        # and its in-flight and loaded-model gauges would stay counted. Counters and histograms
        # keep a dead worker's counts, as Prometheus expects of a counter.
        assert self.folder is not None
        for path in Path(self.folder).glob("gauge_live*_*.db"):
            pid = path.stem.rpartition("_")[2]
            if pid.isdigit() and not process_exists(int(pid)):
                _mark_process_dead(int(pid), self.folder)

    async def stop(self) -> None:
        """At worker shutdown: the last counts written, its live gauges out of the sums."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.flush()
        if self.folder is not None:
            _mark_process_dead(os.getpid(), self.folder)


def register_metrics_route(app: FastAPI, metrics: ServiceMetrics) -> None:
    @app.get(
        "/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics of every worker",
        description="Requests by route template, model and status; latency, queue wait, model "
        "and codec time histograms; dynamic batch sizes; items and anomalies; loaded model "
        "versions; requests in flight; admission refusals. OpenMetrics when the Accept header "
        "asks for application/openmetrics-text.",
        response_class=Response,
        responses={
            200: {
                "description": "the metrics in the Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def prometheus_metrics(request: Request) -> Response:
        # A scrape is not counted in flight: published by this worker's flush, it would stay
        # in the sum until the worker's next flush, after the scrape has ended.
        metrics.active -= 1
        try:
            metrics.flush()
            # Off the event loop: with several workers a scrape reads and merges their files.
            body, content_type = await run_in_threadpool(
                metrics.exposition, request.headers.get("accept")
            )
        finally:
            metrics.active += 1
        return Response(body, media_type=content_type)
