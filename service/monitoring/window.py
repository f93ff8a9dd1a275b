"""The last N scored items of one model version in one worker: when each was scored, its score
(the model's default score type), whether it was flagged, its code (posterior mean) and, for
tables, its features in model units.

A ring of preallocated arrays in one buffer: each item's stamp and flag, and its row (score, code
and, for tables, features end to end, the layout `record` keeps them in, so writing a block of
rows is one copy of their bytes). The memory is fixed when the model loads (N x (17 + 4 x
(latent + features)) bytes: 500 items of a 20-dimension code and 64 features, 177 kB). With
several workers the buffer is a file in the folder they share (service.monitoring.shared), so
any worker can read every worker's window; alone, it is plain memory.

Recording keeps a batch's arrays aside; they are written into the ring a block at a time
(service.monitoring.kept_aside says why, with its measurements).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bundle.arrays import AnyFloatArray, Float64Array, FloatArray
from service.monitoring.kept_aside import KeptAside

log = logging.getLogger("vae_service.monitoring")

MAGIC = 0x32304E4957454156  # b"VAEWIN02", little-endian (01 kept each field in its own array)
HEADER_WORDS = 8  # magic, size, latent_dim, features (-1: none), 4 spare
_HEADER_BYTES = HEADER_WORDS * 8


def _padded(nbytes: int) -> int:
    return -(-nbytes // 8) * 8  # every array starts on an 8-byte boundary


def window_bytes(size: int, latent_dim: int, features: int | None) -> int:
    return (
        _HEADER_BYTES + 8 * size + _padded(size) + size * row_dtype(latent_dim, features).itemsize
    )


def row_dtype(latent_dim: int, features: int | None) -> np.dtype:
    """An item as `record` keeps it and the ring holds it: fields end to end, unaligned, so
    that a single item's row is its arrays' bytes joined (no numpy call to build it)."""
    fields: list[tuple[str, str] | tuple[str, str, tuple[int]]] = [
        ("score", "<f8"),
        ("code", "<f4", (latent_dim,)),
    ]
    if features is not None:
        fields.append(("features", "<f4", (features,)))
    return np.dtype(fields)


@dataclass(frozen=True)
class WindowItems:
    """Items of a window, oldest first (copies: the ring goes on filling)."""

    # When written (at most 0.25 s after it was scored): time.time_ns(), one apart in a block.
    stamps: npt.NDArray[np.int64]

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
        *,
        threshold: float,
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
        self.stamps, self.flags, self.rows = _views(raw, size, latent_dim, features)
        self._row = self.rows.dtype
        self._width = self._row.itemsize
        # The rows as bytes, a row a line: a block of kept rows is written by one copy.
        self._row_bytes = self.rows.view(np.uint8).reshape(size, self._width)
        self.latent_dim, self.feature_count = latent_dim, features
        # Threads of the executor may score batches of one model at once: the lock guards the
        # ring's writes; batches wait aside until then (service.monitoring.kept_aside).
        self._lock = threading.Lock()
        # An item is flagged when its score is above the calibrated threshold: the rows
        # keep scores only, and the write flags them (one check and copy less a request).
        self.threshold = threshold
        self._kept: KeptAside[bytes] = KeptAside(size)
        self._keep_row = self._kept.entries.append  # a single item's way (`record`)
        self.errors = 0  # items dropped because they could not be written
        # Where the next item goes. Not in the file: another worker orders this window's items
        # by their times (writing the count there cost 0.3 us of a 2 us record).
        self._recorded = 0

    @property
    def recorded(self) -> int:
        """Items written since the window was made, those it holds and older (an item kept
        aside that newer ones pushed out before the write, service.monitoring.kept_aside, is
        not counted)."""
        return self._recorded

    def record(
        self, scores: AnyFloatArray, latent_mu: AnyFloatArray, features: AnyFloatArray | None
    ) -> None:
        """One scored batch (flat scores, a code and, for tables, the features of each item;
        `features` is ignored for a model that is not a table's), kept aside as one bytes
        object of rows until `flush` writes it into the ring. Never raises: a batch whose
        arrays do not fit is counted in `errors` and logged, having kept nothing.

        Runs on every scored request, so its usual case (one item, the model's own types) is
        a few attribute checks and the arrays' bytes end to end, in this one frame
        (service.monitoring.kept_aside says why, with the measurements)."""
        if len(scores) == 1:
            score = scores.tobytes()
            if len(score) == 8:  # one float64, the model's score type
                # join, not `+`: bytes' `+` reads both sides through the buffer protocol
                if self.feature_count is None or features is None:
                    row = _JOIN((score, latent_mu.tobytes()))
                else:
                    row = _JOIN((score, latent_mu.tobytes(), features.tobytes()))
                # With the score's 8 bytes fixed, a code or features of another size or float
                # type makes another length: one check for all (`.dtype` costs ~400 CPU
                # instructions a read, callgrind; three of them were a fifth of this call).
                if len(row) == self._width:
                    self._keep_row(row)  # bounded by the deque (kept_aside): no count here
                    return
        count = len(scores)
        rows = self._rows(count, scores, latent_mu, features)
        if rows is not None and self._kept.keep(rows, count):
            self.flush()

    def _rows(
        self,
        count: int,
        scores: AnyFloatArray,
        latent_mu: AnyFloatArray,
        features: AnyFloatArray | None,
    ) -> bytes | None:
        """A batch's rows (any item count, any float types); None, counted and logged, when
        its arrays do not fit or it is empty."""
        columns = self.feature_count
        if (
            scores.size != count
            or latent_mu.size != count * self.latent_dim
            or (columns is not None and (features is None or features.size != count * columns))
        ):
            self.errors += count
            log.error("a batch of %d scores with arrays of other sizes was not recorded", count)
            return None
        if count == 0:
            return None
        rows = np.empty(count, self._row)
        try:  # sizes checked: only values no float holds could fail here
            rows["score"] = np.ravel(scores)
            rows["code"] = np.reshape(latent_mu, (count, self.latent_dim))
            if columns is not None:
                rows["features"] = np.reshape(features, (count, columns))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            self.errors += count
            log.exception("a batch of %d scores could not be recorded", count)
            return None
        return rows.tobytes()

    def flush(self) -> None:
        """Write what `record` kept aside, as one block stamped now. Any thread may call it."""
        with self._lock:
            entries = self._kept.drain()
            if not entries:
                return
            block = np.frombuffer(_JOIN(entries), np.uint8)
            count = len(block) // self._width
            try:
                self._write(block.reshape(count, self._width), count)
            except Exception:  # never expected (record checked the sizes): dropped, counted
                self.errors += count
                log.exception("dropped %d items the monitoring window could not write", count)
                return
            self._recorded += count

    def _write(self, block: npt.NDArray[np.uint8], count: int) -> None:
        """A block of `count` rows (as bytes, a row a line) into the ring: its last `size`,
        the ring's oldest overwritten, in at most two copies each of rows, flags and stamps."""
        keep = min(count, self.size)
        block = block[count - keep :]  # earlier items of the block would be overwritten
        flags = block.view(self._row)["score"].ravel() > self.threshold
        # Nanoseconds, one apart, the last now: every item's stamp is its own, so any worker
        # orders a window's items exactly from the file alone.
        now = time.time_ns()
        stamps = np.arange(now - keep + 1, now + 1, dtype=np.int64)
        start = (self._recorded + count - keep) % self.size
        split = min(keep, self.size - start)  # up to the ring's end, then from its start
        for target, values in (
            (self._row_bytes, block),
            (self.flags, flags),
            (self.stamps, stamps),
        ):
            target[start : start + split] = values[:split]
            if split < keep:
                target[: keep - split] = values[split:]

    def items(self) -> WindowItems:
        self.flush()
        # Once full, the oldest item sits where the next one goes.
        recorded, size = self._recorded, self.size
        order = np.arange(recorded) if recorded <= size else (np.arange(size) + recorded) % size
        return _items(self.stamps[order], self.flags[order], self.rows[order])


_JOIN = b"".join


def _items(
    stamps: npt.NDArray[np.int64], flags: npt.NDArray[np.bool_], rows: np.ndarray
) -> WindowItems:
    """Items from their rows: copies, each field contiguous and aligned (the drift tests read
    them many times; a field of a packed row is neither)."""
    features = rows["features"] if rows.dtype.names and "features" in rows.dtype.names else None
    return WindowItems(
        stamps=stamps,
        scores=np.ascontiguousarray(rows["score"]),
        flags=flags,
        latent_mu=np.ascontiguousarray(rows["code"]),
        features=None if features is None else np.ascontiguousarray(features),
    )


def _views(
    raw: np.ndarray, size: int, latent_dim: int, features: int | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], np.ndarray]:
    offset = _HEADER_BYTES
    stamps = raw[offset : offset + 8 * size].view(np.int64)
    offset += 8 * size
    flags = raw[offset : offset + size].view(np.bool_)
    offset += _padded(size)
    row = row_dtype(latent_dim, features)
    rows = raw[offset : offset + size * row.itemsize].view(row)
    return stamps, flags, rows


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
    stamps, flags, rows = _views(raw, size, latent_dim, columns)
    # The slots written so far (a stamp of 0 was never written), oldest first.
    filled = np.flatnonzero(stamps > 0)
    order = filled[np.argsort(stamps[filled], kind="stable")]
    return _items(stamps[order], flags[order], rows[order])


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
