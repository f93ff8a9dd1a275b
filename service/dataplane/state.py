"""The served state of one worker: its settings, the model repository it serves, where work
runs (`Inference`), whether it is ready, and its metrics. Routes of every transport reach it as
a dependency (service.api.deps); reload swaps its repository (service.dataplane.reload).
`ServiceState.serving()` opens one request's stay in the data plane, the same for every
protocol (`Serving`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

from service.codecs import media
from service.codecs.wire import RawResponse
from service.dataplane.body import BodyReader, Receive, route_body_limit
from service.dataplane.inference import Inference
from service.errors import NotReady, OutOfMemory
from service.models.repository import ModelRepository
from service.models.served_model import ServedModel
from service.observability.metrics import ServiceMetrics
from service.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    repository: ModelRepository | None = None
    inference: Inference | None = None
    ready: bool = False
    metrics: ServiceMetrics | None = None  # None: VAE_METRICS=false
    readiness_details_open: bool = False  # /readyz gives refusal reasons without a key
    # route_body_limit, memoised: the same few (model, route, Content-Type) come again and
    # again. Holding the model keeps its identity unique; short Content-Types only, and
    # emptied when it reaches 256 entries (bounded by bytes like service.codecs.media' caches).
    _body_limits: dict[tuple[ServedModel, str, str | None], int] = field(default_factory=dict)

    def body_limit(self, model: ServedModel, route: str, content_type: str | None) -> int:
        key = (model, route, content_type)
        limit = self._body_limits.get(key)
        if limit is None:
            limit = route_body_limit(self.settings, model, route, content_type)
            if content_type is None or len(content_type) <= media.CACHEABLE_BYTES:
                if len(self._body_limits) >= 256:
                    self._body_limits.clear()
                self._body_limits[key] = limit
        return limit

    def require_ready(self) -> tuple[ModelRepository, Inference]:
        if self.repository is None or self.inference is None or not self.ready:
            raise NotReady("models are still loading", headers={"Retry-After": "1"})
        return self.repository, self.inference

    def serving(self) -> Serving:
        """One request's stay in the data plane (`with state.serving() as call:`); 503 while
        the models load."""
        repository, inference = self.require_ready()
        return Serving(repository, inference)


class Serving:
    """What every request of every protocol shares while the data plane holds it: the
    repository it resolves its model in, where its work runs, its body read within a limit and
    the worker's body budget, a worker out of memory answered 503, and, once the answer is
    known, the body's budget and memory given back (Inference.finished)."""

    __slots__ = ("_answer_bytes", "_reader", "inference", "repository")

    def __init__(self, repository: ModelRepository, inference: Inference) -> None:
        # The repository is taken once: a reload mid-request swaps the state's, not this one.
        self.repository = repository
        self.inference = inference
        self._reader: BodyReader | None = None
        self._answer_bytes = 0

    def __enter__(self) -> Serving:
        return self

    async def read_body(self, receive: Receive, content_length: str | None, limit: int) -> bytes:
        self._reader = self.inference.body_reader(receive, content_length)
        return await self._reader.read(limit)

    def hold_message(self, size: int, limit: int) -> None:
        """A message its transport has already read whole (gRPC): refused above `limit` like
        a body, and charged to the worker's body budget until the answer."""
        self._reader = self.inference.body_reader(_nothing_to_receive, None)
        self._reader.hold(size, limit)

    def answered(self, response: RawResponse) -> RawResponse:
        """The answer's size decides whether its memory is handed back to the system."""
        self._answer_bytes = len(response.body)
        return response

    def answered_bytes(self, size: int) -> None:
        """As `answered`, for a transport that encodes the answer itself."""
        self._answer_bytes = size

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.inference.finished(self._reader, self._answer_bytes)
        if kind is not None and issubclass(kind, MemoryError):
            raise OutOfMemory(
                "the worker ran out of memory answering; retry later", headers={"Retry-After": "1"}
            ) from None


async def _nothing_to_receive() -> dict[str, object]:
    return {"type": "http.disconnect"}  # a held message has no body left to read
