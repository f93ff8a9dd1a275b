"""Normalisation fitted over a streamed training split in chunks, as if it were in memory.

`bundle.preprocessing.fit_preprocessing` needs the whole split as one array; this computes the
same offset and scale one chunk of rows at a time: minimum and maximum exactly, mean and
standard deviation by merging per-chunk moments (Chan, Golub and LeVeque 1979), which agree
with numpy's to about 1e-16 relative, below float32's resolution. With one chunk the numpy
calls are the very same ones.
"""

from __future__ import annotations

import numpy as np

from bundle.arrays import Float64Array, FloatArray
from bundle.preprocessing import Preprocessing, PreprocessingKind
from training.streaming.mapped_rows import MappedRows


def value_range(x: FloatArray | MappedRows) -> tuple[float, float]:
    """Smallest and largest value of a split."""
    if not isinstance(x, MappedRows):
        return float(x.min()), float(x.max())
    lows, highs = zip(*((chunk.min(), chunk.max()) for chunk in x.chunks()), strict=True)
    return float(min(lows)), float(max(highs))


def _flat(chunk: FloatArray, per_feature: bool) -> Float64Array:
    x = np.asarray(chunk, dtype=np.float64).reshape(len(chunk), -1)
    return x if per_feature else x.reshape(-1)  # one value for all features: pool them


def _min_max(rows: MappedRows, per_feature: bool) -> tuple[Float64Array, Float64Array]:
    low = high = None
    for chunk in rows.chunks():
        x = _flat(chunk, per_feature)
        chunk_low, chunk_high = np.min(x, axis=0), np.max(x, axis=0)
        low = chunk_low if low is None else np.minimum(low, chunk_low)
        high = chunk_high if high is None else np.maximum(high, chunk_high)
    # A training split is never empty.
    assert low is not None
    assert high is not None
    return np.atleast_1d(low), np.atleast_1d(high)


def _mean_std(rows: MappedRows, per_feature: bool) -> tuple[Float64Array, Float64Array]:
    count = 0
    mean: Float64Array = np.zeros(1)
    m2: Float64Array = np.zeros(1)  # sum of squared deviations from the mean
    for chunk in rows.chunks():
        x = _flat(chunk, per_feature)
        n = x.shape[0]
        chunk_mean = np.mean(x, axis=0)
        deviations = x - chunk_mean
        chunk_m2 = np.sum(deviations * deviations, axis=0)
        if count == 0:
            mean, m2 = chunk_mean, chunk_m2
        else:
            delta = chunk_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + chunk_m2 + delta * delta * (count * n / total)
        count += n
    return np.atleast_1d(mean), np.atleast_1d(np.sqrt(m2 / count))


def fit_preprocessing_in_chunks(
    rows: MappedRows,
    kind: PreprocessingKind,
    *,
    per_feature: bool,
    clip: tuple[float, float] | None = None,
) -> Preprocessing:
    """`fit_preprocessing(rows, kind, per_feature=..., clip=...)` without reading all rows."""
    if len(rows) == 0:
        raise ValueError("cannot fit preprocessing on an empty training set")
    if kind == "none":
        identity = Preprocessing.identity()
        return Preprocessing(kind="none", offset=identity.offset, scale=identity.scale, clip=clip)
    if kind == "minmax":
        low, high = _min_max(rows, per_feature)
        offset, scale = low, high - low
    elif kind == "standard":
        offset, scale = _mean_std(rows, per_feature)
    else:
        raise ValueError(f"unknown preprocessing kind {kind!r}")
    # The rule of fit_preprocessing: a constant feature gets scale 1, not a division by zero.
    scale = np.where(scale > 1e-8 * np.maximum(1.0, np.abs(offset)), scale, 1.0)
    return Preprocessing(
        kind=kind, offset=offset.astype(np.float32), scale=scale.astype(np.float32), clip=clip
    )
