"""`--hidden auto`: which encoder/decoder a run trains, chosen on its own validation split.

On a table, a VAE's best shape depends on the data in a way no fixed default catches: the MLP
256-128 gave the best anomaly ranking on wine and iris, but on breast-cancer's 160 benign rows
it overfits, and a *linear* encoder and decoder (probabilistic-PCA-like) modelled held-out rows
far better (IWAE 20.9 against 28.2 nats on the development split, bench/QUALITY.md). So for a
VAE on a table both are trained and the one with the lower validation loss (the full negative
ELBO, the quantity both minimise) is kept. That costs a second training, which on a table is a
few CPU seconds; images, conv nets and the plain autoencoders keep the one MLP.

Unless --latent-dim is given, the linear candidate's code has one dimension per column (up to
LINEAR_MAX_LATENT): a full-rank linear model can learn any covariance of the columns, where an
8-dimensional one must call the rest isotropic noise, and the KL term leaves the dimensions the
data does not need at the prior. On breast-cancer's development split that took held-out IWAE
from 20.9 to 16.6 nats (seed 0; 15.7 to 12.0 on seed 1), near a full-covariance Gaussian's 16.5.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import DEFAULT_HIDDEN, LINEAR_MAX_LATENT, TrainingConfig
from training.distributed import Replicas
from training.factory import ModelInput, build_model, build_objective
from training.models import Likelihood
from training.streaming.rows import TrainingRows
from training.train import TrainingResult, train_model

# A linear model's loss surface is far smoother than the MLP's: at 3x the step size it reached
# the same held-out likelihood on the development tables in a third of the CPU time (bc:
# 20.94 vs 20.67 nats; at 1x it ran into the 1000-epoch cap), so the search stays cheap.
LINEAR_LR_FACTOR = 3.0


@dataclass(frozen=True)
class Candidate:
    name: str  # "mlp" or "linear": also the suffix of its training log
    hidden: str  # the --hidden it trains with
    lr: float
    latent_dim: int


@dataclass
class FittedModel:
    model: nn.Module  # holds the best validation epoch's weights, in eval mode
    result: TrainingResult
    config: TrainingConfig  # the run's config with the kept candidate's hidden, lr, latent_dim
    search: list[dict[str, Any]]  # one record per candidate trained, the kept one marked


def candidates(config: TrainingConfig, is_image: bool, features: int) -> list[Candidate]:
    """What a run trains: one candidate, or for `--hidden auto` on a VAE of a table two."""
    code = config.code_size()
    explicit = config.hidden.strip().lower() != "auto"
    if explicit:
        name = "mlp" if config.hidden_sizes() else "linear"
        return [Candidate(name, config.hidden, config.lr, code)]
    mlp = Candidate("mlp", ",".join(str(width) for width in DEFAULT_HIDDEN), config.lr, code)
    if is_image or config.model != "vae" or config.arch != "mlp":
        return [mlp]
    linear_code = min(features, LINEAR_MAX_LATENT) if config.latent_dim is None else code
    return [mlp, Candidate("linear", "none", config.lr * LINEAR_LR_FACTOR, linear_code)]


def fit_best_architecture(
    config: TrainingConfig,
    shape: ModelInput,
    likelihood: Likelihood,
    is_image: bool,
    train_x: TrainingRows,
    val_x: TrainingRows,
    *,
    replicas: Replicas,
    report_dir: Path | None = None,
    show_progress: bool | None = None,
) -> FittedModel:
    """Train every candidate from the same seed; keep the lowest best validation loss.

    Replicas all see the same summed validation losses, so they keep the same candidate.
    With several candidates each writes `training_log.<name>.jsonl` and the kept one's is
    copied to `training_log.jsonl`, the log a single candidate writes directly.
    """
    pool = candidates(config, is_image, math.prod(shape.shape))
    best: FittedModel | None = None
    kept = pool[0]
    search: list[dict[str, Any]] = []
    for number, candidate in enumerate(pool, start=1):
        chosen = dataclasses.replace(
            config, hidden=candidate.hidden, lr=candidate.lr, latent_dim=candidate.latent_dim
        )
        torch.manual_seed(config.seed)
        model = build_model(chosen, shape, likelihood).to(replicas.device)
        log_name = (
            "training_log.jsonl" if len(pool) == 1 else f"training_log.{candidate.name}.jsonl"
        )
        result = train_model(
            model,
            build_objective(chosen),
            train_x,
            val_x,
            chosen,
            metrics_path=None if report_dir is None else report_dir / log_name,
            show_progress=show_progress,
            progress_label=(
                "train" if len(pool) == 1 else f"candidate {number}/{len(pool)} {candidate.name}"
            ),
            replicas=replicas,
        )
        search.append(
            {
                "candidate": candidate.name,
                "hidden": candidate.hidden,
                "lr": candidate.lr,
                "latent_dim": candidate.latent_dim,
                "best_val_loss": result.best_val_loss,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "cpu_seconds": round(result.cpu_seconds, 2),
            }
        )
        # Strictly lower: on a tie (or a NaN) the earlier candidate, the MLP, stays.
        if best is None or result.best_val_loss < best.result.best_val_loss:
            best, kept = FittedModel(model, result, chosen, search), candidate
    assert best is not None
    for record in search:
        record["kept"] = record["candidate"] == kept.name
    if len(pool) > 1 and report_dir is not None:
        shutil.copyfile(
            report_dir / f"training_log.{kept.name}.jsonl", report_dir / "training_log.jsonl"
        )
    return best


def total_cpu_seconds(search: list[dict[str, Any]]) -> float:
    """What the search cost in CPU seconds, every candidate's training loop counted."""
    return math.fsum(float(record["cpu_seconds"]) for record in search)
