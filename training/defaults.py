"""The defaults that depend on the data: chosen once the data set is loaded, recorded with why.

A setting left out is resolved here from the data's shape, before any model is built; the run
then carries on with a config in which every choice is concrete, and `model.json` records each
choice and its reason under `training.data_defaults`.

Images are where one default cannot fit all: scikit-learn's 8x8 digits and 28x28 MNIST digits
differ 12-fold in pixels. The rules and the measurements behind them are in
bench/quality_defaults.md ("Images the size of MNIST").
"""

from __future__ import annotations

import dataclasses
import math

from training.config import DEFAULT_LATENT, TrainingConfig

# The code of an image model with more pixels than a 16x16 one. mnist-5k (MLP 256-128, seed 0):
# held-out -ELBO 116.9 nats with 8 dimensions, 113.3 with 20, and the held-out digits ranked
# as well (recon_complexity AUROC, holdout=0/1/9: 0.84/0.88/0.74 with 8, 0.89/0.87/0.74 with 20).
LARGE_IMAGE_PIXELS = 256
LARGE_IMAGE_LATENT = 20


def resolve_data_defaults(
    config: TrainingConfig, feature_shape: tuple[int, ...], is_image: bool
) -> tuple[TrainingConfig, dict[str, dict[str, object]]]:
    """(the config with the code size of an image model made concrete, what was chosen and
    why). A code size the user gave is kept and recorded as theirs; a table's is left to the
    architecture search (training.architecture), which sizes each candidate's own."""
    chosen: dict[str, dict[str, object]] = {}
    latent = config.latent_dim
    if latent is not None:
        chosen["latent_dim"] = {"value": latent, "why": "given"}
    elif is_image:
        pixels = math.prod(feature_shape)
        latent = LARGE_IMAGE_LATENT if pixels > LARGE_IMAGE_PIXELS else DEFAULT_LATENT
        relation = "over" if pixels > LARGE_IMAGE_PIXELS else "at most"
        chosen["latent_dim"] = {
            "value": latent,
            "why": f"{pixels} pixels, {relation} {LARGE_IMAGE_PIXELS}: a code of {latent}",
        }
    return dataclasses.replace(config, latent_dim=latent), chosen
