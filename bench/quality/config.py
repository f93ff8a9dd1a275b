"""The benchmark's fixed choices: the tasks, the split, the peers' names, and a run's options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DIGITS_HOLDOUTS = [f"digits:holdout={k}" for k in range(10)]
ALL_TASKS = ["breast-cancer", "digits", *DIGITS_HOLDOUTS]
TEST_FRACTION = 0.4  # the 60/40 split of normal items
LIKELIHOOD_TASK = "digits"

PEER_NAMES = ["PyOD AutoEncoder", "PyOD VAE", "PyOD IForest", "PyOD PCA"]


@dataclass(frozen=True)
class Options:
    tasks: list[str]
    seed: int
    budget_s: float | None
    threads: int
    out_dir: Path
    work_dir: Path
    command: str
    render_only: bool
