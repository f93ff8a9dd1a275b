"""Settings and types shared by the bundle fixtures in conftest.py and the tests using them."""

from __future__ import annotations

from collections.abc import Callable

from training.pipeline import TrainingOutcome

# Small and quick, yet the full path: data -> train -> export -> parity -> calibrate -> verify.
TINY: dict[str, object] = {
    "epochs": 3,
    "hidden": "32",
    "latent_dim": 2,
    "batch_size": 128,
    "iwae_samples": 8,
}

BundleFactory = Callable[..., TrainingOutcome]
