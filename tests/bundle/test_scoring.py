"""Tests for bundle.scoring: the numpy maths must agree with the torch losses the trainer uses."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bundle.arrays import Float64Array, FloatArray
from bundle.scoring import (
    BERNOULLI_EPS,
    LOG_2PI,
    MSE_FLOOR,
    TOTAL_VARIATION_FLOOR,
    ComplexityFit,
    TailTable,
    anomaly_scores,
    bernoulli_nll,
    fit_complexity,
    fixed_epsilon,
    gaussian_nll,
    kl_to_standard_normal,
    neg_elbo,
    recon_complexity,
    recon_mse,
    reconstruction_nll,
    tail_probability,
    total_variation,
)
from training import models

Decode = Callable[[FloatArray], FloatArray]


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(a: npt.NDArray[np.floating]) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def linear_decoder(latent: int, features: int, *, bernoulli: bool, seed: int = 3) -> Decode:
    """z -> b + sum_k z_k W_k, elementwise only (no BLAS), so each row depends on that row alone.

    Bernoulli means are clipped to [0, 1], an exact operation, so the code under test is the
    only place transcendental functions run.
    """
    rng = _rng(seed)
    weight = rng.normal(0.0, 0.5, (latent, features)).astype(np.float32)
    bias = rng.normal(0.0, 0.5, features).astype(np.float32)
    if bernoulli:
        weight *= np.float32(0.2)
        bias = (np.float32(0.5) + np.float32(0.3) * np.tanh(bias)).astype(np.float32)

    def decode(z: FloatArray) -> FloatArray:
        out = np.broadcast_to(bias, (len(z), features)).copy()
        for k in range(latent):
            out += z[:, k : k + 1] * weight[k]
        if bernoulli:
            np.clip(out, 0.0, 1.0, out=out)
        return out

    return decode


# --- numpy vs torch ------------------------------------------------------------------------


@pytest.mark.parametrize("binary_targets", [True, False])
def test_bernoulli_nll_matches_torch(binary_targets: bool) -> None:
    rng = _rng()
    p = rng.uniform(0.01, 0.99, (6, 1, 4, 4))
    x = (
        (rng.uniform(size=p.shape) < 0.5).astype(np.float64)
        if binary_targets
        else rng.uniform(size=p.shape)
    )
    logits = np.log(p) - np.log1p(-p)
    expected = models.bernoulli_nll(_t(logits), _t(x)).numpy()
    actual = bernoulli_nll(x, p)
    assert actual.shape == (6,)
    np.testing.assert_allclose(actual, expected, rtol=1e-10)


def test_bernoulli_nll_matches_torch_in_float32() -> None:
    # The trainer's float32 losses and the server's float64 scores agree to float32 precision.
    rng = _rng(11)
    p = rng.uniform(0.05, 0.95, (8, 64)).astype(np.float32)
    x = rng.uniform(size=(8, 64)).astype(np.float32)
    logits = torch.logit(torch.from_numpy(p))
    expected = models.bernoulli_nll(logits, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(bernoulli_nll(x, p), expected, rtol=1e-5)


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0, 7.5])
def test_gaussian_nll_matches_torch(sigma: float) -> None:
    rng = _rng()
    x = rng.normal(size=(5, 3, 2, 2))
    mean = x + rng.normal(0.0, 0.3, x.shape)
    log_sigma = torch.tensor(math.log(sigma), dtype=torch.float64)
    expected = models.gaussian_nll(_t(mean), _t(x), log_sigma).numpy()
    actual = gaussian_nll(x, mean, sigma)
    assert actual.shape == (5,)
    np.testing.assert_allclose(actual, expected, rtol=1e-10)


@pytest.mark.parametrize("scale", [1e-3, 0.1, 1.0, 7.5])
def test_laplace_nll_matches_torch(scale: float) -> None:
    rng = _rng()
    x = rng.normal(size=(5, 3, 2, 2))
    mean = x + rng.laplace(0.0, 0.3, x.shape)
    log_scale = torch.tensor(math.log(scale), dtype=torch.float64)
    expected = models.laplace_nll(_t(mean), _t(x), log_scale).numpy()
    actual = reconstruction_nll(x, mean, "laplace", scale)
    assert actual.shape == (5,)
    np.testing.assert_allclose(actual, expected, rtol=1e-10)
    # At the mean only the normalising constant is left: D log(2 b).
    np.testing.assert_allclose(
        reconstruction_nll(x, x, "laplace", scale), [12 * math.log(2 * scale)] * 5, rtol=1e-12
    )


def test_kl_matches_torch() -> None:
    rng = _rng()
    mu = rng.normal(0.0, 2.0, (9, 4))
    logvar = rng.uniform(models.LOGVAR_MIN, models.LOGVAR_MAX, (9, 4))
    expected = models.gaussian_kl_to_standard_normal(_t(mu), _t(logvar)).numpy()
    actual = kl_to_standard_normal(mu, logvar)
    assert actual.shape == (9,)
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def test_reconstruction_nll_dispatches_like_the_decoder_likelihood() -> None:
    rng = _rng()
    x = rng.uniform(size=(4, 10))
    p = rng.uniform(0.1, 0.9, (4, 10))
    logits = torch.from_numpy(np.log(p) - np.log1p(-p))
    bern = models.DecoderLikelihood("bernoulli", None).double()
    np.testing.assert_allclose(
        reconstruction_nll(x, p, "bernoulli", None),
        bern.nll(logits, _t(x)).detach().numpy(),
        rtol=1e-10,
    )
    # The module keeps log sigma in float32, so the agreement is to float32 precision.
    gauss = models.DecoderLikelihood("gaussian", 0.25).double()
    sigma = gauss.sigma()
    assert sigma == pytest.approx(0.25, rel=1e-6)
    np.testing.assert_allclose(
        reconstruction_nll(x, p, "gaussian", sigma),
        gauss.nll(_t(p), _t(x)).detach().numpy(),
        rtol=1e-10,
    )


@pytest.mark.parametrize("sigma", [None, 0.0, -1.0])
def test_reconstruction_nll_gaussian_needs_positive_sigma(sigma: float | None) -> None:
    with pytest.raises(ValueError, match="positive sigma"):
        reconstruction_nll(np.zeros((1, 2)), np.zeros((1, 2)), "gaussian", sigma)


def test_reconstruction_nll_unknown_likelihood() -> None:
    with pytest.raises(ValueError, match="unknown likelihood"):
        reconstruction_nll(np.zeros((1, 2)), np.zeros((1, 2)), "poisson", None)


# --- hand values -----------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_gaussian_nll_at_the_mean_is_the_constant(sigma: float) -> None:
    x = np.arange(12, dtype=np.float64).reshape(2, 6)
    expected = 6 * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(gaussian_nll(x, x, sigma), [expected, expected], rtol=1e-12)


def test_gaussian_nll_by_hand() -> None:
    x = np.array([[1.0, 2.0]])
    mean = np.array([[0.0, 0.0]])
    # 0.5 * (1 + 4) / 4 + 2 * (log 2 + 0.5 log 2pi)
    expected = 0.625 + 2 * (math.log(2.0) + 0.5 * LOG_2PI)
    np.testing.assert_allclose(gaussian_nll(x, mean, 2.0), [expected], rtol=1e-12)


def test_bernoulli_nll_by_hand_and_clamp() -> None:
    x = np.array([[1.0, 0.0], [1.0, 1.0]])
    p = np.array([[0.5, 0.5], [0.25, 1.0]])
    expected_first = 2 * math.log(2.0)
    # p = 1 for a target of 1 costs -log(1 - eps); the clamp keeps the saturated case finite.
    expected_second = -math.log(0.25) - math.log(1.0 - BERNOULLI_EPS)
    np.testing.assert_allclose(bernoulli_nll(x, p), [expected_first, expected_second], rtol=1e-12)
    saturated = bernoulli_nll(np.array([[0.0]]), np.array([[1.0]]))
    np.testing.assert_allclose(saturated, [-math.log(BERNOULLI_EPS)], rtol=1e-9)


def test_kl_by_hand() -> None:
    assert kl_to_standard_normal(np.zeros((1, 3)), np.zeros((1, 3)))[0] == 0.0
    # mu = 2, var = e: -0.5 * (1 + 1 - 4 - e)
    value = kl_to_standard_normal(np.array([[2.0]]), np.array([[1.0]]))[0]
    assert value == pytest.approx(-0.5 * (2.0 - 4.0 - math.e), rel=1e-12)


def test_recon_mse_by_hand() -> None:
    x = np.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mean = np.array([[[1.0, 0.0], [3.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])
    # item 0: (0 + 4 + 0 + 9) / 4; item 1: 4 * 0.25 / 4
    np.testing.assert_allclose(recon_mse(x, mean), [13.0 / 4.0, 0.25], rtol=1e-12)
    assert recon_mse(x, x).tolist() == [0.0, 0.0]


# --- fixed epsilon -----------------------------------------------------------------------------


def test_fixed_epsilon_same_seed_same_numbers() -> None:
    first = fixed_epsilon(16, 3, seed=5)
    second = fixed_epsilon(16, 3, seed=5)
    assert first.shape == (16, 3)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


def test_fixed_epsilon_different_seed_different_numbers() -> None:
    assert not np.array_equal(fixed_epsilon(16, 3, seed=5), fixed_epsilon(16, 3, seed=6))


def test_fixed_epsilon_is_standard_normal() -> None:
    eps = fixed_epsilon(20000, 2, seed=0).astype(np.float64)
    # Standard errors: mean 1/sqrt(n) ~ 0.007, var sqrt(2/n) ~ 0.01; 5 SE bounds.
    assert np.all(np.abs(eps.mean(axis=0)) < 0.05)
    assert np.all(np.abs(eps.var(axis=0) - 1.0) < 0.05)


# --- neg_elbo --------------------------------------------------------------------------------


def _elbo_inputs(
    batch: int, latent: int, features: int, seed: int = 0
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    rng = _rng(seed)
    x = rng.uniform(size=(batch, features)).astype(np.float32)
    mu = rng.normal(size=(batch, latent)).astype(np.float32)
    logvar = rng.uniform(-3.0, 1.0, (batch, latent)).astype(np.float32)
    epsilon = fixed_epsilon(8, latent, seed=seed)
    return x, mu, logvar, epsilon


@pytest.mark.parametrize(("likelihood", "sigma"), [("bernoulli", None), ("gaussian", 0.3)])
def test_neg_elbo_batch_equals_item_by_item_exactly(likelihood: str, sigma: float | None) -> None:
    x, mu, logvar, epsilon = _elbo_inputs(batch=13, latent=3, features=20)
    decode = linear_decoder(3, 20, bernoulli=likelihood == "bernoulli")
    batch = neg_elbo(x, mu, logvar, decode, likelihood, sigma, epsilon)
    assert batch.shape == (13,)
    assert np.all(np.isfinite(batch))
    one_by_one = np.concatenate(
        [
            neg_elbo(
                x[i : i + 1], mu[i : i + 1], logvar[i : i + 1], decode, likelihood, sigma, epsilon
            )
            for i in range(13)
        ]
    )
    np.testing.assert_array_equal(batch, one_by_one)
    # Reversing the batch permutes the scores and changes nothing else.
    reversed_scores = neg_elbo(
        x[::-1].copy(), mu[::-1].copy(), logvar[::-1].copy(), decode, likelihood, sigma, epsilon
    )
    np.testing.assert_array_equal(reversed_scores[::-1], batch)


@pytest.mark.parametrize(("likelihood", "sigma"), [("bernoulli", None), ("gaussian", 0.3)])
def test_neg_elbo_with_vanishing_variance_is_nll_at_mu_plus_kl(
    likelihood: str, sigma: float | None
) -> None:
    x, mu, _, epsilon = _elbo_inputs(batch=5, latent=2, features=12)
    logvar = np.full_like(mu, -40.0)  # std ~ 2e-9: every sample is z = mu
    decode = linear_decoder(2, 12, bernoulli=likelihood == "bernoulli")
    expected = reconstruction_nll(x, decode(mu), likelihood, sigma) + kl_to_standard_normal(
        mu, logvar
    )
    actual = neg_elbo(x, mu, logvar, decode, likelihood, sigma, epsilon)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_neg_elbo_is_the_mean_over_epsilon_rows() -> None:
    x, mu, logvar, epsilon = _elbo_inputs(batch=4, latent=2, features=6)
    decode = linear_decoder(2, 6, bernoulli=False)
    std = np.exp(0.5 * logvar.astype(np.float64))
    by_hand = np.zeros(4)
    for row in epsilon:
        z = (mu + std * row).astype(np.float32)
        by_hand += gaussian_nll(x, decode(z), 0.5)
    by_hand = by_hand / len(epsilon) + kl_to_standard_normal(mu, logvar)
    actual = neg_elbo(x, mu, logvar, decode, "gaussian", 0.5, epsilon)
    np.testing.assert_allclose(actual, by_hand, rtol=1e-5)


def test_neg_elbo_matches_torch_loss_terms() -> None:
    # Same z, same decoder: the trainer's reconstruction + KL equals the server's -ELBO.
    x, mu, logvar, _ = _elbo_inputs(batch=6, latent=2, features=9)
    epsilon = fixed_epsilon(1, 2, seed=4)
    decode = linear_decoder(2, 9, bernoulli=False)
    z = (mu + np.exp(0.5 * logvar) * epsilon).astype(np.float32)
    log_sigma = torch.tensor(math.log(0.7), dtype=torch.float64)
    torch_total = models.gaussian_nll(_t(decode(z)), _t(x), log_sigma)
    torch_total = torch_total + models.gaussian_kl_to_standard_normal(_t(mu), _t(logvar))
    actual = neg_elbo(x, mu, logvar, decode, "gaussian", 0.7, epsilon)
    np.testing.assert_allclose(actual, torch_total.numpy(), rtol=1e-5)


# --- anomaly_scores ----------------------------------------------------------------------------


def test_anomaly_scores_recon_mse_uses_the_mean_path() -> None:
    x, mu, logvar, epsilon = _elbo_inputs(batch=5, latent=2, features=8)
    decode = linear_decoder(2, 8, bernoulli=True)
    scores = anomaly_scores("recon_mse", x, mu, logvar, decode, "bernoulli", None, epsilon)
    np.testing.assert_array_equal(scores, recon_mse(x, decode(mu)))
    # An autoencoder has no logvar and still gets recon_mse.
    ae = anomaly_scores("recon_mse", x, mu, None, decode, "bernoulli", None, epsilon)
    np.testing.assert_array_equal(ae, scores)


def test_anomaly_scores_neg_elbo() -> None:
    x, mu, logvar, epsilon = _elbo_inputs(batch=5, latent=2, features=8)
    decode = linear_decoder(2, 8, bernoulli=False)
    scores = anomaly_scores("neg_elbo", x, mu, logvar, decode, "gaussian", 0.2, epsilon)
    np.testing.assert_array_equal(scores, neg_elbo(x, mu, logvar, decode, "gaussian", 0.2, epsilon))


def test_anomaly_scores_neg_elbo_needs_logvar() -> None:
    x, mu, _, epsilon = _elbo_inputs(batch=2, latent=2, features=4)
    decode = linear_decoder(2, 4, bernoulli=True)
    with pytest.raises(ValueError, match="logvar"):
        anomaly_scores("neg_elbo", x, mu, None, decode, "bernoulli", None, epsilon)


def test_anomaly_scores_unknown_type() -> None:
    x, mu, logvar, epsilon = _elbo_inputs(batch=2, latent=2, features=4)
    decode = linear_decoder(2, 4, bernoulli=True)
    with pytest.raises(ValueError, match=r"unknown score type 'iwae'.*recon_mse, neg_elbo"):
        anomaly_scores("iwae", x, mu, logvar, decode, "bernoulli", None, epsilon)


# --- recon_complexity --------------------------------------------------------------------------


def test_total_variation_by_hand() -> None:
    image = np.array([[[0.0, 1.0], [0.5, 0.5]]])  # (C=1, H=2, W=2)
    # vertical |0.5 - 0| + |0.5 - 1| = 1; horizontal |1 - 0| + |0.5 - 0.5| = 1
    np.testing.assert_allclose(total_variation(image[None], (1, 2, 2)), [2.0])
    # flat items of the same numbers give the same answer, and channels add up
    two_channels = np.concatenate([image, 2 * image])[None].reshape(1, 8)
    np.testing.assert_allclose(total_variation(two_channels, (2, 2, 2)), [6.0])
    np.testing.assert_array_equal(total_variation(np.zeros((3, 16)), (1, 4, 4)), np.zeros(3))


def test_fit_complexity_recovers_a_power_law() -> None:
    rng = _rng()
    log_tv = rng.uniform(3.0, 5.0, size=500)
    log_mse = -9.0 + 1.3 * log_tv + rng.normal(0.0, 0.01, size=500)
    fit = fit_complexity(log_mse, log_tv, (1, 28, 28))
    assert fit.slope == pytest.approx(1.3, abs=0.01)
    assert fit.intercept == pytest.approx(-9.0, abs=0.05)
    assert fit.image_shape == (1, 28, 28)


def test_fit_complexity_never_rewards_busy_images_and_survives_degenerate_rows() -> None:
    log_tv = np.linspace(1.0, 2.0, 50)
    falling = fit_complexity(5.0 - 2.0 * log_tv, log_tv, (1, 2, 2))
    assert falling.slope == 0.0  # a negative slope is clipped: the score is log MSE shifted
    assert falling.intercept == pytest.approx(np.mean(5.0 - 2.0 * log_tv))
    constant = fit_complexity(np.array([-3.0, -4.0]), np.array([2.0, 2.0]), (1, 2, 2))
    assert (constant.slope, constant.intercept) == (0.0, -3.5)
    one = fit_complexity(np.array([-3.0]), np.array([1.0]), (1, 2, 2))
    assert (one.slope, one.intercept) == (0.0, -3.0)
    with pytest.raises(ValueError, match="at least one item"):
        fit_complexity(np.zeros(0), np.zeros(0), (1, 2, 2))


def test_recon_complexity_by_hand_and_batch_equals_items() -> None:
    rng = _rng()
    x = rng.uniform(0, 1, size=(6, 1, 4, 4)).astype(np.float32)
    mean = np.clip(x + rng.normal(0, 0.1, size=x.shape), 0, 1).astype(np.float32)
    fit = ComplexityFit((1, 4, 4), slope=1.5, intercept=-7.0)
    expected = np.log(recon_mse(x, mean)) - (-7.0 + 1.5 * np.log(total_variation(x, (1, 4, 4))))
    batch = recon_complexity(x, mean, fit)
    np.testing.assert_allclose(batch, expected, rtol=1e-12)
    items = np.concatenate([recon_complexity(x[i : i + 1], mean[i : i + 1], fit) for i in range(6)])
    np.testing.assert_array_equal(batch, items)


def test_recon_complexity_ranks_a_simple_image_above_a_busy_one_of_equal_error() -> None:
    # The bias it corrects: with the same squared error, the image with fewer edges (a "1")
    # must score as the more anomalous, where recon_mse ties them.
    simple = np.zeros((1, 1, 6, 6))
    simple[0, 0, :, 2] = 1.0  # one stroke
    busy = np.zeros((1, 1, 6, 6))
    busy[0, 0, ::2, :] = 1.0  # stripes
    x = np.concatenate([simple, busy])
    mean = x + 0.1
    fit = ComplexityFit((1, 6, 6), slope=1.0, intercept=0.0)
    assert recon_mse(x, mean)[0] == pytest.approx(recon_mse(x, mean)[1])
    scores = recon_complexity(x, mean, fit)
    assert scores[0] > scores[1]


def test_recon_complexity_is_finite_for_a_blank_image_and_a_perfect_reconstruction() -> None:
    blank = np.zeros((1, 1, 3, 3), dtype=np.float32)
    fit = ComplexityFit((1, 3, 3), slope=1.2, intercept=-5.0)
    score = recon_complexity(blank, blank, fit)
    expected = np.log(MSE_FLOOR) - (-5.0 + 1.2 * np.log(TOTAL_VARIATION_FLOOR))
    np.testing.assert_allclose(score, [expected])
    assert np.isfinite(score).all()


def test_anomaly_scores_recon_complexity_uses_the_fit_and_the_mean_path() -> None:
    x, mu, logvar, epsilon = _elbo_inputs(batch=5, latent=2, features=16)
    decode = linear_decoder(2, 16, bernoulli=True)
    fit = ComplexityFit((1, 4, 4), slope=0.8, intercept=-4.0)
    scores = anomaly_scores(
        "recon_complexity", x, mu, None, decode, "bernoulli", None, epsilon, complexity=fit
    )
    np.testing.assert_array_equal(scores, recon_complexity(x, decode(mu), fit))
    given = anomaly_scores(
        "recon_complexity", x, mu, logvar, decode, "bernoulli", None, epsilon, decode(mu), fit
    )
    np.testing.assert_array_equal(given, scores)
    with pytest.raises(ValueError, match="complexity fit"):
        anomaly_scores("recon_complexity", x, mu, logvar, decode, "bernoulli", None, epsilon)


# --- tail_probability ------------------------------------------------------------------------


def _quantiles() -> list[float]:
    scores = _rng(2).gamma(2.0, 1.0, 500)
    return [float(q) for q in np.percentile(scores, np.arange(101))]


def test_tail_probability_bounds_and_median() -> None:
    q = _quantiles()
    probs = tail_probability(np.array([q[0] - 10.0, q[0], q[50], q[100], q[100] + 10.0]), q)
    assert probs.dtype == np.float32
    assert probs[0] == 1.0
    assert probs[1] == 1.0
    assert probs[2] == pytest.approx(0.5, abs=1e-6)
    assert probs[3] == 0.0
    assert probs[4] == 0.0


def test_tail_probability_at_each_percentile() -> None:
    q = _quantiles()
    probs = tail_probability(np.array(q), q)
    np.testing.assert_allclose(probs, 1.0 - np.arange(101) / 100.0, atol=1e-6)


def test_tail_probability_is_monotone_non_increasing() -> None:
    q = _quantiles()
    grid = np.linspace(q[0] - 1.0, q[100] + 1.0, 2001)
    probs = tail_probability(grid, q)
    assert np.all(np.diff(probs) <= 0.0)
    assert np.all((probs >= 0.0) & (probs <= 1.0))


def test_tail_probability_with_tied_quantiles_counts_the_ties() -> None:
    q = [0.0] * 30 + [float(v) for v in np.linspace(0.01, 1.0, 71)]
    # Every validation score is >= 0, so P(score >= 0) = 1.
    assert tail_probability(np.array([0.0]), q)[0] == 1.0


def _general_survival(scores: Float64Array, quantiles: list[float]) -> FloatArray:
    """TailTable's maths with no shortcut: every segment may be flat or overflow float64."""
    q = np.asarray(quantiles, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    steps = len(q) - 1
    upper = np.clip(np.searchsorted(q, s, side="left"), 1, steps)
    lower = upper - 1
    q_lower, q_upper = q[lower], q[upper]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        span = q_upper - q_lower
        fraction = np.where(span > 0, (s - q_lower) / np.where(span > 0, span, 1.0), 1.0)
        halves = (s / 2 - q_lower / 2) / (q_upper / 2 - q_lower / 2)
        fraction = np.where(np.isinf(span), halves, fraction)
    survival = 1.0 - (lower + np.clip(fraction, 0.0, 1.0)) / steps
    survival = np.where(s <= q[0], 1.0, survival)
    result: FloatArray = np.where(s > q[-1], 0.0, survival).astype(np.float32)
    return result


@pytest.mark.parametrize(
    "quantiles",
    [
        _quantiles(),  # no flat and no wide segment: both shortcuts taken
        [0.0] * 30 + [float(v) for v in np.linspace(0.01, 1.0, 71)],  # flat segments
        # one segment wider than float64 holds (1.6e308 - -1.6e308 is inf)
        [*np.linspace(-1.7e308, -1.6e308, 50).tolist(), *np.linspace(1.6e308, 1.7e308, 51)],
        [-1.7e308] * 50 + [1.7e308] * 51,  # flat and wide
        [float(v) for v in np.linspace(0.0, 1e-310, 101)],  # denormal spans
    ],
    ids=["plain", "flat", "wide", "flat-and-wide", "denormal"],
)
def test_tail_table_shortcuts_equal_the_general_formula(
    quantiles: list[float], request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.id
    q = np.asarray(quantiles)
    between = (q[:-1] / 2 + q[1:] / 2)[::7]
    scores = np.concatenate(
        [q, between, [-np.inf, np.inf, -1.7e308, 1.7e308, 0.0, -1e-300, 1e-300, 5e-324]]
    )
    table = TailTable(quantiles)
    assert (table.has_flat, table.has_wide) == {
        "plain": (False, False), "flat": (True, False), "wide": (False, True),
        "flat-and-wide": (True, True), "denormal": (False, False),
    }[kind]  # fmt: skip
    np.testing.assert_array_equal(table.survival(scores), _general_survival(scores, quantiles))
    # One item at a time (the single-item request's path) gives the same bits.
    one_by_one = np.concatenate([table.survival(scores[i : i + 1]) for i in range(len(scores))])
    np.testing.assert_array_equal(one_by_one, table.survival(scores))


# --- properties ------------------------------------------------------------------------------

_bounded = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False, width=32)
_unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False, width=32)
_logvar = st.floats(
    models.LOGVAR_MIN, models.LOGVAR_MAX, allow_nan=False, allow_infinity=False, width=32
)


@st.composite
def _scoring_case(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, FloatArray, str, float | None]:
    batch = draw(st.integers(1, 6))
    latent = draw(st.integers(1, 3))
    features = draw(st.integers(1, 10))
    likelihood = draw(st.sampled_from(["bernoulli", "gaussian"]))
    elements = _unit if likelihood == "bernoulli" else _bounded
    x = draw(arrays(np.float32, (batch, features), elements=elements))
    mu = draw(arrays(np.float32, (batch, latent), elements=st.floats(-10.0, 10.0, width=32)))
    logvar = draw(arrays(np.float32, (batch, latent), elements=_logvar))
    sigma = draw(st.floats(1e-3, 10.0)) if likelihood == "gaussian" else None
    return x, mu, logvar, likelihood, sigma


@settings(max_examples=60, deadline=None, derandomize=True)
@given(_scoring_case(), st.sampled_from(["recon_mse", "neg_elbo"]))
def test_scores_are_finite_and_per_item(
    case: tuple[FloatArray, FloatArray, FloatArray, str, float | None], score_type: str
) -> None:
    x, mu, logvar, likelihood, sigma = case
    latent, features = mu.shape[1], x.shape[1]
    decode = linear_decoder(latent, features, bernoulli=likelihood == "bernoulli")
    epsilon = fixed_epsilon(4, latent, seed=0)
    scores = anomaly_scores(score_type, x, mu, logvar, decode, likelihood, sigma, epsilon)
    assert scores.shape == (len(x),)
    assert np.all(np.isfinite(scores))
    one_by_one = np.concatenate(
        [
            anomaly_scores(
                score_type,
                x[i : i + 1],
                mu[i : i + 1],
                logvar[i : i + 1],
                decode,
                likelihood,
                sigma,
                epsilon,
            )
            for i in range(len(x))
        ]
    )
    np.testing.assert_array_equal(scores, one_by_one)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 12)), elements=_unit),
    arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 12)), elements=_unit),
)
def test_bernoulli_nll_is_finite_and_non_negative_for_any_probability(
    x: Float64Array, p: Float64Array
) -> None:
    rows, cols = min(len(x), len(p)), min(x.shape[1], p.shape[1])
    x, p = x[:rows, :cols], p[:rows, :cols]
    nll = bernoulli_nll(x, p)
    assert np.all(np.isfinite(nll))
    assert np.all(nll >= 0.0)
    # Never more than the clamp's cost per feature.
    assert np.all(nll <= cols * -math.log(BERNOULLI_EPS) + 1e-9)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(0.0, 1e3), min_size=101, max_size=101).map(sorted),
    arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e4, 1e4)),
)
def test_tail_probability_is_a_probability_and_monotone(
    quantiles: list[float], scores: Float64Array
) -> None:
    probs = tail_probability(scores, quantiles)
    assert np.all((probs >= 0.0) & (probs <= 1.0))
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(probs[order]) <= 0.0)
