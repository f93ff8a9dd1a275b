"""What the targets, the report and the plot read off the results: AUROCs, the best peer, the
digits means, how an architecture and a missing figure are written."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.quality.config import DIGITS_HOLDOUTS, PEER_NAMES


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


def architecture_name(config: dict[str, Any]) -> str:
    """'mlp 256,128' or 'linear' (--hidden none), as the kept architecture is recorded."""
    hidden = str(config["hidden"])
    if config["arch"] == "conv":
        return "conv"
    return "linear" if hidden == "none" else f"mlp {hidden}"


def fmt(value: float | None, digits: int = 3) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )
