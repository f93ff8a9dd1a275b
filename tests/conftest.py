"""Shared fixtures: real bundles, trained by the real trainer, once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bundles import TINY, BundleFactory
from training.config import TrainingConfig
from training.pipeline import TrainingOutcome, run_training


@pytest.fixture(scope="session")
def train_bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleFactory:
    """Train a bundle with TINY settings overridden by keyword arguments; cached per settings."""
    cache: dict[tuple[tuple[str, object], ...], TrainingOutcome] = {}

    def train(**overrides: object) -> TrainingOutcome:
        settings = {**TINY, "plots": False, **overrides}
        key = tuple(sorted(settings.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("bundle") / "model" / "1"
            config = TrainingConfig(**settings)  # type: ignore[arg-type]
            cache[key] = run_training(config, out, show_progress=False)
        return cache[key]

    return train


@pytest.fixture(scope="session")
def digits_vae(train_bundle: BundleFactory) -> TrainingOutcome:
    """The tiny digits VAE with its report plots, shared by many tests."""
    return train_bundle(dataset="digits:holdout=0", plots=True)


@pytest.fixture
def bundle_copy(digits_vae: TrainingOutcome, tmp_path: Path) -> Path:
    """A private copy of the digits bundle that a test may damage."""
    target = tmp_path / "copy"
    shutil.copytree(digits_vae.bundle_dir, target)
    return target
