"""Ours: the default model trained on a task by `run_training`, scored through its bundle."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.quality.config import Options, task_test_fraction
from bench.quality.data import auroc
from bundle.runtime import OnnxBundle
from training.config import TrainingConfig
from training.data import DataSplits
from training.pipeline import run_training


def _slug(task: str) -> str:
    return task.replace(":", "-").replace("=", "")


def run_ours(
    task: str,
    seed: int,
    splits: DataSplits,
    options: Options,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the default model on the task (with `overrides` of its config, for a sweep of
    one setting: bench.defaults_sweep), then score the test rows through the bundle."""
    config = TrainingConfig(
        dataset=task,
        seed=seed,
        test_fraction=task_test_fraction(task),
        plots=False,
        **(overrides or {}),
    )
    out = options.work_dir / f"{_slug(task)}-seed{seed}" / "1"
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
        # Wall seconds of the whole search phase (every candidate, models built in between).
        "search_seconds": manifest.training.get("phase_seconds", {}).get(
            "architecture search", manifest.training["seconds"]
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
