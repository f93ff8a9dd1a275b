"""`--tied-weights`: the decoder uses the encoder's weights transposed, with biases of its own."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import training.pipeline
from bundle.manifest import DECODER_FILENAME
from training.cli import build_train_parser, main
from training.config import TrainingConfig
from training.export import PARITY_TOLERANCE, export_model
from training.factory import ModelInput, build_model, build_objective
from training.models import VAE, Autoencoder, TiedConvTranspose2d, TiedLinear

AUTOENCODERS = ["ae", "sparse-ae", "denoising-ae"]
# (arch, hidden, input shape): an MLP, the linear one (--hidden none), and conv nets on images
# whose odd sizes need each output_padding of the transposed convs.
SHAPES: list[tuple[str, str, tuple[int, ...]]] = [
    ("mlp", "16,8", (30,)),
    ("mlp", "none", (30,)),
    ("conv", "16,8", (3, 7, 9)),
    ("conv", "16,8", (1, 8, 8)),
]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Tiny models: one torch thread is faster than a shared machine's many."""


def _config(model: str, arch: str, hidden: str, *, tied: bool = True) -> TrainingConfig:
    config = TrainingConfig(
        model=model,  # type: ignore[arg-type]
        arch=arch,  # type: ignore[arg-type]
        hidden=hidden,
        conv_channels="4,8",
        latent_dim=3,
        tied_weights=tied,
    )
    config.validate()
    return config


def _build(config: TrainingConfig, shape: tuple[int, ...], seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    image = (shape[0], shape[1], shape[2]) if len(shape) == 3 else None
    model = build_model(config, ModelInput(shape=shape, image_shape=image), "bernoulli")
    assert isinstance(model, Autoencoder)
    return model


def _tied_layers(model: nn.Module) -> list[TiedLinear | TiedConvTranspose2d]:
    return [m for m in model.modules() if isinstance(m, TiedLinear | TiedConvTranspose2d)]


def _encoder_layers(model: Autoencoder) -> list[nn.Linear | nn.Conv2d]:
    """The encoder's weighted layers, the conv net's head last (its order of application)."""
    return [m for m in model.encoder.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def _assert_tied(model: Autoencoder) -> None:
    """Each decoder layer holds the mirrored encoder layer's very Parameter (same storage)."""
    tied = _tied_layers(model)
    mirrored = list(reversed(_encoder_layers(model)))
    assert len(tied) == len(mirrored) > 0
    for decoder_layer, encoder_layer in zip(tied, mirrored, strict=True):
        assert isinstance(encoder_layer, nn.Linear | nn.Conv2d)
        assert decoder_layer.encoder_weight is encoder_layer.weight
        assert decoder_layer.encoder_weight.data_ptr() == encoder_layer.weight.data_ptr()
        if isinstance(decoder_layer, TiedLinear):  # decoder layer maps out -> in: W^T
            assert decoder_layer.bias.shape == (encoder_layer.weight.shape[1],)


def _untied_copy(tied: Autoencoder, config: TrainingConfig, shape: tuple[int, ...]) -> Autoencoder:
    """The untied model of the same config holding the same function: W^T in each decoder
    Linear, W in each ConvTranspose2d, and the tied model's biases."""
    untied = _build(dataclasses.replace(config, tied_weights=False), shape)
    untied.encoder.load_state_dict(tied.encoder.state_dict())
    untied.output.load_state_dict(tied.output.state_dict())
    plain = [m for m in untied.decoder.modules() if isinstance(m, nn.Linear | nn.ConvTranspose2d)]
    with torch.no_grad():
        for source, target in zip(_tied_layers(tied), plain, strict=True):
            weight = source.encoder_weight
            target.weight.copy_(weight.t() if isinstance(source, TiedLinear) else weight)
            assert target.bias is not None
            target.bias.copy_(source.bias)
    return untied


def _loss(model: Autoencoder, config: TrainingConfig, x: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)  # the same corruption for every model
    return build_objective(config)(model, x, 1.0, generator).loss


def _inputs(shape: tuple[int, ...], batch: int = 6) -> torch.Tensor:
    return torch.rand((batch, *shape), generator=torch.Generator().manual_seed(3))


# --- the tie ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", AUTOENCODERS)
@pytest.mark.parametrize(("arch", "hidden", "shape"), SHAPES)
def test_decoder_weights_are_the_encoders_transposed_before_and_after_a_step(
    model: str, arch: str, hidden: str, shape: tuple[int, ...]
) -> None:
    config = _config(model, arch, hidden)
    net = _build(config, shape)
    _assert_tied(net)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = [layer.weight.detach().clone() for layer in _encoder_layers(net)]
    _loss(net, config, _inputs(shape)).backward()  # type: ignore[no-untyped-call]
    optimiser.step()
    _assert_tied(net)
    after = [layer.weight.detach() for layer in _encoder_layers(net)]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize(("arch", "hidden", "shape"), SHAPES)
def test_tied_model_has_fewer_parameters(arch: str, hidden: str, shape: tuple[int, ...]) -> None:
    tied = _build(_config("ae", arch, hidden), shape)
    untied = _build(_config("ae", arch, hidden, tied=False), shape)

    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())  # shared Parameters counted once

    weights = sum(layer.weight.numel() for layer in _encoder_layers(tied))
    assert count(tied) == count(untied) - weights
    assert count(tied) < count(untied)


@pytest.mark.parametrize(("arch", "hidden", "shape"), SHAPES)
def test_tied_decoder_computes_what_the_untied_one_does_with_the_transposed_weights(
    arch: str, hidden: str, shape: tuple[int, ...]
) -> None:
    """So the tied layers keep the untied decoder's shapes, activations and output padding."""
    config = _config("ae", arch, hidden)
    tied = _build(config, shape).eval()
    untied = _untied_copy(tied, config, shape).eval()
    z = torch.randn((5, 3), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        decoded = tied.decoder(z)
        assert decoded.shape == (5, *shape)
        torch.testing.assert_close(decoded, untied.decoder(z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", AUTOENCODERS)
@pytest.mark.parametrize(("arch", "hidden", "shape"), SHAPES)
def test_shared_weight_gradient_adds_the_encoder_and_decoder_paths(
    model: str, arch: str, hidden: str, shape: tuple[int, ...]
) -> None:
    config = _config(model, arch, hidden)
    tied = _build(config, shape)
    untied = _untied_copy(tied, config, shape)
    x = _inputs(shape)
    _loss(tied, config, x).backward()  # type: ignore[no-untyped-call]
    _loss(untied, config, x).backward()  # type: ignore[no-untyped-call]
    plain_decoder = [
        m for m in untied.decoder.modules() if isinstance(m, nn.Linear | nn.ConvTranspose2d)
    ]
    pairs = zip(
        _encoder_layers(tied), _encoder_layers(untied), reversed(plain_decoder), strict=True
    )
    for shared, encoder_path, decoder_path in pairs:
        assert isinstance(shared, nn.Linear | nn.Conv2d)
        assert isinstance(encoder_path, nn.Linear | nn.Conv2d)
        through_encoder, through_decoder = encoder_path.weight.grad, decoder_path.weight.grad
        assert shared.weight.grad is not None
        assert through_encoder is not None
        assert through_decoder is not None
        if isinstance(shared, nn.Linear):
            through_decoder = through_decoder.t()
        assert float(through_encoder.abs().max()) > 0
        assert float(through_decoder.abs().max()) > 0
        torch.testing.assert_close(
            shared.weight.grad, through_encoder + through_decoder, rtol=1e-4, atol=1e-6
        )


def test_copies_and_moves_keep_the_tie() -> None:
    """Training deep-copies the model for weight averaging and moves it to its device."""
    net = _build(_config("ae", "mlp", "16,8"), (30,))
    _assert_tied(copy.deepcopy(net))
    _assert_tied(net.to(torch.float64))
    state = net.state_dict()
    reloaded = _build(_config("ae", "mlp", "16,8"), (30,), seed=1).to(torch.float64)
    reloaded.load_state_dict(state)
    _assert_tied(reloaded)
    for name, value in state.items():
        torch.testing.assert_close(reloaded.state_dict()[name], value)


# --- refused for a VAE --------------------------------------------------------------------------


def test_tied_weights_with_a_vae_is_refused_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--tied-weights needs --model ae, sparse-ae or"):
        TrainingConfig(model="vae", tied_weights=True).validate()
    # build_model refuses it too when handed an unvalidated config: the shapes do not mirror.
    config = TrainingConfig(model="vae", hidden="8", latent_dim=2, tied_weights=True)
    with pytest.raises(ValueError, match="tied weights"):
        build_model(config, ModelInput(shape=(10,), image_shape=None), "gaussian")


def test_cli_flag_parses_and_a_vae_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_train_parser()
    assert parser.parse_args(["--out", "b"]).tied_weights is False
    assert parser.parse_args(["--out", "b", "--tied-weights"]).tied_weights is True
    assert parser.parse_args(["--out", "b", "--no-tied-weights"]).tied_weights is False
    out = tmp_path / "bundle"
    assert main(["--out", str(out), "--model", "vae", "--tied-weights", "--quiet"]) == 2
    assert "--tied-weights needs --model ae" in capsys.readouterr().err
    assert not out.exists()


# --- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", AUTOENCODERS)
@pytest.mark.parametrize(("arch", "hidden", "shape"), SHAPES[:3])
def test_export_parity_and_a_standalone_decoder_graph(
    tmp_path: Path, model: str, arch: str, hidden: str, shape: tuple[int, ...]
) -> None:
    net = _build(_config(model, arch, hidden), shape).eval()
    exported = export_model(net, shape, tmp_path, opset=18)
    assert max(exported.parity_max_abs_error.values()) <= PARITY_TOLERANCE
    decoder = onnx.load(str(tmp_path / DECODER_FILENAME))
    onnx.checker.check_model(decoder)
    assert [value.name for value in decoder.graph.input] == ["z"]
    # The shared weights are initializers of the decoder graph itself (as W^T for a Linear).
    constants = [numpy_helper.to_array(t) for t in decoder.graph.initializer]
    for layer in _tied_layers(net):
        weight = layer.encoder_weight.detach()
        expected = (weight.t() if isinstance(layer, TiedLinear) else weight).numpy()
        assert any(c.shape == expected.shape and np.array_equal(c, expected) for c in constants)


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "arch"), [("ae", "mlp"), ("denoising-ae", "conv")])
def test_vae_train_writes_a_tied_bundle_whose_decoder_matches_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, arch: str
) -> None:
    exported: list[Any] = []

    def recording_export(net: VAE | Autoencoder, *args: Any, **kwargs: Any) -> Any:
        exported.append(net)
        return export_model(net, *args, **kwargs)

    monkeypatch.setattr(training.pipeline, "export_model", recording_export)
    out = tmp_path / "tied" / "1"
    code = main(
        [
            "--out",
            str(out),
            "--dataset",
            "digits",
            "--model",
            model,
            "--arch",
            arch,
            "--tied-weights",
            "--hidden",
            "32",
            "--conv-channels",
            "4,8",
            "--latent-dim",
            "4",
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--iwae-samples",
            "4",
            "--no-plots",
            "--quiet",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert manifest["training"]["config"]["tied_weights"] is True
    assert manifest["training"]["config"]["model"] == model
    (net,) = exported
    assert isinstance(net, Autoencoder)
    _assert_tied(net)  # training (averaging, best-state reload) kept the tie
    z = torch.randn((9, 4), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = net.eval().decoder_mean(z).numpy()
    session = ort.InferenceSession(str(out / DECODER_FILENAME), providers=["CPUExecutionProvider"])
    (decoded,) = session.run(None, {"z": z.numpy()})
    np.testing.assert_allclose(decoded, expected, atol=PARITY_TOLERANCE)
