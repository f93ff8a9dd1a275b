"""The two benchmark models: the committed 64-input bundle and a 784-input image bundle.

The 784-input model is built here when missing (cached afterwards): scikit-learn's 8x8 digits
resized to 28x28 with PIL bilinear, trained with the project's own `vae-train`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.shared import BENCH, ROOT, VENV_BIN
from bundle.arrays import FloatArray

DEFAULT_BUNDLE = ROOT / "models" / "digits-vae" / "1"
DATA_28 = BENCH / "models" / "data" / "digits28.npy"
REPO_28 = BENCH / "models" / "repo"
BUNDLE_28 = REPO_28 / "digits28-vae" / "1"
REPO_DEFAULT = BENCH / "models" / "repo-default"  # holds a copy of the default bundle only


@dataclass(frozen=True)
class BenchModel:
    key: str  # "default" or "784"
    name: str
    repository: Path  # a folder holding this model only
    bundle: Path
    features: int
    rows: FloatArray  # real data in user units, (N, features)


def digits_rows() -> FloatArray:
    from sklearn.datasets import load_digits

    data: FloatArray = load_digits().data.astype(np.float32)  # (1797, 64), values 0..16
    return data


def digits28_images() -> FloatArray:
    """(N, 28, 28) float32: every 8x8 digit resized with PIL bilinear in mode 'F'."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)
    resized = [
        np.asarray(Image.fromarray(image).resize((28, 28), Image.Resampling.BILINEAR))
        for image in images  # float32 arrays open as mode 'F'
    ]
    return np.stack(resized).astype(np.float32)


def ensure_data28() -> FloatArray:
    if not DATA_28.is_file():
        DATA_28.parent.mkdir(parents=True, exist_ok=True)
        np.save(DATA_28, digits28_images(), allow_pickle=False)
    images: FloatArray = np.load(DATA_28, allow_pickle=False)
    return images


def ensure_bundle28(log: bool = True) -> Path:
    """Train the 784-input bundle with the real trainer unless it is already there."""
    if (BUNDLE_28 / "model.json").is_file():
        return BUNDLE_28
    ensure_data28()
    if BUNDLE_28.exists():  # a half-written bundle from an interrupted run
        shutil.rmtree(BUNDLE_28)
    command = [
        str(VENV_BIN / "vae-train"),
        "--dataset",
        str(DATA_28.relative_to(ROOT)),
        "--out",
        str(BUNDLE_28.relative_to(ROOT)),
        "--epochs",
        "30",
        "--quiet",
        "--no-plots",
    ]
    if log:
        print(f"training the 784-input model: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, timeout=900)
    if log:
        print(f"  trained in {time.perf_counter() - started:.0f} s", flush=True)
    return BUNDLE_28


def ensure_default_repository() -> Path:
    """A repository folder with a copy of models/digits-vae/1 and nothing else."""
    target = REPO_DEFAULT / DEFAULT_BUNDLE.parent.name / DEFAULT_BUNDLE.name
    source_manifest = (DEFAULT_BUNDLE / "model.json").read_bytes()
    if not (target / "model.json").is_file() or (
        (target / "model.json").read_bytes() != source_manifest
    ):
        if REPO_DEFAULT.exists():
            shutil.rmtree(REPO_DEFAULT)
        shutil.copytree(DEFAULT_BUNDLE, target, ignore=shutil.ignore_patterns("report"))
    return REPO_DEFAULT


def model_name(bundle: Path) -> str:
    name: str = json.loads((bundle / "model.json").read_text())["name"]
    return name


def load_model(key: str) -> BenchModel:
    if key == "default":
        repository = ensure_default_repository()
        bundle = repository / DEFAULT_BUNDLE.parent.name / DEFAULT_BUNDLE.name
        rows = digits_rows()
    elif key == "784":
        bundle = ensure_bundle28()
        repository = REPO_28
        rows = ensure_data28().reshape(-1, 28 * 28)
    else:
        raise ValueError(f"unknown model {key!r}; use default or 784")
    return BenchModel(
        key=key,
        name=model_name(bundle),
        repository=repository,
        bundle=bundle,
        features=rows.shape[1],
        rows=rows,
    )
