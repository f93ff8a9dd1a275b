"""One bundle version seen as the Open Inference Protocol's models: the whole VAE (`<name>`: x ->
reconstruction, anomaly_score), its encoder (`<name>-encoder`: x -> mu, logvar; a plain
autoencoder: x -> z) and its decoder (`<name>-decoder`: z -> x_hat). Every number comes from
`ServedModel`; a view only names and shapes tensors, for every transport of the protocol."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from service.errors import ModelNotFound, excerpt
from service.models.repository import ModelRepository
from service.models.results import TensorsResult
from service.models.served_model import ServedModel

ENCODER_SUFFIX = "-encoder"
DECODER_SUFFIX = "-decoder"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for the batch axis

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


Specs = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]
# Each loaded model's tensors per role, built once: a view is made for every request, and
# rebuilding its specs each time cost ~10 us of a single-item gRPC infer (profiled). Weak keys:
# a model dropped by a reload takes its specs with it.
_SPECS: weakref.WeakKeyDictionary[ServedModel, dict[str, Specs]] = weakref.WeakKeyDictionary()


def _build_specs(m: ServedModel, role: str) -> Specs:
    x_shape = (-1, *m.input_shape)
    if role == "decoder":
        return (TensorSpec("z", "FP32", (-1, m.latent_dim)),), (
            TensorSpec("x_hat", "FP32", x_shape),
        )
    x = (TensorSpec("x", "FP32", x_shape),)
    if role == "encoder":
        if m.kind != "vae":
            return x, (TensorSpec("z", "FP32", (-1, m.latent_dim)),)
        return x, (
            TensorSpec("mu", "FP32", (-1, m.latent_dim)),
            TensorSpec("logvar", "FP32", (-1, m.latent_dim)),
        )
    return x, (
        TensorSpec("reconstruction", "FP32", x_shape),
        TensorSpec("anomaly_score", "FP64", (-1,)),
    )


def _tensor_specs(m: ServedModel, role: str) -> Specs:
    per_role = _SPECS.get(m)
    if per_role is None:
        per_role = _SPECS[m] = {}
    specs = per_role.get(role)
    if specs is None:
        specs = per_role[role] = _build_specs(m, role)
    return specs


@dataclass(frozen=True)
class V2Model:
    """One bundle version seen as a v2 model: the whole VAE, its encoder or its decoder."""

    name: str
    base: str
    role: str  # "model", "encoder" or "decoder"
    model: ServedModel

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return _tensor_specs(self.model, self.role)[0]

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return _tensor_specs(self.model, self.role)[1]

    def compute(
        self, items: FloatArray, wanted: Sequence[str], score_type: str | None
    ) -> TensorsResult:
        """The wanted outputs for a validated batch, each shaped as its metadata says."""
        m, batch = self.model, len(items)
        if self.role == "encoder":
            encoding = m.encode(items, sample=False, seed=None)
            if encoding.logvar is None:
                assert encoding.z is not None  # a plain autoencoder's code
                return TensorsResult({"z": encoding.z})
            return TensorsResult({"mu": encoding.mu, "logvar": encoding.logvar})
        if self.role == "decoder":
            decoded = m.decode(items).outputs
            return TensorsResult({"x_hat": decoded.reshape((batch, *m.input_shape))})
        tensors: dict[str, npt.NDArray[Any]] = {}
        if "anomaly_score" in wanted:
            # Both outputs from one onnxruntime call when both are wanted: the score's mean
            # path reconstructs too (a second call cost ~14% of a worker's time, profiled).
            both = "reconstruction" in wanted
            scored = m.score(
                items, score_type=score_type, per_feature=False, with_reconstruction=both
            )
            tensors["anomaly_score"] = np.asarray(scored.scores, dtype=np.float64)
            if scored.reconstruction is not None:
                tensors["reconstruction"] = scored.reconstruction.reshape((batch, *m.input_shape))
        elif "reconstruction" in wanted:
            outputs = m.reconstruct(items, samples=None, seed=None).outputs
            tensors["reconstruction"] = outputs.reshape((batch, *m.input_shape))
        return TensorsResult({name: tensors[name] for name in wanted if name in tensors})

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": versions,
            "platform": "onnxruntime",
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }


def find_model(repository: ModelRepository, name: str, version: str | None) -> V2Model:
    """`<name>`, `<name>-encoder` or `<name>-decoder`; a loaded name always wins as itself."""
    if name in repository.models:
        return V2Model(name, name, "model", repository.resolve(name, version))
    for suffix, role in ((ENCODER_SUFFIX, "encoder"), (DECODER_SUFFIX, "decoder")):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in repository.models:
            return V2Model(name, base, role, repository.resolve(base, version))
    raise ModelNotFound(f"unknown model {excerpt(name)}")
