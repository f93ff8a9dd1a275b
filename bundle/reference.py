"""`reference.npz`: what normal data looked like to the trainer, kept in the bundle so a server
can tell when live traffic stops looking like it (service.monitoring).

Three kinds of sample, each at most MAX_REFERENCE_ITEMS rows:

- `score_<type>`: each calibrated score's values on the items its threshold was set from,
  sorted (the distribution the threshold is a percentile of);
- `latent_mu`: the encoder's posterior means of held-out normal items, (n, latent_dim): the
  aggregate posterior live codes are compared with, one latent dimension at a time;
- `features`: the same items in model units, (n, features), tables only (an image's pixels
  one by one say little; its code says more).

Written by the trainer (training.pipeline), its sha256 in model.json (`reference`); a bundle
without it still loads and serves, and monitoring says what it lacks. Read without pickle, every
array's shape checked against the manifest.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bundle.arrays import AnyFloatArray, Float64Array, FloatArray
from bundle.manifest import ReferenceSpec, sha256_of

REFERENCE_FILENAME = "reference.npz"
# Rows kept per sample: a two-sample test's power is set by the smaller sample (the live
# window, a few hundred), and 2,000 reference rows keep the file small (~180 kB for 20 latent
# dimensions and 64 features).
MAX_REFERENCE_ITEMS = 2_000


@dataclass(frozen=True)
class ReferenceData:
    scores: dict[str, Float64Array]  # sorted, per score type
    latent_mu: FloatArray  # (n, latent_dim)
    features: FloatArray | None  # (n, features) in model units; tables only


def evenly_spaced(count: int, limit: int = MAX_REFERENCE_ITEMS) -> np.ndarray:
    """Row positions: every row up to `limit`, else `limit` spread over all of them."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def build_reference(
    scores: Mapping[str, AnyFloatArray], latent_mu: AnyFloatArray, features: AnyFloatArray | None
) -> ReferenceData:
    """Samples capped at MAX_REFERENCE_ITEMS: scores by evenly spaced ranks (their sorted
    values), codes and features by evenly spaced rows."""
    kept_scores = {}
    for name, values in scores.items():
        ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
        kept_scores[name] = ordered[evenly_spaced(len(ordered))]
    mu = np.asarray(latent_mu, dtype=np.float32)
    rows = evenly_spaced(len(mu))
    kept_features = None
    if features is not None:
        table = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
        kept_features = np.ascontiguousarray(table[evenly_spaced(len(table))])
    return ReferenceData(kept_scores, np.ascontiguousarray(mu[rows]), kept_features)


def write_reference(folder: Path, reference: ReferenceData) -> ReferenceSpec:
    arrays: dict[str, np.ndarray] = {f"score_{k}": v for k, v in reference.scores.items()}
    arrays["latent_mu"] = reference.latent_mu
    if reference.features is not None:
        arrays["features"] = reference.features
    path = folder / REFERENCE_FILENAME
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    path.write_bytes(buffer.getvalue())
    return ReferenceSpec(
        file=REFERENCE_FILENAME,
        sha256=sha256_of(path),
        n_items=len(reference.latent_mu),
        score_types=sorted(reference.scores),
        latent_dim=int(reference.latent_mu.shape[1]),
        features=None if reference.features is None else int(reference.features.shape[1]),
    )


class ReferenceError(ValueError):
    pass


def read_reference(folder: Path, spec: ReferenceSpec) -> ReferenceData:
    """The bundle's reference, checked against its manifest entry (sha256, names, shapes)."""
    path = folder / spec.file
    if path.parent != folder or not path.is_file():
        raise ReferenceError(f"{spec.file}: no such file in the bundle")
    if sha256_of(path) != spec.sha256:
        raise ReferenceError(f"{path}: sha256 does not match model.json's reference entry")
    with np.load(path, allow_pickle=False) as stored:
        names = set(stored.files)
        expected = {f"score_{t}" for t in spec.score_types} | {"latent_mu"}
        if spec.features is not None:
            expected.add("features")
        if names != expected:
            raise ReferenceError(
                f"{path}: holds {sorted(names)}, model.json says {sorted(expected)}"
            )
        scores: dict[str, Float64Array] = {
            t: np.asarray(stored[f"score_{t}"], dtype=np.float64) for t in spec.score_types
        }
        mu = np.asarray(stored["latent_mu"], dtype=np.float32)
        features = (
            None if spec.features is None else np.asarray(stored["features"], dtype=np.float32)
        )
    if mu.shape != (spec.n_items, spec.latent_dim):
        raise ReferenceError(
            f"{path}: latent_mu is {mu.shape}, model.json says ({spec.n_items}, {spec.latent_dim})"
        )
    if features is not None and features.shape != (spec.n_items, spec.features):
        raise ReferenceError(
            f"{path}: features is {features.shape}, model.json says "
            f"({spec.n_items}, {spec.features})"
        )
    for name, values in scores.items():
        if values.ndim != 1 or not 0 < len(values) <= MAX_REFERENCE_ITEMS:
            raise ReferenceError(f"{path}: score_{name} must hold 1..{MAX_REFERENCE_ITEMS} values")
    return ReferenceData(scores, mu, features)
