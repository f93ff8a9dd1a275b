"""One training setting changed, on a few tasks: how the image defaults were weighed.

    .venv/bin/python -m bench.defaults_sweep '{"kl_warmup_epochs": 0}' \\
        mnist-5k,mnist-5k:holdout=1,mnist-5k:holdout=9 [--seed 0]

Trains ours (`make quality`'s `run_ours`, the same split and scoring) with the given
TrainingConfig fields changed, and prints one JSON line per task: held-out -ELBO (tasks
without anomalies), the AUROC of each score (tasks with a held-out class), epochs and seconds.
No peer is fitted, so a setting costs one training per task. bench/quality_defaults.md
("KL warm-up") has the figures this printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.quality.config import Options
from bench.quality.data import benchmark_split
from bench.quality.ours import run_ours
from training.config import TrainingConfig


def sweep_task(task: str, seed: int, overrides: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    _, splits = benchmark_split(task, seed, TrainingConfig().validation_fraction)
    options = Options(
        tasks=[task],
        seeds=[seed],
        breast_cancer_seeds=[seed],
        budget_s=None,
        threads=torch.get_num_threads(),
        out_dir=work_dir,
        work_dir=work_dir,
        command="bench.defaults_sweep",
        render_only=False,
    )
    started = time.perf_counter()
    ours = run_ours(task, seed, splits, options, overrides)
    line: dict[str, Any] = {
        "task": task,
        "seed": seed,
        "overrides": overrides,
        "seconds": round(time.perf_counter() - started, 1),
        "epochs": ours["epochs_run"],
        "best_epoch": ours["best_epoch"],
    }
    if not splits.test_is_anomaly.any():
        line["heldout_neg_elbo"] = ours["heldout"].get("neg_elbo")
    line["auroc"] = {
        score: round(entry["auroc"], 4)
        for score, entry in ours["scores"].items()
        if "auroc" in entry
    }
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", type=json.loads, help="JSON object of TrainingConfig fields")
    parser.add_argument("tasks", help="comma-separated tasks, e.g. mnist-5k,mnist-5k:holdout=1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one core)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="defaults-sweep-") as tmp:
        for task in args.tasks.split(","):
            print(json.dumps(sweep_task(task, args.seed, args.overrides, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
