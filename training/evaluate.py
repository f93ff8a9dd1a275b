"""Held-out figures of a trained model, and how well its anomaly scores separate anomalies.

Likelihood figures (negative ELBO and its parts, IWAE) come from torch on held-out normal
items, in nats per item. Anomaly figures come from the exported graphs through the shared
numpy scoring, i.e. exactly the numbers a served bundle produces.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from training.models import VAE, Autoencoder, gaussian_kl_to_standard_normal, iwae_log_likelihood
from training.streaming.rows import TrainingRows

# Held-out estimates are averages over items, each with its own noise; this seed makes the
# reported figures repeatable run to run.
EVALUATION_SEED = 20_240_601


def heldout_likelihood_metrics(
    model: VAE | Autoencoder, x_model: TrainingRows, *, iwae_samples: int, batch_size: int = 256
) -> dict[str, float]:
    """Per-item means on held-out normal data (model space: a tensor, or rows streamed from disk).

    VAE: neg_elbo = recon_nll + kl (one reparameterised sample per item), iwae_nll = -log p(x)
    estimated with K importance samples (always <= neg_elbo in expectation), recon_mse on the
    mean path. Autoencoder: recon_nll and recon_mse of the deterministic path.
    """
    generator = torch.Generator(device=x_model.device).manual_seed(EVALUATION_SEED)
    sums: dict[str, float] = {}

    def add(key: str, values: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.sum())

    model.eval()
    with torch.no_grad():
        for start in range(0, len(x_model), batch_size):
            x = x_model[start : start + batch_size]
            if isinstance(model, VAE):
                mu, logvar = model.encode(x)
                z = VAE.reparameterise(mu, logvar, generator)
                recon = model.output.nll(model.decoder(z), x)
                kl = gaussian_kl_to_standard_normal(mu, logvar)
                add("recon_nll", recon)
                add("kl", kl)
                add("neg_elbo", recon + kl)
                # Smaller chunks keep the K x B decoder pass within memory for big K.
                add("iwae_nll", -iwae_log_likelihood(model, x, iwae_samples, generator))
                mean = model.decoder_mean(mu)
            else:
                code = model.encode(x)
                add("recon_nll", model.output.nll(model.decoder(code), x))
                mean = model.decoder_mean(code)
            add("recon_mse", (mean - x).pow(2).flatten(1).mean(dim=1))
    metrics = {f"{key}": value / len(x_model) for key, value in sums.items()}
    metrics["n_items"] = float(len(x_model))
    if isinstance(model, VAE):
        metrics["iwae_samples"] = float(iwae_samples)
        # bits per dimension is how image likelihoods are usually compared
        features = x_model[0:1].numel()
        metrics["iwae_bits_per_dim"] = metrics["iwae_nll"] / (features * math.log(2.0))
    return metrics


def detection_metrics(
    scores: npt.NDArray[np.floating], is_anomaly: npt.NDArray[np.bool_], threshold: float
) -> dict[str, float]:
    """AUROC, average precision, and the confusion figures of flagging `score > threshold`.

    With no anomalies among the items only the false-alarm rate means anything, so only it
    is reported: a precision of 0 would read as a failure that did not happen.
    """
    labels = np.asarray(is_anomaly, dtype=bool)
    flagged = np.asarray(scores) > threshold
    normals = int(np.sum(~labels))
    if not labels.any():
        return {
            "false_positive_rate_at_threshold": float(np.mean(flagged)) if len(flagged) else 0.0,
            "n_normal": float(normals),
            "n_anomalous": 0.0,
        }
    true_pos = int(np.sum(flagged & labels))
    false_pos = int(np.sum(flagged & ~labels))
    false_neg = int(np.sum(~flagged & labels))
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    metrics = {
        "precision_at_threshold": precision,
        "recall_at_threshold": recall,
        "f1_at_threshold": f1,
        "false_positive_rate_at_threshold": false_pos / normals if normals else 0.0,
        "n_normal": float(normals),
        "n_anomalous": float(np.sum(labels)),
    }
    if 0 < labels.sum() < len(labels):
        metrics["auroc"] = float(roc_auc_score(labels, scores))
        metrics["average_precision"] = float(average_precision_score(labels, scores))
    return metrics
