"""A model version's monitor in one process: what it says without a reference or with too few
items, that a failure to record never reaches the request, and that reports are reused."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.reference import build_reference
from service.monitoring.assess import RatePromise, score_histogram
from service.monitoring.monitor import ModelMonitor, MonitorSettings

# A threshold at the 99th percentile of many calibration scores: a promise of 1%.
PROMISE = RatePromise(6.6, 99.0, 100_000)


def _monitor(interval_s: float = 0.0, with_reference: bool = True) -> ModelMonitor:
    rng = np.random.default_rng(0)
    reference = build_reference(
        {"recon_mse": rng.gamma(2.0, 1.0, 1000)}, rng.normal(size=(1000, 3)), None
    )
    settings = MonitorSettings(window=200, alpha=0.05, min_items=20, report_interval_s=interval_s)
    return ModelMonitor(
        "m", "1", "recon_mse", PROMISE, reference if with_reference else None, 3, 8, settings
    )


def _record(monitor: ModelMonitor, count: int, shift: float = 0.0, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.gamma(2.0, 1.0, count) + shift
    monitor.record(scores, rng.normal(shift, 1.0, (count, 3)), np.zeros((count, 8)))


def test_too_few_items_get_no_verdict_and_say_so() -> None:
    monitor = _monitor()
    _record(monitor, 10)
    body = monitor.report()
    assert body["window"]["items"] == 10
    assert body["anomaly_rate"] is None
    assert body["score_drift"] is None
    assert "verdicts start at 20" in body["missing"][0]


def test_without_a_reference_the_rate_is_judged_and_drift_is_not() -> None:
    monitor = _monitor(with_reference=False)
    _record(monitor, 100)
    body = monitor.report()
    assert body["anomaly_rate"] is not None
    assert body["score_drift"] is None
    assert body["input_drift"] is None
    assert "no reference.npz" in body["missing"][0]


def test_a_shift_is_drift_and_unshifted_is_not() -> None:
    calm, moved = _monitor(), _monitor()
    _record(calm, 200)
    _record(moved, 200, shift=1.0)
    assert calm.report()["score_drift"]["drifted"] is False
    assert calm.report()["input_drift"]["drifted"] is False
    assert moved.report()["score_drift"]["drifted"] is True
    assert moved.report()["input_drift"]["dimensions"][0]["mean_shift_in_sd"] > 0.5


def test_moved_features_are_named_when_the_bundle_names_them() -> None:
    rng = np.random.default_rng(0)
    reference = build_reference(
        {"recon_mse": rng.gamma(2.0, 1.0, 1000)},
        rng.normal(size=(1000, 3)),
        rng.normal(size=(1000, 4)),
    )
    settings = MonitorSettings(window=200, alpha=0.05, min_items=20, report_interval_s=0.0)
    names = ["pressure", "flow", "temperature", "speed"]
    named = ModelMonitor("m", "1", "recon_mse", PROMISE, reference, 3, 4, settings, names)
    # A list that does not match the columns is not trusted: indexes only.
    unnamed = ModelMonitor("n", "1", "recon_mse", PROMISE, reference, 3, 4, settings, names[:3])
    features = rng.normal(size=(200, 4))
    features[:, 2] += 3.0
    for monitor in (named, unnamed):
        scores = rng.gamma(2.0, 1.0, 200)
        monitor.record(scores, rng.normal(size=(200, 3)), features)
    top = named.report()["input_drift"]["features"][0]
    assert (top["feature"], top["name"], top["drifted"]) == (2, "temperature", True)
    assert "name" not in unnamed.report()["input_drift"]["features"][0]
    for monitor in (named, unnamed):
        monitor.close()


def test_a_batch_that_cannot_be_recorded_is_counted_not_raised() -> None:
    monitor = _monitor()
    # Codes of 5 dimensions where the model has 3: kept aside, then dropped when written.
    monitor.record(np.zeros(2), np.zeros((2, 5)), np.zeros((2, 8)))
    report = monitor.report()
    assert report["record_errors"] == 2
    assert report["window"]["items"] == 0
    _record(monitor, 3)  # and the window goes on
    assert monitor.report()["window"]["items"] == 3


def test_reports_are_reused_for_the_interval() -> None:
    reused, fresh = _monitor(interval_s=60.0), _monitor(interval_s=0.0)
    for monitor in (reused, fresh):
        assert monitor.report()["window"]["items"] == 0
        _record(monitor, 30)
    assert reused.report()["window"]["items"] == 0  # the last report, within its minute
    assert fresh.report()["window"]["items"] == 30


def test_time_windows_count_the_recent_requests_and_say_how_far_back_they_reach() -> None:
    monitor = _monitor()
    scores = np.array([1.0, 9.0, 1.0])
    for i in range(10):  # 30 items, 10 of them flagged
        monitor.remember(f"r{i}", scores)
    five_minutes, hour = monitor.report()["time_windows"]
    assert (five_minutes["seconds"], hour["seconds"]) == (300, 3600)
    assert five_minutes["items"] == 30
    assert five_minutes["anomaly_rate"] == pytest.approx(1 / 3)
    assert five_minutes["anomaly_rate_test"]["alert"] is True  # 10 of 30 where 1% is promised
    assert five_minutes["complete"] is True  # the ring is not full: it holds all there was
    small = ModelMonitor(
        "m", "1", "recon_mse", PROMISE, None, 3, 8,
        MonitorSettings(window=50, alpha=0.05, min_items=20, feedback_items=8),
    )  # fmt: skip
    for i in range(10):
        small.remember(f"r{i}", scores)
    period = small.report()["time_windows"][0]
    assert period["items"] == 8
    assert period["complete"] is False  # full, and its oldest item is newer than 5 minutes
    assert period["anomaly_rate_test"] is None  # 8 items: below min_items


def test_the_score_histogram_sets_the_window_beside_the_reference() -> None:
    rng = np.random.default_rng(3)
    reference = np.sort(rng.gamma(2.0, 1.0, 1000))
    live = rng.gamma(2.0, 1.0, 300) + 2.0
    live[:3] = [np.inf, np.nan, 1e300]  # an overflowing score never breaks the picture
    picture = score_histogram(live, reference, threshold=6.6)
    edges = np.array(picture["edges"])
    assert len(edges) == len(picture["live"]) + 1 == len(picture["reference"]) + 1
    assert np.all(np.diff(edges) > 0)
    assert edges[0] <= 6.6 <= edges[-1]
    for side in ("live", "reference"):
        total = sum(picture[side]) + picture["below"][side] + picture["above"][side]
        assert total == pytest.approx(1.0)
    assert picture["above"]["live"] >= 3 / 300
    centres = (edges[:-1] + edges[1:]) / 2
    assert np.dot(centres, picture["live"]) > np.dot(centres, picture["reference"]) + 1.5
    # Through the report: present once the window holds items and the bundle a reference.
    monitor = _monitor()
    assert monitor.report()["score_histogram"] is None
    _record(monitor, 5)
    assert monitor.report()["score_histogram"]["threshold"] == PROMISE.threshold
    assert _monitor(with_reference=False).report()["score_histogram"] is None
