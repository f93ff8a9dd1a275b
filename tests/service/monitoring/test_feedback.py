"""The feedback ring: items remembered by request id and index, labels joined with every
worker's ring, old items forgotten, and the figures counted from the labels alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.monitoring.feedback import (
    MAX_ITEM,
    FeedbackLayoutError,
    FeedbackRing,
    feedback_bytes,
    feedback_figures,
    label_keys,
    request_key,
)
from service.monitoring.shared import WindowHome


def test_keys_leave_room_for_the_item_and_are_never_zero() -> None:
    key = request_key("4bf92f3577b34da6a3ce929d0e0e4736")
    assert key & MAX_ITEM == 0
    assert key >> 63 == 1
    assert request_key("a") != request_key("b")


def test_labels_find_single_items_and_batch_items() -> None:
    ring = FeedbackRing(16)
    ring.remember("one", np.array([5.0]), np.array([True]))
    ring.remember("batch", np.array([1.0, 2.0, 3.0]), np.array([False, True, False]))
    keys, anomaly = label_keys([("one", 0, True), ("batch", 2, True), ("batch", 7, False)])
    found = ring.label(keys, anomaly)
    assert found.sum() == 2  # ("batch", 7) was never scored
    labelled = ring.labelled()
    pairs = zip(labelled.flagged.tolist(), labelled.anomaly.tolist(), strict=True)
    assert sorted(pairs) == [
        (False, True),
        (True, True),
    ]


def test_a_full_ring_forgets_its_oldest_items() -> None:
    ring = FeedbackRing(4)
    for i in range(6):
        ring.remember(f"r{i}", np.array([float(i)]), np.array([False]))
    keys, anomaly = label_keys([(f"r{i}", 0, False) for i in range(6)])
    found = ring.label(keys, anomaly)
    assert found.sum() == 4
    remembered = {int(k) for k in keys[found]}
    assert remembered == {request_key(f"r{i}") for i in range(2, 6)}


def test_the_last_label_given_for_an_item_wins() -> None:
    keys, anomaly = label_keys([("a", 0, True), ("a", 0, False)])
    assert len(keys) == 1
    assert anomaly.tolist() == [False]


def test_figures_count_only_labelled_items() -> None:
    ring = FeedbackRing(10)
    ring.remember("b", np.arange(4.0), np.array([True, True, False, False]))
    assert feedback_figures([ring.labelled()])["n"] == 0
    keys, anomaly = label_keys([("b", 0, True), ("b", 1, False), ("b", 2, True), ("b", 3, False)])
    ring.label(keys, anomaly)
    figures = feedback_figures([ring.labelled()])
    assert figures["n"] == 4
    assert figures["precision"] == 0.5
    assert figures["recall"] == 0.5
    assert figures["false_alarm_rate"] == 0.5


def test_another_workers_ring_is_labelled_in_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    mine, other = WindowHome("m", "1", 8, 2, None, 32), WindowHome("m", "1", 8, 2, None, 32)
    other.feedback.remember("theirs", np.array([9.0]), np.array([True]))
    keys, anomaly = label_keys([("theirs", 0, True)])
    for ring in mine.feedback_rings():  # kept aside in the other worker: not in its file yet
        assert not ring.label(keys, anomaly).any()
    other.feedback.flush()  # as the app's timer does
    found = np.zeros(1, bool)
    for ring in mine.feedback_rings():
        found |= ring.label(keys, anomaly)
    assert found.all()
    assert other.feedback.labelled().anomaly.tolist() == [True]  # written into its file


def test_a_file_that_is_not_a_ring_is_refused() -> None:
    with pytest.raises(FeedbackLayoutError):
        FeedbackRing(8, bytearray(feedback_bytes(8)), existing=True)  # no header
    with pytest.raises(FeedbackLayoutError):
        FeedbackRing(8, bytearray(10))
