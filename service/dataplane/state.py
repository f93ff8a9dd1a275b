"""The served state of one worker: its settings, the model repository it serves, where work
runs (`Inference`), whether it is ready, and its metrics. Routes of every transport reach it as
a dependency (service.api.deps); reload swaps its repository (service.dataplane.reload)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.codecs import media
from service.dataplane.body import route_body_limit
from service.dataplane.inference import Inference
from service.errors import NotReady
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
