"""Loaded data and its seeded split into train / validation / test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bundle.arrays import FloatArray
from training.data._arrays import BoolArray, IntArray
from training.data.errors import DataError


@dataclass(frozen=True)
class LoadedData:
    # (N, *feature_shape), raw values in the user's units: float32 in memory, or, when
    # `streamed`, a read-only view of a memory-mapped .npy in the file's own dtype, which only
    # training.streaming.splits reads, a chunk of rows at a time.
    x: FloatArray
    feature_shape: tuple[int, ...]  # (D,) for tabular; (C, H, W) for images
    is_image: bool
    labels: IntArray | None  # int64 (N,) class labels when known
    label_names: list[str] | None  # name of each class id when known
    is_anomaly: BoolArray | None  # bool (N,), True = anomaly; anomalies are never trained on
    description: dict[str, object]  # JSON-able summary of what was loaded and how
    streamed: bool = False
    # Tables: each column's name (the CSV header, a built-in set's names), for the manifest and
    # the service's drift verdicts; None for images or unnamed columns.
    feature_names: list[str] | None = None

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


@dataclass(frozen=True)
class SplitIndex:
    """Which rows of the data each split takes, in split order (rows are not copied)."""

    train: IntArray
    validation: IntArray
    test: IntArray  # held-out normal rows, followed by ALL anomaly rows
    test_is_anomaly: BoolArray  # aligned with test


def split_indices(
    data: LoadedData,
    *,
    seed: int,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> SplitIndex:
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
    # Anomalies keep their file order after the held-out normals, so reports can refer back.
    test_idx = np.concatenate([order[n_train + n_validation :], anomalous])
    test_is_anomaly = np.zeros(len(test_idx), dtype=np.bool_)
    test_is_anomaly[n_test:] = True
    return SplitIndex(
        train=order[:n_train],
        validation=order[n_train : n_train + n_validation],
        test=test_idx,
        test_is_anomaly=test_is_anomaly,
    )


def split_dataset(
    data: LoadedData,
    *,
    seed: int,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataSplits:
    index = split_indices(
        data, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction
    )

    def labels_at(rows: IntArray) -> IntArray | None:
        return None if data.labels is None else data.labels[rows]

    return DataSplits(
        train=data.x[index.train],
        validation=data.x[index.validation],
        test=data.x[index.test],
        test_is_anomaly=index.test_is_anomaly,
        train_labels=labels_at(index.train),
        validation_labels=labels_at(index.validation),
        test_labels=labels_at(index.test),
    )
