"""Anomaly scores in numpy, computed from the encoder and decoder graphs' outputs.

One implementation for both halves: the trainer calibrates thresholds with these functions on
onnxruntime outputs, and the service scores requests with the same functions, so a served score
is comparable with the stored threshold to the last bit.

Every score is per item, in model units (after preprocessing), and higher means more anomalous.
Each item's score depends only on that item: the Monte Carlo noise of `neg_elbo` is one fixed
epsilon matrix shared by all items (common random numbers), not a draw per batch position, so
scoring a batch equals scoring its items one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bundle.arrays import AnyFloatArray, Float64Array, FloatArray

LOG_2PI = float(np.log(2.0 * np.pi))
# Decoder means of a Bernoulli model come through a float32 sigmoid, which saturates to exactly
# 0 or 1; clamping keeps log p finite while costing at most ~14 nats per pixel.
BERNOULLI_EPS = 1e-6


def flatten_items(x: AnyFloatArray) -> Float64Array:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def recon_mse(x_model: AnyFloatArray, x_mean: AnyFloatArray) -> Float64Array:
    """Mean squared reconstruction error per item, over features. (B,)"""
    diff = flatten_items(x_model) - flatten_items(x_mean)
    # np.mean's own steps (a sum, then a division by the count), without its ~12 us wrapper.
    result: Float64Array = np.add.reduce(diff * diff, axis=1) / diff.shape[1]
    return result


def per_feature_squared_error(x_model: AnyFloatArray, x_mean: AnyFloatArray) -> Float64Array:
    """Squared error of every feature, shaped like the inputs. (B, *shape)"""
    diff = np.asarray(x_model, dtype=np.float64) - np.asarray(x_mean, dtype=np.float64)
    return diff * diff


def bernoulli_nll(x_model: AnyFloatArray, p: AnyFloatArray) -> Float64Array:
    """-log p(x | z) under independent Bernoullis with means `p`, summed over features. (B,)"""
    x = flatten_items(x_model)
    probs = np.clip(flatten_items(p), BERNOULLI_EPS, 1.0 - BERNOULLI_EPS)
    result: Float64Array = -np.sum(x * np.log(probs) + (1.0 - x) * np.log1p(-probs), axis=1)
    return result


def gaussian_nll(x_model: AnyFloatArray, mean: AnyFloatArray, sigma: float) -> Float64Array:
    """-log N(x; mean, sigma^2 I) summed over features, constant included (nats). (B,)"""
    x, m = flatten_items(x_model), flatten_items(mean)
    squared = np.sum((x - m) ** 2, axis=1)
    features = x.shape[1]
    result: Float64Array = 0.5 * squared / sigma**2 + features * (np.log(sigma) + 0.5 * LOG_2PI)
    return result


def laplace_nll(x_model: AnyFloatArray, mean: AnyFloatArray, scale: float) -> Float64Array:
    """-log Laplace(x; mean, b) summed over features, constant included (nats). (B,)"""
    x, m = flatten_items(x_model), flatten_items(mean)
    absolute = np.sum(np.abs(x - m), axis=1)
    features = x.shape[1]
    result: Float64Array = absolute / scale + features * np.log(2.0 * scale)
    return result


def reconstruction_nll(
    x_model: AnyFloatArray, mean: AnyFloatArray, likelihood: str, sigma: float | None
) -> Float64Array:
    """`sigma` is the Gaussian's std or the Laplace's scale b: the bundle's one scale."""
    if likelihood == "bernoulli":
        return bernoulli_nll(x_model, mean)
    if likelihood in ("gaussian", "laplace"):
        if sigma is None or sigma <= 0:
            raise ValueError(f"a {likelihood.capitalize()} likelihood needs a positive sigma")
        if likelihood == "laplace":
            return laplace_nll(x_model, mean, sigma)
        return gaussian_nll(x_model, mean, sigma)
    raise ValueError(f"unknown likelihood {likelihood!r}")


def kl_to_standard_normal(mu: AnyFloatArray, logvar: AnyFloatArray) -> Float64Array:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per item (Kingma & Welling 2014, appendix B)."""
    m, lv = np.asarray(mu, dtype=np.float64), np.asarray(logvar, dtype=np.float64)
    result: Float64Array = -0.5 * np.sum(1.0 + lv - m * m - np.exp(lv), axis=1)
    return result


def fixed_epsilon(samples: int, latent_dim: int, seed: int) -> FloatArray:
    """The shared epsilon (L, d) of the neg_elbo estimate: same seed, same numbers everywhere."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, latent_dim)).astype(np.float32)


def neg_elbo(
    x_model: AnyFloatArray,
    mu: AnyFloatArray,
    logvar: AnyFloatArray,
    decode: Callable[[FloatArray], FloatArray],
    likelihood: str,
    sigma: float | None,
    epsilon: FloatArray,
) -> Float64Array:
    """-ELBO = E_q[-log p(x|z)] + KL(q || p), the expectation over the L rows of `epsilon`.

    z_il = mu_i + exp(logvar_i / 2) * eps_l; the decoder runs once on all B*L latents.
    """
    batch, latent = mu.shape
    samples = epsilon.shape[0]
    std = np.exp(0.5 * logvar.astype(np.float32))
    z = mu[:, None, :] + std[:, None, :] * epsilon[None, :, :]  # (B, L, d)
    means = decode(z.reshape(batch * samples, latent).astype(np.float32))
    repeated_x = np.repeat(flatten_items(x_model), samples, axis=0)
    nll = reconstruction_nll(repeated_x, means, likelihood, sigma).reshape(batch, samples)
    result: Float64Array = nll.mean(axis=1) + kl_to_standard_normal(mu, logvar)
    return result


class TailTable:
    """P(validation score >= s), read off the stored percentiles 0..100 by linear
    interpolation: `survival(scores)`.

    0.01 means only about 1% of normal validation items scored this high: a calibrated number a
    client can threshold without knowing the score's scale. Where several percentiles tie (many
    items with one score), a score equal to the tie gets the survival of the first of them,
    which is what ">=" means.

    Built once per calibration (the service keeps one per score type): what only the table
    decides (its array, whether any segment is flat or spans more than float64) is worked out
    here, not for every request. Measured (`bench/scoring_micro.py`): one item 48 -> 13 us.
    """

    def __init__(self, quantiles: list[float] | AnyFloatArray) -> None:
        self.q = np.array(quantiles, dtype=np.float64)
        if self.q.ndim != 1 or len(self.q) < 2:
            raise ValueError("a tail table needs at least two percentiles")
        self.steps = len(self.q) - 1
        with np.errstate(over="ignore", invalid="ignore"):
            spans = np.diff(self.q)
        self.first, self.last = float(self.q[0]), float(self.q[-1])
        self.has_flat = bool((spans <= 0).any())  # tied percentiles: a zero-length segment
        self.has_wide = bool(np.isinf(spans).any())  # a segment wider than float64 holds

    def survival(self, scores: AnyFloatArray) -> FloatArray:
        q, steps = self.q, self.steps
        s = np.asarray(scores, dtype=np.float64)
        upper = np.minimum(np.maximum(q.searchsorted(s, side="left"), 1), steps)
        lower = upper - 1  # segment [q[lower], q[upper]] holding s (first q >= s is upper)
        q_lower, q_upper = q[lower], q[upper]
        # Scores far outside a tiny (even denormal) span overflow to +-inf here; the clip below
        # maps those to the ends of the segment, which is the right answer.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            span = q_upper - q_lower
            if self.has_flat:
                fraction = np.where(span > 0, (s - q_lower) / np.where(span > 0, span, 1.0), 1.0)
            else:
                fraction = (s - q_lower) / span
            if self.has_wide:
                # A segment from about -1e308 to 1e308 overflows both differences to inf, and
                # inf/inf is NaN, which no clip removes. Halving every value keeps them finite;
                # it is only used there, as halves of denormals lose a bit.
                halves = (s / 2 - q_lower / 2) / (q_upper / 2 - q_lower / 2)
                fraction = np.where(np.isinf(span), halves, fraction)
        rank = lower + np.minimum(np.maximum(fraction, 0.0), 1.0)  # fractional percentile
        survival = 1.0 - rank / steps
        survival = np.where(s <= self.first, 1.0, survival)
        survival = np.where(s > self.last, 0.0, survival)
        return survival.astype(np.float32)


def tail_probability(scores: AnyFloatArray, quantiles: list[float]) -> FloatArray:
    """P(validation score >= s) for a calibration's percentiles (`TailTable.survival`)."""
    return TailTable(quantiles).survival(scores)


# recon_complexity's floors: a perfect reconstruction (MSE 0) or a blank image (no edges) would
# otherwise be log 0. Far below anything a trained model or a real image gives (mnist-5k in
# [0, 1]: MSE ~1e-3..1e-1, total variation 50..200), so they only ever decide those corners.
MSE_FLOOR = 1e-12
TOTAL_VARIATION_FLOOR = 1e-3


@dataclass(frozen=True)
class ComplexityFit:
    """What recon_complexity expects of an image's reconstruction error, fitted at training
    time on the training and validation rows: log MSE ~ intercept + slope * log total
    variation."""

    image_shape: tuple[int, int, int]  # (C, H, W): the items are images of this shape
    slope: float
    intercept: float


def total_variation(x_model: AnyFloatArray, image_shape: tuple[int, int, int]) -> Float64Array:
    """Anisotropic total variation per image: the summed absolute differences of vertically and
    horizontally adjacent pixels, over every channel. How much edge an image has: a "1" little,
    an "8" much. (B,)"""
    images = np.asarray(x_model, dtype=np.float64).reshape(len(x_model), *image_shape)
    # Slices, not np.diff (the same subtraction, without its ~8 us of argument handling).
    vertical = np.abs(images[:, :, 1:, :] - images[:, :, :-1, :]).sum(axis=(1, 2, 3))
    horizontal = np.abs(images[:, :, :, 1:] - images[:, :, :, :-1]).sum(axis=(1, 2, 3))
    result: Float64Array = vertical + horizontal
    return result


def log_complexity(x_model: AnyFloatArray, image_shape: tuple[int, int, int]) -> Float64Array:
    """log total variation, floored: the regressor of recon_complexity. (B,)"""
    result: Float64Array = np.log(
        np.maximum(total_variation(x_model, image_shape), TOTAL_VARIATION_FLOOR)
    )
    return result


def log_recon_mse(x_model: AnyFloatArray, x_mean: AnyFloatArray) -> Float64Array:
    result: Float64Array = np.log(np.maximum(recon_mse(x_model, x_mean), MSE_FLOOR))
    return result


def fit_complexity(
    log_mse: AnyFloatArray, log_tv: AnyFloatArray, image_shape: tuple[int, int, int]
) -> ComplexityFit:
    """Least squares of log MSE on log total variation over normal items.

    A slope below 0 would reward busy images, the opposite of the bias corrected here, so it
    is clipped at 0 (recon_complexity is then log MSE shifted); one item, or items of one
    complexity, leave nothing to fit and get slope 0 too.
    """
    y = np.asarray(log_mse, dtype=np.float64)
    t = np.asarray(log_tv, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("recon_complexity needs at least one item to fit on")
    centred = t - t.mean()
    spread = float(np.dot(centred, centred))
    slope = float(np.dot(centred, y - y.mean()) / spread) if spread > 0 else 0.0
    slope = max(slope, 0.0)
    intercept = float(y.mean() - slope * t.mean())
    return ComplexityFit(tuple(image_shape), slope, intercept)  # type: ignore[arg-type]


def recon_complexity(
    x_model: AnyFloatArray, x_mean: AnyFloatArray, fit: ComplexityFit
) -> Float64Array:
    """log MSE minus what the training rows' fit expects at the image's total variation. (B,)

    The reconstruction error of a simple image is small whatever its class: an autoencoder
    trained on every digit but "1" reconstructs the held-out "1"s better than the normal digits
    (mnist-5k:holdout=1, recon_mse AUROC 0.34), the bias of reconstruction and likelihood
    scores towards simple inputs (Serra et al. 2020 correct a likelihood by a compressor's
    code length; here the error is compared with that of normal images as busy). 0 is an
    error as large as expected, 1 is e (2.7) times larger.
    """
    expected = fit.intercept + fit.slope * log_complexity(x_model, fit.image_shape)
    result: Float64Array = log_recon_mse(x_model, x_mean) - expected
    return result


SCORE_TYPES = ("recon_mse", "neg_elbo", "recon_complexity")


def anomaly_scores(
    score_type: str,
    x_model: AnyFloatArray,
    mu: AnyFloatArray,
    logvar: AnyFloatArray | None,
    decode: Callable[[FloatArray], FloatArray],
    likelihood: str,
    sigma: float | None,
    epsilon: FloatArray,
    decoded_mean: FloatArray | None = None,
    complexity: ComplexityFit | None = None,
) -> Float64Array:
    """One score type for a batch already encoded. `mu` is the code z of an autoencoder;
    `decoded_mean`, when the caller has it already (bundle.mean_path), is `decode(mu)`.

    recon_mse: squared error of the mean path x -> mu -> decoder mean, averaged over features.
    neg_elbo: the Monte Carlo -ELBO above, VAEs only (logvar is needed).
    recon_complexity: recon_mse's log against the image's complexity, images only (`complexity`
    is the bundle's fit).
    """
    if score_type == "recon_mse":
        return recon_mse(x_model, decode(mu) if decoded_mean is None else decoded_mean)
    if score_type == "recon_complexity":
        if complexity is None:
            raise ValueError("recon_complexity needs the bundle's complexity fit (images only)")
        mean = decode(mu) if decoded_mean is None else decoded_mean
        return recon_complexity(x_model, mean, complexity)
    if score_type == "neg_elbo":
        if logvar is None:
            raise ValueError("neg_elbo needs a VAE's logvar; autoencoders have recon_mse only")
        return neg_elbo(x_model, mu, logvar, decode, likelihood, sigma, epsilon)
    raise ValueError(f"unknown score type {score_type!r}; known: {', '.join(SCORE_TYPES)}")
