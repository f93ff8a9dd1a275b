"""`make quality`: our default models and scores against what a user would try instead (issue 9).

One run, one seed, the same rows for everyone:

- **Split.** Per task, the normal items are split 60/40 into a train part and a test part
  (seeded); every anomaly goes to the test part. It is `training.data.split_dataset` with
  `test_fraction=0.4`, the very call `vae-train` makes with `--test-fraction 0.4`, so our model
  and the peers see the same rows. Ours carves its validation split (early stopping and
  threshold calibration) out of the train part; the peers fit on the whole train part.
- **Ours** is `run_training` with the default `TrainingConfig` (only the split fractions and
  the seed set), exported to a bundle under `bench/out/quality/`; test scores come from that
  bundle through onnxruntime, exactly what `/anomaly-score` answers.
- **Peers** are PyOD's `AutoEncoder`, `VAE`, `IForest` and `PCA` with their defaults, fitted
  on the train part (see `peer_inputs` for the two input fixes they need to produce scores at
  all), and the classic VAE recipe (`bench/reference_vae.py`) for likelihood, trained for the
  CPU time ours took.

Writes `bench/QUALITY.md`, `bench/quality.json` and `bench/quality.png`; exits 1 when a target
of the issue fails, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import roc_auc_score

from bench.machine import machine
from bench.reference_vae import BATCH_SIZE, HIDDEN, LATENT, LEARNING_RATE, train_reference
from bundle.arrays import Float64Array
from bundle.runtime import OnnxBundle
from training.config import TrainingConfig
from training.data import DataSplits, LoadedData, load_dataset, split_dataset
from training.pipeline import run_training

BENCH_DIR = Path(__file__).resolve().parent
DIGITS_HOLDOUTS = [f"digits:holdout={k}" for k in range(10)]
ALL_TASKS = ["breast-cancer", "digits", *DIGITS_HOLDOUTS]
TEST_FRACTION = 0.4  # the 60/40 split of normal items
LIKELIHOOD_TASK = "digits"

# Targets, as the issue states them.
AUROC_SLACK = 0.02  # no K more than this below the best peer at that K
ELBO_GAIN = 0.05  # our held-out -ELBO at least 5% below the reference's
FPR_TOLERANCE = 0.015  # |FPR at the threshold - what the percentile promised|
TRAINING_LIMIT_S = 120.0  # each default model's whole `vae-train` run

PEER_NAMES = ["PyOD AutoEncoder", "PyOD VAE", "PyOD IForest", "PyOD PCA"]


@dataclass(frozen=True)
class Options:
    tasks: list[str]
    seed: int
    budget_s: float | None
    threads: int
    out_dir: Path
    work_dir: Path
    command: str
    render_only: bool


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def benchmark_split(
    task: str, seed: int, validation_fraction: float
) -> tuple[LoadedData, DataSplits]:
    """The issue's split, made by the same call (same arguments) that `run_training` makes."""
    data = load_dataset(task)
    splits = split_dataset(
        data, seed=seed, validation_fraction=validation_fraction, test_fraction=TEST_FRACTION
    )
    return data, splits


def train_part(splits: DataSplits) -> npt.NDArray[np.float32]:
    """The 60%: our train and validation rows together, which is what the peers fit on."""
    return np.concatenate([splits.train, splits.validation])


def peer_inputs(data: LoadedData, splits: DataSplits) -> tuple[Float64Array, Float64Array]:
    """Flat (N, D) float64 rows for the peers: the train part and the test part.

    Two fixes any user would have to make, applied to every peer alike:
    - columns constant over the train part are dropped: PyOD standardises with std + 1e-8, so a
      pixel that was always 0 in training and lights up in a test item scores 1e16 in it, and
      PyOD's PCA gives such columns a zero eigenvalue, whose weight 1/0 makes every score inf;
    - tables are standardised with the train part's mean and std (the issue's "standardised
      features"; PyOD's deep models and PCA standardise again, which changes nothing).
    """
    rows = len(splits.train) + len(splits.validation)
    train = train_part(splits).reshape(rows, -1).astype(np.float64)
    test = splits.test.reshape(len(splits.test), -1).astype(np.float64)
    keep = train.std(axis=0) > 0
    train, test = train[:, keep], test[:, keep]
    if not data.is_image:
        mean, std = train.mean(axis=0), train.std(axis=0)
        train, test = (train - mean) / std, (test - mean) / std
    return train, test


def architecture_name(config: dict[str, Any]) -> str:
    """'mlp 256,128' or 'linear' (--hidden none), as the kept architecture is recorded."""
    hidden = str(config["hidden"])
    if config["arch"] == "conv":
        return "conv"
    return "linear" if hidden == "none" else f"mlp {hidden}"


def auroc(is_anomaly: npt.NDArray[np.bool_], scores: Float64Array) -> float:
    return float(roc_auc_score(is_anomaly, scores))


# ---------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------


def _numerical_rank(x: Float64Array) -> int:
    standardised = (x - x.mean(axis=0)) / x.std(axis=0)
    singular = np.linalg.svd(standardised, compute_uv=False)
    return int(np.sum(singular > singular[0] * max(x.shape) * np.finfo(np.float64).eps))


def peer_factories(seed: int, train: Float64Array) -> dict[str, Callable[[], Any]]:
    # Imported here: pyod is the `quality` extra only, and importing it costs seconds.
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.iforest import IForest
    from pyod.models.pca import PCA
    from pyod.models.vae import VAE

    # PyOD's PCA keeps every component by default and divides by each one's explained
    # variance; past the data's rank that variance is 0 and every score becomes inf (digits
    # with one class held out has such a direction). Keeping the components up to the rank is
    # the default in every other respect.
    rank = _numerical_rank(train)
    return {
        "PyOD AutoEncoder": lambda: AutoEncoder(random_state=seed, verbose=0),
        "PyOD VAE": lambda: VAE(random_state=seed, verbose=0),
        "PyOD IForest": lambda: IForest(random_state=seed),
        "PyOD PCA": lambda: PCA(n_components=rank, random_state=seed),
    }


def run_peers(
    train: Float64Array, test: Float64Array, is_anomaly: npt.NDArray[np.bool_], seed: int
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, factory in peer_factories(seed, train).items():
        torch.manual_seed(seed)
        started = time.perf_counter()
        detector = factory()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyOD's deprecation chatter, not our business
            detector.fit(train)
            scores = np.asarray(detector.decision_function(test), dtype=np.float64)
        entry: dict[str, Any] = {"fit_score_seconds": time.perf_counter() - started}
        if not np.all(np.isfinite(scores)):
            entry["problem"] = f"{int(np.sum(~np.isfinite(scores)))} non-finite test scores"
        elif is_anomaly.any():
            entry["auroc"] = auroc(is_anomaly, scores)
        results[name] = entry
    return results


# ---------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------


def _slug(task: str) -> str:
    return task.replace(":", "-").replace("=", "")


def run_ours(task: str, splits: DataSplits, options: Options) -> dict[str, Any]:
    """Train the default model on the task, then score the test rows through the bundle."""
    config = TrainingConfig(
        dataset=task, seed=options.seed, test_fraction=TEST_FRACTION, plots=False
    )
    out = options.work_dir / _slug(task) / "1"
    cpu_started, started = time.process_time(), time.perf_counter()
    outcome = run_training(config, out, overwrite=True, show_progress=False)
    run_seconds = time.perf_counter() - started
    run_cpu_seconds = time.process_time() - cpu_started
    manifest = outcome.manifest
    sizes = manifest.training["split_sizes"]
    if (sizes["train"], sizes["validation"], sizes["test_normal"]) != (
        len(splits.train),
        len(splits.validation),
        int(np.sum(~splits.test_is_anomaly)),
    ):
        raise RuntimeError(f"{task}: the trainer split the data differently from the benchmark")

    bundle = OnnxBundle(outcome.bundle_dir)
    anomaly = manifest.anomaly
    normal = ~splits.test_is_anomaly
    scores: dict[str, dict[str, Any]] = {}
    for score_type, calibration in anomaly.scores.items():
        test_scores = np.concatenate(
            [
                bundle.scores(splits.test[i : i + 1024], score_type)
                for i in range(0, len(splits.test), 1024)
            ]
        )
        entry: dict[str, Any] = {
            "threshold": calibration.threshold,
            "percentile": calibration.percentile,
            "n_validation": calibration.n_samples,
            "test_fpr": float(np.mean(test_scores[normal] > calibration.threshold)),
            "n_test_normal": int(np.sum(normal)),
        }
        if splits.test_is_anomaly.any():
            entry["auroc"] = auroc(splits.test_is_anomaly, test_scores)
        scores[score_type] = entry
    return {
        "bundle": str(outcome.bundle_dir),
        "default_score": anomaly.default_score,
        "scores": scores,
        "heldout": manifest.metrics["heldout"],
        "likelihood": manifest.likelihood.model_dump(),
        "config": {
            key: manifest.training["config"][key]
            for key in ("model", "arch", "hidden", "latent_dim", "likelihood", "beta")
        },
        "epochs_run": manifest.training["epochs_run"],
        "best_epoch": manifest.training["best_epoch"],
        "stop_reason": manifest.training["stop_reason"],
        "train_seconds": manifest.training["seconds"],
        "train_cpu_seconds": manifest.training["cpu_seconds"],
        # Every candidate of --hidden auto (training.architecture) counted: what it cost.
        "search_cpu_seconds": manifest.training.get(
            "search_cpu_seconds", manifest.training["cpu_seconds"]
        ),
        "candidates": [
            f"{record['candidate']} {record['best_val_loss']:.2f}"
            for record in manifest.training.get("architecture_search", [])
        ],
        # Small data: the kept model trained again on every row (training.refit), or None.
        "refit": manifest.training.get("refit"),
        "run_seconds": run_seconds,
        "run_cpu_seconds": run_cpu_seconds,
    }


def run_reference(splits: DataSplits, ours: dict[str, Any], options: Options) -> dict[str, Any]:
    """The classic recipe on the same train part, for the CPU time our training loop took."""
    preprocessing = OnnxBundle(Path(ours["bundle"])).preprocessing
    # The same model space as ours: the bundle's fitted min-max to [0, 1], applied to raw rows.
    x_train = preprocessing.apply(train_part(splits)).reshape(
        -1, int(np.prod(splits.train.shape[1:]))
    )
    x_test = preprocessing.apply(splits.test).reshape(len(splits.test), -1)
    budget = options.budget_s if options.budget_s is not None else ours["search_cpu_seconds"]
    run = train_reference(
        torch.from_numpy(x_train),
        torch.from_numpy(x_test[~splits.test_is_anomaly]),
        budget_cpu_s=budget,
        iwae_samples=int(ours["heldout"]["iwae_samples"]),
        seed=options.seed,
    )
    return {
        "recipe": f"MLP {x_train.shape[1]}-{HIDDEN}-{LATENT}, Bernoulli, Adam {LEARNING_RATE:g}, "
        f"batch {BATCH_SIZE}, no early stopping",
        "heldout": run.heldout,
        "budget_cpu_seconds": budget,
        "cpu_seconds": run.cpu_seconds,
        "wall_seconds": run.wall_seconds,
        "epochs": run.epochs,
        "steps": run.steps,
        "n_train": len(x_train),
    }


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    ok: bool


def ours_auroc(task_result: dict[str, Any]) -> float | None:
    ours = task_result["ours"]
    value = ours["scores"][ours["default_score"]].get("auroc")
    return None if value is None else float(value)


def peer_auroc(task_result: dict[str, Any], peer: str) -> float | None:
    value = task_result["peers"][peer].get("auroc")
    return None if value is None else float(value)


def best_peer(task_result: dict[str, Any]) -> tuple[str, float] | None:
    known = [(p, peer_auroc(task_result, p)) for p in PEER_NAMES]
    found = [(p, v) for p, v in known if v is not None]
    return max(found, key=lambda item: item[1]) if found else None


def digits_means(results: dict[str, Any]) -> dict[str, float] | None:
    """Mean AUROC over the ten digits holdouts for ours and each peer; None unless all ran."""
    tasks = results["tasks"]
    if not all(t in tasks for t in DIGITS_HOLDOUTS):
        return None
    means: dict[str, float] = {}
    for who in ["ours", *PEER_NAMES]:
        values = [
            ours_auroc(tasks[t]) if who == "ours" else peer_auroc(tasks[t], who)
            for t in DIGITS_HOLDOUTS
        ]
        means[who] = float(np.mean([v for v in values if v is not None]))
        if any(v is None for v in values):
            means[who] = math.nan
    return means


def checks(results: dict[str, Any]) -> list[Check]:
    tasks = results["tasks"]
    found: list[Check] = []
    if "breast-cancer" in tasks:
        ours = ours_auroc(tasks["breast-cancer"])
        best = best_peer(tasks["breast-cancer"])
        if ours is not None and best is not None:
            found.append(
                Check(
                    "breast-cancer AUROC: ours > best peer",
                    f"{ours:.4f} vs {best[1]:.4f} ({best[0]})",
                    ours > best[1],
                )
            )
    means = digits_means(results)
    if means is not None:
        peer = max(PEER_NAMES, key=lambda p: means[p])
        found.append(
            Check(
                "digits:holdout=K mean AUROC: ours > best peer's mean",
                f"{means['ours']:.4f} vs {means[peer]:.4f} ({peer})",
                means["ours"] > means[peer],
            )
        )
    holdouts = [t for t in DIGITS_HOLDOUTS if t in tasks]
    if holdouts:
        gaps = []
        for task in holdouts:
            ours, best = ours_auroc(tasks[task]), best_peer(tasks[task])
            if ours is not None and best is not None:
                gaps.append((ours - best[1], task))
        worst = min(gaps)
        found.append(
            Check(
                f"no digits:holdout=K more than {AUROC_SLACK} below the best peer at that K",
                f"worst: {worst[1]} at {worst[0]:+.4f}",
                worst[0] >= -AUROC_SLACK,
            )
        )
    likelihood = results.get("likelihood")
    if likelihood is not None:
        ours_elbo = likelihood["ours"]["neg_elbo"]
        ref_elbo = likelihood["reference"]["heldout"]["neg_elbo"]
        found.append(
            Check(
                f"digits held-out -ELBO at least {ELBO_GAIN:.0%} below the reference recipe's",
                f"{ours_elbo:.2f} vs {ref_elbo:.2f} nats ({ours_elbo / ref_elbo - 1:+.1%})",
                ours_elbo <= (1 - ELBO_GAIN) * ref_elbo,
            )
        )
    for task, result in tasks.items():
        ours = result["ours"]
        score = ours["scores"][ours["default_score"]]
        promised = 1 - score["percentile"] / 100
        found.append(
            Check(
                f"{task}: FPR at the threshold within {FPR_TOLERANCE * 100:g} pp of {promised:.0%}",
                f"{score['test_fpr']:.2%} of {score['n_test_normal']} held-out normal items",
                abs(score["test_fpr"] - promised) <= FPR_TOLERANCE + 1e-12,
            )
        )
    for task, result in tasks.items():
        # CPU seconds of the whole run on one thread: what it takes on an idle core of this
        # machine. The wall clock here also counts whatever else the shared machine ran.
        cpu, wall = result["ours"]["run_cpu_seconds"], result["ours"]["run_seconds"]
        found.append(
            Check(
                f"{task}: default model trains in under {TRAINING_LIMIT_S:.0f} s",
                f"{cpu:.1f} CPU s ({wall:.1f} s wall)",
                cpu < TRAINING_LIMIT_S,
            )
        )
    return found


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _refit_note(refit: dict[str, Any] | None) -> str:
    if not refit:
        return ""
    return (
        f"; then refit on all {refit['rows']} rows for {refit['epochs']} epochs "
        f"({refit['cpu_seconds']:.1f} CPU s)"
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


WHY_THESE_DEFAULTS = """\
## Why these defaults

Chosen before the run above, on development data only, with `bench/quality_select.py` (the
project's own trainer and score formulas, one torch thread, seed 0 unless said):

- **tables**: scikit-learn's `wine` and `iris` (not benchmark data), each class held out in
  turn as the anomaly (`iris/1`, the species between the other two, left out: every candidate
  scored it near 0.5), seeds 0 and 1, so 10 runs; and `bc`, the *train part* of
  `breast-cancer` split again, where only a held-out likelihood can be measured;
- **images**: the train part of `digits:holdout=K`, with a second digit J held out inside it
  (`digits/K,J` for 1,7 3,5 8,1 0,6 5,9);
- **likelihood**: the train part of `digits` split again, ours against the reference recipe
  trained for the CPU time ours took.

No test row of this benchmark was used to choose anything. The benchmark was then run with the
chosen defaults; its figures above are what they gave.

**Tables** (`--sets tables --seeds 0,1`). Mean AUROC over the 10 runs; `bc`: IWAE -log p(x)
(K = 100, nats) on the inner held-out rows, seeds 0 and 1 (both likelihoods are densities on
the same standardised space, so the numbers compare):

| candidate | AUROC neg_elbo | AUROC recon_mse | `bc` IWAE | train CPU s |
|---|--:|--:|--:|--:|
| before: Gaussian, 1-pass epochs, last weights | 0.951 | 0.936 | 29.60, 26.88 | 1.0 |
| **now: Laplace, 16-step epochs, averaging** | **0.970** | 0.956 | 28.18, 22.38 | 6.8 |
| now, but Gaussian | 0.964 | 0.960 | 27.60, 24.14 | 5.2 |
| now, but one pass per epoch | 0.957 | 0.936 | 28.21, 22.36 | 2.1 |
| now, but no weight averaging | 0.968 | 0.956 | 28.09, 22.77 | 5.7 |

**Table architecture** (`--sets tables --seeds 0,1 --candidates default,mlp-only,linear-only`,
measured after the run above had shown the tables' defaults wanting on `bc`): the MLP
256-128 models `bc`'s held-out rows *worse than a straight line*. Reference figures on the same
inner split (scikit-learn, nats): a full-covariance Gaussian 16.53 and 8.04, factor analysis
with 8 factors 20.57 and 12.48, probabilistic PCA with 8 components 24.19 and 20.46, against
28.18 and 22.38 for our VAE. Per-feature decoder scales (28.26), a 16- or 30-dimensional code
(26.57, 26.96), dropout 0.2 (27.72), weight decay 0.1 (28.41) and a linear path beside the MLP
(26.40) did not close it; a linear encoder and decoder did, but lost AUROC on wine and iris:

| candidate | AUROC neg_elbo | AUROC recon_mse | `bc` IWAE | train CPU s |
|---|--:|--:|--:|--:|
| MLP 256-128 only (before) | **0.970** | 0.956 | 28.18, 22.38 | 4.0 |
| linear only (`--hidden none`, lr 3e-3) | 0.958 | 0.927 | 20.94, 15.67 | 3.0 |
| **now: `--hidden auto`, the lower validation loss** | 0.968 | 0.945 | **20.94, 15.67** | 8.3 |

The search kept the linear model on `bc` (validation loss 25.9 vs 31.5 and 22.2 vs 28.3), on
`iris/0` seed 0 and on `wine/1` and `wine/2` seed 1 (0.15-0.67 nats apart there), the MLP
on the other six. Its AUROC cost on wine and iris (-0.002, from those two wine runs) is within
their noise; the 7-nat gain on the one development table shaped like the benchmark's is not. At
1e-3 the linear model ran into the 1000-epoch cap on `bc` (24 CPU s) for 20.67 nats; at 3e-3
it reached 20.94 in 11 s, so the linear candidate trains at 3x `--lr`.

**A code per column for the linear candidate** (`--sets tables --seeds 0,1`, measured after
the table above): an 8-dimensional linear model calls everything outside its 8 directions
isotropic noise, which is why it still trailed the full-covariance Gaussian on `bc` (20.94 vs
16.53 nats). With `--latent-dim` left out, the linear candidate now gets one code dimension
per column (up to 64); the KL term leaves the directions the rows do not need at the prior:

| candidate | AUROC neg_elbo | AUROC recon_mse | `bc` IWAE | train CPU s |
|---|--:|--:|--:|--:|
| `--hidden auto`, linear with an 8-dim code (before) | **0.968** | 0.945 | 20.94, 15.67 | 8.3 |
| **now: `--hidden auto`, linear with a code per column** | 0.967 | 0.948 | **16.62, 11.97** | 6.3 |
| the same with the linear model at 10x `--lr` | 0.965 | 0.941 | 16.49, 10.78 | 5.1 |
| linear only, 30 dimensions everywhere (lr 3e-3) | 0.957 | 0.925 | 16.62, 11.97 | - |
| linear only, 30 dimensions, Gaussian likelihood | - | - | 19.70, 13.00 | - |

(-: not measured; the Gaussian row was run on `bc` alone.)

The search now keeps the linear model on `bc`, `wine/1` and `iris/0` (both seeds), the MLP on
`wine/0`, `wine/2` and `iris/2`. Anomaly ranking on wine and iris is unchanged within its
noise (-0.001), `bc`'s held-out benign rows are modelled 3.7-4.3 nats better, and the search
got cheaper (the full-rank model converges sooner). 10x the step size fitted `bc` slightly
better but ranked wine and iris worse, so the linear candidate stays at 3x.

**The refit on every row** (`--sets tables --seeds 0,1`, against `--overrides
'{"refit":"off"}'`, measured after the table above): where the threshold is cross-fitted, the
validation split's only job is to say when to stop, and the model it stopped was a quarter
short of rows (`breast-cancer`: 160 of 214). With `--refit auto` the kept candidate trains
again, same seed, on train + validation for the epochs early stopping chose:

| candidate | AUROC neg_elbo | AUROC recon_mse | `bc` IWAE | train CPU s |
|---|--:|--:|--:|--:|
| early-stopped model (before) | 0.967 | 0.948 | 16.62, 11.97 | 5.9 |
| **now: refit on train + validation** | **0.969** | **0.957** | **16.42, 11.44** | 8.6 |

The neg_elbo AUROC rose in 6 of the 10 wine and iris runs and fell in 2 (`wine/2` seed 0, `iris/2`
seed 1); `bc`'s held-out benign rows are modelled 0.2 and 0.5 nats better. On iris, with 60-75
rows to train on, held-out IWAE was 0.1-0.2 nats worse in all four runs: the same epoch count
on a third more rows is not always the best one. Each cross-fitting fold model is trained the
way the bundle's model now is, on all its rows for that epoch count, so the threshold still
comes from models trained like the one it serves, and a fold costs one fixed-length training
instead of an early-stopped one (`breast-cancer`, seed 0: 61.5 CPU s for the whole run,
57.3 before; fold models that early-stopped and then refitted took it to 112.7).

**Images** (`--sets images --candidates default,before-issue-9`), AUROC per inner task and
mean, held-out -ELBO (mean, nats):

| candidate | 1,7 | 3,5 | 8,1 | 0,6 | 5,9 | mean | mean neg_elbo | -ELBO | CPU s |
|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|
| before | 0.979 | 0.952 | 0.979 | 0.991 | 0.824 | 0.945 | 0.890 | 24.20 | 9.7 |
| **now** | 0.990 | 0.958 | 0.993 | 0.991 | 0.914 | **0.969** | 0.931 | 23.69 | 25.9 |

(AUROC of recon_mse per inner task and its mean; then the mean AUROC of neg_elbo.)

**Likelihood** (`--sets likelihood`), ours / reference -ELBO at equal CPU time: before this
issue 24.48 / 24.45 (+0.1%, 11 CPU s); now 23.93 / 24.06 (-0.5%, 46 CPU s); with lr 3e-3,
batch 128 and a 16-dimensional code 24.21 / 24.09 (+0.5%).

What each default is and why:

- **Epochs of at least 16 optimiser steps** (`--min-steps-per-epoch 16`, new). A 200-row
  table makes 2-3 steps a pass; with warm-up and patience counted in passes, training stopped
  after ~70 steps on `wine`, and the 200-epoch cap ended `breast-cancer` after 400-600 steps
  while it still improved. The biggest single gain on tables (0.957 -> 0.970); on digits an
  epoch becomes 2 passes, and in ad-hoc runs with other settings it lifted the mean image
  AUROC from 0.952 to 0.969.
- **Weight averaging** (`--weight-averaging 0.999`, new): validation, early stopping and the
  bundle use the running mean of the weights (Polyak averaging), not Adam's last step:
  +0.002 AUROC on tables, and 0.04-0.4 nats lower held-out -ELBO on digits in ad-hoc runs.
- **Laplace likelihood for tables** (`--likelihood auto`: was Gaussian): the same learned
  global scale, heavier tails, so a residual far out in one column costs linearly, not
  quadratically: mean AUROC 0.964 -> 0.970, `wine/2` (seed 0) 0.897 -> 0.943 with its
  held-out IWAE 18.38 -> 16.65 nats, `bc` IWAE lower on seed 1, higher on seed 0.
  Images keep the Bernoulli likelihood (values in [0, 1]), which is also what the reference
  uses, so the -ELBO figures compare.
- **Score per data kind** (`--score auto`): **recon_mse for images**: the likelihood-based
  score ranks a held-out digit with few lit pixels as *more* normal than the digits learned
  (inner `8,1`: neg_elbo 0.844 vs recon_mse 0.993; benchmark `holdout=1`: 0.715 vs 0.955),
  the failure Nalisnick et al. (2019) describe. **neg_elbo for tables**: 0.970 vs 0.956 for
  recon_mse; it adds how far the code lies from the prior, so a record that is extreme along
  a direction the model reconstructs well still stands out. An importance-weighted -log p(x)
  score (K = 64) was measured beside it in the first runs and tied with neg_elbo (within
  0.001), so no third score type was added to the bundle contract. Ensembles over seeds did
  not pay where they were measured (the -ELBO section below).
- **Threshold at the Weibull plotting position** (`training/calibrate.py`): a new normal item
  exceeds the k-th smallest of n validation scores with probability (n + 1 - k) / (n + 1), so
  the 99th percentile is taken at rank 0.99 (n + 1). numpy's default (rank 0.99 (n - 1) + 1)
  flags 1.4% of new normal items on 243 validation items, 2.8% on 54 (simulated).
- **Cross-fitted calibration for small data** (`--calibration auto`, `training/crossfit.py`):
  where fewer than 2 validation scores are expected above the percentile (under 200 items at
  99), the threshold comes from every train and validation item, each scored by one of 5 fold
  models trained the same way without it. `breast-cancer` has 54 validation items: its
  threshold was their largest score, beaten by new benign records more often than promised
  (2.8% of the 143 held out in the first run, against 1%); it is now a percentile of 214
  honest scores. Five more trainings cost about 30 CPU seconds there; the digits tasks
  (242-270 validation items) keep their validation split and their cost. With the refit
  (next) a fold model trains on all its rows for the final model's epoch count, one number
  chosen on the validation rows; no fold model trains on a row it scores.
- **Refit on every row where the threshold is cross-fitted** (`--refit auto`, new,
  `training/refit.py`): the kept model trains again on train + validation for the epochs early
  stopping chose, and each fold model trains on its rows for as many (table above). `model.json`
  records it under `training.refit`. Not on images: their threshold is a percentile of the
  validation split's scores, which a refit would train on (on the likelihood development split a
  refit of digits gave 23.85 vs 23.93 nats, seed 0; 23.71 vs 23.79, seed 1).
- **`--hidden auto` for tables** (`training/architecture.py`): a VAE on a table trains two
  candidates from the same seed, the MLP 256-128 with an 8-dimensional code and a linear
  encoder and decoder (no hidden layer, at 3x `--lr`, one code dimension per column up to 64
  unless `--latent-dim` is given), and keeps the lower validation loss; `model.json` lists
  both under `training.architecture_search`, and cross-fitted calibration trains its fold
  models with the kept one. It doubles a table's training loop, a few CPU seconds; images,
  conv nets and plain autoencoders train the one MLP, so the digits tasks cost what they did.
- **Kept as they were**, because no alternative measured better on the development sets: the
  MLP 256-128 with an 8-dimensional code (tried: 512-256 with 16 dimensions, one layer of 400
  with 20, a conv net), Adam at 1e-3 with batches of 64 (tried: 3e-3 and 128), beta 1 with a
  10-epoch KL warm-up, no step-size decay (halving it on plateaus stopped training earlier at
  a worse -ELBO), a global rather than per-feature decoder scale (per-feature: 0.965 vs 0.964
  on tables at the time, not worth a contract change).

## What did not reach its target, and why

- **-ELBO 5% below the reference**: every variant measured landed within +-1% of the classic
  recipe at the same CPU time on the development split (the list above), and the benchmark
  shows -0.1% to -0.5% over its runs. On 1,078 8x8 images the classic recipe is already close
  to what an MLP VAE with one Gaussian latent layer and a Bernoulli decoder reaches per CPU
  second. A learned prior was then prototyped on the development split (KL by Monte Carlo for
  every variant, so they compare): N(0, I) 24.23 nats; a 10-component Gaussian mixture 23.87;
  a VampPrior with 50, 100 (16-dimensional code) or 200 pseudo-inputs 23.79, 23.75, 23.80;
  against about 24.06 for the reference there: 1-1.5% better, a third of the target, for a
  bundle contract change (`/sample` would draw from the mixture, `neg_elbo` would need a Monte
  Carlo KL), so it was not adopted. Of the -ELBO, 13.66 nats a digit is the Bernoulli's floor
  on grey levels (the entropy of each pixel's value, which no model can go below); 5% of the
  total is 12% of what is left above it.
- **breast-cancer AUROC**: 0.961 against 0.963-0.965 for all four PyOD peers, which agree with
  each other. The VAE configurations run on this split before scored 0.934-0.950 (the defaults
  before this issue: 0.950 neg_elbo, 0.945 recon_mse; the MLP 0.949; the linear model with an
  8-dimensional code 0.949). The full-rank linear model, chosen because it models the
  development split's held-out benign rows 4 nats better than the 8-dimensional one (above),
  closed two thirds of the gap: -0.006 where it was -0.016. The refit on every row then modelled
  this split's held-out benign rows 0.5 nats better (IWAE 13.21 -> 12.73) and moved its AUROC by
  +0.001 (0.9596 -> 0.9608); over the five splits below the mean is 0.955 with it and 0.955
  without: on this data more rows buy likelihood, not ranking. Nothing was tuned on this split's
  test rows to close the rest. A smaller code, which PyOD's VAE uses, did not win on the
  development tables (mean AUROC of neg_elbo over the 10 runs: 8 dimensions 0.970, 4 dimensions
  0.970, 2 dimensions 0.967).
- **Other splits of breast-cancer** (`--tasks breast-cancer --seed S`): the gap moves with the
  split. AUROC ours / best peer with the defaults above (full-rank linear model and refit): seed
  1 0.967 / 0.967 (ours ahead by 0.0006), seed 2 0.956 / 0.962, seed 3 0.959 / 0.965, seed 4
  0.932 / 0.955; without the refit 0.969, 0.949, 0.961, 0.934; before the full-rank model (the
  MLP, or the 8-dimensional linear model where it was kept): 0.971, 0.942, 0.953, 0.936. The
  cross-fitted threshold's false alarms: 0.00%, 0.00%, 0.70% and **2.80%** of 143 held-out
  benign records (seed 4 was 4.90% with the MLP, 2.80% with the 8-dimensional linear model and
  with the full-rank one, before and after the refit). Seed 4 shows the limit of calibrating a
  1% tail on 214 rows: a split that puts the most extreme benign records in the test part is
  beyond what those rows can show.
- **-ELBO, also tried this session** on the development split (ours / reference at equal CPU
  time there 23.93 / 24.06 nats): dropout 0.1 and 0.2 (24.19, 24.27: the model does not
  overfit much, train 23.1 vs validation 23.8), weight decay 1e-4 (23.91), MLP 512-256 with a
  16-dimensional code and weight decay (23.85). The reference itself levels off: 24.21 after
  15 CPU s, 24.09 after 33, 24.02 after 66 and 24.14 after 110 (it overfits without early
  stopping), so a longer budget does not open a 5% gap either.
- **Ensembles over seeds**, measured on the same development split: three default VAEs
  (seeds 0, 100, 200) as one mixture model, the member a discrete latent variable whose exact
  posterior makes the mixture's ELBO the log-mean-exp of the members' ELBOs: 23.99 nats
  against 24.05 for one member (-0.2%), for three times the training, the serving work and a
  bundle contract change, so they were not adopted. One model's -ELBO on its own training,
  validation and held-out rows is 22.90, 23.60 and 23.93: the gap to the target is what this
  model class (one Gaussian code, a factorised Bernoulli decoder) reaches even on the rows it
  trained on, not overfitting that averaging could remove.
- **Decoders that see earlier pixels** (`bench/decoder_experiment.py`, measured after all of
  the above, development data only): the factorised decoder is the one thing every variant
  above kept. Adding to our MLP decoder's logits a term in the pixels already generated (raster
  order, p(x | z) = prod_i p(x_i | x_<i, z); the -ELBO stays exact by teacher forcing) reaches
  the target, and costs what the product is for. `-ELBO vs reference` is on the likelihood
  split, seeds 0 / 1, against the reference recipe for the CPU time each took; active units
  are code dimensions whose posterior mean varies over items by more than 0.01 (Burda et al.
  2016); AUROC is the mean over the five `digits/K,J` tasks, seed 0, `recon_mse` being the
  one-step-ahead prediction error at z = mu (for the factorised decoder, the bundles' score):

  | decoder | -ELBO vs reference | KL, nats | active units of 8 | AUROC recon_mse | AUROC neg_elbo |
  |---|--:|--:|--:|--:|--:|
  | factorised (ours) | -0.1% / -0.5% | 3.71 / 3.57 | 4 / 4 | **0.969** | **0.931** |
  | + pixel to the left and above, linear | -6.2% / -6.8% | 2.65 / 2.66 | 4 / 4 | 0.959 | 0.826 |
  | + five earlier neighbours, linear | -8.5% / -8.5% | 1.86 / 1.86 | 3 / 4 | 0.943 | 0.772 |
  | + MADE over every earlier pixel | **-16.8% / -16.6%** | 0.00 / 0.00 | 0 / 0 | 0.954 | 0.867 |

  The more the decoder predicts a pixel from its neighbours, the less the code carries (MADE
  ignores it altogether: posterior collapse, an `/encode` that says nothing) and the worse a
  held-out digit stands out: `neg_elbo` ranks `digits/8,1`'s held-out ones at 0.50 with the
  two-neighbour decoder (0.84 factorised), the likelihood failure described above made worse,
  and `recon_mse` loses 0.01-0.03. Such a decoder is also a bundle contract change (its graph
  would take the pixels as well as z; `/sample` and `/decode` would call it once per pixel: 64
  calls on 8x8, 784 on 28x28), which DESIGN.md makes through an issue. So the 5% target and the
  anomaly targets pull apart on this data: every decoder that clears the first lowers the image
  AUROC that `/anomaly-score` sells, the mildest (left and above, -6.2% / -6.8%) by 0.010 on
  `recon_mse` and 0.105 on `neg_elbo`, so none was adopted.
"""


def markdown(results: dict[str, Any]) -> str:
    tasks = results["tasks"]
    found = checks(results)
    lines = [
        "# Model quality: ours against what a user would try instead",
        "",
        "Generated by `bench/quality.py` (`make quality`); overwritten on every run. Bundles "
        "and logs: `bench/out/quality/` (not committed). The plot is `bench/quality.png`; the "
        "raw figures are `bench/quality.json`.",
        "",
        f"- date: {results['date']}",
        f"- command: `{results['command']}` (total {results['total_seconds']:.0f} s wall)",
        f"- machine: {results['machine']['nproc']} cores (`nproc`), "
        f"{results['machine']['cpu_model']}, Linux {results['machine']['kernel']}, Python "
        f"{results['machine']['python']}; shared with other work while it ran (load average "
        f"at the start {results['machine']['load_average']})",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in results["machine"]["packages"].items()),
        f"- seed {results['seed']}; torch threads: {results['threads']} for every torch model "
        "(ours, the reference and PyOD's), so a CPU second is a second of one core",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {c.target} | {c.measured} | {'pass' if c.ok else '**FAIL**'} |" for c in found]
    lines += [
        "",
        "## AUROC per task",
        "",
        "Test part: 40% of the normal items and every anomaly. Ours is the default model with "
        "its default score, scored through the exported bundle (what `/anomaly-score` "
        "answers); the other calibrated scores of the same bundle are listed for reference.",
        "",
        "| task | ours (default score) | "
        + " | ".join(PEER_NAMES)
        + " | best peer | ours - best |",
        "|---|---|" + "--:|" * len(PEER_NAMES) + "--:|--:|",
    ]
    for task, result in tasks.items():
        ours = ours_auroc(result)
        if ours is None:
            continue
        best = best_peer(result)
        peers = [_fmt(peer_auroc(result, p)) for p in PEER_NAMES]
        lines.append(
            f"| {task} | **{ours:.3f}** ({result['ours']['default_score']}) | "
            + " | ".join(peers)
            + f" | {_fmt(best[1] if best else None)} | "
            + (f"{ours - best[1]:+.3f}" if best else "n/a")
            + " |"
        )
    means = digits_means(results)
    if means is not None:
        best_mean = max(PEER_NAMES, key=lambda p: means[p])
        lines.append(
            f"| **mean over digits:holdout=0..9** | **{means['ours']:.3f}** | "
            + " | ".join(_fmt(means[p]) for p in PEER_NAMES)
            + f" | {means[best_mean]:.3f} | {means['ours'] - means[best_mean]:+.3f} |"
        )
    score_types = sorted({s for r in tasks.values() for s in r["ours"]["scores"]})
    lines += [
        "",
        "Every calibrated score of our bundles (AUROC on the same test part):",
        "",
        "| task | " + " | ".join(score_types) + " |",
        "|---|" + "--:|" * len(score_types),
    ]
    for task, result in tasks.items():
        row = [_fmt(result["ours"]["scores"].get(s, {}).get("auroc")) for s in score_types]
        if any(v != "n/a" for v in row):
            lines.append(f"| {task} | " + " | ".join(row) + " |")

    likelihood = results.get("likelihood")
    if likelihood is not None:
        ours_l, ref = likelihood["ours"], likelihood["reference"]
        lines += [
            "",
            "## Likelihood on digits: ours against the reference recipe",
            "",
            f"Held-out items: the {int(ours_l['n_items'])} test items of `digits` (no class held "
            f"out), in [0, 1] as both models see them; nats per item. -ELBO with one posterior "
            f"sample per item, IWAE with K = {int(ours_l['iwae_samples'])}, both by "
            "`training.evaluate.heldout_likelihood_metrics` with its fixed seed. The reference "
            f"is {ref['recipe']}, trained on the whole train part ({ref['n_train']} items) for "
            f"the CPU time our training loop took ({ref['budget_cpu_seconds']:.1f} s; see "
            "below).",
            "",
            "| model | -ELBO | IWAE -log p(x) | recon NLL | KL | train CPU s | train wall s "
            "| epochs |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
            f"| ours ({likelihood['ours_config']}) | **{ours_l['neg_elbo']:.2f}** | "
            f"{ours_l['iwae_nll']:.2f} | {ours_l['recon_nll']:.2f} | {ours_l['kl']:.2f} | "
            f"{likelihood['ours_cpu_seconds']:.1f} | {likelihood['ours_wall_seconds']:.1f} | "
            f"{likelihood['ours_epochs']} |",
            f"| reference | {ref['heldout']['neg_elbo']:.2f} | {ref['heldout']['iwae_nll']:.2f} | "
            f"{ref['heldout']['recon_nll']:.2f} | {ref['heldout']['kl']:.2f} | "
            f"{ref['cpu_seconds']:.1f} | {ref['wall_seconds']:.1f} | {ref['epochs']:.0f} |",
            "",
            f"Ours / reference: -ELBO {ours_l['neg_elbo'] / ref['heldout']['neg_elbo'] - 1:+.1%}, "
            f"IWAE {ours_l['iwae_nll'] / ref['heldout']['iwae_nll'] - 1:+.1%}.",
            "",
            "**The budget is fair by construction**: both models train in the same process, one "
            "after the other, on one torch thread, and the budget is counted in CPU seconds of "
            "that process (`time.process_time()`), measured the same way for both: ours over its "
            "whole training loop (validation passes included), the reference over its steps, "
            "checked after each one. On an idle core a CPU second is a wall-clock second; on "
            "this shared machine the wall clock also counts other people's work, which would "
            "hand the budget to whichever model ran while the machine was quieter.",
        ]

    lines += [
        "",
        "## Calibration: false positives at the bundle's threshold",
        "",
        "The threshold is fitted on the validation split (carved from the train part), or on "
        "cross-fitted scores of the whole train part where the validation split is too small "
        "(`--calibration auto`); the false-positive rate is measured on the held-out normal "
        "items of the test part.",
        "",
        "| task | score | percentile | promised FPR | held-out FPR | held-out normal items | "
        "calibration items |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for task, result in tasks.items():
        ours = result["ours"]
        score = ours["scores"][ours["default_score"]]
        lines.append(
            f"| {task} | {ours['default_score']} | {score['percentile']:g} | "
            f"{1 - score['percentile'] / 100:.2%} | {score['test_fpr']:.2%} | "
            f"{score['n_test_normal']} | {score['n_validation']} |"
        )
    lines += [
        "",
        "## Training time of the default models",
        "",
        "`run` is the whole `run_training` call (data, training, evaluation, ONNX export and "
        "parity check, calibration, reload check), what a `vae-train` user waits for; `loop` "
        "is the training loops alone, of every candidate `--hidden auto` trained (validation "
        "loss of each in the last column; the kept one's epochs are shown). The target is "
        "checked on the run's CPU seconds with one torch thread, which is its duration on an "
        "idle core of this machine; the wall clock "
        "beside it also counts the other work the shared machine ran meanwhile.",
        "",
        "| task | model | run CPU s | run wall s | loop CPU s | loop wall s | epochs (best) "
        "| stop | candidates (validation loss) |",
        "|---|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for task, result in tasks.items():
        ours = result["ours"]
        config = ours["config"]
        lines.append(
            f"| {task} | {config['model']} {architecture_name(config)} "
            f"d={config['latent_dim']}, {ours['likelihood']['kind']} | "
            f"{ours['run_cpu_seconds']:.1f} | {ours['run_seconds']:.1f} | "
            f"{ours.get('search_cpu_seconds', ours['train_cpu_seconds']):.1f} | "
            f"{ours['train_seconds']:.1f} | "
            f"{ours['epochs_run']} ({ours['best_epoch']}) | {ours['stop_reason']}"
            f"{_refit_note(ours.get('refit'))} | "
            f"{', '.join(ours.get('candidates', [])) or '-'} |"
        )
    lines += [
        "",
        "## How the comparison is made",
        "",
        f"- **Split**: per task and seed, `training.data.split_dataset(data, seed, "
        f"validation_fraction={results['validation_fraction']}, test_fraction={TEST_FRACTION})`"
        ": 60% of the normal items form the train part, 40% plus every anomaly the test part. "
        "`vae-train` makes the same call (the benchmark checks the sizes match): ours "
        "early-stops on its validation split, carved from the train part; where the "
        "threshold is cross-fitted (`breast-cancer`) it then trains again on the whole train "
        "part (`--refit auto`), on digits it keeps the train part minus the validation split, "
        "whose scores set the threshold. Every peer fits on the whole train part. Nobody sees "
        "a test row before it is scored.",
        "- **Tasks**: `breast-cancer` learns benign records (30 features, standardised) and "
        "scores malignant ones; `digits:holdout=K` learns the other nine digits and scores K; "
        "`digits` (no anomalies) carries the likelihood comparison and a calibration check.",
        "- **Peers' inputs**: the raw features of the train part, with columns constant over "
        "it dropped (otherwise PyOD's standardisation divides by 1e-8 and its PCA by a zero "
        "eigenvalue), tables standardised with the train part's statistics. PyOD's defaults "
        "otherwise, `random_state` = the seed; PyOD's `PCA` keeps the components up to the "
        "data's rank, since past it its default weights are 1/0 and every score is inf.",
        "- **Ours** gets the raw rows: the bundle applies its own fitted preprocessing.",
        "",
        "## Commands",
        "",
        "```sh",
        "make quality                                        # installs .[quality], runs all tasks",
        ".venv/bin/python -m bench.quality                   # the same, without the install",
        ".venv/bin/python -m bench.quality --tasks breast-cancer,digits:holdout=1 --seed 1",
        ".venv/bin/python -m bench.quality --budget-s 60     # give the reference 60 CPU s",
        ".venv/bin/python -m bench.quality --render-only     # rewrite this page from the json",
        "# how the defaults were chosen (development data only; below):",
        ".venv/bin/python -m bench.quality_select --sets tables --seeds 0,1 \\",
        "    --candidates default,before-issue-9-tables,gaussian,one-step-epochs,no-averaging",
        ".venv/bin/python -m bench.quality_select --sets images "
        "--candidates default,before-issue-9",
        ".venv/bin/python -m bench.quality_select --sets likelihood \\",
        "    --candidates default,before-issue-9,lr3e-3-batch128-d16",
        "# decoders that see earlier pixels (what did not reach its target, below):",
        ".venv/bin/python -m bench.decoder_experiment --seeds 0      # likelihood and images",
        ".venv/bin/python -m bench.decoder_experiment --sets likelihood --seeds 1",
        "```",
        "",
        WHY_THESE_DEFAULTS,
    ]
    return "\n".join(lines).rstrip() + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, r in results["tasks"].items() if ours_auroc(r) is not None]
    figure, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [3, 1.6, 1]})
    left, middle, right = axes
    width = 0.8 / (1 + len(PEER_NAMES))
    positions = np.arange(len(tasks))
    series = [("ours", [ours_auroc(results["tasks"][t]) for t in tasks])]
    series += [(p, [peer_auroc(results["tasks"][t], p) for t in tasks]) for p in PEER_NAMES]
    for index, (name, values) in enumerate(series):
        left.bar(
            positions + (index - len(PEER_NAMES) / 2) * width,
            [v if v is not None else 0.0 for v in values],
            width,
            label=name,
            color="black" if name == "ours" else None,
        )
    left.set_xticks(
        positions, [t.replace("digits:holdout=", "holdout ") for t in tasks], rotation=30
    )
    left.set_ylim(0.2, 1.0)
    left.set_ylabel("AUROC (test part)")
    left.set_title("Anomaly detection: ours (default score) vs peers")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5)

    calibrated = list(results["tasks"])
    fprs = []
    for task in calibrated:
        ours = results["tasks"][task]["ours"]
        fprs.append(100 * ours["scores"][ours["default_score"]]["test_fpr"])
    first = next(iter(results["tasks"].values()))["ours"]
    promised = 100 - first["scores"][first["default_score"]]["percentile"]
    middle.axhspan(promised - 100 * FPR_TOLERANCE, promised + 100 * FPR_TOLERANCE, color="0.9")
    middle.axhline(promised, color="0.5", linestyle="--", label=f"promised {promised:g}%")
    middle.plot(range(len(calibrated)), fprs, "o", color="black", label="held-out FPR")
    middle.set_xticks(
        range(len(calibrated)),
        [t.replace("digits:holdout=", "h").replace("breast-", "") for t in calibrated],
        rotation=30,
    )
    middle.set_ylabel("false positives at the threshold (%)")
    middle.set_title("Calibration")
    middle.legend(fontsize=8)

    likelihood = results.get("likelihood")
    if likelihood is not None:
        ref = likelihood["reference"]["heldout"]
        ours_l = likelihood["ours"]
        bars = np.arange(2)
        right.bar(bars - 0.2, [ours_l["neg_elbo"], ref["neg_elbo"]], 0.4, label="-ELBO")
        right.bar(bars + 0.2, [ours_l["iwae_nll"], ref["iwae_nll"]], 0.4, label="IWAE")
        nats: list[float] = [
            float(v)
            for v in (ours_l["neg_elbo"], ref["neg_elbo"], ours_l["iwae_nll"], ref["iwae_nll"])
        ]
        for x, value in zip([-0.2, 0.8, 0.2, 1.2], nats, strict=True):
            right.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=8)
        # The differences are a few percent of the values: an axis from 0 would hide them.
        right.set_ylim(min(nats) - 1.5, max(nats) + 0.8)
        right.set_xticks(bars, ["ours", "reference"])
        right.set_ylabel("nats per item (lower is better; axis not from 0)")
        right.set_title("digits test part, same CPU budget")
        right.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------


def run_task(task: str, options: Options) -> dict[str, Any]:
    validation_fraction = TrainingConfig().validation_fraction
    data, splits = benchmark_split(task, options.seed, validation_fraction)
    print(
        f"[quality] {task}: train part {len(splits.train) + len(splits.validation)}, "
        f"test {len(splits.test)} ({int(splits.test_is_anomaly.sum())} anomalies)",
        file=sys.stderr,
        flush=True,
    )
    ours = run_ours(task, splits, options)
    train, test = peer_inputs(data, splits)
    peers = run_peers(train, test, splits.test_is_anomaly, options.seed)
    result: dict[str, Any] = {
        "n_train_part": len(train),
        "n_test": len(test),
        "n_test_anomalies": int(splits.test_is_anomaly.sum()),
        "ours": ours,
        "peers": peers,
    }
    summary = ", ".join(
        f"{name} {entry.get('auroc', float('nan')):.3f}" for name, entry in peers.items()
    )
    auc = ours_auroc(result)
    print(
        f"[quality] {task}: ours {_fmt(auc)} ({ours['default_score']}, {ours['run_seconds']:.0f} s)"
        f"; {summary}",
        file=sys.stderr,
        flush=True,
    )
    return result


def run(options: Options) -> dict[str, Any]:
    torch.set_num_threads(options.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": options.command,
        "seed": options.seed,
        "threads": options.threads,
        "validation_fraction": TrainingConfig().validation_fraction,
        "machine": machine(("torch", "numpy", "scikit-learn", "pyod", "onnxruntime")),
        "tasks": {},
    }
    for task in options.tasks:
        results["tasks"][task] = run_task(task, options)
        if task == LIKELIHOOD_TASK:
            _, splits = benchmark_split(task, options.seed, results["validation_fraction"])
            ours = results["tasks"][task]["ours"]
            reference = run_reference(splits, ours, options)
            config = ours["config"]
            results["likelihood"] = {
                "ours": ours["heldout"],
                "ours_config": f"{architecture_name(config)}, d={config['latent_dim']}",
                "ours_cpu_seconds": ours["search_cpu_seconds"],
                "ours_wall_seconds": ours["train_seconds"],
                "ours_epochs": ours["epochs_run"],
                "reference": reference,
            }
            print(
                f"[quality] likelihood: ours -ELBO {ours['heldout']['neg_elbo']:.2f}, "
                f"reference {reference['heldout']['neg_elbo']:.2f} after "
                f"{reference['cpu_seconds']:.1f} CPU s",
                file=sys.stderr,
                flush=True,
            )
    results["total_seconds"] = time.perf_counter() - started
    results["checks"] = [c.__dict__ for c in checks(results)]
    return results


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description="Our default models and scores against PyOD's detectors and the classic "
        "VAE recipe, on scikit-learn's data; writes bench/QUALITY.md, quality.json, quality.png.",
    )
    parser.add_argument(
        "--tasks",
        default="all",
        help="comma-separated: breast-cancer, digits, digits:holdout=K, or 'all' (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the split and every model")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="CPU seconds for the reference VAE (default: what our digits training loop took)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for every torch model (default 1)"
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where the report goes")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH_DIR / "out" / "quality",
        help="where our bundles are written",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite QUALITY.md and quality.png from the quality.json in --out-dir; no runs",
    )
    args = parser.parse_args(argv)
    tasks = (
        ALL_TASKS
        if args.tasks == "all"
        else [t.strip() for t in args.tasks.split(",") if t.strip()]
    )
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(ALL_TASKS)}")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    shown = ["python -m bench.quality", *(argv if argv is not None else sys.argv[1:])]
    return Options(
        tasks=tasks,
        seed=args.seed,
        budget_s=args.budget_s,
        threads=args.threads,
        out_dir=args.out_dir,
        work_dir=args.work_dir,
        command=" ".join(shown),
        render_only=args.render_only,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.render_only:
        # Prose and plot from the stored figures: the numbers are never recomputed here.
        results = json.loads((options.out_dir / "quality.json").read_text())
    else:
        if options.work_dir.exists():
            shutil.rmtree(options.work_dir)
        options.work_dir.mkdir(parents=True)
        results = run(options)
        options.out_dir.mkdir(parents=True, exist_ok=True)
        (options.out_dir / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    (options.out_dir / "QUALITY.md").write_text(markdown(results), encoding="utf-8")
    plot(results, options.out_dir / "quality.png")
    failed = [c for c in checks(results) if not c.ok]
    for check in checks(results):
        print(f"[quality] {'pass' if check.ok else 'FAIL'}: {check.target}: {check.measured}")
    print(f"[quality] wrote {options.out_dir / 'QUALITY.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
