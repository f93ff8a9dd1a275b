"""Anomaly thresholds fitted on validation scores of normal data."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bundle.manifest import ScoreCalibration


def calibrate_threshold(scores: npt.NDArray[np.floating], percentile: float) -> ScoreCalibration:
    """Threshold at `percentile` of the validation scores, with the statistics behind it.

    At percentile 99 about 1% of normal items are flagged, whatever the score's scale; the
    101 stored percentiles let a server report each score's tail probability as well.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot calibrate a threshold on zero validation scores")
    if not np.all(np.isfinite(values)):
        raise ValueError("validation scores contain NaN or infinity; the model is broken")
    quantiles = np.percentile(values, np.arange(101))
    return ScoreCalibration(
        threshold=float(np.percentile(values, percentile)),
        percentile=percentile,
        n_samples=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        max=float(values.max()),
        quantiles=[float(q) for q in quantiles],
    )
