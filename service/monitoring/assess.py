"""A window's verdicts against the bundle's reference: is the anomaly rate what calibration
promised, have the scores drifted, have the inputs drifted (the codes, one latent dimension at
a time; for tables, the features), and which dimensions or features moved most.

Each verdict is a test at level `alpha` (VAE_MONITOR_ALPHA): on traffic like the reference, a
window is called drifted at most that often (tests/service/monitoring measure it over many
windows). The per-dimension tests of one verdict are Holm-corrected, so `alpha` bounds the
chance that any of them fires, not each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bundle.arrays import AnyFloatArray
from bundle.reference import ReferenceData
from service.monitoring.stats import binomial_upper_tail, holm_adjusted, ks_two_sample
from service.monitoring.window import WindowItems

# Dimensions or features listed in a drift verdict, the most moved first.
LISTED = 5


def anomaly_rate(items: WindowItems, expected: float, alpha: float) -> dict[str, Any]:
    """Flags against the rate the threshold promises: one-sided binomial test, since more
    flags than promised is the alarm (fewer is reported by the rate itself)."""
    flagged = int(items.flags.sum())
    n = len(items)
    p_value = binomial_upper_tail(flagged, n, expected)
    return {
        "anomaly_rate": flagged / n,
        "expected_anomaly_rate": expected,
        "anomaly_rate_test": {"flagged": flagged, "p_value": p_value, "alert": p_value < alpha},
    }


def score_drift(
    items: WindowItems, reference_scores: AnyFloatArray, alpha: float
) -> dict[str, Any]:
    result = ks_two_sample(items.scores, reference_scores)
    return {
        "test": "kolmogorov-smirnov, two-sample",
        "statistic": result.statistic,
        "p_value": result.p_value,
        "drifted": result.p_value < alpha,
    }


def _columns_drift(
    live: np.ndarray, reference: np.ndarray, alpha: float, label: str
) -> tuple[bool, list[dict[str, Any]]]:
    """Column by column KS, Holm-adjusted; the most moved columns with how far their mean
    moved in reference standard deviations (a number a person can act on)."""
    tests = [ks_two_sample(live[:, j], reference[:, j]) for j in range(reference.shape[1])]
    adjusted = holm_adjusted(np.array([t.p_value for t in tests]))
    spread = reference.std(axis=0)
    shift = (live.mean(axis=0) - reference.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    order = sorted(range(len(tests)), key=lambda j: (-tests[j].statistic, j))[:LISTED]
    listed = [
        {
            label: j,
            "statistic": tests[j].statistic,
            "p_value": float(adjusted[j]),
            "drifted": bool(adjusted[j] < alpha),
            "mean_shift_in_sd": float(shift[j]),
        }
        for j in order
    ]
    return bool((adjusted < alpha).any()), listed


def input_drift(items: WindowItems, reference: ReferenceData, alpha: float) -> dict[str, Any]:
    """The codes against the aggregate posterior, per latent dimension; for tables, also the
    features. Drifted when either family has a dimension below alpha after Holm."""
    codes_drifted, dimensions = _columns_drift(
        items.latent_mu, reference.latent_mu, alpha, "dimension"
    )
    verdict: dict[str, Any] = {
        "test": "kolmogorov-smirnov per column, holm-corrected",
        "drifted": codes_drifted,
        "latent_drifted": codes_drifted,
        "dimensions": dimensions,
    }
    if reference.features is not None and items.features is not None:
        features_drifted, features = _columns_drift(
            items.features, reference.features, alpha, "feature"
        )
        verdict["features_drifted"] = features_drifted
        verdict["features"] = features
        verdict["drifted"] = codes_drifted or features_drifted
    return verdict
