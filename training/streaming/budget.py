"""How much memory the training data may take, and how many rows a chunk may hold within it.

A data set whose float32 size is over the budget is streamed from disk (memory-mapped .npy),
and every pass over it is made in chunks sized from the budget, so the memory a run needs for
data stays the same however large the file grows (training.streaming.splits).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

MEGABYTE = 1 << 20
# Training from memory holds about four float32 copies of the data at its peak (the file as
# read, the three splits, their normalised model inputs, and a float64 copy of the training
# rows while the normalisation is fitted), so a data set may take an eighth of the memory the
# process can use before it is streamed instead: the peak then stays near half of it.
AUTO_SHARE_OF_MEMORY = 8
# A chunk of rows is read in the file's dtype and converted (up to 8 bytes a value each time);
# an eighth of the budget per chunk leaves room for the few copies a pass makes of it.
CHUNK_SHARE_OF_BUDGET = 8
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def usable_memory_bytes() -> int:
    """Physical memory, or the container's limit when that is lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits = [physical]
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) means no limit
            limits.append(int(text))
    return min(limits)


def local_process_count() -> int:
    """Processes training side by side on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def memory_budget_bytes(megabytes: int | None) -> int:
    """The budget a run works to: `megabytes` as given, or automatic (None): an eighth of the
    usable memory, shared equally by the processes training on this machine."""
    if megabytes is not None:
        if megabytes < 1:
            raise ValueError("--memory-budget-mb must be at least 1")
        return megabytes * MEGABYTE
    return usable_memory_bytes() // (AUTO_SHARE_OF_MEMORY * local_process_count())


def rows_per_chunk(values_per_row: int, budget_bytes: int) -> int:
    """Rows in one chunk of a pass over the data: an eighth of the budget as float64."""
    chunk_bytes = budget_bytes // CHUNK_SHARE_OF_BUDGET
    return max(1, chunk_bytes // (8 * max(1, values_per_row)))


def float32_bytes(shape: tuple[int, ...]) -> int:
    """Bytes the data takes in memory as float32, the dtype the trainer holds it in."""
    return 4 * math.prod(shape)
