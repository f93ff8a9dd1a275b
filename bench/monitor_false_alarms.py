"""How often monitoring cries wolf on real data that did not change: windows of held-out normal
items (never trained on, drawn like the reference) judged by the service's own monitor.

    .venv/bin/python -m bench.monitor_false_alarms [--windows 400] [--size 100] [--seed 0]

For each data set a bundle is trained with the trainer's defaults (its reference.npz is the
validation split), then `--windows` windows of `--size` items are drawn without replacement
from the test split's normal items and recorded into a ModelMonitor (the code the service
runs); the figure is the share of windows each verdict calls drifted or alarming, against
VAE_MONITOR_ALPHA (0.05). A window is at most half the pool, and the windows overlap (the
held-out pools hold 54 to a few hundred items), so the shares are estimates with a wider spread
than independent windows would give.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bundle.runtime import OnnxBundle
from service.models.served_model import Limits, ServedModel
from service.monitoring.monitor import MonitorSettings, monitor_for
from training.config import TrainingConfig
from training.data import load_dataset, split_dataset
from training.pipeline import run_training

DATASETS = ("breast-cancer", "digits:holdout=0", "mnist-5k:holdout=9")


def measure(dataset: str, windows: int, size: int, seed: int, folder: Path) -> dict[str, float]:
    out = folder / dataset.replace(":", "_").replace("=", "") / "1"
    outcome = run_training(TrainingConfig(dataset=dataset, plots=False), out, show_progress=False)
    split = split_dataset(load_dataset(dataset), seed=0)  # the trainer's split (seed 0)
    pool = split.test[~split.test_is_anomaly]
    model = ServedModel(OnnxBundle(outcome.bundle_dir), Limits(4096, 1024, 64))
    # At most half the pool a window, so that windows differ (breast-cancer holds 54).
    size = min(size, len(pool) // 2)
    settings = MonitorSettings(window=size, alpha=0.05, min_items=size, report_interval_s=0.0)
    rng = np.random.default_rng(seed)
    counts = {"anomaly_rate": 0, "score_drift": 0, "input_drift": 0, "any": 0}
    for _ in range(windows):
        monitor = monitor_for(model.bundle, settings)
        model.monitor = monitor
        rows = pool[rng.choice(len(pool), size=size, replace=False)]
        model.score(rows, score_type=None, per_feature=False)  # records, as a request does
        report = monitor.report()
        verdicts = {
            "anomaly_rate": report["anomaly_rate_test"]["alert"],
            "score_drift": report["score_drift"]["drifted"],
            "input_drift": report["input_drift"]["drifted"],
        }
        for name, fired in verdicts.items():
            counts[name] += int(fired)
        counts["any"] += int(any(verdicts.values()))
        monitor.close()
    print(
        f"{dataset}: pool {len(pool)} held-out normal items, reference "
        f"{outcome.manifest.reference.n_items if outcome.manifest.reference else 0} rows, "
        f"{windows} windows of {size}",
        flush=True,
    )
    return {name: count / windows for name, count in counts.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.monitor_false_alarms", description=__doc__
    )
    parser.add_argument("--windows", type=int, default=400)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="monitor-false-alarms-") as folder:
        print("| data | anomaly rate alert | score drift | input drift | any of them |")
        print("|---|--:|--:|--:|--:|")
        for dataset in options.datasets.split(","):
            shares = measure(dataset, options.windows, options.size, options.seed, Path(folder))
            print(
                f"| {dataset} | {shares['anomaly_rate']:.1%} | {shares['score_drift']:.1%} | "
                f"{shares['input_drift']:.1%} | {shares['any']:.1%} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
