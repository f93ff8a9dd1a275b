"""Each task's data: the issue's split, the train part the peers fit on, and AUROC."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from bench.quality.config import task_test_fraction
from bundle.arrays import Float64Array
from training.data import DataSplits, LoadedData, load_dataset, split_dataset


def benchmark_split(
    task: str, seed: int, validation_fraction: float
) -> tuple[LoadedData, DataSplits]:
    """The task's split, made by the same call (same arguments) that `run_training` makes."""
    data = load_dataset(task)
    splits = split_dataset(
        data,
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=task_test_fraction(task),
    )
    return data, splits


def train_part(splits: DataSplits) -> npt.NDArray[np.float32]:
    """Our train and validation rows together (60%, or mnist-5k's 80%): what the peers and the
    reference fit on."""
    return np.concatenate([splits.train, splits.validation])


def auroc(is_anomaly: npt.NDArray[np.bool_], scores: Float64Array) -> float:
    return float(roc_auc_score(is_anomaly, scores))
