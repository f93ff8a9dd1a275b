"""A real model repository (bundles exported by the real trainer) and the app serving it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import ServiceSettings
from tests.bundles import TINY
from training.config import TrainingConfig
from training.pipeline import run_training

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"


def _train(root: Path, name: str, version: str, **overrides: object) -> None:
    config = TrainingConfig(**{**TINY, "plots": False, **overrides})  # type: ignore[arg-type]
    run_training(config, root / name / version, show_progress=False)


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-vae/1 (the committed default), tiny-vae/1 and /2 (MLP VAE on digits, two
    versions), tiny-conv/1 (conv VAE), tiny-ae/1 (plain AE) and cancer-vae/1 (tabular, Gaussian).
    """
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(DEFAULT_BUNDLE, root / "digits-vae" / "1")
    _train(root, "tiny-vae", "1", dataset="digits:holdout=0")
    _train(root, "tiny-vae", "2", dataset="digits:holdout=0", seed=1)
    _train(root, "tiny-conv", "1", dataset="digits", arch="conv", conv_channels="8,16")
    _train(root, "tiny-ae", "1", dataset="digits", model="ae")
    _train(root, "cancer-vae", "1", dataset="breast-cancer")
    return root


@pytest.fixture(scope="session")
def settings(model_repository: Path) -> ServiceSettings:
    return ServiceSettings(
        model_repository=model_repository,
        default_model="digits-vae",
        max_batch_size=256,
        max_sample_n=100,
        max_body_bytes=4 * 1024 * 1024,
        intra_op_threads=1,
    )


@pytest.fixture(scope="session")
def client(settings: ServiceSettings) -> Iterator[TestClient]:
    """The real app through httpx, lifespan included (models load and warm up)."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
