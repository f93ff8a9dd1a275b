"""What the FastAPI routes depend on, declared once (as full-stack-fastapi-template's
`api/deps.py` does): the worker's served state, and its repository once models are ready.

`create_app` stores the state on the app; routes take `state: ServedState` or
`repository: ReadyRepository` as parameters and never reach into `request.app.state`
themselves. The fast path (service.api.fastpath) is handed the same state when it is built.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.dataplane.state import ServiceState
from service.models.repository import ModelRepository


def served_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


ServedState = Annotated[ServiceState, Depends(served_state)]


def ready_repository(state: ServedState) -> ModelRepository:
    """The repository being served; 503 `not_ready` while models load."""
    return state.require_ready()[0]


ReadyRepository = Annotated[ModelRepository, Depends(ready_repository)]
