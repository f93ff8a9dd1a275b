"""Each peer's own venv, built from its pinned requirements: bench/peers/requirements/<venv>.txt
-> bench/out/venvs/<venv>/, rebuilt only when that file changes (its sha256 is kept beside).

    .venv/bin/python -m bench.peers.venvs [VENV ...]    # all of them by default

The peers never share a venv with the project or with each other: their pins conflict
(fastapi, pydantic, protobuf, uvicorn), and `make test` must not depend on any of them.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.shared import BENCH, VENV_BIN

REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
VENVS = BENCH / "out" / "venvs"


def available() -> list[str]:
    return sorted(path.stem for path in REQUIREMENTS.glob("*.txt"))


def python_of(venv: str) -> Path:
    """The python a peer runs with; "" is the project's own."""
    return VENV_BIN / "python" if not venv else VENVS / venv / "bin" / "python"


def ensure(venv: str, *, quiet: bool = True) -> Path:
    """The venv's python, after building the venv if its requirements changed."""
    if not venv:
        return python_of(venv)
    requirements = REQUIREMENTS / f"{venv}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    folder = VENVS / venv
    stamp = folder / "requirements.sha256"
    python = python_of(venv)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"  building the {venv} venv from {requirements.relative_to(BENCH.parent)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("--quiet")
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(digest + "\n")
    return python


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.venvs", description=__doc__)
    parser.add_argument("venvs", nargs="*", help=f"any of {available()}; default: all")
    options = parser.parse_args(argv)
    for venv in options.venvs or available():
        print(ensure(venv, quiet=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
