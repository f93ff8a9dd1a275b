"""The batch-scoring tests' fixtures: a table model trained once, and a real `vae-serve` serving
it beside the committed image model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.batch_scoring.helpers import IMAGE_MODEL, TABLE_MODEL
from tests.bundles import COMMITTED_BUNDLE, BundleFactory
from tests.e2e.processes import running_server


@pytest.fixture(scope="package")
def table_bundle(train_bundle: BundleFactory) -> Path:
    outcome = train_bundle(
        dataset="breast-cancer", epochs=10, hidden="16", latent_dim=3, name=TABLE_MODEL
    )
    return outcome.bundle_dir


@pytest.fixture(scope="package")
def service(table_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("score-repository")
    (root / TABLE_MODEL).mkdir()
    (root / TABLE_MODEL / "1").symlink_to(table_bundle, target_is_directory=True)
    shutil.copytree(COMMITTED_BUNDLE, root / IMAGE_MODEL / "1")
    with running_server({"VAE_WORKERS": "1", "VAE_LOG_LEVEL": "warning"}, root) as (base, _):
        yield base
