"""How raw inputs in the user's units become model inputs, and back.

The bundle stores `offset` and `scale` as flat lists whose length is either 1 (one value for
every feature, e.g. global min-max of pixel intensities) or the flattened feature count (e.g.
per-column standardisation). Both sides of the house apply them through this one class, so the
service and the trainer agree to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray

PreprocessingKind = Literal["minmax", "standard", "none"]


# eq=False: fields are arrays, whose == is elementwise; compare with to_manifest() instead.
@dataclass(frozen=True, eq=False)
class Preprocessing:
    """`x_model = clip((x - offset) / scale)`; `x = x_model * scale + offset`."""

    kind: PreprocessingKind
    offset: FloatArray  # (1,) or (D,) with D the flattened feature count
    scale: FloatArray  # same shape as offset, strictly positive
    # Bernoulli likelihoods need targets in [0, 1]; values outside the training range are
    # clipped rather than producing a negative cross-entropy.
    clip: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.offset.shape != self.scale.shape or self.offset.ndim != 1:
            raise ValueError("offset and scale must be flat arrays of the same length")
        if not np.all(self.scale > 0):
            raise ValueError("every scale must be strictly positive")

    @classmethod
    def identity(cls) -> Preprocessing:
        one = np.ones(1, dtype=np.float32)
        return cls(kind="none", offset=np.zeros(1, dtype=np.float32), scale=one)

    def _broadcastable(self, values: FloatArray, x: npt.NDArray[Any]) -> FloatArray:
        # Parameters are stored flat; inputs arrive as (B, *feature_shape).
        if values.size == 1:
            return values.reshape(())
        return values.reshape(x.shape[1:])

    def apply(self, x: npt.NDArray[Any]) -> FloatArray:
        """Raw batch (B, *shape) in user units -> model inputs (float32)."""
        x = np.asarray(x, dtype=np.float32)
        # The same float32 operations as `(x - offset) / scale` then a clip, bit for bit, on
        # one new array: 4.6 us against 6.5 for a digit (64 values), on every request.
        out: FloatArray = np.subtract(x, self._broadcastable(self.offset, x))
        np.divide(out, self._broadcastable(self.scale, x), out=out)
        if self.clip is not None:
            np.maximum(out, self.clip[0], out=out)  # np.clip's Python wrapper costs more
            np.minimum(out, self.clip[1], out=out)
        return out

    def invert(self, x_model: npt.NDArray[Any]) -> FloatArray:
        """Model outputs (B, *shape) -> the user's units (float32)."""
        x_model = np.asarray(x_model, dtype=np.float32)
        out: FloatArray = np.multiply(x_model, self._broadcastable(self.scale, x_model))
        out += self._broadcastable(self.offset, x_model)
        return out

    def to_manifest(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "formula": "x_model = clip((x - offset) / scale); offset/scale broadcast over features",
            "offset": [float(v) for v in self.offset],
            "scale": [float(v) for v in self.scale],
            "clip": list(self.clip) if self.clip is not None else None,
        }

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> Preprocessing:
        clip = entry.get("clip")
        return cls(
            kind=entry["kind"],
            offset=np.asarray(entry["offset"], dtype=np.float32),
            scale=np.asarray(entry["scale"], dtype=np.float32),
            clip=(float(clip[0]), float(clip[1])) if clip is not None else None,
        )


def fit_preprocessing(
    x_train: npt.NDArray[Any],
    kind: PreprocessingKind,
    *,
    per_feature: bool,
    clip: tuple[float, float] | None = None,
) -> Preprocessing:
    """Fit normalisation on training data only (never on validation or test rows).

    `per_feature=False` fits one offset/scale for all features: right for images, where
    per-pixel min-max would divide by zero on always-blank corners and distort intensities.
    `clip` is for Bernoulli likelihoods only: clipping hides how far out of range an anomaly
    lies, so Gaussian models keep the unclipped values.
    """
    if len(x_train) == 0:
        raise ValueError("cannot fit preprocessing on an empty training set")
    x = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    if kind == "none":
        identity = Preprocessing.identity()
        return Preprocessing(kind="none", offset=identity.offset, scale=identity.scale, clip=clip)
    axis = 0 if per_feature else None
    if kind == "minmax":
        low = np.min(x, axis=axis)
        span = np.max(x, axis=axis) - low
        offset, scale = np.atleast_1d(low), np.atleast_1d(span)
    elif kind == "standard":
        offset = np.atleast_1d(np.mean(x, axis=axis))
        scale = np.atleast_1d(np.std(x, axis=axis))
    else:
        raise ValueError(f"unknown preprocessing kind {kind!r}")
    # A constant feature carries no information; scale 1 keeps it finite instead of inf/NaN.
    scale = np.where(scale > 1e-8 * np.maximum(1.0, np.abs(offset)), scale, 1.0)
    return Preprocessing(
        kind=kind,
        offset=offset.astype(np.float32),
        scale=scale.astype(np.float32),
        clip=clip,
    )
