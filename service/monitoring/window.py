"""The last N scored items of one model version in one worker: when each was scored, its score
(the model's default score type), whether it was flagged, its code (posterior mean) and, for
tables, its features in model units.

A ring of preallocated arrays in one buffer: recording a batch is a few slice copies whatever
the traffic, and the memory is fixed when the model loads (N x (17 + 4 x (latent + features))
bytes: 500 items of a 20-dimension code and 64 features, 199 kB). With several workers the
buffer is a file in the folder they share (service.monitoring.shared), so any worker can read
every worker's window; alone, it is plain memory.

Measured (`python -m bench.monitor_cost`): recording one item 1.9 us (an image model's
code of 20) to 2.9 us (a table's 4 + 30 features), a batch of 64 6.0 to 7.5 us.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.arrays import AnyFloatArray, Float64Array, FloatArray
from service.monitoring.kept_aside import KeptAside

log = logging.getLogger("vae_service.monitoring")

MAGIC = 0x31304E4957454156  # b"VAEWIN01", little-endian
HEADER_WORDS = 8  # magic, size, latent_dim, features (-1: none), 4 spare
_HEADER_BYTES = HEADER_WORDS * 8


def _padded(nbytes: int) -> int:
    return -(-nbytes // 8) * 8  # every array starts on an 8-byte boundary


def window_bytes(size: int, latent_dim: int, features: int | None) -> int:
    columns = latent_dim + (features or 0)
    return _HEADER_BYTES + 16 * size + _padded(size) + _padded(4 * size * columns)


@dataclass(frozen=True)
class WindowItems:
    """Items of a window, oldest first (copies: the ring goes on filling)."""

    stamps: npt.NDArray[np.int64]  # when scored: time.time_ns(), + its index in a batch

    @property
    def seconds(self) -> Float64Array:
        result: Float64Array = self.stamps / 1e9
        return result

    scores: Float64Array
    flags: npt.NDArray[np.bool_]
    latent_mu: FloatArray
    features: FloatArray | None

    def __len__(self) -> int:
        return len(self.scores)


class WindowLayoutError(ValueError):
    pass


class ScoreWindow:
    """A ring over `buffer` (zeroed, `window_bytes` long), or over its own memory."""

    def __init__(
        self,
        size: int,
        latent_dim: int,
        features: int | None,
        buffer: memoryview | bytearray | np.ndarray | None = None,
    ) -> None:
        if size < 1 or latent_dim < 1:
            raise ValueError("a window holds at least one item of at least one dimension")
        total = window_bytes(size, latent_dim, features)
        raw = np.zeros(total, dtype=np.uint8) if buffer is None else np.frombuffer(buffer, np.uint8)
        if len(raw) != total:
            raise WindowLayoutError(f"a window of this shape needs {total} bytes, got {len(raw)}")
        self.header = raw[:_HEADER_BYTES].view(np.int64)
        self.header[:4] = (MAGIC, size, latent_dim, -1 if features is None else features)
        self.size = size
        (self.stamps, self.scores, self.flags, self.latent_mu, self.features) = _views(
            raw, size, latent_dim, features
        )
        # Threads of the executor may score batches of one model at once.
        self._lock = threading.Lock()
        self._pending: KeptAside[Pending] = KeptAside()  # recorded, not yet written
        self.errors = 0  # items dropped because they could not be written
        # Where the next item goes. Not in the file: another worker orders this window's items
        # by their times (writing the count there cost 0.3 us of a 2 us record).
        self._recorded = 0

    @property
    def recorded(self) -> int:
        """Items recorded since the window was made, those it holds and older."""
        return self._recorded

    def record(
        self,
        scores: AnyFloatArray,
        flags: npt.NDArray[np.bool_],
        latent_mu: AnyFloatArray,
        features: AnyFloatArray | None,
    ) -> None:
        """One scored batch, kept aside until `flush` writes it into the ring (when
        FLUSH_ITEMS wait (service.monitoring.kept_aside says why), on the app's timer, or
        before this worker reads the ring)."""
        count = len(scores)
        if count == 0:
            return
        # Nanoseconds, one apart within a batch (`flush`): every item's stamp is its own, so
        # any worker orders a window's items exactly from the file alone.
        if self._pending.put((time.time_ns(), scores, flags, latent_mu, features), count):
            self.flush()

    def flush(self) -> None:
        """Write what `record` kept aside, as one batch. Any thread may call it."""
        with self._lock:
            pending = self._pending.drain()
            if not pending:
                return
            counts = [len(entry[1]) for entry in pending]
            count = sum(counts)
            try:
                joined = _joined(pending, counts, self.features is not None)
                self._record_batch(self._recorded, count, *joined)
            except Exception:  # a batch of the wrong shape: dropped, counted, never raised
                self.errors += count
                log.exception("dropped %d items that did not fit the monitoring window", count)
                return
            self._recorded += count

    def _record_batch(
        self,
        recorded: int,
        count: int,
        stamps: npt.NDArray[np.int64],
        scores: AnyFloatArray,
        flags: npt.NDArray[np.bool_],
        latent_mu: AnyFloatArray,
        features: AnyFloatArray | None,
    ) -> None:
        keep = min(count, self.size)
        first = count - keep  # items of this batch that later ones of the same batch evict
        start = (recorded + first) % self.size
        split = min(start + keep, self.size) - start  # up to the ring's end, then its start
        pairs: list[tuple[np.ndarray, np.ndarray]] = [
            (self.stamps, stamps),
            (self.scores, np.asarray(scores)),
            (self.flags, np.asarray(flags)),
            (self.latent_mu, np.asarray(latent_mu)),
        ]
        if self.features is not None and features is not None:
            pairs.append((self.features, np.asarray(features).reshape(count, -1)))
        for target, values in pairs:
            target[start : start + split] = values[first : first + split]
            if split < keep:
                target[: keep - split] = values[first + split :]

    def items(self) -> WindowItems:
        self.flush()
        # Once full, the oldest item sits where the next one goes.
        recorded, size = self._recorded, self.size
        order = np.arange(recorded) if recorded <= size else (np.arange(size) + recorded) % size
        return WindowItems(
            stamps=self.stamps[order],
            scores=self.scores[order],
            flags=self.flags[order],
            latent_mu=self.latent_mu[order],
            features=None if self.features is None else self.features[order],
        )


Pending = tuple[int, Any, Any, Any, Any]


def _joined(
    pending: list[Pending], counts: list[int], with_features: bool
) -> tuple[npt.NDArray[np.int64], Any, Any, Any, Any]:
    """The kept-aside batches as one: stamps (each batch's time, + 1 ns an item), scores,
    flags, codes and features (None unless every batch has them)."""
    keep_features = with_features and all(entry[4] is not None for entry in pending)
    if len(pending) == 1:  # one batch (a coalesced group, a request of many items)
        now, scores, flags, codes, features = pending[0]
        return (
            now + np.arange(counts[0], dtype=np.int64),
            np.asarray(scores).ravel(),
            np.asarray(flags).ravel(),
            np.asarray(codes).reshape(counts[0], -1),
            np.asarray(features).reshape(counts[0], -1) if keep_features else None,
        )
    count = sum(counts)
    stamps = np.repeat(np.array([entry[0] for entry in pending], np.int64), counts)
    stamps += np.arange(count) - np.repeat(np.cumsum(counts) - counts, counts)
    return (
        stamps,
        np.concatenate([np.asarray(e[1]).ravel() for e in pending]),
        np.concatenate([np.asarray(e[2]).ravel() for e in pending]),
        np.concatenate([np.asarray(e[3]).reshape(len(e[1]), -1) for e in pending]),
        np.concatenate([np.asarray(e[4]).reshape(len(e[1]), -1) for e in pending])
        if keep_features
        else None,
    )


def _views(
    raw: np.ndarray, size: int, latent_dim: int, features: int | None
) -> tuple[
    npt.NDArray[np.int64], Float64Array, npt.NDArray[np.bool_], FloatArray, FloatArray | None
]:
    offset = _HEADER_BYTES
    stamps = raw[offset : offset + 8 * size].view(np.int64)
    offset += 8 * size
    scores = raw[offset : offset + 8 * size].view(np.float64)
    offset += 8 * size
    flags = raw[offset : offset + size].view(np.bool_)
    offset += _padded(size)
    codes = raw[offset : offset + 4 * size * latent_dim].view(np.float32).reshape(size, latent_dim)
    offset += 4 * size * latent_dim
    table = None
    if features is not None:
        table = raw[offset : offset + 4 * size * features].view(np.float32).reshape(size, features)
    return stamps, scores, flags, codes, table


def read_window(raw: np.ndarray) -> WindowItems:
    """The items of a window another worker writes (its file's bytes, mapped): the layout
    checked against the header, so a damaged or foreign file is refused, never read past."""
    if len(raw) < _HEADER_BYTES:
        raise WindowLayoutError("shorter than a window's header")
    header = raw[:_HEADER_BYTES].view(np.int64).copy()
    magic, size, latent_dim, features = (int(v) for v in header[:4])
    if magic != MAGIC or not 0 < size <= 10_000_000 or not 0 < latent_dim <= 1_000_000:
        raise WindowLayoutError("not a window file")
    columns = None if features == -1 else features
    if columns is not None and not 0 < columns <= 10_000_000:
        raise WindowLayoutError("not a window file")
    if len(raw) != window_bytes(size, latent_dim, columns):
        raise WindowLayoutError("window file of the wrong length")
    stamps, scores, flags, codes, table = _views(raw, size, latent_dim, columns)
    # The slots written so far (a stamp of 0 was never written), oldest first.
    filled = np.flatnonzero(stamps > 0)
    order = filled[np.argsort(stamps[filled], kind="stable")]
    return WindowItems(
        stamps=stamps[order],
        scores=scores[order],
        flags=flags[order],
        latent_mu=codes[order],
        features=None if table is None else table[order],
    )


def merge_windows(parts: list[WindowItems], size: int) -> WindowItems | None:
    """Every worker's items as one window: the most recent `size` of them, oldest first."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return None
    stamps = np.concatenate([p.stamps for p in parts])
    order = np.argsort(stamps, kind="stable")[-size:]
    features = (
        None
        if any(p.features is None for p in parts)
        else np.concatenate([p.features for p in parts if p.features is not None])[order]
    )
    return WindowItems(
        stamps=stamps[order],
        scores=np.concatenate([p.scores for p in parts])[order],
        flags=np.concatenate([p.flags for p in parts])[order],
        latent_mu=np.concatenate([p.latent_mu for p in parts])[order],
        features=features,
    )
