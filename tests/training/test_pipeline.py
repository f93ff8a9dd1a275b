"""The whole trainer, end to end: every model kind and architecture writes a servable bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bundle.manifest import DECODER_FILENAME, ENCODER_FILENAME, ModelManifest, sha256_of
from bundle.reference import ReferenceError, read_reference
from bundle.runtime import OnnxBundle
from tests.bundles import BundleFactory
from training.config import TrainingConfig
from training.data import load_dataset
from training.pipeline import TrainingOutcome, run_training

MODEL_CASES = [
    ("vae", "mlp"),
    ("vae", "conv"),
    ("ae", "mlp"),
    ("ae", "conv"),
    ("sparse-ae", "mlp"),
    ("denoising-ae", "mlp"),
    ("denoising-ae", "conv"),
]


@pytest.mark.parametrize(("model", "arch"), MODEL_CASES)
def test_every_model_kind_writes_a_valid_bundle(
    train_bundle: BundleFactory, model: str, arch: str
) -> None:
    outcome = train_bundle(dataset="digits", model=model, arch=arch, conv_channels="8,16")
    bundle = OnnxBundle(outcome.bundle_dir)
    manifest = bundle.manifest
    assert manifest.kind == model.replace("-", "_")
    expected_shape = [1, 8, 8] if arch == "conv" else [64]
    assert manifest.input.shape == expected_shape
    assert manifest.input.image_shape == [1, 8, 8]
    expected_scores = {"recon_mse", "recon_complexity"} | (
        {"neg_elbo"} if model == "vae" else set()
    )
    assert set(manifest.anomaly.scores) == expected_scores
    outputs = [t.name for t in manifest.onnx.encoder.outputs]
    assert outputs == (["mu", "logvar"] if model == "vae" else ["z"])
    assert all(error <= 1e-4 for error in manifest.onnx.parity_max_abs_error.values())

    data = load_dataset("digits")
    scores = bundle.scores(data.x[:50])
    assert scores.shape == (50,)
    assert np.all(np.isfinite(scores))
    # A flat (B, 64) batch is accepted by an image model as well as (B, 1, 8, 8).
    np.testing.assert_array_equal(scores, bundle.scores(data.x[:50].reshape(50, -1)))


def test_sparse_autoencoder_code_is_sparse(train_bundle: BundleFactory) -> None:
    outcome = train_bundle(
        dataset="digits", model="sparse-ae", latent_dim=16, epochs=15, sparsity_weight=3.0
    )
    bundle = OnnxBundle(outcome.bundle_dir)
    x = load_dataset("digits").x[:500]
    code = bundle.encode_model(bundle.to_model_input(x)).mu
    assert code.min() >= 0.0
    assert code.max() <= 1.0
    # The penalty pulls each unit's mean rate towards rho = 0.05 from the sigmoid's 0.5.
    assert float(code.mean()) < 0.2


def test_manifest_has_every_section_of_the_contract(digits_vae: TrainingOutcome) -> None:
    raw = json.loads((digits_vae.bundle_dir / "model.json").read_text())
    for key in (
        "format_version",
        "name",
        "version",
        "kind",
        "created_at",
        "input",
        "latent_dim",
        "preprocessing",
        "likelihood",
        "anomaly",
        "onnx",
        "metrics",
        "training",
    ):
        assert key in raw, key
    assert raw["likelihood"] == {"kind": "bernoulli", "sigma": None}
    assert raw["preprocessing"]["kind"] == "minmax"
    assert raw["preprocessing"]["offset"] == [0.0]
    assert raw["preprocessing"]["scale"] == [16.0]
    assert raw["preprocessing"]["clip"] == [0.0, 1.0]
    for graph, filename in (("encoder", ENCODER_FILENAME), ("decoder", DECODER_FILENAME)):
        spec = raw["onnx"][graph]
        assert spec["file"] == filename
        assert spec["sha256"] == sha256_of(digits_vae.bundle_dir / filename)
    assert raw["onnx"]["encoder"]["inputs"][0]["shape"] == ["batch", 64]
    assert raw["onnx"]["decoder"]["outputs"][0] == {
        "name": "x_hat",
        "shape": ["batch", 64],
        "dtype": "float32",
    }
    anomaly = raw["anomaly"]
    assert anomaly["default_score"] == "recon_complexity"
    assert set(anomaly["scores"]) == {"recon_mse", "neg_elbo", "recon_complexity"}
    complexity = anomaly["complexity"]
    assert complexity["measure"] == "total_variation"
    assert complexity["slope"] >= 0
    sizes = raw["training"]["split_sizes"]
    assert complexity["n_samples"] == sizes["train"] + sizes["validation"]
    assert raw["input"]["image_shape"] == [1, 8, 8]
    data_defaults = raw["training"]["data_defaults"]
    assert data_defaults["latent_dim"] == {"value": 2, "why": "given"}
    assert data_defaults["likelihood"]["value"] == raw["likelihood"]["kind"]
    calibration = anomaly["scores"]["neg_elbo"]
    assert calibration["percentile"] == 99.0
    assert len(calibration["quantiles"]) == 101
    assert calibration["quantiles"] == sorted(calibration["quantiles"])
    heldout = raw["metrics"]["heldout"]
    assert heldout["neg_elbo"] == pytest.approx(heldout["recon_nll"] + heldout["kl"])
    assert heldout["iwae_nll"] > 0
    assert "auroc" in raw["metrics"]["anomaly_detection"]["neg_elbo"]
    training = raw["training"]
    assert training["config"]["dataset"] == "digits:holdout=0"
    assert training["dataset"]["n_anomalies"] == 178  # zeros in load_digits
    assert training["library_versions"]["torch"].startswith("2.13.0")
    # Name and version default to the models/NAME/VERSION layout of --out.
    read_back = ModelManifest.read(digits_vae.bundle_dir)
    assert (read_back.name, read_back.version) == ("model", "1")


def test_threshold_is_the_validation_percentile(digits_vae: TrainingOutcome) -> None:
    """Re-derive the split and check ~1% of validation items lie above the threshold."""
    manifest = digits_vae.manifest
    sizes = manifest.training["split_sizes"]
    bundle = OnnxBundle(digits_vae.bundle_dir)
    from training.data import split_dataset

    data = load_dataset("digits:holdout=0")
    splits = split_dataset(data, seed=0)
    assert len(splits.validation) == sizes["validation"]
    scores = bundle.scores(splits.validation, "recon_mse")
    threshold = manifest.anomaly.scores["recon_mse"].threshold
    assert threshold == pytest.approx(
        float(np.percentile(scores, 99.0, method="weibull")), rel=1e-6
    )
    # The Weibull plotting position puts the 99th percentile at rank 0.99 (n + 1) (1-based),
    # or at the largest score when that rank lies past n: only the items above it are flagged.
    n = len(scores)
    assert int(np.sum(scores > threshold)) == max(0, n - int(np.floor(0.99 * (n + 1))))


def test_bundle_holds_the_monitoring_reference(digits_vae: TrainingOutcome) -> None:
    """reference.npz: the scores each threshold was set from (the validation split's here),
    sorted, and the validation items' codes; images carry no per-feature sample."""
    manifest = digits_vae.manifest
    spec = manifest.reference
    assert spec is not None
    assert spec.sha256 == sha256_of(digits_vae.bundle_dir / "reference.npz")
    reference = read_reference(digits_vae.bundle_dir, spec)
    from training.data import split_dataset

    validation = split_dataset(load_dataset("digits:holdout=0"), seed=0).validation
    bundle = OnnxBundle(digits_vae.bundle_dir)
    assert set(reference.scores) == set(manifest.anomaly.scores)
    for score_type, values in reference.scores.items():
        expected = np.sort(bundle.scores(validation, score_type))  # type: ignore[arg-type]
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    assert spec.n_items == len(validation) == len(reference.latent_mu)
    codes = bundle.encode_model(bundle.to_model_input(validation)).mu
    np.testing.assert_allclose(reference.latent_mu, codes, rtol=1e-5, atol=1e-6)
    assert reference.features is None
    assert spec.features is None


def test_table_reference_keeps_features_in_model_units(train_bundle: BundleFactory) -> None:
    outcome = train_bundle(dataset="breast-cancer", epochs=5, hidden="16", latent_dim=3)
    spec = outcome.manifest.reference
    assert spec is not None
    assert spec.features == 30
    assert spec.latent_dim == 3
    names = outcome.manifest.input.feature_names
    assert names is not None
    assert (len(names), names[0]) == (30, "mean radius")
    reference = read_reference(outcome.bundle_dir, spec)
    assert reference.features is not None
    assert reference.features.shape == (spec.n_items, 30)
    # Standardised by the training rows' statistics: held-out normal items sit near 0, 1.
    assert np.abs(reference.features.mean(axis=0)).max() < 1.0
    # A bundle whose reference file was altered is refused by name.
    path = outcome.bundle_dir / "reference.npz"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ReferenceError, match="sha256"):
        read_reference(outcome.bundle_dir, spec)


def test_report_plots_are_written(digits_vae: TrainingOutcome) -> None:
    report = digits_vae.bundle_dir / "report"
    for name in (
        "loss_curves.png",
        "reconstructions.png",
        "samples.png",
        "latent_space.png",
        "score_histogram.png",
        "hidden_unit_inputs.png",
    ):
        content = (report / name).read_bytes()
        assert content.startswith(b"\x89PNG"), name
    log_lines = (report / "training_log.jsonl").read_text().splitlines()
    assert len(log_lines) == digits_vae.manifest.training["epochs_run"]
    assert {"epoch", "train_loss", "val_loss", "kl_weight"} <= set(json.loads(log_lines[0]))


def test_tabular_gaussian_bundle_learns_sigma_and_detects_malignant(
    train_bundle: BundleFactory,
) -> None:
    outcome = train_bundle(
        dataset="breast-cancer", epochs=40, hidden="32", latent_dim=4, likelihood="gaussian"
    )
    manifest = outcome.manifest
    assert manifest.likelihood.kind == "gaussian"
    assert manifest.likelihood.sigma is not None
    assert 1e-3 <= manifest.likelihood.sigma < 1.0  # learned below the prior guess of 1
    assert manifest.preprocessing.kind == "standard"
    assert len(manifest.preprocessing.offset) == 30
    detection = manifest.metrics["anomaly_detection"]["neg_elbo"]
    assert detection["n_anomalous"] == 212
    # Honest evaluation: trained on benign only, malignant never seen. Even a short run
    # separates them well; a broken score would sit near 0.5.
    assert detection["auroc"] > 0.85


def test_tables_default_to_a_laplace_likelihood_scored_by_neg_elbo(
    train_bundle: BundleFactory,
) -> None:
    outcome = train_bundle(dataset="breast-cancer", epochs=40, hidden="32", latent_dim=4)
    manifest = outcome.manifest
    assert manifest.likelihood.kind == "laplace"
    assert manifest.likelihood.sigma is not None
    assert 1e-3 <= manifest.likelihood.sigma < 1.0  # the scale b, learned below its start of 1
    assert manifest.anomaly.default_score == "neg_elbo"
    assert manifest.metrics["anomaly_detection"]["neg_elbo"]["auroc"] > 0.85
    # The served bundle scores with the same Laplace formula the trainer calibrated with.
    bundle = OnnxBundle(outcome.bundle_dir)
    x = load_dataset("breast-cancer").x[:20]
    assert np.all(np.isfinite(bundle.scores(x, "neg_elbo")))


def test_fixed_sigma_is_kept(train_bundle: BundleFactory) -> None:
    outcome = train_bundle(dataset="breast-cancer", sigma="0.5")
    assert outcome.manifest.likelihood.sigma == pytest.approx(0.5)


def test_refuses_to_overwrite_without_the_flag(digits_vae: TrainingOutcome) -> None:
    config = TrainingConfig(dataset="digits", epochs=1, hidden="8", plots=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_training(config, digits_vae.bundle_dir)


def test_a_failed_run_leaves_no_bundle_and_no_staging_folder(tmp_path: Path) -> None:
    # lr so large the loss overflows within the first epoch: the run must fail cleanly.
    config = TrainingConfig(
        dataset="breast-cancer", epochs=5, hidden="8", lr=1e12, sigma="0.001", plots=False
    )
    from training.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="--lr"):
        run_training(config, tmp_path / "m" / "1")
    assert list((tmp_path / "m").iterdir()) == []


def test_conv_on_tabular_data_is_a_clear_error(tmp_path: Path) -> None:
    config = TrainingConfig(dataset="breast-cancer", arch="conv")
    with pytest.raises(ValueError, match="--arch conv needs image data"):
        run_training(config, tmp_path / "x")


def test_recon_complexity_on_tabular_data_is_refused_before_training(tmp_path: Path) -> None:
    config = TrainingConfig(dataset="breast-cancer", score="recon_complexity")
    with pytest.raises(ValueError, match="--score recon_complexity needs images"):
        run_training(config, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused at the data, before any model was built


def test_bernoulli_on_standardised_data_is_refused(tmp_path: Path) -> None:
    config = TrainingConfig(
        dataset="breast-cancer", likelihood="bernoulli", preprocessing="standard"
    )
    with pytest.raises(ValueError, match="values in \\[0, 1\\]"):
        run_training(config, tmp_path / "x")


def test_same_seed_same_bundle_numbers(tmp_path: Path) -> None:
    settings = {"dataset": "digits", "epochs": 2, "hidden": "16", "plots": False}
    first = run_training(TrainingConfig(**settings), tmp_path / "a")  # type: ignore[arg-type]
    second = run_training(TrainingConfig(**settings), tmp_path / "b")  # type: ignore[arg-type]
    assert first.manifest.anomaly.scores == second.manifest.anomaly.scores
    assert first.manifest.metrics["heldout"] == second.manifest.metrics["heldout"]


def test_user_csv_with_anomaly_labels_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(300, 5))
    outliers = rng.normal(loc=6.0, size=(30, 5))
    rows = np.concatenate([normal, outliers])
    csv = tmp_path / "records.csv"
    header = "a,b,c,d,e"
    np.savetxt(csv, rows, delimiter=",", header=header, comments="")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["0"] * 300 + ["1"] * 30) + "\n")
    config = TrainingConfig(
        dataset=str(csv),
        anomaly_labels=str(labels),
        epochs=30,
        hidden="16",
        latent_dim=2,
        plots=False,
        name="records",
    )
    outcome = run_training(config, tmp_path / "bundle")
    assert outcome.manifest.name == "records"
    assert outcome.manifest.training["split_sizes"]["test_anomalous"] == 30
    assert outcome.manifest.metrics["anomaly_detection"]["neg_elbo"]["auroc"] > 0.95
