"""Tests for training.config (validation, parsing helpers) and the CLI parser generated from it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from training.cli import build_train_parser, main
from training.config import TrainingConfig

ALL_FLAGS = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainingConfig)]


# --- validate ------------------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    config = TrainingConfig()
    config.validate()
    assert config.hidden_sizes() == [256, 128]
    assert config.conv_channel_sizes() == [32, 64]
    assert config.image_size_hw() is None
    assert config.sigma_value() is None


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"latent_dim": 0}, "--latent-dim"),
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": -1e-3}, "--lr"),
        ({"beta": -0.1}, "--beta"),
        ({"kl_warmup_epochs": -1}, "--kl-warmup-epochs"),
        ({"sparsity_target": 0.0}, "--sparsity-target"),
        ({"sparsity_target": 1.0}, "--sparsity-target"),
        ({"sparsity_weight": -1.0}, "--sparsity-weight"),
        ({"corruption_level": -0.1}, "--corruption-level"),
        ({"corruption": "masking", "corruption_level": 1.0}, "--corruption-level"),
        ({"patience": 0}, "--patience"),
        ({"validation_fraction": 0.0}, "--validation-fraction"),
        ({"validation_fraction": 1.0}, "--validation-fraction"),
        ({"test_fraction": -0.1}, "--test-fraction"),
        ({"test_fraction": 1.0}, "--test-fraction"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "--validation-fraction plus"),
        ({"validation_fraction": 0.7, "test_fraction": 0.4}, "--validation-fraction plus"),
        ({"threshold_percentile": 100.0}, "--threshold-percentile"),
        ({"threshold_percentile": 0.0}, "--threshold-percentile"),
        ({"elbo_samples": 0}, "--elbo-samples"),
        ({"iwae_samples": 0}, "--iwae-samples"),
        ({"opset": 16}, "--opset"),
        ({"device": "tpu"}, "--device"),
        ({"score": "neg_elbo", "model": "ae"}, "--score neg_elbo"),
        ({"score": "neg_elbo", "model": "sparse-ae"}, "--score neg_elbo"),
        ({"tied_weights": True}, "--tied-weights"),  # the default model is a VAE
        ({"tied_weights": True, "model": "vae", "arch": "conv"}, "--tied-weights"),
        ({"hidden": "a,b"}, "--hidden"),
        ({"hidden": "0"}, "--hidden"),
        ({"hidden": "64,-8"}, "--hidden"),
        ({"hidden": ""}, "--hidden"),
        ({"hidden": " , "}, "--hidden"),
        ({"conv_channels": "16,x"}, "--conv-channels"),
        ({"conv_channels": "0"}, "--conv-channels"),
        ({"image_size": "28x"}, "--image-size"),
        ({"image_size": "abc"}, "--image-size"),
        ({"image_size": "0x28"}, "--image-size"),
        ({"image_size": "-3"}, "--image-size"),
        ({"sigma": "-1"}, "--sigma"),
        ({"sigma": "0"}, "--sigma"),
        ({"sigma": "abc"}, "--sigma"),
        ({"sigma": "nan"}, "--sigma"),
    ],
)
def test_bad_values_raise_naming_the_flag(overrides: dict[str, object], flag: str) -> None:
    config = TrainingConfig(**overrides)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape(flag)):
        config.validate()


@pytest.mark.parametrize("image_size", ["28xx", "28x28x3"])
def test_malformed_image_size_is_rejected(image_size: str) -> None:
    config = TrainingConfig(image_size=image_size)
    with pytest.raises(ValueError, match="--image-size"):
        config.validate()


@pytest.mark.parametrize(
    "overrides",
    [
        {"score": "neg_elbo", "model": "vae"},
        {"score": "recon_mse", "model": "ae"},
        {"tied_weights": True, "model": "ae"},
        {"tied_weights": True, "model": "sparse-ae", "hidden": "none"},
        {"tied_weights": True, "model": "denoising-ae", "arch": "conv"},
        {"corruption": "gaussian", "corruption_level": 1.5},  # a noise std, may exceed 1
        {"validation_fraction": 0.5, "test_fraction": 0.0},
        {"kl_warmup_epochs": 0, "beta": 0.0, "sparsity_weight": 0.0},
        {"device": "auto", "opset": 17},
        {"image_size": "32x16", "sigma": "0.25", "hidden": "64", "conv_channels": "8,16,32"},
    ],
)
def test_boundary_values_that_are_valid(overrides: dict[str, object]) -> None:
    TrainingConfig(**overrides).validate()  # type: ignore[arg-type]


# --- parsing helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("28x28", (28, 28)),
        ("28", (28, 28)),
        ("32x16", (32, 16)),
        ("32X16", (32, 16)),
        ("32,16", (32, 16)),
        ("1x7", (1, 7)),
    ],
)
def test_image_size_hw_parses(text: str, expected: tuple[int, int]) -> None:
    assert TrainingConfig(image_size=text).image_size_hw() == expected


def test_sigma_value() -> None:
    assert TrainingConfig(sigma="learned").sigma_value() is None
    assert TrainingConfig(sigma="0.5").sigma_value() == 0.5
    assert TrainingConfig(sigma="2").sigma_value() == 2.0
    assert TrainingConfig(sigma="1e-2").sigma_value() == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("256,128", [256, 128]), ("64", [64]), (" 32 , 16 ", [32, 16]), ("32,", [32])],
)
def test_hidden_sizes(text: str, expected: list[int]) -> None:
    assert TrainingConfig(hidden=text).hidden_sizes() == expected
    assert TrainingConfig(conv_channels=text).conv_channel_sizes() == expected


def test_to_dict_round_trips() -> None:
    config = TrainingConfig(latent_dim=3, hidden="16", sigma="0.5", image_size="8x8", plots=False)
    record = config.to_dict()
    assert record["latent_dim"] == 3
    assert set(record) == {f.name for f in dataclasses.fields(TrainingConfig)}
    assert TrainingConfig(**record) == config


# --- the CLI parser ------------------------------------------------------------------------------


def test_usage_lists_every_config_flag() -> None:
    usage = build_train_parser().format_usage()
    for flag in [*ALL_FLAGS, "--no-plots", "--out", "--overwrite", "--quiet"]:
        assert re.search(re.escape(flag) + r"\b", usage), flag


def test_help_mentions_every_config_flag() -> None:
    text = build_train_parser().format_help()
    for flag in ALL_FLAGS:
        assert flag in text, flag
    assert "about 1% false alarms" in text
    assert "(default: 1000)" in text  # --epochs' default is printed with its help


def test_parsing_sets_the_given_values_and_keeps_defaults() -> None:
    args = build_train_parser().parse_args(
        ["--out", "X", "--latent-dim", "4", "--no-plots", "--model", "sparse-ae"]
    )
    assert args.out == Path("X")
    assert args.latent_dim == 4
    assert isinstance(args.latent_dim, int)
    assert args.plots is False
    assert args.model == "sparse-ae"
    assert args.overwrite is False
    assert args.quiet is False
    config = TrainingConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingConfig)}
    )
    assert config == TrainingConfig(latent_dim=4, plots=False, model="sparse-ae")
    config.validate()


def test_parsing_converts_types() -> None:
    args = build_train_parser().parse_args(
        [
            "--out",
            "b",
            "--lr",
            "0.01",
            "--image-size",
            "28x28",
            "--anomaly-labels",
            "labels.txt",
            "--sigma",
            "0.5",
            "--plots",
            "--threshold-percentile",
            "95",
        ]
    )
    assert args.lr == 0.01
    assert args.image_size == "28x28"
    assert args.anomaly_labels == "labels.txt"
    assert args.sigma == "0.5"
    assert args.plots is True
    assert args.threshold_percentile == 95.0
    assert isinstance(args.threshold_percentile, float)
    assert args.name is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--out", "X", "--model", "foo"],
        ["--out", "X", "--arch", "transformer"],
        ["--out", "X", "--latent-dim", "four"],
        ["--latent-dim", "4"],  # --out is required
    ],
)
def test_invalid_arguments_exit_with_code_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        build_train_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "vae-train: error:" in capsys.readouterr().err


def test_invalid_model_choice_names_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_train_parser().parse_args(["--out", "X", "--model", "foo"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err
    assert "invalid choice: 'foo'" in err
    for choice in ("vae", "ae", "sparse-ae", "denoising-ae"):
        assert f"'{choice}'" in err


def test_main_reports_a_bad_config_value_as_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    assert main(["--out", str(out), "--latent-dim", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--latent-dim must be at least 1" in err
    assert not out.exists()
