"""A whole quality run: each task for each of its seeds (ours, then the peers), and the
likelihood comparisons on the tasks that carry one."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from bench.quality.config import LIKELIHOOD_TASKS, Options
from bench.quality.data import benchmark_split
from bench.quality.figures import OURS, architecture_name, auroc_spread, fmt, ours_auroc
from bench.quality.ours import run_ours
from bench.quality.peers import peer_inputs, run_peers
from bench.quality.reference import run_reference, training_seconds
from bench.quality.targets import CHECK_KEYS, checks
from bench.shared import machine, utc_stamp, write_json
from training.config import TrainingConfig


def _say(message: str) -> None:
    print(f"[quality] {message}", file=sys.stderr, flush=True)


def run_task(task: str, seed: int, options: Options) -> dict[str, Any]:
    """One seed of a task: ours, then (where the test part has anomalies) the peers."""
    validation_fraction = TrainingConfig().validation_fraction
    data, splits = benchmark_split(task, seed, validation_fraction)
    _say(
        f"{task} seed {seed}: train part {len(splits.train) + len(splits.validation)}, "
        f"test {len(splits.test)} ({int(splits.test_is_anomaly.sum())} anomalies)"
    )
    ours = run_ours(task, seed, splits, options)
    train, test = peer_inputs(data, splits)
    # Without anomalies (the likelihood tasks) there is no AUROC to compare: no peer is fitted.
    peers = (
        run_peers(train, test, splits.test_is_anomaly, seed) if splits.test_is_anomaly.any() else {}
    )
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
    _say(
        f"{task} seed {seed}: ours {fmt(ours_auroc(result))} ({ours['default_score']}, "
        f"{ours['run_seconds']:.0f} s){'; ' + summary if summary else ''}"
    )
    return result


def run_likelihood(task: str, seed: int, ours: dict[str, Any], options: Options) -> dict[str, Any]:
    """Ours (already trained on the task with this seed) against the reference recipe."""
    _, splits = benchmark_split(task, seed, TrainingConfig().validation_fraction)
    budget = LIKELIHOOD_TASKS[task].budget
    reference = run_reference(splits, ours, seed, budget, options)
    config = ours["config"]
    entry = {
        "ours": ours["heldout"],
        "ours_config": f"{architecture_name(config)}, d={config['latent_dim']}",
        "ours_cpu_seconds": ours["search_cpu_seconds"],
        "ours_wall_seconds": training_seconds(ours, "wall"),
        "ours_epochs": ours["epochs_run"],
        "reference": reference,
    }
    spent = reference["cpu_seconds"] if budget == "cpu" else reference["wall_seconds"]
    _say(
        f"{task} seed {seed} likelihood: ours -ELBO {ours['heldout']['neg_elbo']:.2f}, "
        f"reference {reference['heldout']['neg_elbo']:.2f} after {spent:.1f} {budget} s"
    )
    return entry


def summary(results: dict[str, Any], task: str) -> dict[str, Any]:
    """The task's AUROC means and ranges over seeds, for a reader of quality.json."""
    found = {}
    for who in [OURS, *next(iter(results["tasks"][task]["seeds"].values()))["peers"]]:
        figure = auroc_spread(results, task, who)
        if figure is not None:
            found[who] = figure.as_dict()
    return {"auroc": found} if found else {}


def run(options: Options) -> dict[str, Any]:
    torch.set_num_threads(options.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": utc_stamp(),
        "command": options.command,
        "seeds": options.seeds,
        "breast_cancer_seeds": options.breast_cancer_seeds,
        "threads": options.threads,
        "validation_fraction": TrainingConfig().validation_fraction,
        "machine": machine(("torch", "numpy", "scikit-learn", "pyod", "onnxruntime")),
        "tasks": {},
        "likelihood": {},
    }
    for task in options.tasks:
        entry: dict[str, Any] = {"seeds": {}}
        results["tasks"][task] = entry
        for seed in options.seeds_for(task):
            entry["seeds"][str(seed)] = run_task(task, seed, options)
            if task in LIKELIHOOD_TASKS:
                ours = entry["seeds"][str(seed)]["ours"]
                comparison = results["likelihood"].setdefault(task, {"seeds": {}})
                comparison["seeds"][str(seed)] = run_likelihood(task, seed, ours, options)
        entry["summary"] = summary(results, task)
        # What has run so far, should a long run be cut short (not the report's quality.json).
        write_json(options.work_dir / "quality.partial.json", results)
    results["total_seconds"] = time.perf_counter() - started
    results["checks"] = [c.as_dict(CHECK_KEYS) for c in checks(results)]
    return results
