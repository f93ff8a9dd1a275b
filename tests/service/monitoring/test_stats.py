"""The monitoring tests' maths against scipy's (which the serving image does not carry), and
their false-alarm rates on samples that do come from one distribution."""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
import pytest
from scipy import stats

from service.monitoring.assess import RatePromise
from service.monitoring.stats import (
    beta_binomial_upper_tail,
    holm_adjusted,
    kolmogorov_survival,
    ks_two_sample,
)
from training.calibration.thresholds import score_percentile


@pytest.mark.parametrize(
    ("k", "n", "a", "b"),
    [(10, 500, 2.71, 268.3), (1, 50, 1.0, 54.0), (0, 10, 3.0, 7.0), (11, 10, 3.0, 7.0),
     (3, 3, 0.5, 0.5), (250, 1000, 200.0, 800.0), (5, 100_000, 10.0, 99_990.0),
     (60, 100_000, 10.0, 99_990.0), (6, 500, 1000.01, 99_000.99)],
)  # fmt: skip
def test_beta_binomial_upper_tail_equals_the_exact_sum(k: int, n: int, a: float, b: float) -> None:
    """Against the pmf summed at 40 digits (mpmath): scipy's betabinom.sf is off by 4x at
    1e-10 in the (60, 100_000) case, so it cannot be the yardstick there."""
    assert beta_binomial_upper_tail(k, n, a, b) == pytest.approx(
        _exact_beta_binomial_tail(k, n, a, b), rel=1e-9, abs=1e-300
    )
    if k >= 1:
        assert beta_binomial_upper_tail(k, n, a, b) == pytest.approx(
            stats.betabinom.sf(k - 1, n, a, b), rel=1e-6, abs=1e-9
        )


def _exact_beta_binomial_tail(k: int, n: int, a: float, b: float) -> float:
    mpmath.mp.dps = 40

    def log_beta(x: Any, y: Any) -> Any:
        return mpmath.loggamma(x) + mpmath.loggamma(y) - mpmath.loggamma(x + y)

    total = mpmath.mpf(0)
    mode = n * a / (a + b)
    for i in range(max(k, 0), n + 1):
        term = mpmath.exp(
            mpmath.log(mpmath.binomial(n, i)) + log_beta(i + a, n - i + b) - log_beta(a, b)
        )
        total += term
        if i > mode and term < total * mpmath.mpf(10) ** -30:
            break  # past the mode the terms only fall
    return float(total)


def test_the_issues_example_two_percent_flagged_where_one_is_promised() -> None:
    """Over 500 items, 10 flags where 5 are expected is an alert at 0.05 when the threshold was
    set on many items; over 50, 1 is not."""
    promise = RatePromise(1.0, 99.0, 100_000)
    assert promise.expected == pytest.approx(0.01, rel=1e-4)
    assert promise.p_value(10, 500) < 0.05
    assert promise.p_value(1, 50) > 0.05


def test_a_threshold_set_on_few_items_promises_less_surely() -> None:
    """On 270 calibration items (the digits split) the 99th percentile's true rate is 1% give
    or take 0.6%: 10 flags in 500 is within that, 20 is not. Below 99 items the threshold is
    the largest score and promises 1 / (n + 1)."""
    promise = RatePromise(1.0, 99.0, 270)
    assert promise.expected == pytest.approx(0.01)
    assert promise.p_value(10, 500) > 0.05
    assert promise.p_value(20, 500) < 0.05
    assert RatePromise(1.0, 99.0, 54).expected == pytest.approx(1 / 55)


@pytest.mark.parametrize("calibration_items", [100, 300, 3000])
def test_the_anomaly_rate_test_false_alarms_at_most_alpha(calibration_items: int) -> None:
    """The whole story, simulated: a threshold set at the 99th percentile (training's
    definition) of n normal scores, then windows of 500 new normal items. The beta-binomial
    test alarms at most alpha of the time; the binomial test at exactly 1% would not on small
    calibration sets (measured here too, so the reason for the wider test stays visible)."""
    rng = np.random.default_rng(calibration_items)
    promise = RatePromise(1.0, 99.0, calibration_items)
    trials, beta_alarms, binomial_alarms = 2000, 0, 0
    for _ in range(trials):
        threshold = score_percentile(rng.standard_normal(calibration_items), 99.0)
        flagged = int((rng.standard_normal(500) > threshold).sum())
        beta_alarms += promise.p_value(flagged, 500) < 0.05
        binomial_alarms += stats.binom.sf(flagged - 1, 500, 0.01) < 0.05
    assert beta_alarms / trials <= 0.05 + 0.015  # 0.015: three standard errors of 2000 trials
    if calibration_items <= 300:
        assert binomial_alarms / trials > 0.1


def test_beta_binomial_edges() -> None:
    assert beta_binomial_upper_tail(0, 10, 1.0, 1.0) == 1.0
    assert beta_binomial_upper_tail(11, 10, 1.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="positive"):
        beta_binomial_upper_tail(1, 10, 0.0, 1.0)


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8, 1.0, 1.36, 2.0, 3.0])
def test_kolmogorov_survival_equals_scipy(lam: float) -> None:
    assert kolmogorov_survival(lam) == pytest.approx(stats.kstwobign.sf(lam), abs=1e-12)


@pytest.mark.parametrize(("n", "m"), [(50, 500), (300, 2000), (500, 2000), (1000, 1000)])
def test_ks_two_sample_equals_scipy(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    worst = 0.0
    for shift in (0.0, 0.05, 0.1, 0.2, 0.4):
        for _ in range(20):
            a, b = rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, m)
            ours, theirs = ks_two_sample(a, b), stats.ks_2samp(a, b)
            assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-12)
            worst = max(worst, abs(ours.p_value - theirs.pvalue))
    assert worst < 0.01


def test_ks_refuses_an_empty_sample() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ks_two_sample(np.zeros(0), np.ones(3))


def test_holm_matches_its_definition() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(holm_adjusted(p), [0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted(np.array([0.9, 0.8])).max() == 1.0


def test_false_alarms_of_ks_and_holm_stay_at_their_level() -> None:
    """2,000 windows of 300 drawn from the reference's own distribution: a verdict at 0.05
    fires at most ~5% of the time (the binomial bound: 5% of 2,000 is 100, +3 sd ~ 129), one
    KS on its own and the Holm-corrected family of 8 dimensions alike."""
    rng = np.random.default_rng(7)
    reference = rng.standard_t(5, size=(2000, 8))
    single = family = 0
    windows = 2000
    for _ in range(windows):
        live = rng.standard_t(5, size=(300, 8))
        p_values = np.array([ks_two_sample(live[:, j], reference[:, j]).p_value for j in range(8)])
        single += p_values[0] < 0.05
        family += holm_adjusted(p_values).min() < 0.05
    assert single <= 129
    assert family <= 129
    assert single >= 40  # and the test is not dead: it does fire at about its level
