"""The training loop: Adam, KL warm-up, early stopping on validation loss, best weights kept."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from training.config import TrainingConfig
from training.factory import Objective

# Validation noise (VAE sampling, denoising corruption) comes from its own fixed seed so two
# epochs' validation losses differ only because the weights did.
VALIDATION_SEED_OFFSET = 1_000_003


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says when and what to try."""


@dataclass
class TrainingResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stop_reason: str = ""
    seconds: float = 0.0
    # CPU time of the whole process (all its threads): on a shared machine the wall clock also
    # counts other people's work, so budgets are compared in CPU seconds (bench/quality.py).
    cpu_seconds: float = 0.0


def resolve_device(requested: str) -> torch.device:
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device here")
    if requested == "cuda" or (requested == "auto" and cuda):
        return torch.device("cuda")
    return torch.device("cpu")


def kl_weight_at(step: int, steps_per_epoch: int, config: TrainingConfig) -> float:
    """Linear ramp 0 -> 1 over the warm-up epochs, per optimiser step (Bowman et al. 2016)."""
    if config.kl_warmup_epochs == 0:
        return 1.0
    return min(1.0, step / (config.kl_warmup_epochs * steps_per_epoch))


def _mean_terms(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """Full-weight objective over a whole split, without gradients."""
    totals = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            terms = objective(model, batch, 1.0, generator)
            totals["loss"] += float(terms.loss) * len(batch)
            totals["recon"] += float(terms.reconstruction.sum())
            totals["kl"] += float(terms.kl.sum())
    return {key: value / len(x) for key, value in totals.items()}


def _check_finite(value: float, epoch: int, config: TrainingConfig) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss became {value} in epoch {epoch}: training stopped. Try a smaller --lr "
            f"(now {config.lr}), a fixed --sigma, or check the data for extreme values"
        )


def train_model(
    model: nn.Module,
    objective: Objective,
    train_x: torch.Tensor,
    val_x: torch.Tensor,
    config: TrainingConfig,
    *,
    metrics_path: Path | None = None,
    show_progress: bool | None = None,
) -> TrainingResult:
    """Train in place; on return the model holds the weights of the best validation epoch."""
    device = train_x.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Polyak averaging: validation, early stopping and the kept weights use the running mean
    # of the weights, which sits nearer the bottom of the valley Adam's steps bounce around.
    averaged = copy.deepcopy(model) if config.weight_averaging > 0 else model
    steps_per_pass = math.ceil(len(train_x) / config.batch_size)
    # An epoch is at least `min_steps_per_epoch` optimiser steps: a small table (a few hundred
    # rows) otherwise makes 2-3 steps an epoch, and warm-up and patience, counted in epochs,
    # stop a model that has barely moved from its initial weights.
    passes_per_epoch = math.ceil(config.min_steps_per_epoch / steps_per_pass)
    steps_per_epoch = passes_per_epoch * steps_per_pass
    result = TrainingResult()
    best_state: dict[str, Any] = copy.deepcopy(model.state_dict())
    epochs_without_progress = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    metrics_file = metrics_path.open("w", encoding="utf-8") if metrics_path else None
    # disable=None lets tqdm hide the bar when stderr is not a terminal (CI logs).
    bar = tqdm(
        range(1, config.epochs + 1),
        desc="train",
        unit="epoch",
        disable=None if show_progress is None else not show_progress,
    )
    step = 0
    try:
        for epoch in bar:
            model.train()
            sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
            kl_weight = 0.0
            for _ in range(passes_per_epoch):
                order = torch.randperm(len(train_x), generator=generator, device=device)
                for start in range(0, len(train_x), config.batch_size):
                    batch = train_x[order[start : start + config.batch_size]]
                    kl_weight = kl_weight_at(step, steps_per_epoch, config)
                    terms = objective(model, batch, kl_weight, generator)
                    _check_finite(float(terms.loss.detach()), epoch, config)
                    optimiser.zero_grad(set_to_none=True)
                    terms.loss.backward()  # type: ignore[no-untyped-call]
                    optimiser.step()
                    step += 1
                    if averaged is not model:
                        # The (1 + t) / (10 + t) ramp keeps early averages off the initial weights.
                        decay = min(config.weight_averaging, (1 + step) / (10 + step))
                        with torch.no_grad():
                            for mean, current in zip(
                                averaged.parameters(), model.parameters(), strict=True
                            ):
                                mean.lerp_(current, 1.0 - decay)
                    sums["loss"] += float(terms.loss.detach()) * len(batch)
                    sums["recon"] += float(terms.reconstruction.detach().sum())
                    sums["kl"] += float(terms.kl.detach().sum())
            averaged.eval()
            val_generator = torch.Generator(device=device).manual_seed(
                config.seed + VALIDATION_SEED_OFFSET
            )
            val = _mean_terms(averaged, objective, val_x, 512, val_generator)
            _check_finite(val["loss"], epoch, config)
            seen = passes_per_epoch * len(train_x)
            record = {
                "epoch": float(epoch),
                "train_loss": sums["loss"] / seen,
                "train_recon": sums["recon"] / seen,
                "train_kl": sums["kl"] / seen,
                "val_loss": val["loss"],
                "val_recon": val["recon"],
                "val_kl": val["kl"],
                "kl_weight": kl_weight,
                "seconds": time.perf_counter() - started,
            }
            result.history.append(record)
            if metrics_file is not None:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            bar.set_postfix(train=f"{record['train_loss']:.3f}", val=f"{val['loss']:.3f}")

            improved = val["loss"] < result.best_val_loss - config.min_delta * abs(
                result.best_val_loss if math.isfinite(result.best_val_loss) else 0.0
            )
            if improved:
                result.best_val_loss, result.best_epoch = val["loss"], epoch
                best_state = copy.deepcopy(averaged.state_dict())
                epochs_without_progress = 0
            elif epoch > config.kl_warmup_epochs:
                # Patience counts only once the objective is the full one: during warm-up the
                # KL weight moves and the validation loss may rise while the model improves.
                epochs_without_progress += 1
            if epochs_without_progress >= config.patience:
                result.stop_reason = (
                    f"early stop: no validation improvement for {config.patience} epochs"
                )
                break
        else:
            result.stop_reason = f"reached --epochs {config.epochs}"
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result
