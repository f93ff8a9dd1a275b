"""What each operation of a served model takes: one small dataclass per operation, and the table
of operations the routes are made from.

A codec (service.codecs.wire) decodes a request's bytes into one of these once, with every
field typed; the data plane checks it against the model and runs it; nothing goes back to the
bytes. Values are checked against the model where the model is known (a seed's range, a
batch's shape: service.models.served_model); here they only have their types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bundle.arrays import FloatArray


@dataclass(slots=True)
class EncodeRequest:
    ARRAY_FIELD: ClassVar[str | None] = "inputs"

    inputs: FloatArray
    sample: bool = False  # draw z from the posterior, not just its mean
    seed: int | None = None


@dataclass(slots=True)
class DecodeRequest:
    ARRAY_FIELD: ClassVar[str | None] = "latents"

    latents: FloatArray


@dataclass(slots=True)
class ReconstructRequest:
    ARRAY_FIELD: ClassVar[str | None] = "inputs"

    inputs: FloatArray
    samples: int | None = None  # posterior samples to average; None: the mean path
    seed: int | None = None


@dataclass(slots=True)
class SampleRequest:
    ARRAY_FIELD: ClassVar[str | None] = None  # parameters only

    n: int = 1
    seed: int | None = None
    temperature: float = 1.0  # 1 draws from the prior; 0 decodes its mean


@dataclass(slots=True)
class ScoreRequest:
    ARRAY_FIELD: ClassVar[str | None] = "inputs"

    inputs: FloatArray
    score_type: str | None = None  # None: the model's default score
    per_feature: bool = False  # also each feature's squared error


OperationRequest = EncodeRequest | DecodeRequest | ReconstructRequest | SampleRequest | ScoreRequest

# Every operation by its route's name, in the order the API documents them
# (service.api.routes makes their routes from this table).
OPERATIONS: dict[str, type[OperationRequest]] = {
    "encode": EncodeRequest,
    "decode": DecodeRequest,
    "reconstruct": ReconstructRequest,
    "sample": SampleRequest,
    "anomaly-score": ScoreRequest,
}
