"""The tests monitoring runs, in numpy: whether a window's anomaly count is more than the
calibration promises (beta-binomial), whether two samples come from one distribution
(Kolmogorov-Smirnov), and a correction when one verdict rests on many such tests (Holm).

Written here rather than imported from scipy, which the serving image does not carry (scipy
would add ~100 MB and ~40 MB a worker for three formulas); tests/service/monitoring/
test_stats.py holds each one against scipy's.

Every function's cost is bounded by its inputs' sizes, which the monitor bounds (its window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bundle.arrays import AnyFloatArray, Float64Array

# Terms of the Kolmogorov series summed at most; at lambda >= 0.2 (every p-value below 1 - 1e-9)
# the 100th term is below exp(-2 * 100**2 * 0.04) = exp(-800), nothing in float64.
KOLMOGOROV_TERMS = 100


def _log_rising(start: float, n: int) -> Float64Array:
    """log of start (start + 1) ... (start + i - 1) for i = 0..n: the rising factorial, so
    lgamma(start + i) - lgamma(start) without an lgamma (numpy has none)."""
    return np.concatenate(([0.0], np.cumsum(np.log(start + np.arange(n, dtype=np.float64)))))


def beta_binomial_upper_tail(k: int, n: int, a: float, b: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(n, a, b): at least `k` flags among `n` items when each
    is flagged with one probability drawn from Beta(a, b). Exact: the pmf summed in log space
    from rising factorials. O(n) time and memory."""
    if not (a > 0.0 and b > 0.0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"a and b must be positive and finite, got {a}, {b}")
    if n < 0 or k < 0:
        raise ValueError("n and k must be non-negative")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    i = np.arange(k, n + 1, dtype=np.int64)
    log_factorial = _log_rising(1.0, n)  # log i!
    log_choose = log_factorial[n] - log_factorial[i] - log_factorial[n - i]
    # pmf(i) = C(n, i) B(i + a, n - i + b) / B(a, b), the betas as rising factorials
    log_pmf = (
        log_choose + _log_rising(a, n)[i] + _log_rising(b, n)[n - i] - _log_rising(a + b, n)[n]
    )
    top = float(log_pmf.max())
    return float(min(1.0, math.exp(top) * float(np.exp(log_pmf - top).sum())))


def kolmogorov_survival(lam: float) -> float:
    """Q(lambda) = P(K > lambda) for the Kolmogorov distribution, the limit of
    sqrt(n) * D under the null: 2 * sum_{k>=1} (-1)^(k-1) exp(-2 k^2 lambda^2)."""
    if lam < 0.2:  # the series converges slowly there and Q is 1 to 1e-9
        return 1.0
    k = np.arange(1, KOLMOGOROV_TERMS + 1, dtype=np.float64)
    signs = np.where(k % 2 == 1, 1.0, -1.0)
    total = 2.0 * float((signs * np.exp(-2.0 * k * k * lam * lam)).sum())
    return min(1.0, max(0.0, total))


@dataclass(frozen=True)
class KsResult:
    statistic: float  # D: the largest distance between the two empirical CDFs
    p_value: float


def ks_two_sample(a: AnyFloatArray, b: AnyFloatArray) -> KsResult:
    """Two-sided two-sample Kolmogorov-Smirnov test. The p-value is the asymptotic one with
    Stephens' small-sample correction, Q((sqrt(m) + 0.12 + 0.11 / sqrt(m)) * D) with
    m = n_a n_b / (n_a + n_b) (Numerical Recipes 14.3), within 0.01 of scipy's exact and
    asymptotic values from 20 items a side (tested). O((n_a + n_b) log(n_a + n_b))."""
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if len(x) == 0 or len(y) == 0:
        raise ValueError("both samples need at least one value")
    both = np.concatenate((x, y))
    distance = np.abs(
        np.searchsorted(x, both, side="right") / len(x)
        - np.searchsorted(y, both, side="right") / len(y)
    )
    statistic = float(distance.max())
    effective = math.sqrt(len(x) * len(y) / (len(x) + len(y)))
    p_value = kolmogorov_survival((effective + 0.12 + 0.11 / effective) * statistic)
    return KsResult(statistic, p_value)


def holm_adjusted(p_values: AnyFloatArray) -> Float64Array:
    """Holm's step-down adjustment: p-values that may each be compared with the family's
    alpha while the chance of any false rejection stays at most alpha (no assumption about
    how the tests depend on one another)."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = adjusted_sorted
    return adjusted
