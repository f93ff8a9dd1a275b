"""quality.png: AUROC per task against the peers, calibration, and the likelihood comparisons;
bars and dots are means over seeds, whiskers their range (min..max)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.config import PEER_NAMES
from bench.quality.figures import OURS, Spread, auroc_spread, likelihood_runs, seed_runs, spread
from bench.quality.targets import FPR_TOLERANCE


def _short(task: str) -> str:
    return (
        task.replace("digits:holdout=", "d")
        .replace("mnist-5k:holdout=", "m")
        .replace("wine:holdout=", "w")
        .replace("iris:holdout=", "i")
        .replace("breast-cancer", "bc")
    )


def _bars(figures: list[Spread | None]) -> tuple[list[float], list[list[float]]]:
    """Heights (0 where missing) and matplotlib's (2, N) whiskers below and above each."""
    heights = [f.mean if f else 0.0 for f in figures]
    below = [f.mean - f.low if f else 0.0 for f in figures]
    above = [f.high - f.mean if f else 0.0 for f in figures]
    return heights, [below, above]


def _likelihood_label(results: dict[str, Any], task: str) -> str:
    first = next(iter(likelihood_runs(results, task).values()))
    kind = first["reference"]["budget"]["kind"]
    return f"{task}\n(equal {'CPU' if kind == 'cpu' else 'wall'} time)"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in results["tasks"] if auroc_spread(results, t, OURS) is not None]
    figure, axes = plt.subplots(
        1,
        3,
        figsize=(max(17.0, 6 + 0.62 * len(tasks)), 5.2),
        gridspec_kw={"width_ratios": [max(3.0, 0.16 * len(tasks)), 1.8, 1]},
    )
    left, middle, right = axes
    width = 0.8 / (1 + len(PEER_NAMES))
    positions = np.arange(len(tasks))
    for index, who in enumerate([OURS, *PEER_NAMES]):
        heights, whiskers = _bars([auroc_spread(results, t, who) for t in tasks])
        left.bar(
            positions + (index - len(PEER_NAMES) / 2) * width,
            heights,
            width,
            yerr=whiskers,
            error_kw={"elinewidth": 0.7, "capsize": 0},
            label=who,
            color="black" if who == OURS else None,
        )
    left.set_xticks(positions, [_short(t) for t in tasks], rotation=60, fontsize=8)
    left.set_xlim(-0.6, len(tasks) - 0.4)
    left.set_ylim(0.0, 1.0)
    left.set_ylabel("AUROC (test part), mean and range over seeds")
    left.set_title(
        "Anomaly detection: ours (default score) vs peers "
        "(bc breast-cancer, w wine, i iris, d digits, m mnist-5k; number = digit held out)",
        fontsize=9,
    )
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5)

    calibrated = list(results["tasks"])
    fprs: list[Spread | None] = []
    promised = 1.0
    for task in calibrated:
        runs = seed_runs(results, task).values()
        scores = [run["ours"]["scores"][run["ours"]["default_score"]] for run in runs]
        promised = 100 - scores[0]["percentile"]
        fprs.append(spread([100 * s["test_fpr"] for s in scores]))
    middle.axhspan(promised - 100 * FPR_TOLERANCE, promised + 100 * FPR_TOLERANCE, color="0.9")
    middle.axhline(promised, color="0.5", linestyle="--", label=f"promised {promised:g}%")
    heights, whiskers = _bars(fprs)
    middle.errorbar(
        range(len(calibrated)),
        heights,
        yerr=whiskers,
        fmt="o",
        color="black",
        ms=4,
        label="held-out FPR",
    )
    middle.set_xticks(range(len(calibrated)), [_short(t) for t in calibrated], rotation=60)
    middle.tick_params(axis="x", labelsize=7)
    middle.set_ylabel("false positives at the threshold (%)")
    middle.set_title("Calibration")
    middle.legend(fontsize=8)

    # Likelihood: ours relative to the reference at equal time, per task, so that digits' ~24
    # and MNIST's ~100 nats share an axis; dots are the seeds.
    compared = [t for t in results.get("likelihood", {}) if likelihood_runs(results, t)]
    if not compared:
        right.text(0.5, 0.5, "no likelihood task run", ha="center", va="center")
        right.set_axis_off()
    bars = ((-0.15, "neg_elbo", "-ELBO", "tab:blue"), (0.15, "iwae_nll", "IWAE", "tab:orange"))
    for offset, key, label, colour in bars if compared else ():
        ratios = [
            [
                100 * (e["ours"][key] / e["reference"]["heldout"][key] - 1)
                for e in likelihood_runs(results, t).values()
            ]
            for t in compared
        ]
        right.bar(
            np.arange(len(compared)) + offset,
            [float(np.mean(r)) for r in ratios],
            0.3,
            label=label,
            color=colour,
        )
        for x, values in enumerate(ratios):
            right.plot([x + offset] * len(values), values, ".", color="black", ms=4)
    if compared:
        right.axhline(0, color="0.3", linewidth=0.8)
        if "mnist-5k" in compared:
            right.axhline(-3, color="0.5", linestyle="--", linewidth=0.8, label="mnist-5k target")
        right.set_xticks(range(len(compared)), [_likelihood_label(results, t) for t in compared])
        right.set_ylabel("ours / reference - 1 (%), lower is better")
        right.set_title("Held-out likelihood vs classic VAE")
        right.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
