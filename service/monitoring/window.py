"""The last N scored items of one model version in one worker: when each was scored, its score
(the model's default score type), whether it was flagged, its code (posterior mean) and, for
tables, its features in model units.

A ring of preallocated arrays in one buffer: recording a batch is a few slice copies whatever
the traffic, and the memory is fixed when the model loads (N x (17 + 4 x (latent + features))
bytes: 500 items of a 20-dimension code and 64 features, 199 kB). With several workers the
buffer is a file in the folder they share (service.monitoring.shared), so any worker can read
every worker's window; alone, it is plain memory.

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
from service.monitoring.kept_aside import FLOAT32, FLOAT64, FLUSH_ITEMS, KeptAside

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
        (self.stamps, self.scores, self.flags, self.latent_mu, self.features) = _views(
            raw, size, latent_dim, features
        )
        self.latent_dim, self.feature_count = latent_dim, features
        # Threads of the executor may score batches of one model at once: the lock guards the
        # ring's writes; batches wait aside until then (service.monitoring.kept_aside).
        self._lock = threading.Lock()
        # An item as `record` keeps it: fields end to end, unaligned, so that a single item's
        # row is the concatenation of its arrays' bytes (no numpy call to build it).
        fields: list[tuple[str, str] | tuple[str, str, tuple[int]]] = [
            ("score", "<f8"),
            ("code", "<f4", (latent_dim,)),
        ]
        if features is not None:
            fields.append(("features", "<f4", (features,)))
        self._row = np.dtype(fields)
        # An item is flagged when its score is above the calibrated threshold: the rows
        # keep scores only, and the write flags them (one check and copy less a request).
        self.threshold = threshold
        self._kept: KeptAside[bytes] = KeptAside()
        self.errors = 0  # items dropped because they could not be written
        # Where the next item goes. Not in the file: another worker orders this window's items
        # by their times (writing the count there cost 0.3 us of a 2 us record).
        self._recorded = 0

    @property
    def recorded(self) -> int:
        """Items recorded since the window was made, those it holds and older."""
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
        if (
            len(scores) == 1
            and scores.dtype is FLOAT64
            and latent_mu.dtype is FLOAT32
            and latent_mu.size == self.latent_dim
            and (
                self.feature_count is None
                or (
                    features is not None
                    and features.dtype is FLOAT32
                    and features.size == self.feature_count
                )
            )
        ):
            row = scores.tobytes() + latent_mu.tobytes()
            if self.feature_count is not None:
                row += features.tobytes()  # type: ignore[union-attr]
            kept = self._kept  # KeptAside.keep, inlined (one frame less on every request)
            kept.entries.append(row)
            kept.items += 1
            if kept.items >= FLUSH_ITEMS:
                self.flush()
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
            rows = np.frombuffer(b"".join(self._kept.drain()), self._row)
            count = len(rows)
            if not count:
                return
            # Nanoseconds, one apart, the last now: every item's stamp is its own, so any
            # worker orders a window's items exactly from the file alone.
            now = time.time_ns()
            try:
                self._record_batch(
                    self._recorded,
                    count,
                    np.arange(now - count + 1, now + 1, dtype=np.int64),
                    rows["score"],
                    rows["score"] > self.threshold,
                    rows["code"],
                    None if self.feature_count is None else rows["features"],
                )
            except Exception:  # never expected (record checked the sizes): dropped, counted
                self.errors += count
                log.exception("dropped %d items the monitoring window could not write", count)
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
