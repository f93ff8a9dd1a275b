"""The defaults that depend on the data: chosen once the data set is loaded, recorded with why.

A setting left out is resolved here from the data's shape, before any model is built; the run
then carries on with a config in which every choice is concrete, and `model.json` records each
data-shaped choice and its reason under `training.data_defaults`: the code size, the
architecture, the width, the likelihood, the KL warm-up and the training length. A value the
user gave is recorded as "given".

Images are where one default cannot fit all: scikit-learn's 8x8 digits and 28x28 MNIST digits
differ 12-fold in pixels. The rules and the measurements behind them are in
bench/quality_defaults.md ("Images the size of MNIST"; "KL warm-up").
"""

from __future__ import annotations

import dataclasses
import math

from training.config import DEFAULT_LATENT, TrainingConfig
from training.factory import resolve_likelihood

# The code of an image model with more pixels than a 16x16 one. mnist-5k (MLP 256-128, seed 0):
# held-out -ELBO 116.9 nats with 8 dimensions, 113.3 with 20, and the held-out digits ranked
# as well (recon_complexity AUROC, holdout=0/1/9: 0.84/0.88/0.74 with 8, 0.89/0.87/0.74 with 20).
LARGE_IMAGE_PIXELS = 256
LARGE_IMAGE_LATENT = 20

Record = dict[str, dict[str, object]]

_DEFAULTS = TrainingConfig()

# Why each choice that is the same whatever the data is, measured on every development set:
# a setting that modelled mnist-5k better ranked its held-out digits worse each time
# (bench/quality_defaults.md, "Images the size of MNIST" and "KL warm-up").
_WHY_MLP = (
    "the MLP for every data kind: on mnist-5k the conv net (32,64 channels, code 20) modelled "
    "held-out digits better (~109 vs 113.3 nats) but ranked a held-out class worse (AUROC "
    "holdout=1 0.60 vs 0.87, holdout=9 0.63 vs 0.74) in 2.5x the time"
)
_WHY_IMAGE_WIDTH = (
    "256,128 for images: on mnist-5k the textbook's one layer of 400 modelled held-out digits "
    "better (111.7 vs 113.3 nats) but ranked held-out 1s worse (AUROC 0.80 vs 0.87)"
)
_WHY_TABLE_WIDTH = (
    "auto for a VAE on a table: the MLP 256,128 and a linear model both trained, the lower "
    "validation loss kept (the linear one won on breast-cancer, the MLP on wine and iris)"
)
_WHY_KL_WARMUP = (
    "10 epochs for every data kind: on mnist-5k (seed 0) 0 / 10 / 30 epochs gave held-out "
    "-ELBO 114.1 / 113.3 / 112.4 nats and held-out 9s AUROC 0.76 / 0.74 / 0.71: a longer ramp "
    "models better and ranks worse, no ramp the reverse; 10 keeps the ramp against collapse"
)
_WHY_TRAINING_LENGTH = (
    "early stopping on the validation loss (patience {patience} epochs, epochs of at least "
    "{min_steps} steps, at most {epochs}): the data's size sets the length; every run in "
    "bench/QUALITY.md stopped early, mnist-5k after ~140 epochs in ~60 s"
)


def _is_default(config: TrainingConfig, *fields: str) -> bool:
    return all(getattr(config, name) == getattr(_DEFAULTS, name) for name in fields)


def _latent(config: TrainingConfig, pixels: int, is_image: bool, chosen: Record) -> int | None:
    if config.latent_dim is not None:
        chosen["latent_dim"] = {"value": config.latent_dim, "why": "given"}
        return config.latent_dim
    if not is_image:
        return None  # a table's is left to the architecture search, which sizes each candidate
    latent = LARGE_IMAGE_LATENT if pixels > LARGE_IMAGE_PIXELS else DEFAULT_LATENT
    relation = "over" if pixels > LARGE_IMAGE_PIXELS else "at most"
    chosen["latent_dim"] = {
        "value": latent,
        "why": f"{pixels} pixels, {relation} {LARGE_IMAGE_PIXELS}: a code of {latent}",
    }
    return latent


def _width(config: TrainingConfig, is_image: bool) -> dict[str, object]:
    if config.arch == "conv":
        if _is_default(config, "conv_channels"):
            return {"value": config.conv_channels, "why": "the conv net's default channels"}
        return {"value": config.conv_channels, "why": "given"}
    if not _is_default(config, "hidden"):
        return {"value": config.hidden, "why": "given"}
    if not is_image and config.model == "vae":
        return {"value": "auto", "why": _WHY_TABLE_WIDTH}
    return {"value": "256,128", "why": _WHY_IMAGE_WIDTH if is_image else "256,128"}


def _likelihood(config: TrainingConfig, is_image: bool) -> dict[str, object]:
    value = resolve_likelihood(config, is_image)
    if config.likelihood != "auto":
        return {"value": value, "why": "given"}
    if is_image:
        return {"value": value, "why": "an image: values in [0, 1]"}
    return {
        "value": value,
        "why": "a table: heavier-tailed than gaussian, so one odd column does not swamp a "
        "record's score",
    }


def resolve_data_defaults(
    config: TrainingConfig, feature_shape: tuple[int, ...], is_image: bool
) -> tuple[TrainingConfig, Record]:
    """(the config with the code size of an image model made concrete, what was chosen and
    why). Only the code size changes the config here; the other records say what the run's
    own resolution (training.factory, training.architecture) will pick, and why."""
    chosen: Record = {}
    latent = _latent(config, math.prod(feature_shape), is_image, chosen)
    chosen["arch"] = {
        "value": config.arch,
        "why": _WHY_MLP if _is_default(config, "arch") else "given",
    }
    chosen["width"] = _width(config, is_image)
    if config.model == "vae":
        chosen["likelihood"] = _likelihood(config, is_image)
        chosen["kl_warmup_epochs"] = {
            "value": config.kl_warmup_epochs,
            "why": _WHY_KL_WARMUP if _is_default(config, "kl_warmup_epochs") else "given",
        }
    length_fields = ("epochs", "patience", "min_steps_per_epoch")
    chosen["training_length"] = {
        "value": f"early stopping, patience {config.patience}, at most {config.epochs} epochs",
        "why": _WHY_TRAINING_LENGTH.format(
            patience=config.patience, min_steps=config.min_steps_per_epoch, epochs=config.epochs
        )
        if _is_default(config, *length_fields)
        else "given",
    }
    return dataclasses.replace(config, latent_dim=latent), chosen
