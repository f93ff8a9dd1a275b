"""The feedback ring: items remembered by request id and index, labels joined with every
worker's ring, old items forgotten, and the figures counted from the labels alone."""

from __future__ import annotations

import os
import time
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
    request_keys,
)
from service.monitoring.kept_aside import MOST_KEPT
from service.monitoring.shared import WindowHome

T = 2.5  # the rings' threshold: items scored above it are flagged


def test_keys_leave_room_for_the_item_and_are_never_zero() -> None:
    key = request_key("4bf92f3577b34da6a3ce929d0e0e4736")
    assert key & MAX_ITEM == 0
    assert key >> 63 == 1
    assert request_key("a") != request_key("b")


def test_labels_find_single_items_and_batch_items() -> None:
    ring = FeedbackRing(16, threshold=T)
    ring.remember("one", np.array([5.0]))
    ring.remember("batch", np.array([1.0, 3.0, 2.0]))  # the second flagged
    keys, anomaly = label_keys([("one", 0, True), ("batch", 2, True), ("batch", 7, False)])
    found = ring.label(keys, anomaly)
    assert found.sum() == 2  # ("batch", 7) was never scored
    labelled = ring.labelled()
    pairs = zip(labelled.flagged.tolist(), labelled.anomaly.tolist(), strict=True)
    assert sorted(pairs) == [
        (False, True),
        (True, True),
    ]


def test_what_waits_for_a_write_never_outgrows_the_ring() -> None:
    # A burst between writes: the ring's own size bounds what waits, and the items it would
    # have kept are all there.
    ring = FeedbackRing(16, threshold=T)
    for i in range(1_000):
        ring.remember(f"burst-{i}", np.array([float(i)]))
    assert len(ring._kept.entries) == 16
    keys, anomaly = label_keys([(f"burst-{i}", 0, True) for i in range(980, 1_000)])
    assert ring.label(keys, anomaly).sum() == 16  # 984..999; 980..983 were pushed out
    # A large ring (VAE_MONITOR_FEEDBACK_ITEMS up to 1,000,000) waits with MOST_KEPT at most.
    large = FeedbackRing(100_000, threshold=T)
    for i in range(MOST_KEPT + 500):
        large.remember(f"stalled-{i}", np.array([1.0]))
    assert len(large._kept.entries) == MOST_KEPT


def test_a_full_ring_forgets_its_oldest_items() -> None:
    ring = FeedbackRing(4, threshold=T)
    for i in range(6):
        ring.remember(f"r{i}", np.array([i / 10]))
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
    ring = FeedbackRing(10, threshold=T)
    ring.remember("b", np.array([4.0, 3.0, 2.0, 1.0]))  # the first two flagged
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
    mine, other = (
        WindowHome("m", "1", 8, 2, None, 32, threshold=T),
        WindowHome("m", "1", 8, 2, None, 32, threshold=T),
    )
    other.feedback.remember("theirs", np.array([9.0]))
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
        FeedbackRing(8, bytearray(10), threshold=T)


def test_a_request_that_does_not_fit_is_counted_whole_and_the_others_kept() -> None:
    ring = FeedbackRing(16, threshold=T)
    ring.remember("good", np.array([5.0]))
    ring.remember("bad", np.ones((2, 2)))  # not one flat batch
    ring.remember("bad", np.array(["3.0", "4.0"]))  # not numbers
    ring.remember("also good", np.array([2.0, 3.0], np.float32))
    ring.remember("one float32", np.array([4.0], np.float32))
    keys, anomaly = label_keys(
        [("good", 0, True), ("also good", 1, True), ("bad", 0, True), ("one float32", 0, False)]
    )
    assert ring.label(keys, anomaly).sum() == 3
    assert ring.errors == 4
    figures = feedback_figures([ring.labelled()])
    assert (figures["true_positives"], figures["false_positives"]) == (2, 1)


def test_a_request_of_more_items_than_a_key_holds_keeps_its_first() -> None:
    ring = FeedbackRing(MAX_ITEM + 10, threshold=10.0)
    scores = np.arange(MAX_ITEM + 5, dtype=np.float64)
    ring.remember("huge", scores)
    last = MAX_ITEM  # the highest index a key can hold
    keys, anomaly = label_keys([("huge", 0, True), ("huge", last, True)])
    assert ring.label(keys, anomaly).sum() == 2
    figures = feedback_figures([ring.labelled()])
    assert figures["n"] == 2
    assert figures["true_positives"] == 1  # item 0 scored 0: not flagged


def test_items_are_stamped_when_written_and_counted_since() -> None:
    ring = FeedbackRing(16, threshold=T)
    before = time.time_ns()
    ring.remember("a", np.array([3.0, 2.0]))
    ring.flush()
    after = time.time_ns()
    assert ring.since(before)[:2] == (2, 1)
    assert ring.since(after + 1)[:2] == (0, 0)


def test_an_ids_key_does_not_depend_on_the_ids_written_beside_it() -> None:
    ids = [os.urandom(16).hex() for _ in range(50)] + ["x" * 128, "a", "req-1", "req-22"]
    together = request_keys(ids)
    alone = np.array([request_key(rid) for rid in ids], dtype=np.uint64)
    np.testing.assert_array_equal(together, alone)
    sequence = request_keys([f"req-{i}" for i in range(100_000)])  # counters never collide here
    assert len(np.unique(sequence)) == 100_000
    assert np.all(sequence & np.uint64(MAX_ITEM) == 0)
