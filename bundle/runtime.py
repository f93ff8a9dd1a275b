"""A model bundle loaded into onnxruntime: validated, then encode / decode / score in numpy.

The trainer uses it to calibrate thresholds and to evaluate bundles on new data; the service
wraps it. Loading checks the manifest schema, the sha256 of each graph, and the graphs' input
and output names against the manifest, so a bundle that does not match its description never
serves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from bundle.arrays import FloatArray
from bundle.manifest import GraphSpec, ModelManifest, ScoreType
from bundle.mean_path import DECODED, LOGVAR, MU, OUTPUTS, X_MODEL, X, build_mean_path
from bundle.preprocessing import Preprocessing
from bundle.scoring import ComplexityFit, anomaly_scores, fixed_epsilon


class BundleError(ValueError):
    """A bundle on disk that cannot be served; the message names the bundle and the reason."""


@dataclass(frozen=True)
class Encoding:
    mu: FloatArray  # (B, d); the code z itself for a plain autoencoder
    logvar: FloatArray | None  # (B, d); None for autoencoders


@dataclass(frozen=True)
class MeanPath:
    """One batch through the mean path (bundle.mean_path), every step's result."""

    x_model: FloatArray  # the preprocessed input, (B, *input_shape)
    encoding: Encoding
    decoded: FloatArray  # the decoder's mean at mu, model space, (B, *input_shape)
    outputs: FloatArray  # `decoded` in the user's units


def _check_graph(session: ort.InferenceSession, spec: GraphSpec, where: Path) -> None:
    inputs = [node.name for node in session.get_inputs()]
    outputs = [node.name for node in session.get_outputs()]
    if inputs != [t.name for t in spec.inputs] or outputs != [t.name for t in spec.outputs]:
        raise BundleError(
            f"{where}: graph has inputs {inputs} and outputs {outputs}, "
            f"model.json says {[t.name for t in spec.inputs]} -> {[t.name for t in spec.outputs]}"
        )
    for node, declared in zip(session.get_inputs(), spec.inputs, strict=True):
        # The batch axis is symbolic in the graph; every other axis must match the manifest.
        if [d for d in node.shape[1:]] != [d for d in declared.shape[1:]]:
            raise BundleError(
                f"{where}: input {node.name} has shape {node.shape}, "
                f"model.json says {declared.shape}"
            )


def _check_manifest_consistency(manifest: ModelManifest, where: Path) -> None:
    """The graph specs must agree with the manifest's own shapes, or scoring fails later."""
    latent = manifest.latent_dim
    expected = {
        "encoder input": (manifest.onnx.encoder.inputs[0].shape[1:], list(manifest.input.shape)),
        "decoder input": (manifest.onnx.decoder.inputs[0].shape[1:], [latent]),
        "decoder output": (manifest.onnx.decoder.outputs[0].shape[1:], list(manifest.input.shape)),
    }
    for index, output in enumerate(manifest.onnx.encoder.outputs):
        expected[f"encoder output {index}"] = (output.shape[1:], [latent])
    for what, (declared, wanted) in expected.items():
        if list(declared) != wanted:
            raise BundleError(
                f"{where}: model.json's {what} shape {declared} disagrees with "
                f"input.shape / latent_dim ({wanted})"
            )
    size = 1
    for dim in manifest.input.shape:
        size *= dim
    if size != manifest.input.feature_count:
        raise BundleError(
            f"{where}: input.feature_count {manifest.input.feature_count} is not the product "
            f"of input.shape {manifest.input.shape}"
        )
    offsets = len(manifest.preprocessing.offset)
    if offsets not in (1, size):
        raise BundleError(
            f"{where}: preprocessing has {offsets} offsets; expected 1 or {size} (one per feature)"
        )


def complexity_fit(manifest: ModelManifest, where: Path) -> ComplexityFit | None:
    """recon_complexity's fit, or None when the bundle does not offer that score."""
    anomaly, image_shape = manifest.anomaly, manifest.input.image_shape
    if "recon_complexity" not in anomaly.scores:
        return None
    if anomaly.complexity is None or image_shape is None or len(image_shape) != 3:
        raise BundleError(
            f"{where}: model.json offers recon_complexity without anomaly.complexity or a "
            "(C, H, W) input.image_shape"
        )
    if image_shape[0] * image_shape[1] * image_shape[2] != manifest.input.feature_count:
        raise BundleError(f"{where}: input.image_shape {image_shape} is not the input's size")
    c, h, w = image_shape
    return ComplexityFit((c, h, w), anomaly.complexity.slope, anomaly.complexity.intercept)


class OnnxBundle:
    def __init__(
        self,
        bundle_dir: Path,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        session_options: ort.SessionOptions | None = None,
    ) -> None:
        self.path = Path(bundle_dir)
        try:
            self.manifest = ModelManifest.read(self.path)
        except FileNotFoundError as error:
            raise BundleError(f"{self.path}: no model.json") from error
        except ValueError as error:
            raise BundleError(f"{self.path}: model.json is invalid: {error}") from error
        _check_manifest_consistency(self.manifest, self.path)
        # Before any graph is opened: a bundle offering recon_complexity without its fit fails here.
        self.complexity = complexity_fit(self.manifest, self.path)
        try:
            self.preprocessing = Preprocessing.from_manifest(
                self.manifest.preprocessing.model_dump()
            )
        except ValueError as error:
            raise BundleError(f"{self.path}: preprocessing in model.json: {error}") from error
        encoder = self._read(self.manifest.onnx.encoder)
        decoder = self._read(self.manifest.onnx.decoder)
        self.encoder = self._open(encoder, self.manifest.onnx.encoder, providers, session_options)
        self.decoder = self._open(decoder, self.manifest.onnx.decoder, providers, session_options)
        try:
            fused = build_mean_path(encoder, decoder, self.manifest, self.preprocessing)
            self.mean_path = ort.InferenceSession(
                fused, sess_options=session_options, providers=list(providers)
            )
        except Exception as error:  # onnx's checker and onnxruntime raise their own types
            raise BundleError(f"{self.path}: cannot compose the mean path: {error}") from error
        codes = [MU, LOGVAR][: len(self.manifest.onnx.encoder.outputs)]
        self._mean_path_outputs = [X_MODEL, *codes, DECODED, OUTPUTS]
        self.input_shape = tuple(self.manifest.input.shape)
        # Names resolved once: `run(None, ...)` asks the session for its outputs' metadata on
        # every call, 1.5 us of each run, two runs a request (timeit, the default model).
        graphs = self.manifest.onnx
        self._encoder_input = graphs.encoder.inputs[0].name
        self._encoder_outputs = [t.name for t in graphs.encoder.outputs]
        self._decoder_input = graphs.decoder.inputs[0].name
        self._decoder_outputs = [t.name for t in graphs.decoder.outputs]
        anomaly = self.manifest.anomaly
        self.epsilon = fixed_epsilon(
            anomaly.elbo_samples, self.manifest.latent_dim, anomaly.elbo_seed
        )

    def _read(self, spec: GraphSpec) -> bytes:
        """A graph's bytes, read once and checked against its hash: what is checked is what
        both its own session and the mean path are built from."""
        path = self.path / spec.file
        if not path.is_file():
            raise BundleError(f"{self.path}: {spec.file} is missing")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != spec.sha256:
            raise BundleError(
                f"{path}: sha256 {actual[:12]}... does not match model.json ({spec.sha256[:12]}...)"
            )
        return data

    def _open(
        self,
        data: bytes,
        spec: GraphSpec,
        providers: Sequence[str],
        options: ort.SessionOptions | None,
    ) -> ort.InferenceSession:
        path = self.path / spec.file
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own types (InvalidProtobuf, ...)
            raise BundleError(f"{path}: onnxruntime cannot load it: {error}") from error
        _check_graph(session, spec, path)
        return session

    # --- model-space operations: inputs already preprocessed, shaped (B, *input_shape) ---

    def encode_model(self, x_model: FloatArray) -> Encoding:
        outputs = self.encoder.run(self._encoder_outputs, {self._encoder_input: x_model})
        if self.manifest.is_variational:
            return Encoding(mu=outputs[0], logvar=outputs[1])
        return Encoding(mu=outputs[0], logvar=None)

    def run_mean_path(self, x: FloatArray) -> MeanPath:
        """A batch in the user's units, (B, *input_shape) float32 C-contiguous, through
        preprocessing, encoder, decoder at mu and the inverse preprocessing in one call."""
        ran = self.mean_path.run(self._mean_path_outputs, {X: x})
        if len(ran) == 5:
            x_model, mu, logvar, decoded, outputs = ran
            return MeanPath(x_model, Encoding(mu, logvar), decoded, outputs)
        x_model, mu, decoded, outputs = ran
        return MeanPath(x_model, Encoding(mu, None), decoded, outputs)

    def decode_model(self, z: FloatArray) -> FloatArray:
        result: FloatArray = self.decoder.run(
            self._decoder_outputs, {self._decoder_input: np.ascontiguousarray(z)}
        )[0]
        return result

    def to_model_input(self, x: npt.NDArray[np.floating]) -> FloatArray:
        """User units (B, *input_shape) -> model space; reshapes a flat (B, D) image batch."""
        x = np.asarray(x, dtype=np.float32)
        return np.ascontiguousarray(
            self.preprocessing.apply(x.reshape((len(x), *self.input_shape)))
        )

    def path_scores(self, path: MeanPath, score_type: str) -> npt.NDArray[np.float64]:
        """One score type of a batch that went through the mean path: the one computation
        the trainer's checks, the service and vae-score all score with. (B,)"""
        likelihood = self.manifest.likelihood
        return anomaly_scores(
            score_type,
            path.x_model,
            path.encoding.mu,
            path.encoding.logvar,
            self.decode_model,
            likelihood.kind,
            likelihood.sigma,
            self.epsilon,
            path.decoded,
            self.complexity,
        )

    def scores(
        self, x: npt.NDArray[np.floating], score_type: ScoreType | None = None
    ) -> npt.NDArray[np.float64]:
        """Anomaly scores of a raw batch in user units. (B,)"""
        score_type = score_type or self.manifest.anomaly.default_score
        batch = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1, *self.input_shape))
        try:
            return self.path_scores(self.run_mean_path(batch), score_type)
        except ValueError as error:
            raise BundleError(f"{self.manifest.name}: {error}") from error

    @property
    def kind(self) -> str:
        return self.manifest.kind
