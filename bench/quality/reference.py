"""The classic VAE recipe (bench/reference_vae.py) on the same train part, for our training time:
CPU seconds on `digits`, wall-clock seconds on `mnist-5k` (config.LIKELIHOOD_TASKS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.quality.config import Options
from bench.quality.data import train_part
from bench.reference_vae import BATCH_SIZE, HIDDEN, LATENT, LEARNING_RATE, train_reference
from bundle.runtime import OnnxBundle
from training.data import DataSplits


def training_seconds(ours: dict[str, Any], kind: str) -> float:
    """What our training took, counted the way `kind` says: "cpu", every candidate's training
    loop in process CPU seconds; "wall", the training loop's wall seconds where one candidate
    trained (every image model), else the whole architecture search's."""
    if kind == "cpu":
        return float(ours["search_cpu_seconds"])
    if kind == "wall":
        one = len(ours.get("candidates", [])) <= 1
        return float(ours["train_seconds"] if one else ours["search_seconds"])
    raise ValueError(f"unknown budget kind {kind!r}")


def run_reference(
    splits: DataSplits, ours: dict[str, Any], seed: int, budget_kind: str, options: Options
) -> dict[str, Any]:
    """The classic recipe on the same train part, for the time our training loop took."""
    preprocessing = OnnxBundle(Path(ours["bundle"])).preprocessing
    # The same model space as ours: the bundle's fitted min-max to [0, 1], applied to raw rows.
    x_train = preprocessing.apply(train_part(splits)).reshape(
        -1, int(np.prod(splits.train.shape[1:]))
    )
    x_test = preprocessing.apply(splits.test).reshape(len(splits.test), -1)
    budget = (
        options.budget_s if options.budget_s is not None else training_seconds(ours, budget_kind)
    )
    run = train_reference(
        torch.from_numpy(x_train),
        torch.from_numpy(x_test[~splits.test_is_anomaly]),
        budget_cpu_s=budget if budget_kind == "cpu" else None,
        budget_wall_s=budget if budget_kind == "wall" else None,
        iwae_samples=int(ours["heldout"]["iwae_samples"]),
        seed=seed,
    )
    return {
        "recipe": f"MLP {x_train.shape[1]}-{HIDDEN}-{LATENT}, Bernoulli, Adam {LEARNING_RATE:g}, "
        f"batch {BATCH_SIZE}, no early stopping",
        "heldout": run.heldout,
        "budget": {"kind": budget_kind, "seconds": budget},
        "cpu_seconds": run.cpu_seconds,
        "wall_seconds": run.wall_seconds,
        "epochs": run.epochs,
        "steps": run.steps,
        "n_train": len(x_train),
    }
