"""The refit (training.refit): on small data the final model trains on every row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.bundles import BundleFactory
from training.architecture import fit_best_architecture
from training.config import TrainingConfig
from training.data import load_dataset, split_dataset
from training.distributed import Replicas
from training.factory import build_objective, model_input, resolve_likelihood
from training.pipeline import choose_preprocessing
from training.refit import refit_on_all_rows, uses_refit
from training.train import train_model

TRAIN_KEYS = {"epoch", "train_loss", "train_recon", "train_kl", "kl_weight", "seconds"}


def _breast_cancer_rows(config: TrainingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("breast-cancer")
    splits = split_dataset(data, seed=config.seed)
    likelihood = resolve_likelihood(config, data.is_image)
    prep = choose_preprocessing(config, data, splits.train, likelihood)
    return torch.from_numpy(prep.apply(splits.train)), torch.from_numpy(
        prep.apply(splits.validation)
    )


@pytest.mark.parametrize(
    ("refit", "cross_fitted", "expected"),
    [("auto", True, True), ("auto", False, False), ("off", True, False), ("off", False, False)],
)
def test_refit_only_where_the_threshold_is_cross_fitted(
    refit: str, cross_fitted: bool, expected: bool
) -> None:
    config = TrainingConfig(refit=refit)  # type: ignore[arg-type]
    assert uses_refit(config, cross_fitted) is expected


def test_without_a_validation_split_every_epoch_runs_and_the_last_weights_stay(
    tmp_path: Path,
) -> None:
    config = TrainingConfig(
        dataset="breast-cancer", epochs=7, hidden="16", latent_dim=2, patience=1, lr=1e-12
    )
    train, _ = _breast_cancer_rows(config)
    shape = model_input(config, (30,), False)
    torch.manual_seed(0)
    refit = refit_on_all_rows(config, shape, "laplace", train, epochs=4)
    result = refit.result
    # patience 1 at a step size that cannot improve anything would stop a validated run after
    # two epochs; with no validation split all 4 run (the refit's own count, not --epochs 7).
    assert len(result.history) == 4
    assert result.best_epoch == 4
    assert result.stop_reason == "ran the fixed 4 epochs (no validation split)"
    assert all(set(record) == TRAIN_KEYS for record in result.history)
    assert all(math.isfinite(record["train_loss"]) for record in result.history)
    assert (refit.rows, refit.epochs) == (len(train), 4)
    assert not refit.model.training
    # The metrics file, when asked for, carries the same train-only records.
    metrics = tmp_path / "log.jsonl"
    fixed = TrainingConfig(dataset="breast-cancer", epochs=2, hidden="16", latent_dim=2)
    model = refit_on_all_rows(fixed, shape, "laplace", train, epochs=2).model
    train_model(model, build_objective(fixed), train, None, fixed, metrics_path=metrics)
    lines = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    assert [record["epoch"] for record in lines] == [1.0, 2.0]
    assert all(set(record) == TRAIN_KEYS for record in lines)


def test_a_refit_on_the_same_rows_retraces_the_early_stopped_run() -> None:
    """Same seed, same rows, the epochs early stopping chose: the same weights, bit for bit.
    So the refit is the early-stopped recipe, and only the rows it sees differ."""
    # A large step and short patience make it stop early, long before --epochs.
    config = TrainingConfig(
        dataset="breast-cancer", epochs=300, hidden="64", latent_dim=4, lr=3e-2, patience=2
    )
    train, validation = _breast_cancer_rows(config)
    shape = model_input(config, (30,), False)
    fitted = fit_best_architecture(
        config,
        shape,
        "laplace",
        False,
        train,
        validation,
        replicas=Replicas(device=torch.device("cpu")),
        show_progress=False,
    )
    assert fitted.result.best_epoch < len(fitted.result.history)  # it did stop early
    again = refit_on_all_rows(fitted.config, shape, "laplace", train, fitted.result.best_epoch)
    kept, retraced = fitted.model.state_dict(), again.model.state_dict()
    assert kept.keys() == retraced.keys()
    for name in kept:
        torch.testing.assert_close(retraced[name], kept[name], rtol=0, atol=0)
    # On every row it is a different model.
    everything = torch.cat([train, validation])
    other = refit_on_all_rows(fitted.config, shape, "laplace", everything, again.epochs)
    assert any(not torch.equal(other.model.state_dict()[name], kept[name]) for name in kept)


def test_a_small_table_bundle_holds_the_model_refitted_on_every_row(
    train_bundle: BundleFactory,
) -> None:
    outcome = train_bundle(dataset="breast-cancer")  # 54 validation rows: cross-fitted
    training = outcome.manifest.training
    sizes = training["split_sizes"]
    refit = training["refit"]
    assert refit["rows"] == sizes["train"] + sizes["validation"]
    assert refit["epochs"] == training["best_epoch"]
    assert math.isfinite(refit["final_train_loss"])
    assert refit["cpu_seconds"] > 0
    assert (
        f"on all its rows for the {refit['epochs']} epochs early stopping chose"
        in outcome.manifest.anomaly.calibrated_on
    )
    assert outcome.manifest.metrics["heldout"]["split"] == "test"


def test_refit_off_keeps_the_early_stopped_model(train_bundle: BundleFactory) -> None:
    outcome = train_bundle(dataset="breast-cancer", refit="off")
    assert outcome.manifest.training["refit"] is None
    assert "5-fold cross-fitted" in outcome.manifest.anomaly.calibrated_on
    assert "refit" not in outcome.manifest.anomaly.calibrated_on
    refitted = train_bundle(dataset="breast-cancer")
    # The two bundles hold different weights: the refit changed the model that is served.
    assert (outcome.bundle_dir / "encoder.onnx").read_bytes() != (
        refitted.bundle_dir / "encoder.onnx"
    ).read_bytes()
    # And the fold models were refitted too: the thresholds moved.
    assert (
        outcome.manifest.anomaly.scores["neg_elbo"].threshold
        != refitted.manifest.anomaly.scores["neg_elbo"].threshold
    )


def test_no_refit_where_the_validation_split_calibrates(train_bundle: BundleFactory) -> None:
    for overrides in ({"dataset": "digits:holdout=0"}, {"calibration": "validation"}):
        outcome = train_bundle(**{"dataset": "breast-cancer", **overrides})
        assert outcome.manifest.training["refit"] is None
        assert outcome.manifest.anomaly.calibrated_on.startswith("validation split")


def test_without_a_test_split_the_figures_are_the_early_stopped_models(
    train_bundle: BundleFactory,
) -> None:
    refitted = train_bundle(dataset="breast-cancer", test_fraction=0.0)
    early = train_bundle(dataset="breast-cancer", test_fraction=0.0, refit="off")
    assert refitted.manifest.training["refit"] is not None
    heldout = refitted.manifest.metrics["heldout"]
    assert heldout["split"].startswith("validation (early-stopped model")
    # The same split and the same early-stopped model: the same figures, not the refit's.
    assert heldout["neg_elbo"] == pytest.approx(early.manifest.metrics["heldout"]["neg_elbo"])
    assert early.manifest.metrics["heldout"]["split"] == "validation"
    assert np.isfinite(heldout["iwae_nll"])
