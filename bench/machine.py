"""What a benchmark ran on, recorded beside its figures: cores, CPU model, kernel, Python, load,
and the versions of the packages that decide the result."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any


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
