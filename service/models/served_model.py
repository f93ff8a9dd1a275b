"""What a served model can do, in numpy on onnxruntime: the domain layer under the routes.

Inputs and outputs are in the user's units; the bundle's preprocessing is applied on the way in
and inverted on the way out. Scores come from `bundle.scoring`, the very functions the trainer
calibrated with, so a served score is comparable with the stored threshold. Randomness (posterior
samples, prior samples) is drawn here from a seed and never lives inside a graph; a request
without a seed gets a fresh one, echoed back so the result can be reproduced.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from bundle.arrays import AnyFloatArray, FloatArray
from bundle.manifest import ModelManifest
from bundle.runtime import OnnxBundle
from bundle.scoring import SCORE_TYPES, TailTable, per_feature_squared_error
from service.errors import InvalidInput, OperationNotSupported, PayloadTooLarge, excerpt
from service.monitoring.monitor import ModelMonitor
from service.models.results import (
    DecodeResult,
    EncodeResult,
    ReconstructResult,
    SampleResult,
    ScoreResult,
)
from service.settings import ServiceSettings

P = ParamSpec("P")
R = TypeVar("R")
ArrayT = TypeVar("ArrayT", bound=npt.NDArray[np.floating[Any]])
MAX_SEED = 2**63 - 1


def fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % MAX_SEED)  # type: ignore[operator]


def check_seed(seed: int | None) -> int | None:
    """The request's seed if numpy can take it (0 <= seed < 2**63). Routes check it even when
    the call draws nothing (encode without `sample`), so a bad seed is a 422 everywhere."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidInput(
            f"seed: expected an integer in [0, {MAX_SEED}], got {seed}",
            {"field": "seed", "minimum": 0, "maximum": MAX_SEED},
        )
    return seed


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one to echo back."""
    checked = check_seed(seed)
    return fresh_seed() if checked is None else checked


def require_finite_result(array: ArrayT, field: str, what: str) -> ArrayT:
    """Values beyond float32 in model space make inf/NaN; say so instead of returning null."""
    if not np.isfinite(array).all():
        raise InvalidInput(
            f"{field}: values this large overflow float32 in the model's {what}; "
            "they lie far outside anything the model was trained on",
            {"field": field},
        )
    return array


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_sample_n: int
    max_reconstruct_samples: int

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Limits:
        return cls(settings.max_batch_size, settings.max_sample_n, settings.max_reconstruct_samples)


def _overflow_is_reported(operation: Callable[P, R]) -> Callable[P, R]:
    """Run an operation with numpy's overflow warnings off: float32 overflow from extreme
    inputs is expected, and `require_finite_result` turns it into a 422 instead. One errstate
    per operation, not per step: entering it costs microseconds on the hot path."""

    @functools.wraps(operation)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        with np.errstate(over="ignore", invalid="ignore"):
            return operation(*args, **kwargs)

    return guarded


class ServedModel:
    def __init__(self, bundle: OnnxBundle, limits: Limits):
        self.bundle = bundle
        self.limits = limits
        manifest = bundle.manifest
        self.manifest: ModelManifest = manifest
        self.name, self.version, self.kind = manifest.name, manifest.version, manifest.kind
        self.latent_dim = manifest.latent_dim
        self.input_shape = tuple(manifest.input.shape)
        self.image_shape = tuple(manifest.input.image_shape) if manifest.input.image_shape else None
        self.feature_count = manifest.input.feature_count
        # Every layout a client may send one item in: the graph's own, flat, and the image's.
        self.accepted_layouts = manifest.input.item_layouts()
        self.tails = {
            name: TailTable(calibration.quantiles)
            for name, calibration in manifest.anomaly.scores.items()
        }
        # Set by the repository once warmed up (VAE_MONITORING); sees every scored batch of
        # the default score type.
        self.monitor: ModelMonitor | None = None

    # --- validation --------------------------------------------------------------------------

    def _describe_layouts(self) -> str:
        return " or ".join(str(("B", *layout)).replace("'", "") for layout in self.accepted_layouts)

    def check_inputs(self, x: FloatArray, field: str = "inputs") -> FloatArray:
        """A batch in any accepted layout -> (B, *input_shape), or a 422 naming the field."""
        self._check_batch(len(x), field)
        if tuple(x.shape[1:]) not in self.accepted_layouts:
            raise InvalidInput(
                f"{field}: expected shape {self._describe_layouts()} for model "
                f"{self.name}, got {tuple(x.shape)}",
                {"field": field, "expected": self._describe_layouts(), "got": list(x.shape)},
            )
        return np.ascontiguousarray(x.reshape((len(x), *self.input_shape)), dtype=np.float32)

    def check_latents(self, z: FloatArray, field: str = "latents") -> FloatArray:
        self._check_batch(len(z), field)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise InvalidInput(
                f"{field}: expected shape (B, {self.latent_dim}) for model {self.name}, "
                f"got {tuple(z.shape)}",
                {"field": field, "expected": ["B", self.latent_dim], "got": list(z.shape)},
            )
        return np.ascontiguousarray(z, dtype=np.float32)

    def model_input(self, x: FloatArray, field: str = "inputs") -> FloatArray:
        """Validated user-unit batch -> preprocessed model inputs, refusing overflow."""
        model_x = self.bundle.to_model_input(self.check_inputs(x, field))
        return require_finite_result(model_x, field, "preprocessed inputs")

    def _decode(self, z: FloatArray, field: str) -> FloatArray:
        outputs = self.bundle.preprocessing.invert(self.bundle.decode_model(z))
        return require_finite_result(outputs, field, "decoded outputs")

    def _check_batch(self, size: int, field: str) -> None:
        if size == 0:  # the codecs refuse it first; this keeps every other caller off a 500
            raise InvalidInput(
                f"{field}: the batch is empty; send at least one item",
                {"field": field, "got": 0},
            )
        if size > self.limits.max_batch_size:
            raise PayloadTooLarge(
                f"{field}: batch of {size} items is above the limit of "
                f"{self.limits.max_batch_size} (VAE_MAX_BATCH_SIZE); split the request",
                {"field": field, "limit": self.limits.max_batch_size, "got": size},
            )

    def _require_variational(self, what: str) -> None:
        if not self.manifest.is_variational:
            raise OperationNotSupported(
                f"{what} needs a VAE; model {self.name} is a {self.kind} (deterministic code, "
                "no posterior to sample)",
                {"model": self.name, "kind": self.kind},
            )

    def _output_layout(self, x_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        # Outputs mirror the layout the client sent; generated items take the image layout
        # when there is one, since that is how images are used.
        if x_shape is not None:
            return x_shape
        return self.image_shape if self.image_shape is not None else self.input_shape

    # --- operations --------------------------------------------------------------------------

    @_overflow_is_reported
    def encode(self, x: FloatArray, *, sample: bool, seed: int | None) -> EncodeResult:
        model_x = self.model_input(x)
        encoding = self.bundle.encode_model(model_x)
        # Codes go out as they are, so unlike decode/reconstruct/score no later check sees
        # them; a graph that overflows on extreme inputs must not answer null.
        for code in (encoding.mu, encoding.logvar):
            if code is not None:
                require_finite_result(code, "inputs", "latent code")
        if encoding.logvar is None:
            if sample:
                self._require_variational("sample=true")
            return EncodeResult(encoding.mu, z=encoding.mu)
        if not sample:
            return EncodeResult(encoding.mu, encoding.logvar)
        seed = resolve_seed(seed)
        eps = np.random.default_rng(seed).standard_normal(encoding.mu.shape)
        z = encoding.mu + np.exp(0.5 * encoding.logvar) * eps.astype(np.float32)
        z = require_finite_result(z.astype(np.float32), "inputs", "latent code")
        return EncodeResult(encoding.mu, encoding.logvar, z, seed)

    @_overflow_is_reported
    def decode(self, z: FloatArray) -> DecodeResult:
        latents = self.check_latents(z)
        outputs = self._decode(latents, "latents")
        return DecodeResult(outputs.reshape((len(latents), *self._output_layout(None))))

    @_overflow_is_reported
    def reconstruct(
        self, x: FloatArray, *, samples: int | None, seed: int | None
    ) -> ReconstructResult:
        layout = tuple(x.shape[1:])
        if samples is None:  # the deterministic mean path, one onnxruntime call
            path = self.bundle.run_mean_path(self.check_inputs(x))
            require_finite_result(path.x_model, "inputs", "preprocessed inputs")
            checked = require_finite_result(path.outputs, "inputs", "reconstruction")
            return ReconstructResult(None, None, checked.reshape((len(x), *layout)))
        model_x = self.model_input(x)
        encoding = self.bundle.encode_model(model_x)
        self._require_variational("samples")
        assert encoding.logvar is not None
        if not 1 <= samples <= self.limits.max_reconstruct_samples:
            error = InvalidInput if samples < 1 else PayloadTooLarge
            raise error(
                f"samples: expected 1..{self.limits.max_reconstruct_samples}, got {samples}",
                {"field": "samples", "limit": self.limits.max_reconstruct_samples},
            )
        self._check_batch(len(x) * samples, "inputs x samples")
        seed = resolve_seed(seed)
        batch, latent = encoding.mu.shape
        eps = np.random.default_rng(seed).standard_normal((samples, batch, latent))
        z = encoding.mu[None] + np.exp(0.5 * encoding.logvar)[None] * eps.astype(np.float32)
        decoded = self.bundle.decode_model(z.reshape(samples * batch, latent))
        mean = decoded.reshape((samples, batch, *decoded.shape[1:])).mean(axis=0)
        outputs = self.bundle.preprocessing.invert(mean)
        checked = require_finite_result(outputs, "inputs", "reconstruction")
        return ReconstructResult(samples, seed, checked.reshape((len(x), *layout)))

    @_overflow_is_reported
    def sample(self, *, n: int, seed: int | None, temperature: float) -> SampleResult:
        self._require_variational("/sample")
        if n < 1:
            raise InvalidInput(f"n: expected at least 1, got {n}", {"field": "n"})
        if n > self.limits.max_sample_n:
            raise PayloadTooLarge(
                f"n: {n} is above the limit of {self.limits.max_sample_n} (VAE_MAX_SAMPLE_N)",
                {"field": "n", "limit": self.limits.max_sample_n},
            )
        if not (math.isfinite(temperature) and temperature >= 0):
            raise InvalidInput(
                f"temperature: expected a finite number >= 0 (1 = the prior), got {temperature}",
                {"field": "temperature"},
            )
        seed = resolve_seed(seed)
        rng = np.random.default_rng(seed)
        z = (rng.standard_normal((n, self.latent_dim)) * temperature).astype(np.float32)
        require_finite_result(z, "temperature", "latent space")
        outputs = self._decode(z, "temperature")
        return SampleResult(outputs.reshape((n, *self._output_layout(None))), z, seed, temperature)

    @_overflow_is_reported
    def score(
        self,
        x: FloatArray,
        *,
        score_type: str | None,
        per_feature: bool,
        with_reconstruction: bool = False,
    ) -> ScoreResult:
        """Scores of a batch; `with_reconstruction` also returns the reconstruction the same
        onnxruntime call made (what `reconstruct` returns), for a caller that wants both."""
        anomaly = self.manifest.anomaly
        chosen = score_type or anomaly.default_score
        if chosen not in SCORE_TYPES:
            raise InvalidInput(
                f"score_type: unknown {excerpt(chosen)}; this model offers "
                f"{sorted(anomaly.scores)}",
                {"field": "score_type", "allowed": sorted(anomaly.scores)},
            )
        if chosen not in anomaly.scores:
            needs = "images" if chosen == "recon_complexity" else "a VAE"
            raise OperationNotSupported(
                f"score_type {chosen!r} needs {needs}; model {self.name} ({self.kind}) offers "
                f"{sorted(anomaly.scores)}",
                {"field": "score_type", "allowed": sorted(anomaly.scores)},
            )
        layout = tuple(x.shape[1:])
        path = self.bundle.run_mean_path(self.check_inputs(x))  # one onnxruntime call
        model_x = require_finite_result(path.x_model, "inputs", "preprocessed inputs")
        encoding = path.encoding
        scores = self.bundle.path_scores(path, chosen)
        # A NaN score compares False with the threshold: an extreme input would silently not
        # be flagged. The test bundles stay finite up to float32's max, but nothing in the
        # bundle contract bounds a graph's growth, so the answer itself is checked (B values).
        require_finite_result(scores, "inputs", "anomaly score")
        calibration = anomaly.scores[chosen]
        flagged = scores > calibration.threshold
        result = ScoreResult(
            scores,
            calibration.threshold,
            flagged,
            chosen,
            self.tails[chosen].survival(scores),
        )
        monitor = self.monitor
        if monitor is not None and chosen == monitor.score_type:
            monitor.record(scores, encoding.mu, model_x)
        if per_feature:
            errors = per_feature_squared_error(model_x, path.decoded)
            # Squared errors beyond ~1.8e19 per feature are finite in float64 but not in the
            # float32 the response carries (they would be written as null).
            result.feature_errors = require_finite_result(
                errors.astype(np.float32), "inputs", "per-feature errors"
            ).reshape((len(x), *layout))
        if with_reconstruction:
            checked = require_finite_result(path.outputs, "inputs", "reconstruction")
            result.reconstruction = checked.reshape((len(x), *layout))
        return result

    def remember_scored(self, request_id: str, score_type: str, scores: AnyFloatArray) -> None:
        """One answered scoring request, kept by its id for feedback to label (the monitor's
        ring; nothing when monitoring is off or it used another score type)."""
        monitor = self.monitor
        if monitor is not None and score_type == monitor.score_type:
            monitor.remember(request_id, scores)

    def warm_up(self) -> None:
        """One batch through every graph and score, so the first request pays no set-up."""
        x = np.zeros((2, *self.input_shape), dtype=np.float32)
        x = self.bundle.preprocessing.invert(x)
        for score_type in self.manifest.anomaly.scores:
            self.score(x, score_type=score_type, per_feature=True)
        self.decode(np.zeros((2, self.latent_dim), dtype=np.float32))

    def public_metadata(self) -> dict[str, Any]:
        """The manifest's public part: what a client needs to call and interpret the model."""
        manifest = self.manifest
        return {
            "name": manifest.name,
            "version": manifest.version,
            "kind": manifest.kind,
            "created_at": manifest.created_at,
            "input": manifest.input.model_dump(),
            "accepted_input_layouts": [["B", *layout] for layout in self.accepted_layouts],
            "latent_dim": manifest.latent_dim,
            "likelihood": manifest.likelihood.model_dump(),
            "preprocessing": manifest.preprocessing.kind,
            "value_range": self.value_range(),
            "anomaly": {
                "default_score": manifest.anomaly.default_score,
                "calibrated_on": manifest.anomaly.calibrated_on,
                "scores": {
                    name: {
                        "threshold": c.threshold,
                        "percentile": c.percentile,
                        "n_samples": c.n_samples,
                        "mean": c.mean,
                        "std": c.std,
                    }
                    for name, c in manifest.anomaly.scores.items()
                },
            },
            "operations": self.operations(),
            "metrics": manifest.metrics,
        }

    def value_range(self) -> dict[str, list[float]] | None:
        """The user-unit values that become the model's 0 and 1 (`low`, `high`; one entry, or
        one per feature), so a client can turn pixels into inputs and outputs into pixels: for
        an image model, black and white. Min-max data span [0, 1] in model units, clipped
        data their clip range; standardised data have no bounded range (None)."""
        preprocessing = self.bundle.preprocessing
        if preprocessing.kind == "minmax":
            model_low, model_high = 0.0, 1.0
        elif preprocessing.clip is not None:
            model_low, model_high = preprocessing.clip
        else:
            return None
        offset, scale = preprocessing.offset, preprocessing.scale
        return {
            "low": [float(v) for v in model_low * scale + offset],
            "high": [float(v) for v in model_high * scale + offset],
        }

    def operations(self) -> list[str]:
        common = ["encode", "decode", "reconstruct", "anomaly-score"]
        return [*common, "sample"] if self.manifest.is_variational else common
