"""Cross-fitted calibration scores, for when the validation split is too small for a percentile.

A 99th percentile needs about a hundred validation scores; a table of a few hundred rows leaves
a few dozen (breast-cancer: 54). The threshold is then the largest of them, and new normal items
exceed it more often than promised (2.8% instead of 1% on breast-cancer). Worse, the validation
scores are slightly optimistic: early stopping picked the epoch that scored them best.

Cross-fitting gives every train and validation item an honest score: the items are dealt into
K folds, and for each fold a model is trained by the same recipe (its own early-stopping split
carved from the other K - 1 folds) and scores the fold it never saw. The K * n_fold pooled
scores are distributed like the final model's scores on new normal items (a little higher, as
each fold model saw less data, so the threshold errs towards fewer false alarms), and there are
(train + validation) of them instead of validation alone. Cost: K more trainings, on small data.

With `--refit auto` (training.refit) the final model is trained on every row for the epochs
early stopping chose, without a validation split; each fold model is then trained exactly so,
on all of its rows for those epochs, and needs no early-stopping split of its own. The epoch
count is one number chosen on the validation rows; no fold model trains on a row it scores.
That recipe is also the cheaper one: one fixed-length training a fold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm.auto import tqdm

from bundle.arrays import FloatArray
from bundle.manifest import ScoreType
from bundle.scoring import ComplexityFit, anomaly_scores
from training.config import TrainingConfig
from training.factory import ModelInput, build_model, build_objective
from training.models import VAE, Autoencoder, Likelihood
from training.refit import refit_on_all_rows
from training.train import train_model

# Cross-fit when fewer validation scores than this are expected above the threshold: with one
# or none, the threshold is (nearly) the largest score and the false-alarm rate is a guess.
MIN_EXPECTED_EXCEEDANCES = 2.0
# Seeds of the fold split and of the fold models, offset from the run's seed so they never
# repeat the final model's draws.
FOLD_SEED_OFFSET = 7_919


def needs_cross_fit(n_validation: int, percentile: float) -> bool:
    """True when `n_validation` scores expect fewer than two items above the percentile."""
    return n_validation * (1.0 - percentile / 100.0) < MIN_EXPECTED_EXCEEDANCES


def fold_assignment(n_items: int, folds: int, seed: int) -> npt.NDArray[np.int64]:
    """Fold number of each item: a seeded shuffle dealt round-robin, so fold sizes differ by 1."""
    order = np.random.default_rng(seed + FOLD_SEED_OFFSET).permutation(n_items)
    assignment = np.empty(n_items, dtype=np.int64)
    assignment[order] = np.arange(n_items) % folds
    return assignment


def _torch_scores(
    model: VAE | Autoencoder,
    x_model: FloatArray,
    score_types: Sequence[ScoreType],
    likelihood: Likelihood,
    epsilon: FloatArray,
    complexity: ComplexityFit | None,
) -> dict[ScoreType, npt.NDArray[np.float64]]:
    """The bundle's score formulas (bundle.scoring) on a torch model, without an ONNX export."""
    model = model.to("cpu").eval()

    def decode(z: FloatArray) -> FloatArray:
        with torch.no_grad():
            mean = model.decoder_mean(torch.from_numpy(np.ascontiguousarray(z)))
        return mean.numpy().astype(np.float32)

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(x_model))
        if isinstance(model, VAE):
            mu_t, logvar_t = model.encode(x)
            mu, logvar = mu_t.numpy(), logvar_t.numpy()
        else:
            mu, logvar = model.encode(x).numpy(), None
    sigma = model.output.sigma()
    return {
        score_type: anomaly_scores(
            score_type, x_model, mu, logvar, decode, likelihood, sigma, epsilon, None, complexity
        )
        for score_type in score_types
    }


def cross_fitted_scores(
    config: TrainingConfig,
    shape: ModelInput,
    likelihood: Likelihood,
    x_fit: FloatArray,
    validation_share: float,
    score_types: Sequence[ScoreType],
    epsilon: FloatArray,
    device: torch.device,
    *,
    refit_epochs: int | None = None,
    complexity: ComplexityFit | None = None,
    show_progress: bool | None = False,
) -> dict[ScoreType, npt.NDArray[np.float64]]:
    """One out-of-fold score per item of `x_fit` (model space) and score type.

    Each fold model is trained the way the final model was. Without `refit_epochs`: early
    stopping on a share `validation_share` of its rows (the share the final model held out),
    trained on the rest. With `refit_epochs` (the final model was refitted, training.refit):
    on all its rows for that many epochs. recon_complexity is computed with the final
    model's `complexity` fit: the bundle's, which the threshold goes with.
    """
    folds = config.calibration_folds
    if len(x_fit) < 2 * folds:
        raise ValueError(
            f"{len(x_fit)} items are too few for {folds}-fold calibration; "
            "pass --calibration validation or fewer --calibration-folds"
        )
    assignment = fold_assignment(len(x_fit), folds, config.seed)
    scores = {score_type: np.empty(len(x_fit), dtype=np.float64) for score_type in score_types}
    # One bar over the folds (tqdm hides it off a terminal when show_progress is None).
    quiet = None if show_progress is None else not show_progress
    for fold in tqdm(range(folds), desc="calibration folds", unit="fold", disable=quiet):
        fold_seed = config.seed + FOLD_SEED_OFFSET + 1 + fold
        fold_config = dataclasses.replace(config, seed=fold_seed, plots=False)
        held_out = assignment == fold
        rest = x_fit[~held_out]
        model: nn.Module
        if refit_epochs is not None:
            rows = torch.from_numpy(rest).to(device)
            model = refit_on_all_rows(fold_config, shape, likelihood, rows, refit_epochs).model
        else:
            inner = np.random.default_rng(fold_seed).permutation(len(rest))
            n_stop = min(len(rest) - 1, max(1, round(len(rest) * validation_share)))
            stop_rows, train_rows = rest[inner[:n_stop]], rest[inner[n_stop:]]
            torch.manual_seed(fold_seed)
            model = build_model(fold_config, shape, likelihood).to(device)
            train_model(
                model,
                build_objective(fold_config),
                torch.from_numpy(train_rows).to(device),
                torch.from_numpy(stop_rows).to(device),
                fold_config,
                show_progress=False,
            )
        assert isinstance(model, VAE | Autoencoder)
        fold_scores = _torch_scores(
            model, x_fit[held_out], score_types, likelihood, epsilon, complexity
        )
        for score_type in score_types:
            scores[score_type][held_out] = fold_scores[score_type]
    return scores
