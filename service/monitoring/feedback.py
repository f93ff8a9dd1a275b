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
from service.monitoring.kept_aside import FLOAT64, FLUSH_ITEMS, KeptAside

MAGIC = 0x31304B4246454156  # b"VAEFBK01", little-endian
HEADER_WORDS = 8  # magic, size, 6 spare
_HEADER_BYTES = HEADER_WORDS * 8
MAX_ITEM = (1 << 16) - 1  # items a request may label by index (VAE_MAX_BATCH_SIZE is below)
_TOP_BIT = 1 << 63  # set in every key: 0 marks a slot never written
log = logging.getLogger("vae_service.monitoring")
UNLABELLED, NORMAL, ANOMALY = 0, 1, 2  # 0: a zeroed file is unlabelled


# Multiplier and finaliser of the keys' hash: the golden ratio's odd 64-bit constant and
# splitmix64's two (public constants of well-studied mixers).
_STEP = np.uint64(0x9E3779B97F4A7C15)
_FINAL = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def request_keys(request_ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    """The requests' parts of their items' keys (`id_keys`), for ids as strings."""
    if not request_ids:
        return np.zeros(0, np.uint64)
    try:
        raw = np.array(request_ids, dtype=np.bytes_)  # ASCII, the width of the longest
    except UnicodeEncodeError:  # not an id this service makes or accepts, but still keyed
        raw = np.array([rid.encode() for rid in request_ids], dtype=np.bytes_)
    return id_keys(raw.view(np.uint8).reshape(len(raw), raw.dtype.itemsize))


def id_keys(ids: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
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
    its non-zero bytes and the padding cannot make two ids equal.
    """
    count, width = ids.shape
    padded = np.zeros((count, -(-width // 8) * 8), np.uint8)
    padded[:, :width] = ids
    # An id's key must not depend on the ids beside it: each hashes its length and its own
    # words only.
    lengths = np.count_nonzero(padded, axis=1)
    hashed = lengths.astype(np.uint64)
    for step, word in enumerate(padded.view("<u8").T):
        mine = lengths > 8 * step
        if mine.all():  # ids of one length, the usual case
            hashed ^= word
            hashed *= _STEP
        else:
            hashed[mine] = (hashed[mine] ^ word[mine]) * _STEP
    hashed ^= hashed >> np.uint64(30)
    hashed *= _FINAL[0]
    hashed ^= hashed >> np.uint64(27)
    hashed *= _FINAL[1]
    hashed ^= hashed >> np.uint64(31)
    keys: npt.NDArray[np.uint64] = (hashed >> np.uint64(17) << np.uint64(16)) | np.uint64(_TOP_BIT)
    return keys


def request_key(request_id: str) -> int:
    """One request's part of its items' keys (`request_keys`)."""
    return int(request_keys([request_id])[0])


# One slot: the item's key, its score, whether it was flagged, its label. One record a slot, so
# remembering a single item is one assignment (0.7 us, against 1.3 for four arrays).
SLOT = np.dtype(
    [("key", "<u8"), ("stamp", "<i8"), ("score", "<f8"), ("flagged", "?"), ("label", "u1")]
)


# An item as `remember` keeps it, one bytes object an item: its score and index in its
# request end to end, then the request's id (so that nothing kept is a container the garbage
# collector tracks, service.monitoring.kept_aside, and a single item's entry is the
# concatenation of its arrays' bytes: no numpy call to build it).
_ROW = np.dtype([("score", "<f8"), ("item", "<u2")])
_FIRST_ITEM = b"\0\0"  # item 0 of its request, as _ROW writes it


def feedback_bytes(size: int) -> int:
    return _HEADER_BYTES + SLOT.itemsize * size


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
        self.slots = raw[_HEADER_BYTES:].view(SLOT)
        self.keys = self.slots["key"]
        self.flagged = self.slots["flagged"]
        self.labels = self.slots["label"]
        self._recorded = 0  # this worker's count; where its next item goes
        # Guards the ring's writes; requests wait aside until then (service.monitoring.kept_aside).
        self._lock = threading.Lock()
        self._kept: KeptAside[bytes] = KeptAside()
        self.errors = 0  # items dropped because they could not be written
        self.threshold = math.inf if threshold is None else threshold  # never written: existing

    def remember(self, request_id: str, scores: AnyFloatArray) -> None:
        """A scored request's items (flat scores; flagged at the write, against the ring's
        threshold), kept aside until `flush` writes them; a request of more items than
        MAX_ITEM + 1 keeps its first. Never raises: a request whose scores do not fit is
        counted in `errors` and logged, having kept nothing. Its usual case (one item) is a
        check and bytes end to end in this one frame (service.monitoring.kept_aside says
        why)."""
        if len(scores) == 1 and scores.dtype is FLOAT64:
            entry = scores.tobytes() + _FIRST_ITEM + request_id.encode()
            kept = self._kept  # KeptAside.keep, inlined (one frame less on every request)
            kept.entries.append(entry)
            kept.items += 1
            if kept.items >= FLUSH_ITEMS:
                self.flush()
        else:
            self._remember_batch(request_id, scores)

    def _remember_batch(self, request_id: str, scores: AnyFloatArray) -> None:
        count = len(scores)
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
        # deque.extend of a list is one atomic step: the request's items stay together.
        if self._kept.keep_all([raw[i : i + size] + rid for i in range(0, len(raw), size)]):
            self.flush()

    def flush(self) -> None:
        """Write what `remember` kept aside into the ring, as one block stamped now. Any
        thread may call it; only this worker writes its ring's slots (others only set
        labels)."""
        with self._lock:
            entries = self._kept.drain()
            if not entries:
                return
            count = len(entries)
            try:
                # One row an item: its _ROW fields, then its request's id, zero padded.
                table = np.array(entries, dtype=np.bytes_)
                matrix = table.view(np.uint8).reshape(count, table.dtype.itemsize)
                fields = np.ascontiguousarray(matrix[:, : _ROW.itemsize]).view(_ROW).ravel()
                keys = id_keys(matrix[:, _ROW.itemsize :]) | fields["item"].astype(np.uint64)
                scores = fields["score"]
                self._write(keys, time.time_ns(), scores, scores > self.threshold)
            except Exception:  # never expected (remember checked the sizes): dropped, counted
                self.errors += count
                log.exception("dropped %d items the feedback ring could not write", count)

    def _write(
        self,
        keys: npt.NDArray[np.uint64],
        stamp: int,
        scores: AnyFloatArray,
        flags: npt.NDArray[np.bool_],
    ) -> None:
        count = len(scores)
        block = np.zeros(count, dtype=SLOT)  # label 0: unlabelled
        block["key"] = keys
        block["stamp"] = stamp
        block["score"] = scores
        block["flagged"] = flags
        keep = min(count, self.size)  # a block larger than the ring keeps its last
        positions = (self._recorded + count - keep + np.arange(keep)) % self.size
        self.slots[positions] = block[count - keep :]
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
        stamps = self.slots["stamp"]
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
