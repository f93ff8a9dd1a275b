"""Runs of `python -m bench.quality` on parts of the tasks and seeds, merged into one report.

A full run takes 1.5-2.5 h on two cores; a run per group and seed can go where the machine is
free, and the merge reads as one run: each task's seeds side by side, the likelihood
comparisons likewise, the summaries and checks recomputed from the merged figures. Each part's
command, date and wall seconds are kept under `parts`, so every figure still has its command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.quality.config import ALL_TASKS
from bench.quality.figures import normalise
from bench.quality.run import summary
from bench.quality.targets import CHECK_KEYS, checks


def _task_order(task: str) -> int:
    return ALL_TASKS.index(task) if task in ALL_TASKS else len(ALL_TASKS)


def _merge_seeds(
    into: dict[str, Any], section: str, task: str, seeds: dict[str, Any], part: int
) -> None:
    entry = into[section].setdefault(task, {"seeds": {}})
    for seed, run in seeds.items():
        if seed in entry["seeds"]:
            raise ValueError(f"{section} {task} seed {seed} is in more than one part (part {part})")
        entry["seeds"][seed] = run


def merge(parts: Sequence[dict[str, Any]], command: str) -> dict[str, Any]:
    """One results dict from several; a task and seed run twice is refused, since which of the
    two a figure came from would be lost."""
    if not parts:
        raise ValueError("nothing to merge")
    runs = [normalise(part) for part in parts]
    threads = {run["threads"] for run in runs}
    if len(threads) != 1:
        raise ValueError(f"parts ran on different torch threads ({sorted(threads)})")
    merged: dict[str, Any] = {
        "date": max(run["date"] for run in runs),
        "command": command,
        "parts": [
            {"command": run["command"], "date": run["date"], "total_seconds": run["total_seconds"]}
            for run in runs
        ],
        "threads": threads.pop(),
        "validation_fraction": runs[0]["validation_fraction"],
        "machine": runs[0]["machine"],
        "tasks": {},
        "likelihood": {},
    }
    for number, run in enumerate(runs):
        for task, entry in run["tasks"].items():
            _merge_seeds(merged, "tasks", task, entry["seeds"], number)
        for task, entry in run.get("likelihood", {}).items():
            _merge_seeds(merged, "likelihood", task, entry["seeds"], number)
    merged["tasks"] = {
        task: merged["tasks"][task] for task in sorted(merged["tasks"], key=_task_order)
    }
    seeds = {int(s) for t, e in merged["tasks"].items() if t != "breast-cancer" for s in e["seeds"]}
    breast = merged["tasks"].get("breast-cancer", {"seeds": {}})["seeds"]
    merged["seeds"] = sorted(seeds)
    merged["breast_cancer_seeds"] = sorted(int(s) for s in breast) or sorted(seeds)
    for task in merged["tasks"]:
        merged["tasks"][task]["summary"] = summary(merged, task)
    merged["total_seconds"] = sum(run["total_seconds"] for run in runs)
    merged["checks"] = [c.as_dict(CHECK_KEYS) for c in checks(merged)]
    return merged
