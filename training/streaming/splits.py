"""Splits of a data set streamed from disk: index arrays over the memory-mapped file.

A streamed run (`LoadedData.streamed`, a .npy over the memory budget) keeps per-row
bookkeeping in memory (split indices and scores, 8 bytes a row each) and never the features:
each split is a `MappedRows` whose rows are read when a chunk or a batch asks for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from training.config import TrainingConfig
from training.data import DataSplits, LoadedData, split_dataset
from training.data.dataset import split_indices
from training.streaming.budget import rows_per_chunk
from training.streaming.mapped_rows import MappedRows

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Items of each held-out split the report's plots show when the data are streamed: enough for
# a latent scatter and a score histogram, read from disk in one go (fewer if a chunk of the
# memory budget holds fewer).
REPORT_ITEMS = 4096


@dataclass(frozen=True)
class StreamedSplits:
    train: MappedRows  # normal rows only
    validation: MappedRows  # normal rows only
    test: MappedRows  # held-out normal rows, followed by ALL anomaly rows
    test_is_anomaly: BoolArray  # aligned with test


def split_for_training(
    data: LoadedData, config: TrainingConfig, memory_budget: int
) -> DataSplits | StreamedSplits:
    """The run's splits: arrays in memory, or, for streamed data, the same rows unread."""
    seed, validation, test = config.seed, config.validation_fraction, config.test_fraction
    if not data.streamed:
        return split_dataset(data, seed=seed, validation_fraction=validation, test_fraction=test)
    index = split_indices(data, seed=seed, validation_fraction=validation, test_fraction=test)
    chunk = rows_per_chunk(math.prod(data.feature_shape), memory_budget)
    return StreamedSplits(
        train=MappedRows(data.x, index.train, chunk),
        validation=MappedRows(data.x, index.validation, chunk),
        test=MappedRows(data.x, index.test, chunk),
        test_is_anomaly=index.test_is_anomaly,
    )


def row_chunks(x: FloatArray | MappedRows, rows: int) -> Iterator[FloatArray]:
    """A split in the user's units, `rows` at a time."""
    for start in range(0, len(x), rows):
        yield x[start : start + rows]


def _sample(n: int, size: int, seed: int) -> IntArray:
    """Up to `size` positions out of n, ascending (so normal items stay first)."""
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def report_sample(splits: StreamedSplits, seed: int) -> tuple[DataSplits, IntArray]:
    """In-memory splits holding a seeded sample of the held-out items, for the report's plots,
    and the test positions sampled (to pick the same items' scores)."""
    size = min(REPORT_ITEMS, splits.test.chunk_rows)
    test_picked = _sample(len(splits.test), size, seed)
    validation_picked = _sample(len(splits.validation), size, seed)
    empty = np.zeros((0, *splits.train.feature_shape), dtype=np.float32)
    sample = DataSplits(
        train=empty,
        validation=splits.validation.read(validation_picked),
        test=splits.test.read(test_picked),
        test_is_anomaly=splits.test_is_anomaly[test_picked],
        train_labels=None,
        validation_labels=None,
        test_labels=None,
    )
    return sample, test_picked
