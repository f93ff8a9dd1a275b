"""Served numbers equal training's: the service scores exactly like `OnnxBundle.scores`, the
function the trainer calibrated thresholds with, and reproduces the stored calibration."""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer, load_digits

from bundle.arrays import Float64Array
from bundle.runtime import OnnxBundle
from service.settings import ServiceSettings
from training.data import load_dataset, split_dataset

MODELS = [("tiny-vae", "2"), ("cancer-vae", "1"), ("digits-vae", "1")]
# cancer-vae's 54 validation rows are too few for a 99th percentile: its threshold comes from
# cross-fitted scores (tests/training/calibration/test_crossfit.py), which the service cannot recompute.
VALIDATION_CALIBRATED = [model for model in MODELS if model[0] != "cancer-vae"]
SCORE_TYPES = ["recon_mse", "neg_elbo"]
IMAGE_MODELS = [model for model in MODELS if model[0] != "cancer-vae"]
# (name, version, score type): every model's two scores, and the image models' third.
SCORED = [(*model, score) for model in MODELS for score in SCORE_TYPES] + [
    (*model, "recon_complexity") for model in IMAGE_MODELS
]
MAX_BATCH = 256  # the test settings' max_batch_size


@cache
def real_inputs(name: str) -> Float64Array:
    """Real rows for the model: sklearn digits (0..16) or breast-cancer features."""
    data = load_breast_cancer().data if name == "cancer-vae" else load_digits().data
    rows: Float64Array = np.asarray(data, dtype=np.float64)[::3][:200]
    return rows


def bundle_dir(settings: ServiceSettings, name: str, version: str) -> Path:
    return Path(settings.model_repository) / name / version


def served_scores(
    client: TestClient, name: str, version: str, x: npt.NDArray[Any], score_type: str
) -> Float64Array:
    """Scores from the service (chunked under the batch limit), parsed from JSON as float64."""
    parts: list[float] = []
    for start in range(0, len(x), MAX_BATCH):
        response = client.post(
            f"/models/{name}/versions/{version}/anomaly-score",
            json={"inputs": x[start : start + MAX_BATCH].tolist(), "score_type": score_type},
        )
        assert response.status_code == 200, response.text
        assert response.json()["score_type"] == score_type
        parts.extend(response.json()["scores"])
    assert all(isinstance(value, float) for value in parts)
    return np.asarray(parts, dtype=np.float64)


@pytest.mark.parametrize(("name", "version", "score_type"), SCORED)
def test_served_scores_equal_bundle_scores_exactly(
    client: TestClient, settings: ServiceSettings, name: str, version: str, score_type: str
) -> None:
    x = real_inputs(name)
    bundle = OnnxBundle(bundle_dir(settings, name, version))
    expected = bundle.scores(x, score_type)  # type: ignore[arg-type]
    got = served_scores(client, name, version, x, score_type)
    assert expected.dtype == np.float64
    # orjson writes a float64 as its shortest round-trip repr, so parsing it back gives the
    # very same double: no tolerance.
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("name", "version", "score_type"),
    [entry for entry in SCORED if entry[:2] in VALIDATION_CALIBRATED],
)
def test_validation_split_reproduces_the_stored_threshold(
    client: TestClient, settings: ServiceSettings, name: str, version: str, score_type: str
) -> None:
    manifest: dict[str, Any] = json.loads(
        (bundle_dir(settings, name, version) / "model.json").read_text()
    )
    config = manifest["training"]["config"]
    calibration = manifest["anomaly"]["scores"][score_type]
    data = load_dataset(config["dataset"])
    splits = split_dataset(
        data,
        seed=config["seed"],
        validation_fraction=config["validation_fraction"],
        test_fraction=config["test_fraction"],
    )
    assert len(splits.validation) == calibration["n_samples"]
    scores = served_scores(client, name, version, splits.validation, score_type)
    threshold = float(np.percentile(scores, calibration["percentile"], method="weibull"))
    assert threshold == pytest.approx(calibration["threshold"], rel=1e-6)
    assert float(scores.mean()) == pytest.approx(calibration["mean"], rel=1e-6)
    # ... and the served threshold is the stored one, so about 1% of validation is flagged.
    flagged = float((scores > calibration["threshold"]).mean())
    assert flagged <= 0.02


@pytest.mark.parametrize(("name", "version", "score_type"), SCORED)
def test_batch_scores_equal_item_by_item(
    client: TestClient, name: str, version: str, score_type: str
) -> None:
    x = real_inputs(name)[:12]
    batch = served_scores(client, name, version, x, score_type)
    single = np.concatenate(
        [served_scores(client, name, version, x[i : i + 1], score_type) for i in range(len(x))]
    )
    np.testing.assert_array_equal(batch, single)


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_npy_scores_equal_json_scores_exactly(client: TestClient, name: str, version: str) -> None:
    x = real_inputs(name)[:40]
    via_json = served_scores(client, name, version, x, "neg_elbo")
    buffer = io.BytesIO()
    np.save(buffer, x)
    response = client.post(
        f"/models/{name}/versions/{version}/anomaly-score",
        params={"score_type": "neg_elbo"},
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert response.status_code == 200, response.text
    via_npy = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert via_npy.dtype == np.float64
    np.testing.assert_array_equal(via_npy, via_json)
