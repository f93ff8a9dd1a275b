"""Tests for training.models (modules and losses) and training.train (the loop and its helpers).

Every random draw comes from a seeded torch.Generator, so the statistical tolerances below are
fixed numbers of Monte Carlo standard errors, not flaky thresholds.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal

from training.config import TrainingConfig
from training.factory import ModelInput, build_model, build_objective
from training.models import (
    LOG_SIGMA_MIN,
    LOGVAR_MAX,
    LOGVAR_MIN,
    VAE,
    Autoencoder,
    ConvDecoder,
    ConvEncoder,
    DecoderLikelihood,
    Likelihood,
    MLPDecoder,
    MLPEncoder,
    autoencoder_loss,
    bernoulli_nll,
    corrupt,
    gaussian_kl_to_standard_normal,
    gaussian_nll,
    iwae_log_likelihood,
    sparsity_penalty,
    vae_loss,
)
from training.train import (
    TrainingDiverged,
    TrainingResult,
    kl_weight_at,
    resolve_device,
    train_model,
)

FEATURES = 6
METRIC_KEYS = {
    "epoch",
    "train_loss",
    "train_recon",
    "train_kl",
    "val_loss",
    "val_recon",
    "val_kl",
    "kl_weight",
    "seconds",
}


# --- helpers -----------------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_config(**overrides: object) -> TrainingConfig:
    settings: dict[str, object] = {"latent_dim": 2, "hidden": "16", "batch_size": 16}
    settings.update(overrides)
    return TrainingConfig(**settings)  # type: ignore[arg-type]


def make_model(
    config: TrainingConfig, features: int = FEATURES, likelihood: Likelihood = "gaussian"
) -> nn.Module:
    torch.manual_seed(config.seed)  # nn.Linear initialises from the global generator
    return build_model(config, ModelInput(shape=(features,), image_shape=None), likelihood)


def make_vae(
    features: int = FEATURES, likelihood: Likelihood = "gaussian", **overrides: object
) -> VAE:
    model = make_model(tiny_config(**overrides), features, likelihood)
    assert isinstance(model, VAE)
    return model


def make_ae(model: str, **overrides: object) -> Autoencoder:
    built = make_model(tiny_config(model=model, **overrides))
    assert isinstance(built, Autoencoder)
    return built


def gaussian_data(rows: int, features: int = FEATURES, seed: int = 0) -> torch.Tensor:
    return torch.randn((rows, features), generator=gen(seed))


def fit_on_gaussians(
    model: nn.Module, config: TrainingConfig, train_x: torch.Tensor | None = None
) -> TrainingResult:
    """Train on 64 standard-normal rows (or `train_x`), validating on 16 others."""
    train = gaussian_data(64) if train_x is None else train_x
    return train_model(
        model,
        build_objective(config),
        train,
        gaussian_data(16, seed=1),
        config,
        show_progress=False,
    )


def value(tensor: torch.Tensor) -> float:
    """A scalar tensor as a float, without autograd's warning about graph-attached tensors."""
    return float(tensor.detach())


def normal_log_prob(
    loc: torch.Tensor | float, scale: torch.Tensor | float, x: torch.Tensor
) -> torch.Tensor:
    return Normal(loc, scale).log_prob(x)  # type: ignore[no-untyped-call,no-any-return]


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


# --- gaussian_kl_to_standard_normal --------------------------------------------------------------


def test_kl_matches_hand_computed_value() -> None:
    # KL per dimension = 1/2 (mu^2 + var - 1 - logvar).
    #   dim 1: mu = 1, logvar = 0      -> 1/2 (1 + 1 - 1 - 0)          = 0.5
    #   dim 2: mu = 0, logvar = log 2  -> 1/2 (0 + 2 - 1 - log 2)      = 0.5 - 0.5 log 2
    #   total                                                           = 1 - 0.5 log 2 = 0.6534...
    mu = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, math.log(2.0)]], dtype=torch.float64)
    kl = gaussian_kl_to_standard_normal(mu, logvar)
    assert kl.shape == (1,)
    assert float(kl[0]) == pytest.approx(1.0 - 0.5 * math.log(2.0), rel=1e-12)
    assert float(kl[0]) == pytest.approx(0.6534264097200273, rel=1e-12)


def test_kl_is_zero_for_the_prior_itself() -> None:
    kl = gaussian_kl_to_standard_normal(torch.zeros(4, 3), torch.zeros(4, 3))
    assert kl.shape == (4,)
    assert torch.equal(kl, torch.zeros(4))


def test_kl_is_non_negative_and_positive_away_from_the_prior() -> None:
    g = gen(1)
    mu = 3.0 * torch.randn((500, 5), generator=g)
    logvar = 4.0 * torch.randn((500, 5), generator=g)
    kl = gaussian_kl_to_standard_normal(mu, logvar)
    assert kl.shape == (500,)
    assert bool(torch.all(kl > 0))


def test_kl_agrees_with_a_monte_carlo_estimate() -> None:
    mu = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.0, 0.3]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.0], [math.log(2.0), 0.5], [-2.0, 1.0]], dtype=torch.float64)
    std = torch.exp(0.5 * logvar)
    samples = 200_000
    eps = torch.randn((samples, *mu.shape), generator=gen(2), dtype=torch.float64)
    z = mu + std * eps  # (S, B, d), z ~ q
    log_ratio = (normal_log_prob(mu, std, z) - normal_log_prob(0.0, 1.0, z)).sum(dim=2)  # (S, B)
    estimate = log_ratio.mean(dim=0)
    standard_error = log_ratio.std(dim=0) / math.sqrt(samples)
    exact = gaussian_kl_to_standard_normal(mu, logvar)
    # 5 standard errors: a false alarm has probability ~6e-7 per item (and the seed is fixed).
    assert bool(torch.all((estimate - exact).abs() < 5.0 * standard_error)), (estimate, exact)
    # The tolerance is meaningful: standard errors are small next to the KL values themselves.
    assert bool(torch.all(standard_error < 0.01))


# --- bernoulli_nll -------------------------------------------------------------------------------


def test_bernoulli_nll_hand_values() -> None:
    # logits 0 -> p = 1/2 -> log 2 per feature whatever the target.
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5]])
    nll = bernoulli_nll(torch.zeros_like(x), x)
    assert nll.shape == (2,)
    assert torch.allclose(nll, torch.full((2,), 3.0 * math.log(2.0)))
    # logit log 3 -> p = 3/4: x = 1 costs -log(3/4) = log(4/3); x = 0 costs -log(1/4) = log 4.
    logits = torch.full((1, 2), math.log(3.0))
    nll = bernoulli_nll(logits, torch.tensor([[1.0, 0.0]]))
    assert float(nll[0]) == pytest.approx(math.log(4.0 / 3.0) + math.log(4.0), rel=1e-6)


def test_bernoulli_nll_matches_torch_distribution_on_binary_targets() -> None:
    g = gen(3)
    logits = 4.0 * torch.randn((8, 1, 4, 4), generator=g)
    x = (torch.rand((8, 1, 4, 4), generator=g) < 0.5).float()
    log_prob = Bernoulli(logits=logits).log_prob(x)  # type: ignore[no-untyped-call]
    expected = -log_prob.flatten(1).sum(dim=1)
    assert torch.allclose(bernoulli_nll(logits, x), expected, atol=1e-5)


def test_bernoulli_nll_accepts_targets_in_the_unit_interval() -> None:
    # The cross-entropy of a target t against p = sigmoid(l) is -t log p - (1 - t) log(1 - p);
    # at p = t it is the binary entropy H(t), its minimum over l.
    t = 0.3
    entropy = -(t * math.log(t) + (1 - t) * math.log(1 - t))
    best = torch.tensor([[math.log(t / (1 - t))]])
    x = torch.tensor([[t]])
    assert float(bernoulli_nll(best, x)[0]) == pytest.approx(entropy, rel=1e-6)
    for offset in (-0.5, 0.5):
        assert float(bernoulli_nll(best + offset, x)[0]) > entropy
    logits = torch.randn((5, 7), generator=gen(4))
    targets = torch.rand((5, 7), generator=gen(5))
    p = torch.sigmoid(logits)
    expected = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).sum(dim=1)
    assert torch.allclose(bernoulli_nll(logits, targets), expected, atol=1e-5)


# --- gaussian_nll --------------------------------------------------------------------------------


def test_gaussian_nll_hand_values() -> None:
    # mean 0, x = (1, 2), sigma = 1: (1 + 4) / 2 + 2 * log(2 pi) / 2 = 2.5 + log(2 pi).
    x = torch.tensor([[1.0, 2.0]])
    nll = gaussian_nll(torch.zeros_like(x), x, torch.tensor(0.0))
    assert nll.shape == (1,)
    assert float(nll[0]) == pytest.approx(2.5 + math.log(2 * math.pi), rel=1e-6)
    # sigma = 2: 5 / (2 * 4) + 2 * (log 2 + log(2 pi) / 2) = 0.625 + 2 log 2 + log(2 pi).
    nll = gaussian_nll(torch.zeros_like(x), x, torch.tensor(math.log(2.0)))
    expected = 0.625 + 2 * math.log(2.0) + math.log(2 * math.pi)
    assert float(nll[0]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
def test_gaussian_nll_matches_torch_distribution(sigma: float) -> None:
    g = gen(6)
    mean = torch.randn((5, 1, 3, 4), generator=g, dtype=torch.float64)
    x = torch.randn((5, 1, 3, 4), generator=g, dtype=torch.float64)
    log_sigma = torch.tensor(math.log(sigma), dtype=torch.float64)
    expected = -normal_log_prob(mean, sigma, x).sum(dim=(1, 2, 3))
    assert torch.allclose(gaussian_nll(mean, x, log_sigma), expected, rtol=1e-10)


# --- sparsity_penalty ----------------------------------------------------------------------------


def test_sparsity_penalty_is_zero_when_every_mean_equals_rho() -> None:
    # Unit means: (0.1 + 0.0 + 0.2) / 3 = 0.1 and (0.05 + 0.15 + 0.1) / 3 = 0.1.
    code = torch.tensor([[0.1, 0.05], [0.0, 0.15], [0.2, 0.1]], dtype=torch.float64)
    assert float(sparsity_penalty(code, 0.1)) == pytest.approx(0.0, abs=1e-12)


def test_sparsity_penalty_hand_value_for_one_unit() -> None:
    # rho = 0.1, rho_hat = 0.5: 0.1 log(0.1 / 0.5) + 0.9 log(0.9 / 0.5) = 0.1 log 0.2 + 0.9 log 1.8
    code = torch.tensor([[0.2], [0.8]], dtype=torch.float64)
    expected = 0.1 * math.log(0.2) + 0.9 * math.log(1.8)
    assert expected == pytest.approx(0.368064, abs=1e-6)
    assert float(sparsity_penalty(code, 0.1)) == pytest.approx(expected, rel=1e-12)


def test_sparsity_penalty_is_positive_away_from_rho() -> None:
    code = torch.rand((32, 4), generator=gen(7))
    penalty = sparsity_penalty(code, 0.05)
    assert penalty.shape == ()
    assert float(penalty) > 0


@pytest.mark.parametrize("level", [0.01, 0.5, 0.9])
def test_sparsity_penalty_gradient_moves_the_mean_towards_rho(level: float) -> None:
    rho = 0.2
    code = torch.full((10, 3), level, requires_grad=True)
    (grad,) = torch.autograd.grad(sparsity_penalty(code, rho), code)
    stepped = code.detach() - 0.01 * grad
    before = abs(level - rho)
    after = (stepped.mean(dim=0) - rho).abs()
    assert bool(torch.all(after < before))


# --- corrupt -------------------------------------------------------------------------------------


def test_masking_zeroes_about_level_share_and_keeps_the_rest() -> None:
    x = 1.0 + torch.rand(200_000, generator=gen(8))  # never zero before masking
    level = 0.3
    out = corrupt(x, "masking", level, gen(9))
    zeroed = out == 0
    share = float(zeroed.float().mean())
    standard_error = math.sqrt(level * (1 - level) / x.numel())  # ~0.001
    assert abs(share - level) < 5 * standard_error
    assert torch.equal(out[~zeroed], x[~zeroed])


def test_gaussian_corruption_has_the_requested_std() -> None:
    x = torch.rand((400, 500), generator=gen(10))
    level = 0.7
    noise = corrupt(x, "gaussian", level, gen(11)) - x
    n = noise.numel()
    # Sample std of n normal draws has standard error ~ sigma / sqrt(2n) ~ 0.0011 here.
    assert float(noise.std()) == pytest.approx(level, abs=5 * level / math.sqrt(2 * n))
    assert abs(float(noise.mean())) < 5 * level / math.sqrt(n)


@pytest.mark.parametrize("kind", ["masking", "gaussian"])
def test_corruption_level_zero_changes_nothing(kind: str) -> None:
    x = torch.rand((50, 20), generator=gen(12))
    out = corrupt(x, kind, 0.0, gen(13))  # type: ignore[arg-type]
    assert torch.equal(out, x)


def test_corrupt_is_reproducible_with_a_seeded_generator() -> None:
    x = torch.rand((20, 20), generator=gen(14))
    assert torch.equal(corrupt(x, "masking", 0.5, gen(15)), corrupt(x, "masking", 0.5, gen(15)))
    assert not torch.equal(corrupt(x, "masking", 0.5, gen(15)), corrupt(x, "masking", 0.5, gen(16)))


# --- vae_loss ------------------------------------------------------------------------------------


def test_vae_loss_without_kl_weight_is_the_mean_reconstruction() -> None:
    model = make_vae()
    x = gaussian_data(12)
    terms = vae_loss(model, x, beta=1.0, kl_weight=0.0, generator=gen(20))
    assert terms.reconstruction.shape == (12,)
    assert terms.kl.shape == (12,)
    assert terms.loss.shape == ()
    assert terms.penalty.shape == ()
    assert value(terms.penalty) == 0.0
    assert bool(torch.all(terms.kl > 0))
    assert value(terms.loss) == pytest.approx(value(terms.reconstruction.mean()), rel=1e-6)


def test_vae_loss_scales_kl_by_beta_and_weight() -> None:
    model = make_vae()
    x = gaussian_data(12)
    plain = vae_loss(model, x, beta=1.0, kl_weight=0.0, generator=gen(21))
    terms = vae_loss(model, x, beta=2.0, kl_weight=1.0, generator=gen(21))
    # Same seed -> same z -> same reconstruction; the KL does not depend on the draw.
    assert torch.equal(terms.reconstruction, plain.reconstruction)
    assert torch.equal(terms.kl, plain.kl)
    expected = (terms.reconstruction + 2.0 * terms.kl).mean()
    assert value(terms.loss) == pytest.approx(value(expected), rel=1e-6)
    half = vae_loss(model, x, beta=2.0, kl_weight=0.25, generator=gen(21))
    expected_half = (half.reconstruction + 0.5 * half.kl).mean()
    assert value(half.loss) == pytest.approx(value(expected_half), rel=1e-6)


def test_vae_loss_terms_match_an_independent_computation() -> None:
    model = make_vae()
    x = gaussian_data(7)
    terms = vae_loss(model, x, beta=1.0, kl_weight=1.0, generator=gen(22))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        eps = torch.randn(mu.shape, generator=gen(22))
        z = mu + torch.exp(0.5 * logvar) * eps
        sigma = float(torch.exp(model.output.log_sigma))
        recon = -normal_log_prob(model.decoder(z), sigma, x).sum(dim=1)
        kl = torch.distributions.kl_divergence(
            Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), 1.0)
        ).sum(dim=1)
    assert torch.allclose(terms.reconstruction.detach(), recon, rtol=1e-5)
    assert torch.allclose(terms.kl.detach(), kl, rtol=1e-5)


# --- autoencoder_loss ----------------------------------------------------------------------------


def test_plain_autoencoder_loss() -> None:
    model = make_ae("ae")
    x = gaussian_data(10)
    terms = autoencoder_loss(model, x)
    assert terms.reconstruction.shape == (10,)
    assert torch.equal(terms.kl, torch.zeros(10))
    assert value(terms.penalty) == 0.0
    assert value(terms.loss) == pytest.approx(value(terms.reconstruction.mean()), rel=1e-6)
    expected = model.output.nll(model.decoder(model.encode(x)), x)
    assert torch.allclose(terms.reconstruction, expected)


def test_sparse_autoencoder_loss_includes_the_weighted_penalty() -> None:
    model = make_ae("sparse-ae")
    x = gaussian_data(10)
    terms = autoencoder_loss(model, x, sparsity_target=0.05, sparsity_weight=3.0)
    code = model.encode(x)
    assert bool(torch.all((code > 0) & (code < 1)))  # sigmoid code: rates
    expected_penalty = 3.0 * sparsity_penalty(code, 0.05)
    assert value(terms.penalty) > 0
    assert value(terms.penalty) == pytest.approx(value(expected_penalty), rel=1e-6)
    expected_loss = terms.reconstruction.mean() + terms.penalty
    assert value(terms.loss) == pytest.approx(value(expected_loss), rel=1e-6)
    assert value(terms.loss) > value(terms.reconstruction.mean())


def test_denoising_autoencoder_reconstructs_the_clean_input_from_a_corrupted_one() -> None:
    model = make_ae("denoising-ae")
    x = 1.0 + torch.rand((10, FEATURES), generator=gen(23))
    clean = autoencoder_loss(model, x)
    noisy = autoencoder_loss(
        model, x, corruption="masking", corruption_level=0.99, generator=gen(24)
    )
    assert not torch.allclose(noisy.reconstruction, clean.reconstruction)
    # Reproduce: encode the corrupted input (same seed), score against the clean x.
    with torch.no_grad():
        source = corrupt(x, "masking", 0.99, gen(24))
        assert not torch.equal(source, x)
        expected = model.output.nll(model.decoder(model.encode(source)), x)
        wrong_target = model.output.nll(model.decoder(model.encode(source)), source)
    assert torch.allclose(noisy.reconstruction.detach(), expected)
    assert not torch.allclose(noisy.reconstruction.detach(), wrong_target)


def test_build_objective_passes_the_config_options() -> None:
    config = tiny_config(model="sparse-ae", sparsity_target=0.1, sparsity_weight=2.0)
    model = make_model(config)
    assert isinstance(model, Autoencoder)
    x = gaussian_data(10)
    terms = build_objective(config)(model, x, 1.0, None)
    expected = 2.0 * sparsity_penalty(model.encode(x), 0.1)
    assert value(terms.penalty) == pytest.approx(value(expected), rel=1e-6)


# --- iwae_log_likelihood -------------------------------------------------------------------------


def test_iwae_shape_and_independent_computation() -> None:
    model = make_vae()
    x = gaussian_data(5)
    samples = 7
    with torch.no_grad():
        result = iwae_log_likelihood(model, x, samples, gen(30))
        mu, logvar = model.encode(x)
        eps = torch.randn((samples, 5, 2), generator=gen(30))
        std = torch.exp(0.5 * logvar)
        z = mu + std * eps  # (K, B, d)
        sigma = float(torch.exp(model.output.log_sigma))
        decoded = model.decoder(z.reshape(-1, 2)).reshape(samples, 5, FEATURES)
        log_w = (
            normal_log_prob(decoded, sigma, x).sum(dim=2)
            + normal_log_prob(0.0, 1.0, z).sum(dim=2)
            - normal_log_prob(mu, std, z).sum(dim=2)
        )
        expected = torch.logsumexp(log_w, dim=0) - math.log(samples)
    assert result.shape == (5,)
    assert torch.allclose(result, expected, rtol=1e-5, atol=1e-4)


def test_iwae_with_one_sample_is_an_unbiased_elbo_estimate() -> None:
    model = make_vae()
    x = gaussian_data(200).repeat(50, 1)  # 10,000 draws over 200 items
    with torch.no_grad():
        iwae = iwae_log_likelihood(model, x, 1, gen(31))
        terms = vae_loss(model, x, beta=1.0, kl_weight=1.0, generator=gen(32))
    elbo = -(terms.reconstruction + terms.kl)
    assert iwae.shape == elbo.shape == (10_000,)
    n = len(x)
    standard_error = math.sqrt(float(iwae.var()) / n + float(elbo.var()) / n)
    assert abs(float(iwae.mean()) - float(elbo.mean())) < 5 * standard_error


def test_iwae_with_many_samples_is_tighter_than_the_elbo() -> None:
    model = make_vae()
    x = gaussian_data(100)
    with torch.no_grad():
        iwae = iwae_log_likelihood(model, x, 100, gen(33))
        terms = vae_loss(model, x.repeat(100, 1), beta=1.0, kl_weight=1.0, generator=gen(34))
    elbo = -(terms.reconstruction + terms.kl).reshape(100, 100).mean(dim=0)  # (B,) over 100 z
    assert iwae.shape == (100,)
    assert bool(torch.all(torch.isfinite(iwae)))
    assert float(iwae.mean()) > float(elbo.mean())


# --- modules -------------------------------------------------------------------------------------


def test_vae_encode_clamps_logvar_even_for_huge_inputs() -> None:
    model = make_vae()
    x = gaussian_data(64) * 1e6
    with torch.no_grad():
        mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (64, 2)
    assert bool(torch.all(torch.isfinite(mu)))
    assert bool(torch.all(torch.isfinite(logvar)))
    assert float(logvar.min()) >= LOGVAR_MIN
    assert float(logvar.max()) <= LOGVAR_MAX
    at_bound = (logvar == LOGVAR_MIN) | (logvar == LOGVAR_MAX)
    assert float(at_bound.float().mean()) > 0.9  # the clamp is what keeps them in range
    with torch.no_grad():
        kl = gaussian_kl_to_standard_normal(torch.zeros_like(logvar), logvar)
    assert bool(torch.all(torch.isfinite(kl)))


def test_mlp_shapes_on_flat_input() -> None:
    encoder = MLPEncoder((FEATURES,), [16, 8], 4)
    decoder = MLPDecoder(2, [16, 8], (FEATURES,))
    assert encoder(torch.zeros(3, FEATURES)).shape == (3, 4)
    assert decoder(torch.zeros(3, 2)).shape == (3, FEATURES)
    assert encoder.first_layer_weights.shape == (16, FEATURES)


def test_mlp_shapes_on_image_input() -> None:
    encoder = MLPEncoder((1, 8, 8), [16], 4)
    decoder = MLPDecoder(2, [16], (1, 8, 8))
    assert encoder(torch.zeros(3, 1, 8, 8)).shape == (3, 4)
    assert decoder(torch.zeros(3, 2)).shape == (3, 1, 8, 8)
    assert encoder.first_layer_weights.shape == (16, 64)


@pytest.mark.parametrize("channels", [[32, 64], [16]])
@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (3, 7, 9), (1, 5, 5)])
def test_conv_round_trip_shapes(image_shape: tuple[int, int, int], channels: list[int]) -> None:
    torch.manual_seed(0)
    encoder = ConvEncoder(image_shape, channels, 6)
    decoder = ConvDecoder(3, channels, image_shape)
    x = torch.rand((2, *image_shape), generator=gen(40))
    h = encoder(x)
    assert h.shape == (2, 6)
    assert decoder(h[:, :3]).shape == (2, *image_shape)
    assert encoder.first_layer_weights.shape == (channels[0], image_shape[0] * 9)


def test_conv_model_from_the_factory_round_trips() -> None:
    config = tiny_config(arch="conv", conv_channels="8,16")
    model = build_model(config, ModelInput((1, 28, 28), (1, 28, 28)), "bernoulli")
    assert isinstance(model, VAE)
    x = torch.rand((3, 1, 28, 28), generator=gen(41))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 2)
    mean = model.decoder_mean(mu)
    assert mean.shape == (3, 1, 28, 28)
    assert bool(torch.all((mean >= 0) & (mean <= 1)))


# --- DecoderLikelihood ---------------------------------------------------------------------------


def test_learned_sigma_is_a_parameter_that_trains() -> None:
    output = DecoderLikelihood("gaussian", None)
    assert isinstance(output.log_sigma, nn.Parameter)
    assert any(p is output.log_sigma for p in output.parameters())
    with torch.no_grad():  # float() of a graph-attached tensor warns
        assert output.sigma() == pytest.approx(1.0)
    optimiser = torch.optim.SGD(output.parameters(), lr=0.01)
    x = 5.0 * torch.randn((16, 4), generator=gen(50))
    loss = output.nll(torch.zeros_like(x), x).mean()
    optimiser.zero_grad()
    (grad,) = torch.autograd.grad(loss, [output.log_sigma])
    output.log_sigma.grad = grad  # what loss.backward() would store
    optimiser.step()
    assert float(output.log_sigma.detach()) > 0.0  # large residuals push sigma up
    with torch.no_grad():
        assert output.sigma() == pytest.approx(math.exp(float(output.log_sigma)))


def test_fixed_sigma_is_a_buffer_not_a_parameter() -> None:
    output = DecoderLikelihood("gaussian", 0.5)
    assert list(output.parameters()) == []
    assert "log_sigma" in dict(output.named_buffers())
    assert "log_sigma" in output.state_dict()
    assert output.sigma() == pytest.approx(0.5)
    model = make_vae(sigma="0.5")
    assert all(p is not model.output.log_sigma for p in model.parameters())
    assert model.output.sigma() == pytest.approx(0.5)


def test_bernoulli_output_has_no_sigma() -> None:
    output = DecoderLikelihood("bernoulli", None)
    assert output.sigma() is None
    assert list(output.parameters()) == []
    decoded = torch.tensor([[0.0, 2.0]])
    assert torch.allclose(output.mean(decoded), torch.sigmoid(decoded))
    x = torch.tensor([[1.0, 0.0]])
    assert torch.equal(output.nll(decoded, x), bernoulli_nll(decoded, x))


def test_sigma_is_clamped_at_one_thousandth() -> None:
    assert math.exp(LOG_SIGMA_MIN) == pytest.approx(1e-3)
    output = DecoderLikelihood("gaussian", None)
    with torch.no_grad():
        output.log_sigma.fill_(math.log(1e-6))
        assert output.sigma() == pytest.approx(1e-3)
    x = torch.tensor([[0.01]])
    expected = gaussian_nll(torch.zeros_like(x), x, torch.tensor(math.log(1e-3)))
    nll = output.nll(torch.zeros_like(x), x)
    assert torch.allclose(nll.detach(), expected)
    # Below the floor the clamp cuts the gradient: sigma cannot be pushed any lower.
    (grad,) = torch.autograd.grad(nll.sum(), [output.log_sigma])
    assert float(grad) == 0.0
    assert DecoderLikelihood("gaussian", 1e-6).sigma() == pytest.approx(1e-3)


# --- train_model ---------------------------------------------------------------------------------


def test_training_smoke_writes_metrics(tmp_path: Path) -> None:
    config = tiny_config(epochs=3, kl_warmup_epochs=1, patience=10, min_steps_per_epoch=1)
    model = make_vae()
    train_x, val_x = gaussian_data(64, seed=60), gaussian_data(16, seed=61)
    metrics = tmp_path / "metrics.jsonl"
    result = train_model(
        model,
        build_objective(config),
        train_x,
        val_x,
        config,
        metrics_path=metrics,
        show_progress=False,
    )
    assert isinstance(result, TrainingResult)
    lines = metrics.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    for epoch, record in enumerate(records, start=1):
        assert set(record) == METRIC_KEYS
        assert record["epoch"] == epoch
        assert all(math.isfinite(value) for value in record.values())
    assert records == result.history
    # 64 rows / 16 per batch = 4 steps per epoch; warm-up of 1 epoch -> 0.75 at step 3, then 1.
    assert [r["kl_weight"] for r in records] == [0.75, 1.0, 1.0]
    assert result.stop_reason == "reached --epochs 3"
    assert 1 <= result.best_epoch <= 3
    assert result.best_val_loss == min(r["val_loss"] for r in records)
    assert not model.training  # left in eval mode


def test_small_data_epochs_repeat_passes_until_the_minimum_steps() -> None:
    # 64 rows / 16 per batch = 4 steps per pass; at least 10 steps -> 3 passes, 12 steps an
    # epoch, so a 1-epoch warm-up reaches 11/12 at the epoch's last step.
    config = tiny_config(epochs=2, kl_warmup_epochs=1, min_steps_per_epoch=10)
    result = fit_on_gaussians(make_vae(), config)
    assert [r["kl_weight"] for r in result.history] == [pytest.approx(11 / 12), 1.0]


def test_weight_averaging_keeps_the_running_mean_not_the_last_iterate() -> None:
    def trained(averaging: float) -> dict[str, torch.Tensor]:
        config = tiny_config(
            epochs=3, kl_warmup_epochs=0, lr=1e-2, patience=10, weight_averaging=averaging
        )
        torch.manual_seed(0)
        model = make_vae()
        fit_on_gaussians(model, config)
        return copy.deepcopy(model.state_dict())

    # Same seed, same steps: only what is kept differs.
    assert not states_equal(trained(0.0), trained(0.9))


def test_training_changes_the_weights() -> None:
    config = tiny_config(epochs=2, kl_warmup_epochs=0, lr=1e-2)
    model = make_vae()
    before = copy.deepcopy(model.state_dict())
    fit_on_gaussians(model, config)
    assert not states_equal(before, model.state_dict())


def test_nan_weights_raise_training_diverged() -> None:
    config = tiny_config(epochs=3)
    model = make_vae()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"--lr") as caught:
        fit_on_gaussians(model, config)
    assert "epoch 1" in str(caught.value)


def test_extreme_inputs_raise_training_diverged() -> None:
    config = tiny_config(epochs=3, lr=1e6)
    model = make_vae()
    train_x = gaussian_data(64) * 1e30  # squared errors overflow float32
    with pytest.raises(TrainingDiverged, match=r"smaller --lr \(now 1000000.0\)"):
        fit_on_gaussians(model, config, train_x)


def test_early_stopping_when_validation_cannot_improve() -> None:
    config = tiny_config(epochs=50, patience=1, kl_warmup_epochs=0, lr=1e-12)
    model = make_vae()
    result = fit_on_gaussians(model, config)
    assert len(result.history) == 2  # epoch 1 sets the best, epoch 2 exhausts patience 1
    assert "early stop" in result.stop_reason
    assert result.best_epoch == 1
    assert result.best_val_loss == result.history[0]["val_loss"]


def test_patience_counts_only_after_warm_up() -> None:
    config = tiny_config(epochs=50, patience=1, kl_warmup_epochs=3, lr=1e-12)
    model = make_vae()
    result = fit_on_gaussians(model, config)
    assert len(result.history) == 4
    assert "early stop" in result.stop_reason


def test_early_stopping_restores_the_best_epoch_weights() -> None:
    # min_delta = 10 demands a 1000% drop of a positive loss, so only epoch 1 ever "improves",
    # while lr = 1e-2 really moves the weights in epoch 2.
    config = tiny_config(
        model="ae", sigma="1", epochs=50, patience=1, kl_warmup_epochs=0, lr=1e-2, min_delta=10.0
    )
    model = make_model(config)
    initial = copy.deepcopy(model)
    objective = build_objective(config)
    train_x, val_x = gaussian_data(64), gaussian_data(16, seed=1)
    result = train_model(model, objective, train_x, val_x, config, show_progress=False)
    assert len(result.history) == 2
    assert result.best_epoch == 1
    assert "early stop" in result.stop_reason
    first, second = (record["val_loss"] for record in result.history)
    assert second != first
    with torch.no_grad():
        final_val = float(objective(model, val_x, 1.0, None).loss)
    assert final_val == pytest.approx(first, rel=1e-6)
    assert final_val != pytest.approx(second, rel=1e-6)
    # Replaying one epoch from the same start gives exactly the restored weights.
    replay_config = dataclasses.replace(config, epochs=1)
    replay = initial
    replay_result = train_model(
        replay, objective, train_x, val_x, replay_config, show_progress=False
    )
    assert replay_result.stop_reason == "reached --epochs 1"
    assert states_equal(replay.state_dict(), model.state_dict())


# --- kl_weight_at and resolve_device -------------------------------------------------------------


def test_kl_weight_ramps_linearly_over_the_warm_up() -> None:
    config = tiny_config(kl_warmup_epochs=2)
    steps_per_epoch = 5  # warm-up ends at step 10
    assert kl_weight_at(0, steps_per_epoch, config) == 0.0
    assert kl_weight_at(3, steps_per_epoch, config) == pytest.approx(0.3)
    assert kl_weight_at(5, steps_per_epoch, config) == pytest.approx(0.5)
    assert kl_weight_at(9, steps_per_epoch, config) == pytest.approx(0.9)
    assert kl_weight_at(10, steps_per_epoch, config) == 1.0
    assert kl_weight_at(1000, steps_per_epoch, config) == 1.0
    weights = [kl_weight_at(step, steps_per_epoch, config) for step in range(11)]
    assert all(b > a for a, b in itertools.pairwise(weights))


def test_kl_weight_without_warm_up_is_always_one() -> None:
    config = tiny_config(kl_warmup_epochs=0)
    assert all(kl_weight_at(step, 7, config) == 1.0 for step in (0, 1, 7, 100))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_without_cuda() -> None:
    with pytest.raises(ValueError, match=r"--device cuda"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
