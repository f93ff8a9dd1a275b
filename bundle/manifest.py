"""`model.json`: the self-describing manifest of a model bundle (DESIGN.md section 2).

Written by `training.export`, validated by whoever loads a bundle. Pydantic models so a bundle
with a missing or mistyped field is refused with a message that names the field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1
MANIFEST_FILENAME = "model.json"
ENCODER_FILENAME = "encoder.onnx"
DECODER_FILENAME = "decoder.onnx"

ModelKind = Literal["vae", "ae", "sparse_ae", "denoising_ae"]
LikelihoodKind = Literal["bernoulli", "gaussian", "laplace"]
ScoreType = Literal["recon_mse", "neg_elbo", "recon_complexity"]


class _Strict(BaseModel):
    # Unknown keys are kept (a newer trainer may add some) but known ones are type-checked.
    model_config = ConfigDict(extra="allow", frozen=True)


class InputSpec(_Strict):
    shape: list[int] = Field(description="per-item shape the encoder graph takes, no batch axis")
    dtype: Literal["float32"] = "float32"
    image_shape: list[int] | None = Field(
        default=None, description="(C, H, W) when the data are images, else null"
    )
    feature_count: int = Field(description="product of shape: the flattened feature count")
    feature_names: list[str] | None = Field(
        default=None,
        description="tables: each feature's name (the CSV header, the dataset's names), in "
        "column order; null for images or unnamed columns",
    )

    def item_layouts(self) -> list[tuple[int, ...]]:
        """Every shape one item may come in, shortest first: the graph's own, flat, and for
        images (C, H, W), and (H, W) when greyscale."""
        layouts = {tuple(self.shape), (self.feature_count,)}
        if self.image_shape is not None:
            layouts.add(tuple(self.image_shape))
            if self.image_shape[0] == 1:
                layouts.add(tuple(self.image_shape[1:]))  # (H, W) greyscale
        return sorted(layouts, key=len)


class PreprocessingSpec(_Strict):
    kind: Literal["minmax", "standard", "none"]
    formula: str
    offset: list[float]
    scale: list[float]
    clip: list[float] | None = None


class LikelihoodSpec(_Strict):
    kind: LikelihoodKind
    sigma: float | None = Field(
        default=None,
        description="the decoder's scale in model units: the Gaussian's std, the Laplace's b",
    )


class ScoreCalibration(_Strict):
    """Validation statistics of one score type and the threshold fixed from them."""

    threshold: float
    percentile: float
    n_samples: int
    mean: float
    std: float
    min: float
    max: float
    # Scores at percentiles 0, 1, ..., 100 of the validation data: lets a server turn a score
    # into a calibrated tail probability without shipping the validation set.
    quantiles: list[float] = Field(min_length=101, max_length=101)


class ComplexitySpec(_Strict):
    """recon_complexity's fit (bundle.scoring): log MSE ~ intercept + slope * log TV."""

    measure: Literal["total_variation"] = "total_variation"
    slope: float = Field(ge=0, allow_inf_nan=False)
    intercept: float = Field(allow_inf_nan=False)
    n_samples: int = Field(ge=1, description="training and validation rows the fit was made on")


class AnomalySpec(_Strict):
    default_score: ScoreType
    scores: dict[ScoreType, ScoreCalibration]
    complexity: ComplexitySpec | None = Field(
        default=None, description="recon_complexity's fit; images only, null elsewhere"
    )
    calibrated_on: str = Field(description="which data the thresholds were fitted on")
    elbo_samples: int = Field(description="posterior samples L in the neg_elbo estimate")
    elbo_seed: int = Field(description="seed of the fixed epsilon shared by every item")


class ReferenceSpec(_Strict):
    """reference.npz (bundle.reference): samples of normal data for the service's monitors."""

    file: str
    sha256: str
    n_items: int = Field(ge=1, description="rows of latent_mu (and of features)")
    score_types: list[ScoreType]
    latent_dim: int = Field(ge=1)
    features: int | None = Field(default=None, description="feature columns; tables only")


class TensorSpec(_Strict):
    name: str
    shape: list[int | str]
    dtype: str = "float32"


class GraphSpec(_Strict):
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class OnnxSpec(_Strict):
    opset: int
    encoder: GraphSpec
    decoder: GraphSpec
    parity_max_abs_error: dict[str, float] = Field(
        default_factory=dict, description="torch vs onnxruntime at export time, per batch size"
    )


class ModelManifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str
    version: str
    kind: ModelKind
    created_at: str
    input: InputSpec
    latent_dim: int
    preprocessing: PreprocessingSpec
    likelihood: LikelihoodSpec
    anomaly: AnomalySpec
    onnx: OnnxSpec
    metrics: dict[str, Any]
    training: dict[str, Any]
    reference: ReferenceSpec | None = Field(
        default=None, description="reference.npz for monitoring; null in older bundles"
    )

    @property
    def is_variational(self) -> bool:
        return self.kind == "vae"

    def write(self, bundle_dir: Path) -> Path:
        path = bundle_dir / MANIFEST_FILENAME
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, bundle_dir: Path) -> ModelManifest:
        path = bundle_dir / MANIFEST_FILENAME
        manifest = cls.model_validate_json(path.read_text(encoding="utf-8"))
        if manifest.format_version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format_version {manifest.format_version} is not supported "
                f"(this build reads {FORMAT_VERSION})"
            )
        return manifest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
