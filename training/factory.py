"""From a config and the data's shape to a model and the objective that trains it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bundle.manifest import ModelKind, ScoreType
from training.config import TrainingConfig
from training.models import (
    VAE,
    Autoencoder,
    ConvDecoder,
    ConvEncoder,
    DecoderLikelihood,
    Likelihood,
    LossTerms,
    MLPDecoder,
    MLPEncoder,
    autoencoder_loss,
    vae_loss,
)

# (model, x, kl_weight, generator) -> loss terms of one batch
Objective = Callable[[nn.Module, torch.Tensor, float, torch.Generator | None], LossTerms]

BUNDLE_KIND: dict[str, ModelKind] = {
    "vae": "vae",
    "ae": "ae",
    "sparse-ae": "sparse_ae",
    "denoising-ae": "denoising_ae",
}


@dataclass(frozen=True)
class ModelInput:
    """What the encoder graph takes per item: flat (D,) for an MLP, (C, H, W) for a conv net."""

    shape: tuple[int, ...]
    image_shape: tuple[int, int, int] | None


def model_input(
    config: TrainingConfig, feature_shape: tuple[int, ...], is_image: bool
) -> ModelInput:
    image_shape = (feature_shape[0], feature_shape[1], feature_shape[2]) if is_image else None
    if config.arch == "conv":
        if image_shape is None:
            raise ValueError(
                "--arch conv needs image data (N, C, H, W); this data set is tabular: "
                "use --arch mlp"
            )
        return ModelInput(shape=image_shape, image_shape=image_shape)
    return ModelInput(shape=(math.prod(feature_shape),), image_shape=image_shape)


def resolve_likelihood(config: TrainingConfig, is_image: bool) -> Likelihood:
    if config.likelihood == "auto":
        return "bernoulli" if is_image else "laplace"
    return config.likelihood


def resolve_score(config: TrainingConfig, is_image: bool) -> ScoreType:
    """The bundle's default anomaly score; `auto` picks per data kind (bench/QUALITY.md).

    Images: recon_complexity, the reconstruction error against that of normal images as busy:
    a likelihood, and a plain reconstruction error too, prefer simple inputs and rank a
    held-out "1" as more normal than the digits learned (Nalisnick et al. 2019; mnist-5k:
    holdout=1, recon_mse AUROC 0.34). Tables: neg_elbo, which adds the code's distance from
    the prior (KL) to the reconstruction error, so a record far out along directions the model
    reconstructs well still stands out.
    """
    if config.score == "recon_complexity" and not is_image:
        raise ValueError(
            "--score recon_complexity needs images: it weighs the error by the image's edges "
            "(total variation), which a table's columns do not have"
        )
    if config.score != "auto":
        return config.score
    if is_image:
        return "recon_complexity"
    return "neg_elbo" if config.model == "vae" else "recon_mse"


def build_model(config: TrainingConfig, shape: ModelInput, likelihood: Likelihood) -> nn.Module:
    """With --tied-weights (autoencoders only), the decoder's weights are the encoder's own
    Parameters, transposed: the model holds one set of weights and its decoder its biases."""
    latent = config.code_size()
    encoder_out = 2 * latent if config.model == "vae" else latent  # VAE: mu and logvar
    encoder: nn.Module
    decoder: nn.Module
    if config.arch == "conv":
        assert shape.image_shape is not None
        channels = config.conv_channel_sizes()
        conv_encoder = ConvEncoder(shape.image_shape, channels, encoder_out)
        tied_conv = conv_encoder if config.tied_weights else None
        encoder = conv_encoder
        decoder = ConvDecoder(latent, channels, shape.image_shape, tied_to=tied_conv)
    else:
        hidden = config.hidden_sizes()
        mlp_encoder = MLPEncoder(shape.shape, hidden, encoder_out)
        tied_mlp = mlp_encoder if config.tied_weights else None
        encoder = mlp_encoder
        decoder = MLPDecoder(latent, hidden, shape.shape, tied_to=tied_mlp)
    output = DecoderLikelihood(likelihood, config.sigma_value())
    if config.model == "vae":
        return VAE(encoder, decoder, latent, output)
    return Autoencoder(encoder, decoder, latent, output, sigmoid_code=config.model == "sparse-ae")


def build_objective(config: TrainingConfig) -> Objective:
    if config.model == "vae":

        def objective(
            model: nn.Module, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None
        ) -> LossTerms:
            assert isinstance(model, VAE)
            return vae_loss(model, x, beta=config.beta, kl_weight=kl_weight, generator=generator)

        return objective

    def ae_objective(
        model: nn.Module, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None
    ) -> LossTerms:
        assert isinstance(model, Autoencoder)
        if config.model == "sparse-ae":
            return autoencoder_loss(
                model,
                x,
                sparsity_target=config.sparsity_target,
                sparsity_weight=config.sparsity_weight,
                generator=generator,
            )
        if config.model == "denoising-ae":
            return autoencoder_loss(
                model,
                x,
                corruption=config.corruption,
                corruption_level=config.corruption_level,
                generator=generator,
            )
        return autoencoder_loss(model, x, generator=generator)

    return ae_objective
