"""The autoencoder family as pure nn.Modules, and their losses. No data, no loops, no I/O.

Shapes are commented inline: B batch, D flattened features, d latent size, (C, H, W) images.
Every loss returns one value per item (B,), summed over features, in nats where it is a
likelihood, so ELBO parts can be reported per item and averaged by the caller.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Likelihood = Literal["bernoulli", "gaussian", "laplace"]

# exp(10) ~ 2.2e4 and exp(-10) ~ 4.5e-5 bound the posterior variance: beyond them the
# variance overflows or the KL's log explodes, which is where VAE NaNs come from.
LOGVAR_MIN, LOGVAR_MAX = -10.0, 10.0
# A learned scale (Gaussian sigma, Laplace b) below this lets the likelihood grow without
# bound on data with constant features; 1e-3 of a standardised unit is far below any noise.
LOG_SIGMA_MIN = math.log(1e-3)


# ---------------------------------------------------------------------------------------------
# Building blocks: encoders map (B, *shape) -> (B, out); decoders map (B, d) -> (B, *shape).
# ---------------------------------------------------------------------------------------------


class MLPEncoder(nn.Module):
    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int], out_features: int):
        super().__init__()
        in_features = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]  # (B, *shape) -> (B, D)
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]  # (B, out)

    @property
    def first_layer_weights(self) -> torch.Tensor:
        first = self.net[1]
        assert isinstance(first, nn.Linear)
        return first.weight  # (H1, D): row i is what hidden unit i takes a dot product with


class TiedLinear(nn.Module):
    """The transpose of an encoder's Linear, the classic tied autoencoder's decoder layer:
    h W^T with W that layer's own Parameter (one set of weights, gradients from the encoder
    and decoder paths add up in it), and a bias of its own."""

    def __init__(self, encoder_layer: nn.Linear):
        super().__init__()
        self.encoder_weight = encoder_layer.weight  # (out, in) of the encoder layer: shared
        # nn.Linear's bias range, for this layer's fan-in (the encoder layer's out_features).
        bound = 1.0 / math.sqrt(encoder_layer.out_features)
        self.bias = nn.Parameter(torch.empty(encoder_layer.in_features).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.encoder_weight.t(), self.bias)  # (B, out) -> (B, in)


class TiedConvTranspose2d(nn.Module):
    """The adjoint of an encoder's Conv2d with the same Parameter as its weight: Conv2d's
    (C_out, C_in, k, k) weight is exactly the (in, out, k, k) weight of the ConvTranspose2d
    that maps C_out channels back to C_in. The bias is its own."""

    def __init__(self, encoder_layer: nn.Conv2d, output_padding: tuple[int, int]):
        super().__init__()
        self.encoder_weight = encoder_layer.weight  # (C_out, C_in, k, k): shared
        self.stride = encoder_layer.stride
        padding = encoder_layer.padding
        if isinstance(padding, str):  # "same"/"valid": no transposed-conv counterpart to mirror
            raise ValueError(f"tied weights need a Conv2d with numeric padding, not {padding!r}")
        self.padding = padding
        self.output_padding = output_padding
        fan_in = encoder_layer.out_channels * math.prod(encoder_layer.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        self.bias = nn.Parameter(torch.empty(encoder_layer.in_channels).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            h,
            self.encoder_weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
        )  # (B, C_out, H', W') -> (B, C_in, H, W)


def _mirrored(layers: list[nn.Module], shapes: list[tuple[int, int]], kind: str) -> list[nn.Module]:
    """An encoder's `layers` last first, checked to be the transposes of a decoder's layers of
    (in, out) `shapes`: a tied decoder needs the exact mirror of its encoder."""
    mirrored = list(reversed(layers))
    found = [
        (layer.weight.shape[0], layer.weight.shape[1])
        for layer in mirrored
        if isinstance(layer, nn.Linear | nn.Conv2d)
    ]
    if found != shapes:
        raise ValueError(
            f"tied weights: the decoder's {kind} layers (in, out) {shapes} are not the "
            f"encoder's {found} reversed (e.g. a VAE's encoder outputs 2 x latent_dim: no tying)"
        )
    return mirrored


class MLPDecoder(nn.Module):
    """The encoder's layers in reverse; with `tied_to`, each uses the transpose of the
    matching encoder layer's weight (TiedLinear), so the pair holds half the weights."""

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        output_shape: Sequence[int],
        *,
        tied_to: MLPEncoder | None = None,
    ):
        super().__init__()
        self.output_shape = tuple(output_shape)
        widths = [latent_dim, *reversed(hidden), math.prod(output_shape)]
        shapes = list(itertools.pairwise(widths))
        mirrored = (
            None
            if tied_to is None
            else _mirrored([m for m in tied_to.net if isinstance(m, nn.Linear)], shapes, "linear")
        )

        def linear(index: int) -> nn.Module:
            if mirrored is None:
                return nn.Linear(*shapes[index])
            encoder_layer = mirrored[index]
            assert isinstance(encoder_layer, nn.Linear)
            return TiedLinear(encoder_layer)

        layers: list[nn.Module] = []
        for index in range(len(hidden)):
            layers += [linear(index), nn.ReLU()]
        layers.append(linear(len(hidden)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat: torch.Tensor = self.net(z)  # (B, D)
        return flat.reshape(-1, *self.output_shape)  # (B, *shape)


def _halved(size: int) -> int:
    # Output size of Conv2d(kernel 3, stride 2, padding 1): ceil(size / 2).
    return (size + 1) // 2


class ConvEncoder(nn.Module):
    """Stride-2 3x3 convolutions halve H and W at each layer, then one linear head."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], out_features: int):
        super().__init__()
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(c, width, kernel_size=3, stride=2, padding=1), nn.ReLU()]
            c, h, w = width, _halved(h), _halved(w)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C_last, H', W')
        return self.head(h.flatten(1))  # type: ignore[no-any-return]  # (B, out)

    @property
    def first_layer_weights(self) -> torch.Tensor:
        first = self.features[0]
        assert isinstance(first, nn.Conv2d)
        return first.weight.flatten(1)  # (C_out, C_in * 3 * 3): one receptive field per row


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: linear to the smallest feature map, then stride-2 transposed convs.

    output_padding is chosen per layer so odd sizes (e.g. 28 -> 14 -> 7 -> 4) come back exactly.
    With `tied_to`, the head is the transpose of the encoder's head and each transposed conv the
    adjoint of the mirrored Conv2d, with that layer's weight (TiedLinear, TiedConvTranspose2d).
    """

    def __init__(
        self,
        latent_dim: int,
        channels: Sequence[int],
        image_shape: Sequence[int],
        *,
        tied_to: ConvEncoder | None = None,
    ):
        super().__init__()
        c, h, w = image_shape
        sizes = [(h, w)]
        for _ in channels:
            sizes.append((_halved(sizes[-1][0]), _halved(sizes[-1][1])))
        self.start_shape = (channels[-1], *sizes[-1])
        head_shape = (latent_dim, math.prod(self.start_shape))
        widths = list(reversed(channels))  # e.g. [64, 32]
        out_channels = [*widths[1:], c]  # e.g. [32, C]
        convs: list[nn.Module] | None = None
        if tied_to is None:
            self.head: nn.Module = nn.Linear(*head_shape)
        else:
            _mirrored([tied_to.head], [head_shape], "head")
            self.head = TiedLinear(tied_to.head)
            convs = _mirrored(
                [m for m in tied_to.features if isinstance(m, nn.Conv2d)],
                list(zip(widths, out_channels, strict=True)),
                "conv",
            )
        layers: list[nn.Module] = []
        targets = list(reversed(sizes[:-1]))  # sizes to reach after each layer
        for index, (in_c, out_c, (th, tw)) in enumerate(
            zip(widths, out_channels, targets, strict=True)
        ):
            # (in - 1) * 2 - 2 + 3 + op = 2 * in - 1 + op must equal the target size.
            output_padding = (1 - th % 2, 1 - tw % 2)
            if convs is None:
                layers.append(
                    nn.ConvTranspose2d(
                        in_c,
                        out_c,
                        kernel_size=3,
                        stride=2,
                        padding=1,
                        output_padding=output_padding,
                    )
                )
            else:
                encoder_layer = convs[index]
                assert isinstance(encoder_layer, nn.Conv2d)
                layers.append(TiedConvTranspose2d(encoder_layer, output_padding))
            if index < len(widths) - 1:
                layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).reshape(-1, *self.start_shape)  # (B, C_last, H', W')
        return self.features(F.relu(h))  # type: ignore[no-any-return]  # (B, C, H, W)


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------


class DecoderLikelihood(nn.Module):
    """Turns decoder outputs into the likelihood's mean, and holds its learned scale: the
    Gaussian's sigma, or the Laplace's b (kept under the name sigma: one global scale)."""

    def __init__(self, likelihood: Likelihood, sigma: float | None):
        super().__init__()
        self.likelihood = likelihood
        learned = likelihood != "bernoulli" and sigma is None
        initial = math.log(sigma) if sigma is not None else 0.0
        # A parameter only when learned, so a fixed sigma never moves under the optimiser.
        if learned:
            self.log_sigma = nn.Parameter(torch.tensor(initial))
        else:
            self.register_buffer("log_sigma", torch.tensor(initial))

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        # Bernoulli decoders output logits; the mean is their sigmoid.
        return torch.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded

    def clamped_log_sigma(self) -> torch.Tensor:
        return torch.clamp(self.log_sigma, min=LOG_SIGMA_MIN)

    def sigma(self) -> float | None:
        if self.likelihood == "bernoulli":
            return None
        return float(self.clamped_log_sigma().detach().exp())

    def nll(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return bernoulli_nll(decoded, x)
        if self.likelihood == "laplace":
            return laplace_nll(decoded, x, self.clamped_log_sigma())
        return gaussian_nll(decoded, x, self.clamped_log_sigma())


class VAE(nn.Module):
    """Gaussian encoder q(z|x) = N(mu, diag(exp(logvar))), prior N(0, I) (Kingma & Welling 2014)."""

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, output: DecoderLikelihood
    ):
        super().__init__()
        self.encoder = encoder  # (B, *shape) -> (B, 2d)
        self.decoder = decoder  # (B, d) -> (B, *shape) logits or mean
        self.output = output
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, 2d)
        mu, logvar = h[:, : self.latent_dim], h[:, self.latent_dim :]
        return mu, torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)  # (B, d), (B, d)

    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.output.mean(self.decoder(z))  # (B, *shape)

    @staticmethod
    def reparameterise(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        # z = mu + sigma * eps keeps the sample differentiable in mu and logvar.
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps  # (B, d)


class Autoencoder(nn.Module):
    """Deterministic code z = f(x). `sigmoid_code` for sparse AEs, whose penalty needs rates."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        output: DecoderLikelihood,
        *,
        sigmoid_code: bool,
    ):
        super().__init__()
        self.encoder = encoder  # (B, *shape) -> (B, d)
        self.decoder = decoder  # (B, d) -> (B, *shape)
        self.output = output
        self.latent_dim = latent_dim
        self.sigmoid_code = sigmoid_code

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)  # (B, d)
        return torch.sigmoid(z) if self.sigmoid_code else z

    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.output.mean(self.decoder(z))  # (B, *shape)


# ---------------------------------------------------------------------------------------------
# Losses: per item (B,), summed over features
# ---------------------------------------------------------------------------------------------


def gaussian_kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form.

    -1/2 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j)): Kingma & Welling 2014, appendix B;
    pytorch/examples vae/main.py `loss_function`.
    """
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=1)  # (B,)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for independent Bernoullis given logits: binary cross-entropy, summed.

    Computed from logits for stability (pytorch/examples vae/main.py uses BCE on sigmoid means).
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return bce.flatten(1).sum(dim=1)  # (B,)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, sigma^2 I) with the normalising constant, so the ELBO is in nats.

    sum_j (x_j - mean_j)^2 / (2 sigma^2) + D (log sigma + log(2 pi) / 2). With a fixed sigma
    this is squared error weighted by C = 1 / (2 sigma^2) plus a constant (Doersch 2016, 2.4.2).
    """
    squared = (x - mean).pow(2).flatten(1).sum(dim=1)
    features = x[0].numel()
    constant = features * (log_sigma + 0.5 * math.log(2.0 * math.pi))
    return 0.5 * squared * torch.exp(-2.0 * log_sigma) + constant  # (B,)


def laplace_nll(mean: torch.Tensor, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log Laplace(x; mean, b) with the normalising constant, so the ELBO is in nats.

    sum_j |x_j - mean_j| / b + D log(2 b): the density (1 / 2b) exp(-|x - mean| / b) per
    feature. Its tails are heavier than the Gaussian's, so one feature far from its
    reconstruction (common in real tables) costs linearly, not quadratically.
    """
    absolute = (x - mean).abs().flatten(1).sum(dim=1)
    features = x[0].numel()
    return absolute * torch.exp(-log_scale) + features * (log_scale + math.log(2.0))  # (B,)


def sparsity_penalty(code: torch.Tensor, rho: float) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j), rho_hat_j the mean activation of unit j over the batch.

    Andrew Ng, "Sparse autoencoder" lecture notes (CS294A), section 2.3. A scalar for the batch.
    """
    rho_hat = code.mean(dim=0).clamp(1e-6, 1.0 - 1e-6)  # (d,)
    kl = rho * torch.log(rho / rho_hat) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))
    return kl.sum()


def corrupt(
    x: torch.Tensor,
    kind: Literal["masking", "gaussian"],
    level: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Input corruption of a denoising AE (Vincent et al. 2008): the clean x stays the target."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if kind == "masking":
        return x * (noise >= level).to(x.dtype)  # each input zeroed with probability `level`
    gaussian = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + level * gaussian


@dataclass(frozen=True)
class LossTerms:
    """Per-item parts of one batch's objective; `loss` is the scalar the optimiser sees."""

    loss: torch.Tensor  # ()
    reconstruction: torch.Tensor  # (B,) -log p(x|z), nats
    kl: torch.Tensor  # (B,) KL(q || p) for a VAE; zeros for autoencoders
    penalty: torch.Tensor  # () sparsity penalty (weighted); zero elsewhere


def vae_loss(
    model: VAE,
    x: torch.Tensor,
    *,
    beta: float,
    kl_weight: float,
    generator: torch.Generator | None = None,
) -> LossTerms:
    """Negative ELBO with a one-sample reparameterised estimate; beta-VAE (Higgins et al. 2017)
    with a linear KL warm-up (Bowman et al. 2016) scaling KL by `kl_weight`."""
    mu, logvar = model.encode(x)  # (B, d), (B, d)
    z = VAE.reparameterise(mu, logvar, generator)  # (B, d)
    reconstruction = model.output.nll(model.decoder(z), x)  # (B,)
    kl = gaussian_kl_to_standard_normal(mu, logvar)  # (B,)
    loss = (reconstruction + beta * kl_weight * kl).mean()
    return LossTerms(loss, reconstruction, kl, torch.zeros((), device=x.device))


def autoencoder_loss(
    model: Autoencoder,
    x: torch.Tensor,
    *,
    sparsity_target: float | None = None,
    sparsity_weight: float = 0.0,
    corruption: Literal["masking", "gaussian"] | None = None,
    corruption_level: float = 0.0,
    generator: torch.Generator | None = None,
) -> LossTerms:
    """Reconstruction NLL of the clean x, from a corrupted x for a denoising AE, plus the
    weighted sparsity penalty for a sparse AE."""
    source = corrupt(x, corruption, corruption_level, generator) if corruption else x
    code = model.encode(source)  # (B, d)
    reconstruction = model.output.nll(model.decoder(code), x)  # (B,)
    penalty = torch.zeros((), device=x.device)
    if sparsity_target is not None:
        penalty = sparsity_weight * sparsity_penalty(code, sparsity_target)
    loss = reconstruction.mean() + penalty
    return LossTerms(loss, reconstruction, torch.zeros_like(reconstruction), penalty)


def iwae_log_likelihood(
    model: VAE, x: torch.Tensor, samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) with K samples (Burda et al. 2016, eq. 8).

    log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x); a lower bound that tightens
    towards log p(x) as K grows. (B,)
    """
    mu, logvar = model.encode(x)  # (B, d)
    batch, latent = mu.shape
    eps = torch.randn((samples, batch, latent), generator=generator, device=x.device)
    std = torch.exp(0.5 * logvar)
    z = mu.unsqueeze(0) + std.unsqueeze(0) * eps  # (K, B, d)
    decoded = model.decoder(z.reshape(samples * batch, latent))  # (K*B, *shape)
    repeated_x = x.unsqueeze(0).expand(samples, *x.shape).reshape(samples * batch, *x.shape[1:])
    log_px_given_z = -model.output.nll(decoded, repeated_x).reshape(samples, batch)  # (K, B)
    log_2pi = math.log(2.0 * math.pi)
    log_pz = -0.5 * (z.pow(2) + log_2pi).sum(dim=2)  # (K, B)
    log_qz = -0.5 * (eps.pow(2) + logvar.unsqueeze(0) + log_2pi).sum(dim=2)  # (K, B)
    log_weights = log_px_given_z + log_pz - log_qz  # (K, B)
    return torch.logsumexp(log_weights, dim=0) - math.log(samples)  # (B,)
