"""How often monitoring cries wolf on real data that did not change: windows of held-out normal
items (never trained on, drawn like the reference) judged by the service's own monitor.

    .venv/bin/python -m bench.monitor_false_alarms [--windows 400] [--size 100] [--seed 0]
        [--datasets a,b] [--train-seeds 0,1,2]

For each data set a bundle is trained with the trainer's defaults (its reference.npz is the
validation split), then `--windows` windows of `--size` items are drawn without replacement
from the test split's normal items and recorded into a ModelMonitor (the code the service
runs); the figure is the share of windows each verdict calls drifted or alarming, against
VAE_MONITOR_ALPHA (0.05). A window is at most half the pool, and the windows overlap (the
held-out pools hold 54 to a few hundred items), so the shares are estimates with a wider spread
than independent windows would give: every window inherits its pool's own chance difference from
the reference (printed: the whole pool's KS against it). `--train-seeds` trains a bundle a seed,
each with its own split, so its own pool and reference: the average over seeds is the rate a
user meets.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bundle.reference import read_reference
from bundle.runtime import OnnxBundle
from service.models.served_model import Limits, ServedModel
from service.monitoring.monitor import MonitorSettings, monitor_for
from service.monitoring.stats import ks_two_sample
from training.config import TrainingConfig
from training.data import load_dataset, split_dataset
from training.pipeline import run_training

DATASETS = ("breast-cancer", "digits:holdout=0", "mnist-5k:holdout=9")


def measure(
    dataset: str, windows: int, size: int, seed: int, train_seed: int, folder: Path
) -> dict[str, float]:
    out = folder / f"{dataset.replace(':', '_').replace('=', '')}-{train_seed}" / "1"
    config = TrainingConfig(dataset=dataset, plots=False, seed=train_seed)
    outcome = run_training(config, out, show_progress=False)
    split = split_dataset(load_dataset(dataset), seed=train_seed)  # the trainer's split
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
    # The windows share one pool: how far the whole pool's scores sit from the reference's
    # says how much of a verdict's rate is this pool's own difference, not the test's.
    whole = model.score(pool, score_type=None, per_feature=False)
    reference = read_reference(outcome.bundle_dir, outcome.manifest.reference)  # type: ignore[arg-type]
    apart = ks_two_sample(whole.scores, reference.scores[whole.score_type])
    reference_rows = outcome.manifest.reference.n_items if outcome.manifest.reference else 0
    print(
        f"{dataset} (training seed {train_seed}): pool {len(pool)} held-out normal items, "
        f"reference {reference_rows} rows, "
        f"{windows} windows of {size}; the whole pool's {whole.score_type} against the "
        f"reference's: KS D = {apart.statistic:.3f}, p = {apart.p_value:.3g}, means "
        f"{whole.scores.mean():.4g} and {reference.scores[whole.score_type].mean():.4g}",
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
    parser.add_argument(
        "--train-seeds",
        default="0",
        help="comma-separated: a bundle (its own split, so its own pool and reference) each",
    )
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="monitor-false-alarms-") as folder:
        print("| data | anomaly rate alert | score drift | input drift | any of them |")
        print("|---|--:|--:|--:|--:|")
        for dataset in options.datasets.split(","):
            for train_seed in (int(s) for s in options.train_seeds.split(",")):
                shares = measure(
                    dataset, options.windows, options.size, options.seed, train_seed, Path(folder)
                )
                print(
                    f"| {dataset} (seed {train_seed}) | {shares['anomaly_rate']:.1%} | "
                    f"{shares['score_drift']:.1%} | {shares['input_drift']:.1%} | "
                    f"{shares['any']:.1%} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
