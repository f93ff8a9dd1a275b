"""Settings and types shared by the bundle fixtures in conftest.py and the tests using them."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from training.pipeline import TrainingOutcome

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"

# Small and quick, yet the full path: data -> train -> export -> parity -> calibrate -> verify.
TINY: dict[str, object] = {
    "epochs": 3,
    "hidden": "32",
    "latent_dim": 2,
    "batch_size": 128,
    "iwae_samples": 8,
}

BundleFactory = Callable[..., TrainingOutcome]


@functools.cache
def committed_repository() -> Path:
    """A model repository holding the committed bundle alone (`digits-vae/1`), copied once per
    test process. Tests serve this, never the checkout's `models/`: a user's own bundles there
    (the README's first hour trains one beside it) must not change what the tests see."""
    root = Path(tempfile.mkdtemp(prefix="vae-committed-repository-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copytree(COMMITTED_BUNDLE, root / "digits-vae" / "1")
    return root
