"""A whole quality run: each task (ours, then the peers), and the likelihood comparison."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from bench.quality.config import LIKELIHOOD_TASK, Options
from bench.quality.data import benchmark_split
from bench.quality.figures import architecture_name, fmt, ours_auroc
from bench.quality.ours import run_ours
from bench.quality.peers import peer_inputs, run_peers
from bench.quality.reference import run_reference
from bench.quality.targets import CHECK_KEYS, checks
from bench.shared import machine, utc_stamp
from training.config import TrainingConfig


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
        f"[quality] {task}: ours {fmt(auc)} ({ours['default_score']}, {ours['run_seconds']:.0f} s)"
        f"; {summary}",
        file=sys.stderr,
        flush=True,
    )
    return result


def run(options: Options) -> dict[str, Any]:
    torch.set_num_threads(options.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": utc_stamp(),
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
    results["checks"] = [c.as_dict(CHECK_KEYS) for c in checks(results)]
    return results
