"""Candidate anomaly scores on one held-out-class task: how recon_complexity was chosen.

    .venv/bin/python -m bench.score_candidates mnist-5k:holdout=1 [--seed 0] [--bundle DIR]

Trains the default model on the task (or takes `--bundle`, trained on that task and seed),
then scores the test part (40% of the normal items and every anomaly, the split of `make
quality`) through the bundle's graphs with each candidate and prints one JSON line of AUROCs:

- the bundle's own scores (recon_mse, neg_elbo, recon_complexity);
- latent-space scores: Mahalanobis distance of mu from the training codes, mean distance to
  the 5 nearest training codes, -log of the aggregate posterior (the mixture of the training
  items' posteriors) at mu;
- complexity corrections of -ELBO (Serra et al. 2020: minus the zlib code length of the 8-bit
  image in nats, and regressed on total variation);
- log MSE regressed on log total variation, fitted on the training rows, the validation rows,
  or both (what recon_complexity ships), with the fitted slopes.

bench/quality_defaults.md ("Images the size of MNIST") has the figures this printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from bench.quality.config import TEST_FRACTION
from bundle.arrays import AnyFloatArray, Float64Array
from bundle.runtime import MeanPath, OnnxBundle
from bundle.scoring import log_complexity, log_recon_mse, neg_elbo
from training.config import TrainingConfig
from training.data import load_dataset, split_dataset
from training.pipeline import run_training


def _slope(y: Float64Array, x: Float64Array) -> float:
    """The least-squares slope of y on x (the intercept does not change a ranking)."""
    return float(np.polyfit(x, y, 1)[0])


def _zlib_bits(x_model: AnyFloatArray) -> Float64Array:
    pixels = np.clip(np.rint(x_model.reshape(len(x_model), -1) * 255), 0, 255).astype(np.uint8)
    return np.array([8.0 * len(zlib.compress(row.tobytes(), 9)) for row in pixels])


def candidates(bundle: OnnxBundle, task: str, seed: int) -> dict[str, float]:
    config = TrainingConfig()
    splits = split_dataset(
        load_dataset(task),
        seed=seed,
        validation_fraction=config.validation_fraction,
        test_fraction=TEST_FRACTION,
    )
    manifest = bundle.manifest
    assert manifest.input.image_shape is not None, "images only"
    c, h, w = manifest.input.image_shape
    image_shape = (c, h, w)

    def run(x: np.ndarray) -> MeanPath:
        batch = np.ascontiguousarray(x.astype(np.float32).reshape(-1, *bundle.input_shape))
        return bundle.run_mean_path(batch)

    train, val, test = run(splits.train), run(splits.validation), run(splits.test)
    y = splits.test_is_anomaly
    out: dict[str, float] = {}

    def add(name: str, scores: Float64Array) -> None:
        out[name] = round(float(roc_auc_score(y, scores)), 3)

    for score_type in manifest.anomaly.scores:
        add(score_type, bundle.scores(splits.test, score_type))
    mu_train = train.encoding.mu.astype(np.float64)
    mu_test = test.encoding.mu.astype(np.float64)
    centred = mu_test - mu_train.mean(0)
    precision = np.linalg.inv(np.cov(mu_train.T) + 1e-6 * np.eye(mu_train.shape[1]))
    add("latent_mahalanobis", np.einsum("ij,jk,ik->i", centred, precision, centred))
    spread = mu_train.std(0) + 1e-9
    neighbours = NearestNeighbors(n_neighbors=5).fit(mu_train / spread)
    add("latent_knn5", neighbours.kneighbors(mu_test / spread)[0].mean(1))
    if manifest.is_variational and train.encoding.logvar is not None:
        logvar = train.encoding.logvar.astype(np.float64)
        parts = []
        for start in range(0, len(mu_test), 256):
            z = mu_test[start : start + 256, None, :]
            log_q = -0.5 * (
                (z - mu_train[None]) ** 2 / np.exp(logvar[None]) + logvar[None] + np.log(2 * np.pi)
            ).sum(2)
            top = log_q.max(1, keepdims=True)
            parts.append(-(top[:, 0] + np.log(np.exp(log_q - top).mean(1))))
        add("aggregate_posterior", np.concatenate(parts))
        likelihood = manifest.likelihood

        def elbo(path: MeanPath) -> Float64Array:
            assert path.encoding.logvar is not None
            return neg_elbo(
                path.x_model,
                path.encoding.mu,
                path.encoding.logvar,
                bundle.decode_model,
                likelihood.kind,
                likelihood.sigma,
                bundle.epsilon,
            )

        elbo_test = elbo(test)
        add("neg_elbo - zlib nats", elbo_test - _zlib_bits(test.x_model) * np.log(2))
        elbo_val = elbo(val)
        slope = _slope(elbo_val, log_complexity(val.x_model, image_shape))
        test_tv = log_complexity(test.x_model, image_shape)
        add("neg_elbo ~ log TV (val)", elbo_test - slope * test_tv)
    fitted = {
        "train": [train],
        "val": [val],
        "train+val": [train, val],
    }
    test_mse = log_recon_mse(test.x_model, test.decoded)
    test_tv = log_complexity(test.x_model, image_shape)
    for name, paths in fitted.items():
        log_mse = np.concatenate([log_recon_mse(p.x_model, p.decoded) for p in paths])
        log_tv = np.concatenate([log_complexity(p.x_model, image_shape) for p in paths])
        slope = _slope(log_mse, log_tv)
        add(f"log MSE ~ log TV ({name})", test_mse - max(slope, 0.0) * test_tv)
        out[f"slope ({name})"] = round(slope, 3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.score_candidates")
    parser.add_argument("task", help="a held-out-class image task, e.g. mnist-5k:holdout=1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", type=Path, default=None, help="trained on TASK and --seed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="score-candidates-") as scratch:
        folder = args.bundle
        if folder is None:
            config = TrainingConfig(
                dataset=args.task, seed=args.seed, test_fraction=TEST_FRACTION, plots=False
            )
            folder = run_training(config, Path(scratch) / "1", show_progress=False).bundle_dir
        figures = candidates(OnnxBundle(folder), args.task, args.seed)
        print(json.dumps({"task": args.task, **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
