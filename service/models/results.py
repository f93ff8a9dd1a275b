"""What each operation of a served model returns: one small dataclass per operation.

The data plane carries these from the model to a codec and nothing reads them back by string
key. Each class says which of its fields hold one row per item (`PER_ITEM`: what the dynamic
batcher cuts a merged result into), which of those come back in the layout the client sent
its items in (`IN_INPUT_LAYOUT`), and which array is the answer's main one (`PRIMARY`: what an
npy answer carries by default, and how items are counted). Fields left `None` are not part of
the answer (`fields`), so a plain autoencoder's encoding has no `logvar`.

Mutable on purpose, with slots: a result belongs to one request, and reshaping a field in place
costs less on the hot path than a copy through `dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from bundle.arrays import Float64Array, FloatArray


class OperationResult:
    """The shape every result shares; subclasses are slotted dataclasses."""

    __slots__ = ()
    PER_ITEM: ClassVar[tuple[str, ...]] = ()
    IN_INPUT_LAYOUT: ClassVar[tuple[str, ...]] = ()
    PRIMARY: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        """Every field the answer carries, in declaration order (the order JSON writes them)."""
        present: dict[str, Any] = {}
        names: tuple[str, ...] = self.__slots__
        for name in names:  # a plain loop: half the time of a comprehension over a generator
            value = getattr(self, name)
            if value is not None:
                present[name] = value
        return present

    def item_count(self) -> int | None:
        primary = getattr(self, self.PRIMARY, None) if self.PRIMARY else None
        return None if primary is None else len(primary)

    def in_layout(self, layout: tuple[int, ...]) -> None:
        """Give the per-item fields computed in the model's layout the client's layout back."""
        for name in self.IN_INPUT_LAYOUT:
            array = getattr(self, name)
            if array is not None and array.shape[1:] != layout:
                setattr(self, name, array.reshape((len(array), *layout)))

    def rows(self, start: int, stop: int) -> Self:
        """Items start..stop of a merged batch's result; fields that are not per item are
        shared (a score's threshold is every item's)."""
        cut = type(self).__new__(type(self))
        names: tuple[str, ...] = self.__slots__
        for name in names:
            value = getattr(self, name)
            if value is not None and name in self.PER_ITEM:
                value = value[start:stop]
            setattr(cut, name, value)
        return cut


@dataclass(slots=True)
class EncodeResult(OperationResult):
    PER_ITEM: ClassVar[tuple[str, ...]] = ("mu", "logvar", "z")
    PRIMARY: ClassVar[str] = "mu"

    mu: FloatArray
    logvar: FloatArray | None = None  # None: a plain autoencoder, whose code is deterministic
    z: FloatArray | None = None  # a posterior sample, or a plain autoencoder's code
    seed: int | None = None  # the seed `z` was drawn with


@dataclass(slots=True)
class DecodeResult(OperationResult):
    PER_ITEM: ClassVar[tuple[str, ...]] = ("outputs",)
    PRIMARY: ClassVar[str] = "outputs"

    outputs: FloatArray


@dataclass(slots=True)
class ReconstructResult(OperationResult):
    PER_ITEM: ClassVar[tuple[str, ...]] = ("outputs",)
    IN_INPUT_LAYOUT: ClassVar[tuple[str, ...]] = ("outputs",)
    PRIMARY: ClassVar[str] = "outputs"

    # Posterior samples averaged (None: the deterministic mean path), with their seed; first,
    # as the answers have always listed them.
    samples: int | None
    seed: int | None
    outputs: FloatArray


@dataclass(slots=True)
class SampleResult(OperationResult):
    PER_ITEM: ClassVar[tuple[str, ...]] = ("outputs", "latents")
    PRIMARY: ClassVar[str] = "outputs"

    outputs: FloatArray
    latents: FloatArray
    seed: int
    temperature: float


@dataclass(slots=True)
class ScoreResult(OperationResult):
    PER_ITEM: ClassVar[tuple[str, ...]] = (
        "scores",
        "is_anomaly",
        "tail_probability",
        "feature_errors",
        "reconstruction",
    )
    IN_INPUT_LAYOUT: ClassVar[tuple[str, ...]] = ("feature_errors", "reconstruction")
    PRIMARY: ClassVar[str] = "scores"

    scores: Float64Array
    threshold: float
    is_anomaly: npt.NDArray[np.bool_]
    score_type: str
    tail_probability: FloatArray
    feature_errors: FloatArray | None = None  # per feature, in the input's layout, on request
    # the mean path's reconstruction, for a caller that asked for it too (the v2 VAE model)
    reconstruction: FloatArray | None = None


@dataclass(slots=True)
class TensorsResult(OperationResult):
    """Named output tensors, as the Open Inference Protocol answers them; every tensor has
    one row per item, so a merged batch's result is cut by rows like the others."""

    tensors: dict[str, npt.NDArray[Any]]

    def item_count(self) -> int | None:
        return len(next(iter(self.tensors.values()))) if self.tensors else None

    def rows(self, start: int, stop: int) -> Self:
        return type(self)({name: array[start:stop] for name, array in self.tensors.items()})
