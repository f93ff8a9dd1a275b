"""quality.png: AUROC per task against the peers, calibration, and the likelihood comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.config import PEER_NAMES
from bench.quality.figures import ours_auroc, peer_auroc
from bench.quality.targets import FPR_TOLERANCE


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
