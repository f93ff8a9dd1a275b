"""The peers: PyOD's detectors with their defaults, fitted on the train part and scored."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from bench.quality.data import auroc, train_part
from bundle.arrays import Float64Array
from training.data import DataSplits, LoadedData


def peer_inputs(data: LoadedData, splits: DataSplits) -> tuple[Float64Array, Float64Array]:
    """Flat (N, D) float64 rows for the peers: the train part and the test part.

    Two fixes any user would have to make, applied to every peer alike:
    - columns constant over the train part are dropped: PyOD standardises with std + 1e-8, so a
      pixel that was always 0 in training and lights up in a test item scores 1e16 in it, and
      PyOD's PCA gives such columns a zero eigenvalue, whose weight 1/0 makes every score inf;
    - tables are standardised with the train part's mean and std (the issue's "standardised
      features"; PyOD's deep models and PCA standardise again, which changes nothing).
    """
    rows = len(splits.train) + len(splits.validation)
    train = train_part(splits).reshape(rows, -1).astype(np.float64)
    test = splits.test.reshape(len(splits.test), -1).astype(np.float64)
    keep = train.std(axis=0) > 0
    train, test = train[:, keep], test[:, keep]
    if not data.is_image:
        mean, std = train.mean(axis=0), train.std(axis=0)
        train, test = (train - mean) / std, (test - mean) / std
    return train, test


def _numerical_rank(x: Float64Array) -> int:
    standardised = (x - x.mean(axis=0)) / x.std(axis=0)
    singular = np.linalg.svd(standardised, compute_uv=False)
    return int(np.sum(singular > singular[0] * max(x.shape) * np.finfo(np.float64).eps))


def peer_factories(seed: int, train: Float64Array) -> dict[str, Callable[[], Any]]:
    # Imported here: pyod is the `quality` extra only, and importing it costs seconds.
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.iforest import IForest
    from pyod.models.pca import PCA
    from pyod.models.vae import VAE

    # PyOD's PCA keeps every component by default and divides by each one's explained
    # variance; past the data's rank that variance is 0 and every score becomes inf (digits
    # with one class held out has such a direction). Keeping the components up to the rank is
    # the default in every other respect.
    rank = _numerical_rank(train)
    return {
        "PyOD AutoEncoder": lambda: AutoEncoder(random_state=seed, verbose=0),
        "PyOD VAE": lambda: VAE(random_state=seed, verbose=0),
        "PyOD IForest": lambda: IForest(random_state=seed),
        "PyOD PCA": lambda: PCA(n_components=rank, random_state=seed),
    }


def run_peers(
    train: Float64Array, test: Float64Array, is_anomaly: npt.NDArray[np.bool_], seed: int
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, factory in peer_factories(seed, train).items():
        torch.manual_seed(seed)
        started = time.perf_counter()
        detector = factory()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyOD's deprecation chatter, not our business
            detector.fit(train)
            scores = np.asarray(detector.decision_function(test), dtype=np.float64)
        entry: dict[str, Any] = {"fit_score_seconds": time.perf_counter() - started}
        if not np.all(np.isfinite(scores)):
            entry["problem"] = f"{int(np.sum(~np.isfinite(scores)))} non-finite test scores"
        elif is_anomaly.any():
            entry["auroc"] = auroc(is_anomaly, scores)
        results[name] = entry
    return results
