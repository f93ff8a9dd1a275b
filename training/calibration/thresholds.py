"""Anomaly thresholds fitted on validation scores of normal data."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from bundle.manifest import ScoreCalibration

# Percentiles at plotting positions p (n + 1) (Weibull; Hyndman & Fan 1996, definition 6): a
# new normal item, exchangeable with the n validation items, lands above the k-th smallest of
# them with probability (n + 1 - k) / (n + 1), so this is the threshold it exceeds with
# probability 1 - p. numpy's default (linear, position p (n - 1)) sits lower and flags more
# than promised: at p = 0.99, 1.4% of new items on 243 validation items and 2.8% on 54.
# Below n = 1 / (1 - p) - 1 items (99 for the 99th percentile) the position lies past the
# largest score, which is then the threshold, and the promise cannot be kept exactly.
PERCENTILE_METHOD: Final = "weibull"


def score_percentile(
    scores: npt.NDArray[np.floating], percentile: float | npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """The calibration percentile(s) of `scores`: one definition for trainer and checks."""
    values = np.asarray(scores, dtype=np.float64)
    return np.asarray(np.percentile(values, percentile, method=PERCENTILE_METHOD))


def calibrate_threshold(scores: npt.NDArray[np.floating], percentile: float) -> ScoreCalibration:
    """Threshold at `percentile` of the validation scores, with the statistics behind it.

    At percentile 99 a new normal item is flagged with probability 1%, whatever the score's
    scale; the 101 stored percentiles let a server report each score's tail probability too.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot calibrate a threshold on zero validation scores")
    if not np.all(np.isfinite(values)):
        raise ValueError("validation scores contain NaN or infinity; the model is broken")
    quantiles = score_percentile(values, np.arange(101, dtype=np.float64))
    return ScoreCalibration(
        threshold=float(score_percentile(values, percentile)),
        percentile=percentile,
        n_samples=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        max=float(values.max()),
        quantiles=[float(q) for q in quantiles],
    )
