"""The window ring: what it keeps, in which order, in plain memory and in a worker's file, and
that a damaged or foreign file is refused rather than read past its end."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from service.monitoring.shared import WindowHome
from service.monitoring.window import (
    ScoreWindow,
    WindowLayoutError,
    merge_windows,
    read_window,
    window_bytes,
)

Batch = tuple[npt.NDArray[np.float64], npt.NDArray[np.float32], npt.NDArray[np.float64] | None]
THRESHOLD = 4.5  # items scored 5 and above are flagged


def _batch(start: int, count: int, features: int | None = 3) -> Batch:
    scores = np.arange(start, start + count, dtype=np.float64)
    mu = np.repeat(scores[:, None], 2, axis=1).astype(np.float32)
    table = None if features is None else np.repeat(scores[:, None], features, 1)
    return scores, mu, table


@pytest.mark.parametrize("batches", [[3], [4, 4], [5, 1, 1], [2, 9], [11], [1] * 13, [6, 6, 6]])
def test_the_window_keeps_the_last_items_oldest_first(batches: list[int]) -> None:
    window = ScoreWindow(5, 2, 3, threshold=THRESHOLD)
    start = 0
    for count in batches:
        window.record(*_batch(start, count))
        start += count
    items = window.items()
    expected = np.arange(max(0, start - 5), start, dtype=np.float64)
    np.testing.assert_array_equal(items.scores, expected)
    np.testing.assert_array_equal(items.flags, expected > THRESHOLD)
    np.testing.assert_array_equal(items.latent_mu[:, 1], expected)
    assert items.features is not None
    np.testing.assert_array_equal(items.features[:, 2], expected)
    # Items kept aside that 5 newer ones pushed out before the write are not written.
    assert min(start, 5) <= window.recorded <= start
    assert np.all(np.diff(items.seconds) >= 0)


def test_an_empty_batch_changes_nothing() -> None:
    window = ScoreWindow(4, 2, None, threshold=THRESHOLD)
    window.record(*_batch(0, 0, None))
    assert len(window.items()) == 0
    assert window.recorded == 0


def test_read_window_refuses_what_is_not_a_window() -> None:
    buffer = bytearray(window_bytes(4, 2, 3))  # what another worker's file holds
    window = ScoreWindow(4, 2, 3, buffer, threshold=THRESHOLD)
    window.record(*_batch(0, 3))
    window.record(*_batch(3, 3))
    window.flush()  # what another worker reads is what was written
    raw = np.frombuffer(bytes(buffer), np.uint8)
    # Read from the bytes alone, the items come oldest first, as their own worker sees them.
    np.testing.assert_array_equal(read_window(raw).scores, window.items().scores)
    for damaged in (raw[:-8], raw[:10], np.zeros_like(raw), np.concatenate([raw, raw[:8]])):
        with pytest.raises(WindowLayoutError):
            read_window(damaged)
    huge = raw.copy()
    huge[8:16] = np.frombuffer(np.int64(2**40).tobytes(), np.uint8)  # a size no file holds
    with pytest.raises(WindowLayoutError):
        read_window(huge)


def test_merge_keeps_the_most_recent_over_every_worker() -> None:
    # Items are stamped when their worker writes them (its timer, every 0.25 s).
    first, second = (
        ScoreWindow(4, 2, None, threshold=THRESHOLD),
        ScoreWindow(4, 2, None, threshold=THRESHOLD),
    )
    first.record(*_batch(0, 3, None))
    first.flush()
    second.record(*_batch(100, 4, None))
    second.flush()
    first.record(*_batch(3, 2, None))
    merged = merge_windows([first.items(), second.items()], 5)
    assert merged is not None
    np.testing.assert_array_equal(merged.scores, [101, 102, 103, 3, 4])
    assert merge_windows([ScoreWindow(3, 2, None, threshold=THRESHOLD).items()], 5) is None


def test_workers_read_each_others_files_and_skip_the_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    mine = WindowHome("m", "1", 8, 2, None, threshold=THRESHOLD)
    # `other` stands for another worker of the same process.
    other = WindowHome("m", "1", 8, 2, None, threshold=THRESHOLD)
    unrelated = WindowHome("other", "1", 8, 2, None, threshold=THRESHOLD)
    mine.window.record(*_batch(0, 3, None))
    other.window.record(*_batch(10, 2, None))
    unrelated.window.record(*_batch(50, 5, None))
    for home in (other, unrelated):
        home.window.flush()  # as each worker's timer does
    parts = mine.gather()
    merged = merge_windows(parts, 8)
    assert merged is not None
    assert sorted(merged.scores) == [0, 1, 2, 10, 11]
    # A window file left by a worker that is gone is removed, not counted.
    assert other.path is not None
    dead = other.path.with_name(other.path.name.replace(f".{os.getpid()}-", ".999999999-"))
    other.path.rename(dead)
    assert sorted(merge_windows(mine.gather(), 8).scores) == [0, 1, 2]  # type: ignore[union-attr]
    assert not dead.exists()
    # A file of the right name but another shape is skipped.
    (tmp_path / "vae-monitor" / f"{mine.key}.{os.getpid()}-77.window").write_bytes(b"x" * 100)
    assert len(mine.gather()) == 1
    own_file = mine.path
    assert own_file is not None
    assert own_file.exists()
    mine.close()
    assert not own_file.exists()
    mine.window.record(*_batch(20, 1, None))  # a request still in flight records harmlessly


def test_a_batch_that_does_not_fit_is_counted_whole_and_the_others_kept() -> None:
    window = ScoreWindow(8, 2, 3, threshold=THRESHOLD)
    window.record(*_batch(0, 2))
    scores, mu, table = _batch(2, 3)
    for bad in (
        (scores, mu[:, :1], table),  # a code of 1 where the window keeps 2
        (scores, mu, None),  # a table model's batch without its features
        (scores, mu, table[:2]),  # type: ignore[index]
        (scores[:, None] * np.ones(2), mu, table),  # two scores an item
    ):
        window.record(*bad)
    assert window.errors == 12
    window.record(*_batch(5, 1))
    scores, mu, table = _batch(6, 2)
    window.record(scores.astype(np.float32), mu.astype(np.float64), table)  # converted
    np.testing.assert_array_equal(window.items().scores, [0, 1, 5, 6, 7])
    np.testing.assert_array_equal(window.items().latent_mu[:, 0], [0, 1, 5, 6, 7])
    assert window.recorded == 5


def test_single_items_of_the_models_own_types_are_kept_as_their_bytes() -> None:
    # The request path's usual case: one item, float64 score, float32 code and features,
    # joined as they are; anything else (not contiguous, another width) goes the batch way.
    window = ScoreWindow(6, 2, 3, threshold=THRESHOLD)
    for i in range(4):
        score = np.array([float(i)])
        window.record(score, np.full((1, 2), i, np.float32), np.full((1, 3), i, np.float32))
    strided = np.zeros((1, 4), np.float32)[:, ::2] + 4  # a code of 2, not contiguous
    window.record(np.array([4.0]), strided, np.full((1, 3), 4, np.float32))
    window.record(np.array([9.0]), np.zeros((1, 2), np.float32), np.zeros((1, 4), np.float32))
    assert window.errors == 1  # the features of 4 where the window keeps 3
    window.record(np.array([5.0]), np.full((1, 2), 5, np.float32), np.full((1, 3), 5, np.float32))
    items = window.items()
    np.testing.assert_array_equal(items.scores, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(items.latent_mu, np.repeat(np.arange(6.0)[:, None], 2, 1))
    assert items.features is not None
    np.testing.assert_array_equal(items.features, np.repeat(np.arange(6.0)[:, None], 3, 1))
    np.testing.assert_array_equal(items.flags, np.arange(6) > THRESHOLD)


def test_what_waits_for_a_write_never_outgrows_the_window() -> None:
    # Single items are kept without a count (the request path's cheapest way): the deque
    # keeps as many as the ring holds, pushing out those the write would overwrite anyway.
    window = ScoreWindow(7, 2, None, threshold=THRESHOLD)
    for i in range(10_000):
        window.record(np.array([float(i)]), np.full((1, 2), i, np.float32), None)
    assert len(window._kept.entries) == 7
    np.testing.assert_array_equal(window.items().scores, np.arange(9_993, 10_000))
    assert window.recorded == 7


def test_batches_recorded_from_threads_while_another_flushes_are_all_written() -> None:
    # Executor threads record while the event loop's timer writes: none may be lost between
    # the kept-aside queue and the ring (service.monitoring.kept_aside).
    # 4,000 items: fewer than may wait for a write (kept_aside.MOST_KEPT), so every one counts.
    window = ScoreWindow(50_000, 2, None, threshold=THRESHOLD)
    per_thread, threads = 1_000, 4
    done = threading.Event()

    def flush_until_done() -> None:
        while not done.is_set():
            window.flush()

    def record(offset: int) -> None:
        for i in range(per_thread):
            window.record(*_batch(offset + i, 1, None))

    flusher = threading.Thread(target=flush_until_done)
    flusher.start()
    workers = [threading.Thread(target=record, args=(t * per_thread,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    flusher.join()
    items = window.items()
    assert window.recorded == per_thread * threads
    assert sorted(items.scores.tolist()) == list(range(per_thread * threads))
