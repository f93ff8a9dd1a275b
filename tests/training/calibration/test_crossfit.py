"""Cross-fitted calibration: small tables get a threshold from honest scores of every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.runtime import OnnxBundle
from tests.bundles import BundleFactory
from training.calibration.crossfit import cross_fitted_scores, fold_assignment, needs_cross_fit
from training.calibration.thresholds import score_percentile
from training.config import TrainingConfig
from training.data import load_dataset, split_dataset
from training.factory import model_input, resolve_likelihood
from training.pipeline import choose_preprocessing


@pytest.mark.parametrize(
    ("n_validation", "percentile", "expected"),
    [
        (54, 99.0, True),
        (199, 99.0, True),
        (200, 99.0, False),
        (270, 99.0, False),
        (30, 90.0, False),
    ],
)
def test_cross_fit_when_fewer_than_two_scores_expected_above(
    n_validation: int, percentile: float, expected: bool
) -> None:
    assert needs_cross_fit(n_validation, percentile) is expected


def test_folds_cover_every_item_once_in_near_equal_sizes() -> None:
    folds = fold_assignment(214, 5, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [42, 43, 43, 43, 43]
    np.testing.assert_array_equal(folds, fold_assignment(214, 5, seed=0))  # seeded
    assert not np.array_equal(folds, fold_assignment(214, 5, seed=1))
    assert not np.array_equal(folds, np.arange(214) % 5)  # shuffled, not file order


def test_a_small_table_is_calibrated_on_every_train_and_validation_row(
    train_bundle: BundleFactory,
) -> None:
    outcome = train_bundle(dataset="breast-cancer")  # 54 validation rows: auto cross-fits
    manifest = outcome.manifest
    sizes = manifest.training["split_sizes"]
    assert sizes["validation"] == 54
    assert "5-fold cross-fitted" in manifest.anomaly.calibrated_on
    for calibration in manifest.anomaly.scores.values():
        assert calibration.n_samples == sizes["train"] + sizes["validation"]
        # Not the largest score, as a percentile of 54 validation scores would be.
        assert calibration.threshold < calibration.max
    # The threshold is not a percentile of the final model's own validation scores.
    data = load_dataset("breast-cancer")
    splits = split_dataset(data, seed=0)
    own = OnnxBundle(outcome.bundle_dir).scores(splits.validation, "neg_elbo")
    stored = manifest.anomaly.scores["neg_elbo"].threshold
    assert stored != pytest.approx(float(score_percentile(own, 99.0)), rel=1e-6)


def test_validation_calibration_can_be_forced(train_bundle: BundleFactory) -> None:
    outcome = train_bundle(dataset="breast-cancer", calibration="validation")
    manifest = outcome.manifest
    assert manifest.anomaly.calibrated_on.startswith("validation split")
    for calibration in manifest.anomaly.scores.values():
        assert calibration.n_samples == 54


@pytest.mark.parametrize("refit_epochs", [None, 4])
def test_a_row_is_scored_by_a_model_that_did_not_train_on_it(refit_epochs: int | None) -> None:
    """Change one row: the scores of its own fold stay exactly the same (that fold's model
    never saw it, and trained on identical data), while every other fold's scores move.
    With `refit_epochs` the fold models train on all their rows for that long: the same holds."""
    config = TrainingConfig(
        dataset="breast-cancer", epochs=5, hidden="16", latent_dim=2, calibration_folds=3
    )
    data = load_dataset("breast-cancer")
    splits = split_dataset(data, seed=0)
    shape = model_input(config, data.feature_shape, data.is_image)
    likelihood = resolve_likelihood(config, data.is_image)
    prep = choose_preprocessing(config, data, splits.train, likelihood)
    x_fit = prep.apply(np.concatenate([splits.train, splits.validation]))
    epsilon = np.random.default_rng(0).standard_normal((4, config.code_size())).astype(np.float32)

    def scores(x: np.ndarray) -> np.ndarray:
        return cross_fitted_scores(
            config,
            shape,
            likelihood,
            x,
            0.25,
            ["neg_elbo"],
            epsilon,
            torch.device("cpu"),
            refit_epochs=refit_epochs,
        )["neg_elbo"]

    before = scores(x_fit)
    changed = x_fit.copy()
    changed[0] += 3.0
    after = scores(changed)
    folds = fold_assignment(len(x_fit), 3, seed=0)
    same_fold = (folds == folds[0]) & (np.arange(len(x_fit)) != 0)
    np.testing.assert_array_equal(after[same_fold], before[same_fold])
    assert not np.allclose(after[folds != folds[0]], before[folds != folds[0]])
    assert after[0] > before[0]  # the changed row itself, judged by the same unseen model
