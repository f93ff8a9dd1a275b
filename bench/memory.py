"""Resident memory of a server and its worker processes, from /proc, sampled once a second."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def children(pid: int) -> list[int]:
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(p) for p in path.read_text().split())
        except (OSError, ValueError):
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """pid and every descendant (uvicorn's workers, multiprocessing helpers)."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(children(current))
    return tree


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError):
        return None
    return None


def pss_mb(pid: int) -> float | None:
    """Proportional set size: shared pages split between the processes that map them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


@dataclass
class MemorySample:
    t_s: float
    total_mb: float  # VmRSS summed over the whole process tree
    per_process_mb: dict[int, float]
    pss_total_mb: float | None  # PSS summed: shared pages counted once


@dataclass
class MemorySampler:
    pid: int
    interval_s: float = 1.0
    samples: list[MemorySample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self, began: float) -> None:
        sizes = {p: rss_mb(p) for p in process_tree(self.pid)}
        present = {p: size for p, size in sizes.items() if size is not None}
        if present:
            total = sum(present.values())
            pss = [pss_mb(p) for p in present]
            pss_total = sum(v for v in pss if v is not None) if None not in pss else None
            self.samples.append(MemorySample(time.monotonic() - began, total, present, pss_total))

    def _loop(self) -> None:
        began = time.monotonic()
        next_at = began
        while not self._stop.is_set():
            self.sample(began)
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class MemorySummary:
    seconds: float
    samples: int
    processes: int  # most processes seen in the tree at once
    first_mb: float
    max_mb: float
    last_mb: float
    max_single_process_mb: float
    max_pss_mb: float | None  # PSS summed over the tree: below the RSS sum when workers share
    slope_mb_per_min: float
    series_t_s: list[float]
    series_mb: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slope_per_minute(t_s: list[float], values: list[float]) -> float:
    """Least-squares slope of values against time, per minute."""
    n = len(t_s)
    if n < 2:
        return 0.0
    mean_t, mean_v = sum(t_s) / n, sum(values) / n
    var_t = sum((t - mean_t) ** 2 for t in t_s)
    if var_t == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in zip(t_s, values, strict=True))
    return cov / var_t * 60.0


def summarise(samples: list[MemorySample]) -> MemorySummary:
    if not samples:
        raise ValueError("no memory samples")
    t_s = [s.t_s for s in samples]
    totals = [s.total_mb for s in samples]
    return MemorySummary(
        seconds=t_s[-1] - t_s[0],
        samples=len(samples),
        processes=max(len(s.per_process_mb) for s in samples),
        first_mb=totals[0],
        max_mb=max(totals),
        last_mb=totals[-1],
        max_single_process_mb=max(max(s.per_process_mb.values()) for s in samples),
        max_pss_mb=max(pss)
        if (pss := [s.pss_total_mb for s in samples if s.pss_total_mb])
        else None,
        slope_mb_per_min=slope_per_minute(t_s, totals),
        series_t_s=[round(t, 3) for t in t_s],
        series_mb=[round(v, 2) for v in totals],
    )
