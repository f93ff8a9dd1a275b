"""A server worker's app (`app_from_environment`, uvicorn's factory) freezes what start-up left
alive, once the models are loaded; an app made anywhere else (tests, scripts) never does."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.server.cli import app_from_environment
from service.settings import ServiceSettings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process makes many apps: none of them may stay frozen


def test_a_worker_freezes_what_start_up_loaded(
    unfrozen: None, model_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAE_MODEL_REPOSITORY", str(model_repository))
    monkeypatch.setenv("VAE_DEFAULT_MODEL", "digits-vae")
    app = app_from_environment()
    assert gc.get_freeze_count() == 0  # not before the models are loaded
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        assert gc.get_freeze_count() > 10_000  # the modules and the models loaded


def test_other_apps_never_freeze(unfrozen: None, settings: ServiceSettings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        assert gc.get_freeze_count() == 0
