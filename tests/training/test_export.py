"""Export parity, repeated outside the trainer: torch and onnxruntime agree, or export fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bundle.manifest import DECODER_FILENAME, ENCODER_FILENAME
from training.config import TrainingConfig
from training.export import PARITY_TOLERANCE, ExportParityError, check_parity, export_model
from training.factory import ModelInput, build_model
from training.models import VAE, Autoencoder

CASES = [
    ("vae", "mlp", "bernoulli", (64,)),
    ("vae", "conv", "bernoulli", (1, 8, 8)),
    ("vae", "mlp", "gaussian", (30,)),
    ("ae", "mlp", "gaussian", (30,)),
    ("sparse-ae", "mlp", "bernoulli", (64,)),
    ("denoising-ae", "conv", "bernoulli", (3, 7, 9)),
]


def _model(model: str, arch: str, likelihood: str, shape: tuple[int, ...]) -> VAE | Autoencoder:
    torch.manual_seed(0)
    config = TrainingConfig(model=model, arch=arch, hidden="16,8", conv_channels="4,8")  # type: ignore[arg-type]
    image = (shape[0], shape[1], shape[2]) if len(shape) == 3 else None
    built = build_model(config, ModelInput(shape=shape, image_shape=image), likelihood)  # type: ignore[arg-type]
    assert isinstance(built, VAE | Autoencoder)
    return built.eval()


@pytest.mark.parametrize(("model", "arch", "likelihood", "shape"), CASES)
def test_exported_graphs_match_torch_at_batch_1_and_17(
    tmp_path: Path, model: str, arch: str, likelihood: str, shape: tuple[int, ...]
) -> None:
    net = _model(model, arch, likelihood, shape)
    exported = export_model(net, shape, tmp_path, opset=18)
    assert set(exported.parity_max_abs_error) == {"batch_1", "batch_17"}
    assert all(error <= PARITY_TOLERANCE for error in exported.parity_max_abs_error.values())
    # Repeat the check independently of export, on fresh inputs (another seed).
    repeated = check_parity(
        net, tmp_path / ENCODER_FILENAME, tmp_path / DECODER_FILENAME, shape, seed=7
    )
    assert max(repeated.values()) <= PARITY_TOLERANCE


def test_graphs_have_a_dynamic_batch_axis_and_no_random_ops(tmp_path: Path) -> None:
    net = _model("vae", "mlp", "bernoulli", (64,))
    exported = export_model(net, (64,), tmp_path, opset=18)
    encoder = onnx.load(str(tmp_path / ENCODER_FILENAME))
    decoder = onnx.load(str(tmp_path / DECODER_FILENAME))
    for graph in (encoder, decoder):
        assert graph.opset_import[0].version == 18
        ops = {node.op_type for node in graph.graph.node}
        assert not any(op.startswith("Random") for op in ops), ops
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    session = ort.InferenceSession(str(tmp_path / ENCODER_FILENAME))
    x = np.random.default_rng(0).random((100, 64), dtype=np.float32)
    mu, logvar = session.run(None, {"x": x})
    assert mu.shape == logvar.shape == (100, net.latent_dim)
    # Deterministic: the same input twice gives the same bits.
    np.testing.assert_array_equal(mu, session.run(None, {"x": x})[0])
    assert [o.name for o in exported.encoder.outputs] == ["mu", "logvar"]


def test_parity_check_catches_graphs_that_do_not_match(tmp_path: Path) -> None:
    net = _model("vae", "mlp", "bernoulli", (64,))
    export_model(net, (64,), tmp_path, opset=18)
    other = _model("vae", "mlp", "bernoulli", (64,))
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.01)  # a different model whose graphs were never exported
    with pytest.raises(ExportParityError, match="differs from torch"):
        check_parity(other, tmp_path / ENCODER_FILENAME, tmp_path / DECODER_FILENAME, (64,))
