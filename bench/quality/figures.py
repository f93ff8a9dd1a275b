"""What the targets, the report and the plot read off the results: each seed's AUROCs, their
mean and spread over seeds, the best peer, the group means, how a figure is written.

The results (quality.json) keep every seed's numbers: `tasks[task]["seeds"][seed]` is one run
of the task (ours and the peers), `likelihood[task]["seeds"][seed]` one likelihood comparison.
The spread over seeds is always the range, min..max: with three seeds a standard deviation
says less than the two extremes do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.quality.config import PEER_NAMES

OURS = "ours"


@dataclass(frozen=True)
class Spread:
    """A figure over seeds: its mean, its range (min..max) and how many seeds gave it."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """'0.968 (0.960..0.975)', or '0.968' from one seed."""
        mean = f"{self.mean * scale:.{digits}f}{unit}"
        if self.n == 1:
            return mean
        return f"{mean} ({self.low * scale:.{digits}f}..{self.high * scale:.{digits}f}{unit})"

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "min": self.low, "max": self.high, "n": self.n}


def spread(values: Sequence[float | None]) -> Spread | None:
    """Mean and range of per-seed values; None when there are none or any seed lacks one (a
    mean over fewer seeds than its neighbours would not compare with them)."""
    if not values or any(v is None or math.isnan(v) for v in values):
        return None
    known = [float(v) for v in values if v is not None]
    return Spread(float(np.mean(known)), min(known), max(known), len(known))


def normalise(results: dict[str, Any]) -> dict[str, Any]:
    """Results of the one-seed benchmark before issue 22 in today's shape (--render-only)."""
    if "seeds" in results:
        return results
    seed = str(results["seed"])
    old = dict(results)
    old["seeds"] = [results["seed"]]
    old["tasks"] = {task: {"seeds": {seed: run}} for task, run in results["tasks"].items()}
    old["likelihood"] = {}
    if results.get("likelihood") is not None:
        entry = dict(results["likelihood"])
        reference = dict(entry["reference"])
        reference["budget"] = {"kind": "cpu", "seconds": reference.pop("budget_cpu_seconds")}
        entry["reference"] = reference
        old["likelihood"]["digits"] = {"seeds": {seed: entry}}
    return old


def seed_runs(results: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """Each seed's run of the task, by seed (a string: quality.json's keys); {} if not run."""
    entry = results["tasks"].get(task)
    return {} if entry is None else dict(entry["seeds"])


def likelihood_runs(results: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    entry = results.get("likelihood", {}).get(task)
    return {} if entry is None else dict(entry["seeds"])


def ours_auroc(run: dict[str, Any]) -> float | None:
    """One run's AUROC of our default score (None: the task has no anomalies)."""
    ours = run["ours"]
    value = ours["scores"][ours["default_score"]].get("auroc")
    return None if value is None else float(value)


def peer_auroc(run: dict[str, Any], peer: str) -> float | None:
    value = run["peers"].get(peer, {}).get("auroc")
    return None if value is None else float(value)


def auroc_of(run: dict[str, Any], who: str) -> float | None:
    return ours_auroc(run) if who == OURS else peer_auroc(run, who)


def auroc_spread(results: dict[str, Any], task: str, who: str) -> Spread | None:
    """Ours' (who = 'ours') or a peer's AUROC on the task over its seeds."""
    return spread([auroc_of(run, who) for run in seed_runs(results, task).values()])


def field_spread(
    results: dict[str, Any], task: str, read: Callable[[dict[str, Any]], float | None]
) -> Spread | None:
    """Any per-run figure over the task's seeds, `read` taking it from one run."""
    return spread([read(run) for run in seed_runs(results, task).values()])


def best_peer(results: dict[str, Any], task: str) -> tuple[str, Spread] | None:
    """The peer with the highest mean AUROC over the task's seeds."""
    found = [(p, auroc_spread(results, task, p)) for p in PEER_NAMES]
    known = [(p, s) for p, s in found if s is not None]
    return max(known, key=lambda item: item[1].mean) if known else None


def group_spread(results: dict[str, Any], tasks: Sequence[str], who: str) -> Spread | None:
    """The mean AUROC over `tasks` for each seed, then its mean and range over the seeds; None
    unless every task ran with the same seeds and gave an AUROC on each."""
    runs = [seed_runs(results, t) for t in tasks]
    if not runs or not all(runs) or any(set(r) != set(runs[0]) for r in runs):
        return None
    per_seed: list[float | None] = []
    for seed in runs[0]:
        values = [auroc_of(r[seed], who) for r in runs]
        known = [v for v in values if v is not None]
        per_seed.append(float(np.mean(known)) if len(known) == len(values) else None)
    return spread(per_seed)


def group_means(results: dict[str, Any], tasks: Sequence[str]) -> dict[str, Spread | None] | None:
    """group_spread for ours and each peer; None unless every task of the group ran."""
    if not all(t in results["tasks"] for t in tasks):
        return None
    return {who: group_spread(results, tasks, who) for who in [OURS, *PEER_NAMES]}


def seeds_text(seeds: Sequence[str | int]) -> str:
    """'0-4' for a run of consecutive seeds, else '0, 2, 5'."""
    numbers = sorted(int(s) for s in seeds)
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)


def architecture_name(config: dict[str, Any]) -> str:
    """'mlp 256,128' or 'linear' (--hidden none), as the kept architecture is recorded."""
    hidden = str(config["hidden"])
    if config["arch"] == "conv":
        return "conv"
    return "linear" if hidden == "none" else f"mlp {hidden}"


def fmt(value: float | Spread | None, digits: int = 3) -> str:
    if isinstance(value, Spread):
        return value.text(digits)
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )
