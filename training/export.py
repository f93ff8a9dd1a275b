"""Export encoder and decoder to ONNX, and prove onnxruntime computes what torch computes.

Graphs take and return model-space tensors (after preprocessing) with a dynamic batch axis;
preprocessing and randomness stay outside them (DESIGN.md section 2).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from bundle.arrays import FloatArray
from bundle.manifest import DECODER_FILENAME, ENCODER_FILENAME, GraphSpec, TensorSpec, sha256_of
from training.models import VAE, Autoencoder

PARITY_TOLERANCE = 1e-4
PARITY_BATCH_SIZES = (1, 17)  # one item, and an odd batch that no kernel tiles evenly


class ExportParityError(RuntimeError):
    """onnxruntime disagrees with torch by more than PARITY_TOLERANCE."""


class EncoderGraph(nn.Module):
    """x (B, *shape) -> (mu, logvar) for a VAE, or (z,) for an autoencoder."""

    def __init__(self, model: VAE | Autoencoder):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if isinstance(self.model, VAE):
            return self.model.encode(x)
        return (self.model.encode(x),)


class DecoderGraph(nn.Module):
    """z (B, d) -> the decoder's mean (B, *shape): sigmoid of logits for Bernoulli."""

    def __init__(self, model: VAE | Autoencoder):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder_mean(z)


def encoder_output_names(model: VAE | Autoencoder) -> list[str]:
    return ["mu", "logvar"] if isinstance(model, VAE) else ["z"]


def _export_one(
    graph: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_names: list[str],
    opset: int,
) -> None:
    batch = torch.export.Dim("batch")
    # The exporter narrates each stage on stdout and warns about optional packages
    # (torchvision); neither helps a user of vae-train, so both are kept out of the output.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=output_names,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
        finally:
            logging.getLogger("torch.onnx").setLevel(previous)


def _graph_spec(
    path: Path, input_name: str, input_shape: list[int | str], outputs: dict[str, list[int | str]]
) -> GraphSpec:
    return GraphSpec(
        file=path.name,
        sha256=sha256_of(path),
        inputs=[TensorSpec(name=input_name, shape=input_shape)],
        outputs=[TensorSpec(name=name, shape=shape) for name, shape in outputs.items()],
    )


@dataclass(frozen=True)
class ExportedGraphs:
    encoder: GraphSpec
    decoder: GraphSpec
    parity_max_abs_error: dict[str, float]


def export_model(
    model: VAE | Autoencoder,
    input_shape: tuple[int, ...],
    out_dir: Path,
    *,
    opset: int,
    seed: int = 0,
) -> ExportedGraphs:
    """Write encoder.onnx and decoder.onnx into `out_dir`, then run the parity check."""
    model = model.to("cpu").eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    latent = model.latent_dim
    encoder_outputs = encoder_output_names(model)
    example_x = torch.rand((2, *input_shape))
    example_z = torch.randn((2, latent))
    encoder_path, decoder_path = out_dir / ENCODER_FILENAME, out_dir / DECODER_FILENAME
    _export_one(EncoderGraph(model), example_x, encoder_path, "x", encoder_outputs, opset)
    _export_one(DecoderGraph(model), example_z, decoder_path, "z", ["x_hat"], opset)
    parity = check_parity(model, encoder_path, decoder_path, input_shape, seed=seed)
    return ExportedGraphs(
        encoder=_graph_spec(
            encoder_path,
            "x",
            ["batch", *input_shape],
            {name: ["batch", latent] for name in encoder_outputs},
        ),
        decoder=_graph_spec(
            decoder_path, "z", ["batch", latent], {"x_hat": ["batch", *input_shape]}
        ),
        parity_max_abs_error=parity,
    )


def check_parity(
    model: VAE | Autoencoder,
    encoder_path: Path,
    decoder_path: Path,
    input_shape: tuple[int, ...],
    *,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, float]:
    """Max |torch - onnxruntime| over every output, at batch 1 and batch 17.

    Raises ExportParityError above `tolerance`. Inputs are uniform in [0, 1] (model space of
    min-max data) scaled to a few units so standardised tabular ranges are covered too.
    """
    generator = torch.Generator().manual_seed(seed)
    encoder = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    errors: dict[str, float] = {}
    model = model.to("cpu").eval()
    for batch in PARITY_BATCH_SIZES:
        x = torch.rand((batch, *input_shape), generator=generator) * 3.0 - 1.0
        z = torch.randn((batch, model.latent_dim), generator=generator)
        with torch.no_grad():
            expected_enc = [t.numpy() for t in EncoderGraph(model)(x)]
            expected_dec = DecoderGraph(model)(z).numpy()
        got_enc = encoder.run(None, {"x": x.numpy()})
        got_dec = decoder.run(None, {"z": z.numpy()})[0]
        worst = max(
            *(float(np.max(np.abs(e - g))) for e, g in zip(expected_enc, got_enc, strict=True)),
            float(np.max(np.abs(expected_dec - got_dec))),
        )
        errors[f"batch_{batch}"] = worst
        if not worst <= tolerance:
            raise ExportParityError(
                f"onnxruntime differs from torch by {worst:.3g} at batch {batch} "
                f"(tolerance {tolerance:g}); the exported graphs are not trustworthy"
            )
    return errors


class OnnxGraphs:
    """The two exported graphs in onnxruntime, before a manifest exists (for calibration)."""

    def __init__(self, out_dir: Path, variational: bool):
        self.encoder = ort.InferenceSession(
            str(out_dir / ENCODER_FILENAME), providers=["CPUExecutionProvider"]
        )
        self.decoder = ort.InferenceSession(
            str(out_dir / DECODER_FILENAME), providers=["CPUExecutionProvider"]
        )
        self.variational = variational

    def encode(self, x_model: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        outputs = self.encoder.run(None, {"x": np.ascontiguousarray(x_model, dtype=np.float32)})
        return (outputs[0], outputs[1]) if self.variational else (outputs[0], None)

    def decode(self, z: FloatArray) -> FloatArray:
        result: FloatArray = self.decoder.run(None, {"z": np.ascontiguousarray(z)})[0]
        return result
