"""The monitoring tests' maths against scipy's (which the serving image does not carry), and
their false-alarm rates on samples that do come from one distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from service.monitoring.stats import (
    binomial_upper_tail,
    holm_adjusted,
    kolmogorov_survival,
    ks_two_sample,
)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(10, 500, 0.01), (1, 50, 0.01), (0, 10, 0.3), (11, 10, 0.3), (3, 3, 0.5), (250, 1000, 0.2),
     (5, 100_000, 0.0001), (60, 100_000, 0.0001)],
)  # fmt: skip
def test_binomial_upper_tail_equals_scipy(k: int, n: int, p: float) -> None:
    assert binomial_upper_tail(k, n, p) == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-9)


def test_the_issues_example_two_percent_flagged_where_one_is_promised() -> None:
    """Over 500 items, 10 flags where 5 are expected is an alert at 0.05; over 50, 1 is not."""
    assert binomial_upper_tail(10, 500, 0.01) < 0.05
    assert binomial_upper_tail(1, 50, 0.01) > 0.05


def test_binomial_edges() -> None:
    assert binomial_upper_tail(1, 10, 0.0) == 0.0
    assert binomial_upper_tail(10, 10, 1.0) == 1.0
    with pytest.raises(ValueError, match="probability"):
        binomial_upper_tail(1, 10, 1.5)


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
