"""Feedback: ground truth for earlier answers; and the anomaly rate over fixed periods.

Each worker remembers its last N scored items of a model version (VAE_MONITOR_FEEDBACK_ITEMS)
by request id and item, with their score and whether they were flagged; POST
/models/{name}/feedback labels some of them (anomaly or not), whichever worker scored them, and
the monitor reports precision, recall and the false-alarm rate at the threshold over the
labelled items still remembered.

A ring in a file per worker (service.monitoring.shared), like the drift window, written in
blocks (service.monitoring.kept_aside). An item is keyed by 47 bits of a hash of its request id
(`id_keys`) and its index in the request (16 bits), so a key is one uint64 and a batch of
labels is joined with every worker's ring in a few numpy calls. Each slot also holds when the
item was written (at most 0.25 s after it was scored): the ring, longer than the drift window,
gives the anomaly rate of the last 5 minutes and the last hour (as far back as it reaches).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bundle.arrays import AnyFloatArray
from service.monitoring.kept_aside import FLUSH_ITEMS, KeptAside

MAGIC = 0x32304B4246454156  # b"VAEFBK02", little-endian (01 kept a record a slot)
HEADER_WORDS = 8  # magic, size, 6 spare
_HEADER_BYTES = HEADER_WORDS * 8
MAX_ITEM = (1 << 16) - 1  # items a request may label by index (VAE_MAX_BATCH_SIZE is below)
log = logging.getLogger("vae_service.monitoring")
UNLABELLED, NORMAL, ANOMALY = 0, 1, 2  # 0: a zeroed file is unlabelled


# Multiplier and finaliser of the keys' hash: the golden ratio's odd 64-bit constant and
# splitmix64's two (public constants of well-studied mixers).
_STEP = np.uint64(0x9E3779B97F4A7C15)
_FINAL = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
# 47 bits of the hash kept, above the item's 16; the top bit set in every key (0 marks a slot
# never written).
_KEEP_SHIFT, _ITEM_BITS, _TOP = np.uint64(17), np.uint64(16), np.uint64(1 << 63)


def request_keys(request_ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    """The requests' parts of their items' keys (`id_keys`), for ids as strings."""
    if not request_ids:
        return np.zeros(0, np.uint64)
    try:
        raw = np.array(request_ids, dtype=np.bytes_)  # ASCII, the width of the longest
    except UnicodeEncodeError:  # not an id this service makes or accepts, but still keyed
        raw = np.array([rid.encode() for rid in request_ids], dtype=np.bytes_)
    return id_keys(raw.view(np.uint8).reshape(len(raw), raw.dtype.itemsize))


def id_keys(
    ids: npt.NDArray[np.uint8], lengths: npt.NDArray[np.intp] | None = None
) -> npt.NDArray[np.uint64]:
    """The requests' parts of their items' keys, from their ids' bytes (a row an id, zero
    padded): 47 bits of a 64-bit hash of each id, shifted above the item's 16, with the top
    bit set (a written slot is never 0).

    Numpy over all the ids at once, 8 bytes of every id a step: a block of 1,024 ids costs a
    few dozen array operations (0.15 us an id), where a Python checksum an id (two CRC-32s,
    the previous keys) cost 0.66 us, most of a block's write. Not a cryptographic hash, and
    it need not be one: anyone who may send feedback may label any request id outright. What
    matters is that ids do not collide by accident: each 8-byte step (xor, then a multiply by
    an odd constant) is a bijection, so ids of one length that differ in a single 8-byte word
    never collide in the 64 bits; splitmix64's finaliser spreads every bit over the 47 kept,
    where any two ids collide with chance ~2^-47. Request ids are visible ASCII
    (service.observability.request_context): they hold no zero byte, so an id's length is
    its non-zero bytes and the padding cannot make two ids equal; `lengths`, when the caller
    knows them (the ring's write does), are those same counts.
    """
    count, width = ids.shape
    steps = -(-width // 8)
    uniform = lengths is not None and bool((lengths == width).all())
    if uniform and width % 8 == 0:  # the usual write: ids of one length, whole words
        words = ids.view("<u8")  # rows need not be contiguous: only their bytes must be
    else:
        padded = np.zeros((count, steps * 8), np.uint8)
        padded[:, :width] = ids
        words = padded.view("<u8")
        if lengths is None:
            lengths = np.count_nonzero(padded, axis=1)
    assert lengths is not None
    # An id's key must not depend on the ids beside it: each hashes its length and its own
    # words only.
    hashed = lengths.astype(np.uint64)
    for step in range(steps):
        word = words[:, step]
        mine = None if uniform else lengths > 8 * step
        if mine is None or mine.all():  # ids of one length, the usual case
            hashed ^= word
            hashed *= _STEP
        else:
            hashed[mine] = (hashed[mine] ^ word[mine]) * _STEP
    # splitmix64's finaliser, in place (one temporary for the shifts)
    shifted = np.empty_like(hashed)
    for shift, factor in ((_SHIFTS[0], _FINAL[0]), (_SHIFTS[1], _FINAL[1])):
        np.right_shift(hashed, shift, out=shifted)
        hashed ^= shifted
        hashed *= factor
    np.right_shift(hashed, _SHIFTS[2], out=shifted)
    hashed ^= shifted
    hashed >>= _KEEP_SHIFT
    hashed <<= _ITEM_BITS
    hashed |= _TOP
    return hashed


def request_key(request_id: str) -> int:
    """One request's part of its items' keys (`request_keys`)."""
    return int(request_keys([request_id])[0])


# The ring's columns, each an array of `size` (8-byte ones first, so every column is aligned):
# the item's key, when it was written, its score, whether it was flagged, its label. Columns,
# not a record a slot: a block is written as one copy a column (a record's fields are strided).
_COLUMNS = (("key", "<u8"), ("stamp", "<i8"), ("score", "<f8"), ("flagged", "?"), ("label", "u1"))


# An item as `remember` keeps it, one bytes object an item: its score and index in its
# request end to end, then the request's id (so that nothing kept is a container the garbage
# collector tracks, service.monitoring.kept_aside, and a single item's entry is the
# concatenation of its arrays' bytes: no numpy call to build it).
_ROW = np.dtype([("score", "<f8"), ("item", "<u2")])
_FIRST_ITEM = b"\0\0"  # item 0 of its request, as _ROW writes it
_JOIN = b"".join


def _entry_table(entries: list[bytes]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """Kept entries as a table of bytes, a row each, zero padded to the longest, and each
    entry's length. Entries of one length (ids this service made, or one client's) are joined
    as they are: numpy's conversion of a list of bytes, which measures every entry, cost as
    much as the rest of the write."""
    count = len(entries)
    # The lengths as a set, in C; an array of them only when they differ (numpy packs a
    # Python int at ~600 instructions, callgrind: as much as the rest of the write).
    widths = set(map(len, entries))
    if len(widths) == 1:
        width = widths.pop()
        return np.frombuffer(_JOIN(entries), np.uint8).reshape(count, width), np.full(count, width)
    table = np.array(entries, dtype=np.bytes_)
    lengths = np.fromiter(map(len, entries), np.intp, count)
    return table.view(np.uint8).reshape(count, table.dtype.itemsize), lengths


def feedback_bytes(size: int) -> int:
    return _HEADER_BYTES + sum(_padded(np.dtype(kind).itemsize * size) for _, kind in _COLUMNS)


def _padded(nbytes: int) -> int:
    return -(-nbytes // 8) * 8  # every column starts on an 8-byte boundary


@dataclass(frozen=True)
class Labelled:
    """The labelled items of every ring: whether each was flagged, and its label."""

    flagged: npt.NDArray[np.bool_]
    anomaly: npt.NDArray[np.bool_]


class FeedbackLayoutError(ValueError):
    pass


class FeedbackRing:
    def __init__(
        self,
        size: int,
        buffer: memoryview | bytearray | None = None,
        *,
        existing: bool = False,
        threshold: float | None = None,
    ) -> None:
        """A new ring (in its own memory, or over a zeroed `buffer`) that flags the items it
        writes above `threshold`, or, `existing`, another worker's ring over its file's
        bytes, whose header must say what it is (only labelled here: it needs no
        threshold)."""
        if not existing and threshold is None:
            raise ValueError("a ring this worker writes needs the threshold it flags items by")
        total = feedback_bytes(size)
        raw = np.zeros(total, np.uint8) if buffer is None else np.frombuffer(buffer, np.uint8)
        if len(raw) != total:
            raise FeedbackLayoutError(f"a ring of {size} needs {total} bytes, got {len(raw)}")
        header = raw[:_HEADER_BYTES].view(np.int64)
        if not existing:
            header[:2] = (MAGIC, size)
        elif int(header[0]) != MAGIC or int(header[1]) != size:
            raise FeedbackLayoutError("not a feedback ring of this size")
        self.header = header
        self.size = size
        columns, offset = {}, _HEADER_BYTES
        for name, kind in _COLUMNS:
            nbytes = np.dtype(kind).itemsize * size
            columns[name] = raw[offset : offset + nbytes].view(kind)
            offset += _padded(nbytes)
        self.keys, self.stamps, self.scores = columns["key"], columns["stamp"], columns["score"]
        self.flagged, self.labels = columns["flagged"], columns["label"]
        self._recorded = 0  # this worker's count; where its next item goes
        # Guards the ring's writes; requests wait aside until then (service.monitoring.kept_aside).
        self._lock = threading.Lock()
        self._kept: KeptAside[bytes] = KeptAside(size)
        self._keep_entry = self._kept.entries.append  # a single item's way (`remember`)
        self.errors = 0  # items dropped because they could not be written
        self.threshold = math.inf if threshold is None else threshold  # never written: existing

    def remember(self, request_id: str, scores: AnyFloatArray) -> None:
        """A scored request's items (flat scores; flagged at the write, against the ring's
        threshold), kept aside until `flush` writes them; a request of more items than
        MAX_ITEM + 1 keeps its first. Never raises: a request whose scores do not fit is
        counted in `errors` and logged, having kept nothing. Its usual case (one item) is a
        check and bytes end to end in this one frame (service.monitoring.kept_aside says
        why)."""
        if len(scores) == 1:
            entry = scores.tobytes()
            if len(entry) == 8:  # one float64, the model's score type (`.dtype` costs more)
                # Bounded by the deque (service.monitoring.kept_aside): no count here.
                self._keep_entry(_JOIN((entry, _FIRST_ITEM, request_id.encode())))
                return
        self._remember_batch(request_id, scores)

    def _remember_batch(self, request_id: str, scores: AnyFloatArray) -> None:
        count = len(scores) if scores.ndim else 1
        if scores.ndim != 1 or scores.dtype.kind not in "fiu":
            self.errors += count
            log.error("scores of shape %s were not remembered", scores.shape)
            return
        count = min(count, MAX_ITEM + 1)
        if count == 0:
            return
        rows = np.empty(count, _ROW)
        rows["score"], rows["item"] = scores[:count], np.arange(count)
        raw, rid, size = rows.tobytes(), request_id.encode(), _ROW.itemsize
        entries = [raw[i : i + size] + rid for i in range(0, len(raw), size)]
        if count >= FLUSH_ITEMS:  # more than should wait: written now, after what waits
            with self._lock:
                self._write_entries(self._kept.drain() + entries)
        # deque.extend of a list is one atomic step: the request's items stay together.
        elif self._kept.keep_all(entries):
            self.flush()

    def flush(self) -> None:
        """Write what `remember` kept aside into the ring, as one block stamped now. Any
        thread may call it; only this worker writes its ring's slots (others only set
        labels)."""
        with self._lock:
            self._write_entries(self._kept.drain())

    def _write_entries(self, entries: list[bytes]) -> None:
        """Kept entries into the ring, as one block stamped now (the lock held)."""
        if entries:
            count = len(entries)
            keep = min(count, self.size)  # a block larger than the ring keeps its last
            try:
                table, lengths = _entry_table(entries[count - keep :])
                self._write(table, lengths, time.time_ns(), count)
            except Exception:  # never expected (remember checked the sizes): dropped, counted
                self.errors += count
                log.exception("dropped %d items the feedback ring could not write", count)

    def _write(
        self,
        table: npt.NDArray[np.uint8],
        lengths: npt.NDArray[np.intp],
        stamp: int,
        count: int,
    ) -> None:
        """The last `keep` of `count` items (their entries, a row each, and the entries'
        lengths) into the ring, the ring's oldest overwritten, in at most two copies a
        column. Few numpy temporaries: in a serving process each large one costs glibc's
        allocator tens of thousands of instructions (callgrind)."""
        keep = len(table)
        head = np.ascontiguousarray(table[:, : _ROW.itemsize]).view(_ROW).ravel()
        keys = id_keys(table[:, _ROW.itemsize :], lengths - _ROW.itemsize)
        keys |= head["item"]
        scores = head["score"]
        start = (self._recorded + count - keep) % self.size
        split = min(keep, self.size - start)  # up to the ring's end, then from its start
        for first, stop, part in ((start, start + split, slice(0, split)),
                                  (0, keep - split, slice(split, keep))):  # fmt: skip
            if first == stop:
                continue
            self.keys[first:stop] = keys[part]
            self.stamps[first:stop] = stamp
            self.scores[first:stop] = scores[part]
            np.greater(scores[part], self.threshold, out=self.flagged[first:stop])
            self.labels[first:stop] = UNLABELLED
        self._recorded += count

    def label(self, keys: npt.NDArray[np.uint64], anomaly: npt.NDArray[np.bool_]) -> np.ndarray:
        """Set the labels of the items among `keys` (sorted, unique) that this ring holds;
        returns which of `keys` it held."""
        self.flush()
        found = np.zeros(len(keys), dtype=np.bool_)
        if len(keys) == 0:
            return found
        position = np.minimum(np.searchsorted(keys, self.keys), len(keys) - 1)
        held = (keys[position] == self.keys) & (self.keys != 0)
        slots = np.flatnonzero(held)
        self.labels[slots] = np.where(anomaly[position[slots]], ANOMALY, NORMAL)
        found[position[slots]] = True
        return found

    def since(self, stamp_ns: int) -> tuple[int, int, bool]:
        """Items remembered from `stamp_ns` on: how many, how many flagged, and whether the
        ring reaches back that far (False: it was full and its oldest item is younger)."""
        self.flush()
        stamps = self.stamps
        recent = stamps >= stamp_ns
        written = stamps > 0
        full = bool(written.all())
        reaches = not full or bool(stamps[written].min() <= stamp_ns)
        return int(recent.sum()), int(np.count_nonzero(self.flagged & recent)), reaches

    def labelled(self) -> Labelled:
        self.flush()
        known = self.labels != UNLABELLED
        return Labelled(self.flagged[known].copy(), self.labels[known] == ANOMALY)


def label_keys(
    labels: Iterable[tuple[str, int, bool]],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """(request id, item, anomaly) -> sorted unique keys and their labels (the last label
    given for a key wins)."""
    labels = list(labels)
    bases = request_keys([request_id for request_id, _, _ in labels]).tolist()
    chosen: dict[int, bool] = {}
    for base, (_, item, anomaly) in zip(bases, labels, strict=True):
        chosen[base | item] = anomaly
    keys = np.array(sorted(chosen), dtype=np.uint64)
    return keys, np.array([chosen[int(k)] for k in keys], dtype=np.bool_)


def feedback_figures(parts: list[Labelled]) -> dict[str, float | int | None]:
    """Precision, recall and false-alarm rate at the threshold over every labelled item."""
    flagged = np.concatenate([p.flagged for p in parts]) if parts else np.zeros(0, np.bool_)
    anomaly = np.concatenate([p.anomaly for p in parts]) if parts else np.zeros(0, np.bool_)
    tp = int(np.count_nonzero(flagged & anomaly))
    fp = int(np.count_nonzero(flagged & ~anomaly))
    fn = int(np.count_nonzero(~flagged & anomaly))
    tn = int(np.count_nonzero(~flagged & ~anomaly))

    def ratio(a: int, b: int) -> float | None:
        return None if b == 0 else a / b

    return {
        "n": len(flagged),
        "anomalies": tp + fn,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "false_alarm_rate": ratio(fp, fp + tn),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
    }
