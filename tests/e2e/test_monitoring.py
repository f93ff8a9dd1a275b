"""Monitoring through a real `vae-serve --workers 2`: bundles trained by the real trainer
(with their reference.npz), held-out normal data and data shifted the ways real data shifts,
sent one request per connection so both workers score some and the report must gather both.

Each shift is flagged within one window by the monitor it concerns, naming the feature that
moved; normal traffic that refills the window clears the verdict.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from service.dataplane.monitor_flush import MONITOR_FLUSH_S
from tests.bundles import COMMITTED_BUNDLE, BundleFactory
from tests.e2e.processes import running_server
from training.data import load_dataset, split_dataset

WINDOW = 50
ENV = {
    "VAE_HOST": "127.0.0.1",
    "VAE_WORKERS": "2",
    "VAE_LOG_LEVEL": "warning",
    "VAE_MONITOR_WINDOW": str(WINDOW),
    "VAE_MONITOR_MIN_ITEMS": "30",
    "VAE_MONITOR_REPORT_INTERVAL_S": "0",  # each report sees the requests just sent
}
Rows = npt.NDArray[np.floating[Any]]


def send(base: str, model: str, rows: Rows) -> None:
    """One item per request, each on a new connection: the kernel spreads them over workers."""
    for row in rows:
        with httpx.Client(timeout=10.0) as client:
            answer = client.post(
                f"{base}/models/{model}/anomaly-score", json={"inputs": [row.tolist()]}
            )
            answer.raise_for_status()


def settle() -> None:
    """Each worker writes what it scored within MONITOR_FLUSH_S; wait for both to have."""
    time.sleep(2 * MONITOR_FLUSH_S + 0.1)


def report(base: str, model: str) -> dict[str, Any]:
    settle()
    answer = httpx.get(f"{base}/models/{model}/monitoring", timeout=10.0)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def repository_of(bundle_dir: Path, tmp_path: Path, name: str) -> Path:
    root = tmp_path / "models"
    (root / name).mkdir(parents=True)
    (root / name / "1").symlink_to(bundle_dir, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def table_split() -> Any:
    return split_dataset(load_dataset("breast-cancer"), seed=0)


@pytest.fixture(scope="module")
def shared_table_server(
    train_bundle: BundleFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One server for the hostile cases, which leave no state behind."""
    outcome = train_bundle(
        dataset="breast-cancer", epochs=30, hidden="32", latent_dim=4, name="model"
    )
    root = repository_of(outcome.bundle_dir, tmp_path_factory.mktemp("hostile"), "model")
    with running_server(ENV, root) as (base, _):
        yield base


@pytest.fixture
def table_server(train_bundle: BundleFactory, tmp_path: Path) -> Iterator[str]:
    outcome = train_bundle(
        dataset="breast-cancer", epochs=30, hidden="32", latent_dim=4, name="model"
    )
    root = repository_of(outcome.bundle_dir, tmp_path, "model")
    with running_server(ENV, root) as (base, _):
        yield base


def test_table_shifts_are_flagged_by_the_right_monitor_and_clear(
    table_server: str, table_split: Any
) -> None:
    base, split = table_server, table_split
    normal = split.test[~split.test_is_anomaly]  # held-out benign: never trained on
    first = report(base, "model")
    assert first["window"]["items"] == 0
    assert first["anomaly_rate"] is None
    assert "verdicts start at 30" in " ".join(first["missing"])

    send(base, "model", normal[:WINDOW])
    calm = report(base, "model")
    assert calm["window"]["items"] == WINDOW  # both workers' items, gathered
    assert calm["expected_anomaly_rate"] == pytest.approx(0.01)
    assert calm["anomaly_rate_test"]["alert"] is False
    assert calm["score_drift"]["drifted"] is False
    assert calm["input_drift"]["drifted"] is False

    # A sensor that starts reporting in other units: one column three times its scale.
    scaled = normal[:WINDOW].copy()
    scaled[:, 3] *= 3.0
    send(base, "model", scaled)
    verdict = report(base, "model")
    assert verdict["input_drift"]["features_drifted"] is True
    top = verdict["input_drift"]["features"][0]
    assert top["feature"] == 3
    assert top["name"] == "mean area"  # the bundle names its columns: a person can act on it
    assert top["drifted"]
    assert top["mean_shift_in_sd"] > 1.0
    assert not any(f["drifted"] for f in verdict["input_drift"]["features"][1:])

    # Normal traffic refills the window: the verdict clears.
    send(base, "model", np.concatenate([normal, normal])[:WINDOW])
    cleared = report(base, "model")
    assert cleared["input_drift"]["drifted"] is False
    assert cleared["score_drift"]["drifted"] is False

    # An offset sensor: two training standard deviations added to one column.
    offset = normal[:WINDOW].copy()
    offset[:, 7] += 2.0 * split.train[:, 7].std()
    send(base, "model", offset)
    moved = report(base, "model")["input_drift"]
    assert moved["drifted"]
    assert moved["features"][0]["feature"] == 7
    assert moved["features"][0]["name"] == "mean concave points"
    assert moved["features"][0]["mean_shift_in_sd"] > 1.0

    # A class that was not in training (malignant): the anomaly rate and the scores.
    send(base, "model", split.test[split.test_is_anomaly][:WINDOW])
    malignant = report(base, "model")
    assert malignant["anomaly_rate"] > 0.3
    assert malignant["anomaly_rate_test"]["alert"] is True
    assert malignant["score_drift"]["drifted"] is True
    # The same verdicts as Prometheus gauges, one series per model version, whichever worker
    # answers the scrape.
    for _ in range(4):
        scrape = httpx.get(f"{base}/metrics").text
        assert 'vae_monitor_score_drifted{model="model",version="1"} 1.0' in scrape
        assert 'vae_monitor_anomaly_rate_alert{model="model",version="1"} 1.0' in scrape
        assert f'vae_monitor_window_items{{model="model",version="1"}} {WINDOW}.0' in scrape


@pytest.fixture
def image_server(train_bundle: BundleFactory, tmp_path: Path) -> Iterator[str]:
    outcome = train_bundle(dataset="digits:holdout=0", epochs=15, name="model")
    root = repository_of(outcome.bundle_dir, tmp_path, "model")
    with running_server(ENV, root) as (base, _):
        yield base


def test_image_shifts_are_flagged(image_server: str) -> None:
    base = image_server
    split = split_dataset(load_dataset("digits:holdout=0"), seed=0)
    normal = split.test[~split.test_is_anomaly].reshape(-1, 64)
    send(base, "model", normal[:WINDOW])
    calm = report(base, "model")
    assert calm["score_drift"]["drifted"] is False
    assert calm["input_drift"]["drifted"] is False
    assert "features" not in calm["input_drift"]  # images: the code speaks for the pixels

    images = normal[WINDOW : 2 * WINDOW].reshape(-1, 8, 8)
    inverted = (16.0 - images).reshape(-1, 64)
    send(base, "model", inverted)
    verdict = report(base, "model")
    assert verdict["input_drift"]["latent_drifted"] is True
    assert verdict["score_drift"]["drifted"] is True

    send(base, "model", normal[:WINDOW])
    assert report(base, "model")["input_drift"]["drifted"] is False

    shifted = np.zeros_like(images)
    shifted[:, :, 2:] = images[:, :, :-2]  # two pixels to the right
    send(base, "model", shifted.reshape(-1, 64))
    assert report(base, "model")["score_drift"]["drifted"] is True

    send(base, "model", split.test[split.test_is_anomaly].reshape(-1, 64)[:WINDOW])
    # The held-out class: this small model flags few of its items (a threshold tuned for 1% of
    # normal ones), yet its codes and scores are nothing like the reference's.
    zeros = report(base, "model")
    assert zeros["score_drift"]["drifted"] is True
    assert zeros["input_drift"]["latent_drifted"] is True


def test_a_bundle_without_a_reference_says_what_it_lacks(tmp_path: Path) -> None:
    """A bundle from a trainer before reference.npz (the committed one, its reference taken
    out): the anomaly rate is judged, drift is not, and the report says why."""
    old = tmp_path / "models" / "digits-vae" / "1"
    shutil.copytree(COMMITTED_BUNDLE, old)
    (old / "reference.npz").unlink()
    manifest = json.loads((old / "model.json").read_text())
    del manifest["reference"]
    (old / "model.json").write_text(json.dumps(manifest))
    rows = load_dataset("digits:holdout=0").x.reshape(-1, 64)[:40]
    with running_server({**ENV, "VAE_WORKERS": "1"}, tmp_path / "models") as (base, _):
        send(base, "digits-vae", rows[:35])
        # The Open Inference Protocol's <name> model scores with the same model: recorded too.
        tensor = {"name": "x", "datatype": "FP32", "shape": [5, 64], "data": rows[35:].tolist()}
        infer = httpx.post(f"{base}/v2/models/digits-vae/infer", json={"inputs": [tensor]})
        assert infer.status_code == 200, infer.text
        body = report(base, "digits-vae")
        assert body["window"]["items"] == 40
        assert body["anomaly_rate_test"]["alert"] in (True, False)
        assert body["score_drift"] is None
        assert body["input_drift"] is None
        assert "no reference.npz" in " ".join(body["missing"])
        assert httpx.get(f"{base}/models/digits-vae/versions/1/monitoring").status_code == 200
        assert httpx.get(f"{base}/models/nope/monitoring").status_code == 404
        assert httpx.get(f"{base}/models/digits-vae/versions/9/monitoring").status_code == 404


def test_monitoring_off_records_nothing_and_says_so() -> None:
    with running_server({**ENV, "VAE_WORKERS": "1", "VAE_MONITORING": "false"}) as (base, _):
        answer = httpx.get(f"{base}/models/digits-vae/monitoring")
        assert answer.status_code == 409
        assert "VAE_MONITORING" in answer.text


def test_feedback_figures_equal_the_offline_ones(table_server: str, table_split: Any) -> None:
    """Labels sent for answers scored by either worker (single items and one batch) give the
    precision, recall and false-alarm rate computed here from the same answers and labels."""
    base, split = table_server, table_split
    rows, truth = split.test[:60], split.test_is_anomaly[:60]
    flagged: list[bool] = []
    labels: list[dict[str, Any]] = []
    for row, anomaly in zip(rows[:40], truth[:40], strict=True):
        with httpx.Client(timeout=10.0) as client:  # a new connection: either worker
            answer = client.post(
                f"{base}/models/model/anomaly-score", json={"inputs": [row.tolist()]}
            )
        flagged.append(answer.json()["is_anomaly"][0])
        labels.append({"request_id": answer.headers["x-request-id"], "anomaly": bool(anomaly)})
    batch = httpx.post(
        f"{base}/models/model/anomaly-score",
        json={"inputs": rows[40:].tolist()},
        headers={"X-Request-ID": "batch-of-20"},
    )
    flagged += batch.json()["is_anomaly"]
    labels += [
        {"request_id": "batch-of-20", "item": i, "anomaly": bool(a)}
        for i, a in enumerate(truth[40:])
    ]
    unknown = [{"request_id": "never-scored", "anomaly": True}]
    # Sent at once: labels for items the other worker has not written yet are looked for again.
    answer = httpx.post(f"{base}/models/model/feedback", json={"labels": labels + unknown})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 60, "unknown": 1, "unknown_labels": [60]}

    predicted, actual = np.array(flagged), truth
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    tn = int(np.sum(~predicted & ~actual))
    feedback = report(base, "model")["feedback"]
    assert feedback["n"] == 60
    assert (feedback["true_positives"], feedback["false_positives"]) == (tp, fp)
    assert (feedback["false_negatives"], feedback["true_negatives"]) == (fn, tn)
    assert feedback["precision"] == pytest.approx(tp / (tp + fp))
    assert feedback["recall"] == pytest.approx(tp / (tp + fn))
    assert feedback["false_alarm_rate"] == pytest.approx(fp / (fp + tn))


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b"{not json", 400, "JSON"),
        (b'{"labels": []}', 422, "non-empty"),
        (b'{"labels": [{"request_id": "a"}]}', 422, "labels[0]"),
        (b'{"labels": [{"request_id": "a b", "anomaly": true}]}', 422, "request_id"),
        (b'{"labels": [{"request_id": "a", "anomaly": 1}]}', 422, "anomaly"),
        (b'{"labels": [{"request_id": "a", "item": -1, "anomaly": true}]}', 422, "item"),
        (b'{"labels": [{"request_id": "a", "item": 1e9, "anomaly": true}]}', 422, "item"),
        (b'{"labels": [{"request_id": "a", "anomaly": true, "x": 1}]}', 422, "unknown field"),
        (b'{"labels": [{"request_id": "a", "anomaly": true}], "more": 1}', 422, "one field"),
        (b'{"labels": [' + b'{"request_id": "a", "anomaly": true},' * 10_000
         + b'{"request_id": "a", "anomaly": true}]}', 422, "at most 10000"),
        (b'{"labels": "' + b"x" * (1 << 20) + b'"}', 413, "body"),
    ],
)  # fmt: skip
def test_hostile_feedback_is_refused_by_name(
    shared_table_server: str, body: bytes, status: int, names: str
) -> None:
    base = shared_table_server
    answer = httpx.post(
        f"{base}/models/model/feedback", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    assert names in answer.text
    assert httpx.get(f"{base}/readyz").status_code == 200  # and the worker is still there
