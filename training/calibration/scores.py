"""The scores thresholds are set from, computed with the exported graphs in bounded batches,
as a server computes them: the validation split's, or cross-fitted ones when the validation
split is too small for the percentile (training.calibration.crossfit)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from bundle.arrays import FloatArray
from bundle.manifest import ComplexitySpec, ScoreType
from bundle.scoring import (
    ComplexityFit,
    anomaly_scores,
    fit_complexity,
    log_complexity,
    log_recon_mse,
)
from training.calibration.crossfit import cross_fitted_scores
from training.config import TrainingConfig
from training.export import OnnxGraphs
from training.factory import ModelInput
from training.models import Likelihood
from training.streaming.rows import ModelRows, SplitRows, batch_rows

SCORE_BATCH = 1024  # items per onnxruntime call while scoring whole splits
# recon_complexity's two numbers need few rows; a streamed data set may have millions.
COMPLEXITY_FIT_ROWS = 20_000


def score_all(
    graphs: OnnxGraphs,
    x_model: SplitRows,
    score_type: str,
    likelihood: Likelihood,
    sigma: float | None,
    epsilon: FloatArray,
    complexity: ComplexityFit | None = None,
) -> npt.NDArray[np.float64]:
    parts = []
    step = batch_rows(x_model, SCORE_BATCH, copies=len(epsilon))
    for start in range(0, len(x_model), step):
        chunk = x_model[start : start + step]
        mu, logvar = graphs.encode(chunk)
        parts.append(
            anomaly_scores(
                score_type,
                chunk,
                mu,
                logvar,
                graphs.decode,
                likelihood,
                sigma,
                epsilon,
                complexity=complexity,
            )
        )
    return np.concatenate(parts) if parts else np.zeros(0)


def fit_recon_complexity(
    graphs: OnnxGraphs, splits: list[SplitRows], image_shape: tuple[int, int, int]
) -> tuple[ComplexityFit, ComplexitySpec]:
    """recon_complexity's fit through the exported graphs, on the training and validation rows
    together (up to COMPLEXITY_FIT_ROWS, evenly spaced in each).

    Both, because the error to expect is that of a normal image the model has not seen, and
    the model has seen the training rows: fitted on them alone the slope came out flatter
    (mnist-5k:holdout=1: 1.27 against 1.60 on validation rows) and the held-out "1"s stood
    out less (AUROC 0.866 against 0.934); fitted on a small validation split alone it was
    noise (digits: 243 rows, slopes -0.29..1.12 over the ten holdouts). Together: 0.884 and
    steady slopes (bench/quality_defaults.md, "Images the size of MNIST").
    """
    total = sum(len(split) for split in splits)
    step = max(1, -(-total // COMPLEXITY_FIT_ROWS))  # ceil: at most the cap in all
    log_mse, log_tv = [], []
    for split in splits:
        rows = np.arange(0, len(split), step)
        for start in range(0, len(rows), SCORE_BATCH):
            positions = rows[start : start + SCORE_BATCH]
            chunk = np.ascontiguousarray(
                split.take(positions) if isinstance(split, ModelRows) else split[positions]
            )
            mu, _ = graphs.encode(chunk)
            log_mse.append(log_recon_mse(chunk, graphs.decode(mu)))
            log_tv.append(log_complexity(chunk, image_shape))
    fit = fit_complexity(np.concatenate(log_mse), np.concatenate(log_tv), image_shape)
    n_samples = sum(len(part) for part in log_mse)
    spec = ComplexitySpec(slope=fit.slope, intercept=fit.intercept, n_samples=n_samples)
    return fit, spec


def calibration_scores(
    config: TrainingConfig,
    shape: ModelInput,
    likelihood: Likelihood,
    x_train: SplitRows,
    x_val: SplitRows,
    val_scores: dict[ScoreType, npt.NDArray[np.float64]],
    epsilon: FloatArray,
    device: torch.device,
    cross_fit: bool,
    *,
    refit_epochs: int | None,
    complexity: ComplexityFit | None = None,
    show_progress: bool | None = False,
) -> tuple[dict[ScoreType, npt.NDArray[np.float64]], str]:
    """The scores each threshold is a percentile of, and a sentence saying where they came from.

    `val_scores` are the final model's scores of the validation split, used as they are unless
    they are too few for the percentile (`cross_fit`, training.calibration.crossfit);
    `refit_epochs` is set when the final model was refitted on every row (training.refit), and
    the fold models are trained the same way.
    """
    percentile = config.threshold_percentile
    if not cross_fit:
        return val_scores, (
            f"validation split of normal items ({len(x_val)} items, percentile {percentile:g})"
        )
    assert isinstance(x_train, np.ndarray)  # the pipeline refuses cross-fitting streamed data
    assert isinstance(x_val, np.ndarray)
    x_fit = np.concatenate([x_train, x_val])
    scores = cross_fitted_scores(
        config,
        shape,
        likelihood,
        x_fit,
        len(x_val) / len(x_fit),
        list(val_scores),
        epsilon,
        device,
        refit_epochs=refit_epochs,
        complexity=complexity,
        show_progress=show_progress,
    )
    trained = (
        f", trained like the final model: on all its rows for the {refit_epochs} epochs early "
        "stopping chose"
    )
    return scores, (
        f"{config.calibration_folds}-fold cross-fitted scores of the train and validation "
        f"normal items ({len(x_fit)} items, each scored by a model that did not train on it"
        f"{trained if refit_epochs is not None else ''}; "
        f"the validation split alone, {len(x_val)} items, is too few for percentile "
        f"{percentile:g}), percentile {percentile:g}"
    )
