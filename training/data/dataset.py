"""Loaded data and its seeded split into train / validation / test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data._arrays import BoolArray, FloatArray, IntArray
from training.data.errors import DataError


@dataclass(frozen=True)
class LoadedData:
    x: FloatArray  # float32, (N, *feature_shape), raw values in the user's units
    feature_shape: tuple[int, ...]  # (D,) for tabular; (C, H, W) for images
    is_image: bool
    labels: IntArray | None  # int64 (N,) class labels when known
    label_names: list[str] | None  # name of each class id when known
    is_anomaly: BoolArray | None  # bool (N,), True = anomaly; anomalies are never trained on
    description: dict[str, object]  # JSON-able summary of what was loaded and how

    @property
    def n_items(self) -> int:
        return int(self.x.shape[0])

    def normal_mask(self) -> BoolArray:
        if self.is_anomaly is None:
            return np.ones(self.n_items, dtype=np.bool_)
        return ~self.is_anomaly


@dataclass(frozen=True)
class DataSplits:
    train: FloatArray  # normal rows only
    validation: FloatArray  # normal rows only (early stopping, threshold calibration)
    test: FloatArray  # held-out normal rows, followed by ALL anomaly rows
    test_is_anomaly: BoolArray  # aligned with test
    train_labels: IntArray | None
    validation_labels: IntArray | None
    test_labels: IntArray | None


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    if not 0.0 < validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if validation_fraction + test_fraction >= 1.0:
        raise DataError(
            f"validation_fraction + test_fraction must leave rows for training, got "
            f"{validation_fraction} + {test_fraction}"
        )


def split_dataset(
    data: LoadedData,
    *,
    seed: int,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataSplits:
    _check_fractions(validation_fraction, test_fraction)
    name = data.description.get("name", "dataset")
    normal = np.flatnonzero(data.normal_mask())
    anomalous = np.flatnonzero(~data.normal_mask())
    n = len(normal)
    n_validation = max(1, round(n * validation_fraction))
    n_test = round(n * test_fraction)
    n_train = n - n_validation - n_test
    if n_train < 1:
        raise DataError(
            f"{name}: {n} normal rows are too few to split into train / validation / test "
            f"with fractions {validation_fraction} / {test_fraction}"
        )
    order = np.random.default_rng(seed).permutation(normal)
    train_idx = order[:n_train]
    validation_idx = order[n_train : n_train + n_validation]
    # Anomalies keep their file order after the held-out normals, so reports can refer back.
    test_idx = np.concatenate([order[n_train + n_validation :], anomalous])
    test_is_anomaly = np.zeros(len(test_idx), dtype=np.bool_)
    test_is_anomaly[n_test:] = True

    def labels_at(index: IntArray) -> IntArray | None:
        return None if data.labels is None else data.labels[index]

    return DataSplits(
        train=data.x[train_idx],
        validation=data.x[validation_idx],
        test=data.x[test_idx],
        test_is_anomaly=test_is_anomaly,
        train_labels=labels_at(train_idx),
        validation_labels=labels_at(validation_idx),
        test_labels=labels_at(test_idx),
    )
