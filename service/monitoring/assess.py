"""A window's verdicts against the bundle's reference: is the anomaly rate what calibration
promised (within the calibration's own uncertainty, RatePromise), have the scores drifted,
have the inputs drifted (the codes, one latent dimension at a time; for tables, the
features), and which dimensions or features moved most.

Each verdict is a test at level `alpha` (VAE_MONITOR_ALPHA): on traffic like the reference, a
window is called drifted at most that often (tests/service/monitoring measure it over many
windows). The per-dimension tests of one verdict are Holm-corrected, so `alpha` bounds the
chance that any of them fires, not each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bundle.arrays import AnyFloatArray
from bundle.reference import ReferenceData
from service.monitoring.stats import beta_binomial_upper_tail, holm_adjusted, ks_two_sample
from service.monitoring.window import WindowItems

# Dimensions or features listed in a drift verdict, the most moved first.
LISTED = 5


@dataclass(frozen=True)
class RatePromise:
    """The anomaly rate a threshold promises, and how sure that promise is.

    The threshold sits at plotting position q (n + 1) of the n normal scores it was set from
    (training.calibration.thresholds), so the chance P that a new normal item exceeds it is the
    coverage of an order statistic: P ~ Beta((1 - q)(n + 1), q (n + 1)), mean 1 - q. A window's
    flag count is then beta-binomial, not binomial: on a few hundred calibration items P itself
    is uncertain by about half its size, and a binomial test at exactly 1 - q would call that
    uncertainty drift. As n grows the two tests agree. Below n = 1 / (1 - q) - 1 items the
    threshold is the largest score and P ~ Beta(1, n), mean 1 / (n + 1).
    """

    threshold: float  # the score above which an item is flagged
    percentile: float  # of the calibration scores, 0..100
    calibration_items: int  # n: the scores the threshold was set from

    @property
    def shape(self) -> tuple[float, float]:
        places = self.calibration_items + 1.0
        above = max((1.0 - self.percentile / 100.0) * places, 1.0)
        return above, max(places - above, 1.0)

    @property
    def expected(self) -> float:
        a, b = self.shape
        return a / (a + b)

    def p_value(self, flagged: int, items: int) -> float:
        """The chance of `flagged` or more among `items` normal items."""
        a, b = self.shape
        return beta_binomial_upper_tail(flagged, items, a, b)


def anomaly_rate(items: WindowItems, promise: RatePromise, alpha: float) -> dict[str, Any]:
    """Flags against the rate the threshold promises: one-sided, since more flags than
    promised is the alarm (fewer is reported by the rate itself)."""
    flagged = int(items.flags.sum())
    n = len(items)
    p_value = promise.p_value(flagged, n)
    return {
        "anomaly_rate": flagged / n,
        "anomaly_rate_test": {"flagged": flagged, "p_value": p_value, "alert": p_value < alpha},
    }


# Bins of the score histogram the report carries for the web page's panel.
HISTOGRAM_BINS = 24


def score_histogram(
    live: AnyFloatArray, reference: AnyFloatArray, threshold: float
) -> dict[str, Any]:
    """The window's scores and the reference's on one set of bins, as shares of each, for a
    person to see where they part. The bins span the reference's 0.5th to 99.5th percentile
    and the threshold, widened to the live scores' 1st to 99th: one wild score does not squash
    the picture into one bin. Scores outside are counted in `below` / `above`."""
    low, high = np.percentile(reference, [0.5, 99.5])
    finite = live[np.isfinite(live)]  # an overflowing score (inf) counts as above, unbinned
    if len(finite):
        live_low, live_high = np.percentile(finite, [1.0, 99.0])
        low, high = min(low, live_low), max(high, live_high)
    low, high = float(min(low, threshold)), float(max(high, threshold))
    if not high > low:  # every score equal: one bin around it
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)

    def shares(values: AnyFloatArray) -> tuple[list[float], float, float]:
        counts, _ = np.histogram(values[np.isfinite(values)], bins=edges)
        n = len(values)
        below = float((values < low).sum()) / n
        above = float((~(values <= high)).sum()) / n  # NaN and inf count as above
        return (counts / n).tolist(), below, above

    live_shares, live_below, live_above = shares(live)
    reference_shares, reference_below, reference_above = shares(reference)
    return {
        "edges": edges.tolist(),
        "threshold": threshold,
        "live": live_shares,
        "reference": reference_shares,
        "below": {"live": live_below, "reference": reference_below},
        "above": {"live": live_above, "reference": reference_above},
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
    live: np.ndarray,
    reference: np.ndarray,
    alpha: float,
    label: str,
    names: Sequence[str] | None = None,
) -> tuple[bool, list[dict[str, Any]]]:
    """Column by column KS, Holm-adjusted; the most moved columns (by index, and by name when
    the columns have names) with how far their mean moved in reference standard deviations
    (a number a person can act on)."""
    tests = [ks_two_sample(live[:, j], reference[:, j]) for j in range(reference.shape[1])]
    adjusted = holm_adjusted(np.array([t.p_value for t in tests]))
    spread = reference.std(axis=0)
    shift = (live.mean(axis=0) - reference.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    order = sorted(range(len(tests)), key=lambda j: (-tests[j].statistic, j))[:LISTED]
    listed: list[dict[str, Any]] = []
    for j in order:
        entry: dict[str, Any] = {label: j}
        if names is not None:
            entry["name"] = names[j]
        entry.update(
            statistic=tests[j].statistic,
            p_value=float(adjusted[j]),
            drifted=bool(adjusted[j] < alpha),
            mean_shift_in_sd=float(shift[j]),
        )
        listed.append(entry)
    return bool((adjusted < alpha).any()), listed


def input_drift(
    items: WindowItems,
    reference: ReferenceData,
    alpha: float,
    feature_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The codes against the aggregate posterior, per latent dimension; for tables, also the
    features (named when the bundle names them). Drifted when either family has a column
    below alpha after Holm."""
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
            items.features, reference.features, alpha, "feature", feature_names
        )
        verdict["features_drifted"] = features_drifted
        verdict["features"] = features
        verdict["drifted"] = codes_drifted or features_drifted
    return verdict
