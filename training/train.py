"""The training loop: Adam, KL warm-up, early stopping on validation loss, best weights kept.

Without a validation split (`val_x=None`: the refit on every row, training.refit) the loop runs
the fixed number of epochs it is given and keeps the last (averaged) weights.
"""

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
from training.distributed import Replicas
from training.factory import Objective
from training.models import LossTerms
from training.streaming.rows import TrainingRows

# Validation noise (VAE sampling, denoising corruption) comes from its own fixed seed so two
# epochs' validation losses differ only because the weights did.
VALIDATION_SEED_OFFSET = 1_000_003
# With several replicas, each draws its training noise from a stream of its own (seed offset
# by rank), so no two shares of a batch get the same noise; the permutation stays shared.
REPLICA_NOISE_SEED_OFFSET = 7_000_003


_TERMS = ("loss", "recon", "kl")


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
    # counts other people's work, so budgets are compared in CPU seconds (bench/quality/).
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


class _ObjectiveModule(nn.Module):
    """The objective as a module's forward pass: DDP synchronises gradients only of what runs
    through its wrapper's forward, and the models have encode/decode but no forward."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(
        self, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None
    ) -> LossTerms:
        return self.objective(self.model, x, kl_weight, generator)


def _validation_sums(
    model: nn.Module,
    objective: Objective,
    x: TrainingRows,
    rows: slice,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """Full-weight objective summed over `rows` of a split, without gradients:
    [loss, reconstruction, KL]; a replica sums its share, the shares are added up."""
    totals = [0.0, 0.0, 0.0]
    with torch.no_grad():
        for start in range(rows.start, rows.stop, batch_size):
            batch = x[start : min(start + batch_size, rows.stop)]
            terms = objective(model, batch, 1.0, generator)
            totals[0] += float(terms.loss) * len(batch)
            totals[1] += float(terms.reconstruction.sum())
            totals[2] += float(terms.kl.sum())
    return totals


def _check_finite(value: float, epoch: int, config: TrainingConfig) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss became {value} in epoch {epoch}: training stopped. Try a smaller --lr "
            f"(now {config.lr}), a fixed --sigma, or check the data for extreme values"
        )


def train_model(
    model: nn.Module,
    objective: Objective,
    train_x: TrainingRows,
    val_x: TrainingRows | None,
    config: TrainingConfig,
    *,
    metrics_path: Path | None = None,
    show_progress: bool | None = None,
    progress_label: str = "train",
    replicas: Replicas | None = None,
) -> TrainingResult:
    """Train in place; on return the model holds the weights of the best validation epoch.

    `train_x` and `val_x` hold model inputs: tensors, or `TorchRows` streamed from disk. With
    `replicas` (training.distributed) this is one of several processes training together.
    With `val_x=None` every one of `config.epochs` epochs runs and the last weights are kept.
    """
    device = train_x.device
    replicas = replicas or Replicas(device=device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    noise = generator
    if replicas.distributed:
        noise = torch.Generator(device=device).manual_seed(
            config.seed + REPLICA_NOISE_SEED_OFFSET * (replicas.rank + 1)
        )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Polyak averaging: validation, early stopping and the kept weights use the running mean
    # of the weights, which sits nearer the bottom of the valley Adam's steps bounce around.
    # Replicas hold the same weights after every step, so their averages stay equal too.
    averaged = copy.deepcopy(model) if config.weight_averaging > 0 else model
    step_loss = replicas.wrap(_ObjectiveModule(model, objective))
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
    # disable=None lets tqdm hide the bar when stderr is not a terminal (CI logs); replicas
    # other than rank 0 stay quiet, or each would draw its own bar.
    quiet = None if show_progress is None else not show_progress
    bar = tqdm(
        range(1, config.epochs + 1),
        desc=progress_label,
        unit="epoch",
        disable=quiet if replicas.is_writer else True,
    )
    step = 0
    try:
        for epoch in bar:
            model.train()
            sums = [0.0, 0.0, 0.0]  # loss, reconstruction, KL over this replica's items
            kl_weight = 0.0
            for _ in range(passes_per_epoch):
                order = torch.randperm(len(train_x), generator=generator, device=device)
                for start in range(0, len(train_x), config.batch_size):
                    in_batch = order[start : start + config.batch_size]
                    share = in_batch[replicas.shard(len(in_batch))]
                    weight = replicas.loss_weight(len(share), len(in_batch))
                    if len(share) == 0:
                        # A last batch smaller than the replica count leaves some without
                        # items; they still step with the others (DDP's all-reduce needs every
                        # replica), on one item with weight 0: no effect on the gradient.
                        share = in_batch[:1]
                    batch = train_x[share]
                    kl_weight = kl_weight_at(step, steps_per_epoch, config)
                    terms: LossTerms = step_loss(batch, kl_weight, noise)
                    if not replicas.distributed:
                        # A replica checks at the epoch's end, with the others (below): alone,
                        # it would leave them waiting in the all-reduce.
                        _check_finite(float(terms.loss.detach()), epoch, config)
                    optimiser.zero_grad(set_to_none=True)
                    loss = terms.loss if weight == 1.0 else terms.loss * weight
                    loss.backward()  # type: ignore[no-untyped-call]
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
                    if weight > 0:
                        sums[0] += float(terms.loss.detach()) * len(batch)
                        sums[1] += float(terms.reconstruction.detach().sum())
                        sums[2] += float(terms.kl.detach().sum())
            averaged.eval()
            val_sums: list[float] = []
            if val_x is not None:
                val_generator = torch.Generator(device=device).manual_seed(
                    config.seed + VALIDATION_SEED_OFFSET + replicas.rank
                )
                val_shard = replicas.shard(len(val_x))
                val_sums = _validation_sums(
                    averaged, objective, val_x, val_shard, 512, val_generator
                )
            totals = replicas.sum_across(sums + val_sums)
            seen = passes_per_epoch * len(train_x)
            train = {key: value / seen for key, value in zip(_TERMS, totals[:3], strict=True)}
            _check_finite(train["loss"], epoch, config)
            record = {
                "epoch": float(epoch),
                "train_loss": train["loss"],
                "train_recon": train["recon"],
                "train_kl": train["kl"],
                "kl_weight": kl_weight,
                "seconds": time.perf_counter() - started,
            }
            if val_x is not None:
                val = {
                    key: value / len(val_x) for key, value in zip(_TERMS, totals[3:], strict=True)
                }
                _check_finite(val["loss"], epoch, config)
                record.update(val_loss=val["loss"], val_recon=val["recon"], val_kl=val["kl"])
            result.history.append(record)
            if metrics_file is not None:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            bar.set_postfix(
                {key: f"{record[key]:.3f}" for key in ("train_loss", "val_loss") if key in record}
            )
            if val_x is None:
                continue  # nothing to stop early on: every epoch runs

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
    if val_x is None:
        result.best_epoch = len(result.history)
        result.stop_reason = f"ran the fixed {config.epochs} epochs (no validation split)"
        best_state = averaged.state_dict()
    model.load_state_dict(best_state)
    model.eval()
    replicas.check_in_step(model)
    result.seconds = time.perf_counter() - started
    # With replicas, the CPU time of all of them: what the run cost, to set against one process.
    cpu_seconds = replicas.sum_across([time.process_time() - cpu_started])
    result.cpu_seconds = cpu_seconds[0]
    return result
