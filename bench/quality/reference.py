"""The classic VAE recipe (bench/reference_vae.py) on the same train part, for our CPU time."""

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


def run_reference(splits: DataSplits, ours: dict[str, Any], options: Options) -> dict[str, Any]:
    """The classic recipe on the same train part, for the CPU time our training loop took."""
    preprocessing = OnnxBundle(Path(ours["bundle"])).preprocessing
    # The same model space as ours: the bundle's fitted min-max to [0, 1], applied to raw rows.
    x_train = preprocessing.apply(train_part(splits)).reshape(
        -1, int(np.prod(splits.train.shape[1:]))
    )
    x_test = preprocessing.apply(splits.test).reshape(len(splits.test), -1)
    budget = options.budget_s if options.budget_s is not None else ours["search_cpu_seconds"]
    run = train_reference(
        torch.from_numpy(x_train),
        torch.from_numpy(x_test[~splits.test_is_anomaly]),
        budget_cpu_s=budget,
        iwae_samples=int(ours["heldout"]["iwae_samples"]),
        seed=options.seed,
    )
    return {
        "recipe": f"MLP {x_train.shape[1]}-{HIDDEN}-{LATENT}, Bernoulli, Adam {LEARNING_RATE:g}, "
        f"batch {BATCH_SIZE}, no early stopping",
        "heldout": run.heldout,
        "budget_cpu_seconds": budget,
        "cpu_seconds": run.cpu_seconds,
        "wall_seconds": run.wall_seconds,
        "epochs": run.epochs,
        "steps": run.steps,
        "n_train": len(x_train),
    }
