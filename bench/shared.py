"""What several benchmarks share: the paths, a target's Check, the machine a run ran on, the
time stamp and JSON file a run writes, and a per-call timer."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent  # vae-serve, vae-train: beside the running Python

PASS, FAIL, NOT_APPLICABLE = "PASS", "FAIL", "N/A"


@dataclass(frozen=True)
class Check:
    """One target: what it asks, what was measured, and PASS, FAIL or N/A (nothing to judge).

    `model` and `scenario` place it in a run over several (bench/http_bench.py); `ratio` is the
    figure it was judged on, where there is one.
    """

    target: str
    measured: str
    status: str
    model: str = ""
    scenario: str = ""
    ratio: float | None = None

    @classmethod
    def judged(
        cls,
        target: str,
        measured: str,
        ok: bool,
        *,
        model: str = "",
        scenario: str = "",
        ratio: float | None = None,
    ) -> Check:
        return cls(target, measured, PASS if ok else FAIL, model, scenario, ratio)

    @property
    def ok(self) -> bool:
        return self.status == PASS

    def as_dict(self, keys: Sequence[str] = ("target", "measured", "status")) -> dict[str, Any]:
        """The entries `keys` names (`ok` among them), in that order: each JSON keeps its own."""
        return {key: getattr(self, key) for key in keys}


def utc_stamp() -> str:
    """Now, as every results file dates its run: 2026-12-05T17:10:08+00:00."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def machine(packages: Iterable[str], **extra: Any) -> dict[str, Any]:
    """The machine and the named packages' versions; `extra` adds run-specific entries."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "packages": package_versions(packages),
        **extra,
    }


def machine_text(recorded: dict[str, Any]) -> str:
    """'2 cores (`nproc`), <CPU>, Linux <kernel>, Python <version>' from `machine()`'s record."""
    return (
        f"{recorded['nproc']} cores (`nproc`), {recorded['cpu_model']}, Linux "
        f"{recorded['kernel']}, Python {recorded['python']}"
    )


def packages_text(recorded: dict[str, Any]) -> str:
    """'fastapi 0.115.0, numpy 2.1.0' from `machine()`'s record."""
    return ", ".join(f"{k} {v}" for k, v in recorded["packages"].items())


def per_call_us(call: Callable[[], object], seconds: float) -> float:
    """Microseconds per call of `call`, repeated for `seconds` after one call to warm up."""
    call()
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        call()
        calls += 1
    return (time.perf_counter() - began) / calls * 1e6
