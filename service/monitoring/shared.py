"""Where the workers' windows live, so that any worker answers for all of them.

`vae-serve` gives its workers a private folder to share (the one the metrics already use,
PROMETHEUS_MULTIPROC_DIR, service.observability.metrics); each worker keeps each model
version's drift window and feedback ring in files there, `vae-monitor/<key>.<pid>-<n>.window`
and `.feedback`, memory-mapped (writing them costs what writing memory costs), and reads the
others' files when asked for a report (and labels items in them when feedback comes). A file
whose worker is gone (a crash, before it could remove it) is skipped and removed. With one
process and no such folder, both are plain memory.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from service.monitoring.feedback import FeedbackRing, feedback_bytes
from service.monitoring.window import (
    ScoreWindow,
    WindowItems,
    WindowLayoutError,
    read_window,
    window_bytes,
)
from service.processes import process_exists

log = logging.getLogger("vae_service.monitoring")

SHARED_FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
SUBFOLDER = "vae-monitor"
WINDOW_SUFFIX = ".window"
FEEDBACK_SUFFIX = ".feedback"
# Files made by this process, numbered: a model version reloaded in place gets new files while
# requests to the copy it replaces may still record into the old ones.
_serial = itertools.count()


def shared_folder() -> Path | None:
    given = os.environ.get(SHARED_FOLDER_VARIABLE)
    return Path(given) / SUBFOLDER if given else None


def model_key(name: str, version: str) -> str:
    """A file-name-safe key per model version (names are folder names, but may hold dots)."""
    return hashlib.sha256(f"{name}\0{version}".encode()).hexdigest()[:24]


def _mapped(path: Path, size: int, create: bool) -> mmap.mmap:
    with path.open("w+b" if create else "r+b") as handle:
        if create:
            handle.truncate(size)
        # Kept open by whoever holds it: a request may still record after a reload.
        return mmap.mmap(handle.fileno(), size)


class WindowHome:
    """One model version's drift window and feedback ring in this worker, and where to find
    the other workers'."""

    def __init__(
        self,
        name: str,
        version: str,
        size: int,
        latent_dim: int,
        features: int | None,
        feedback_size: int = 10_000,
        *,
        threshold: float,
    ) -> None:
        """`threshold`: the calibrated threshold this worker's rings flag items by."""
        self.key = model_key(name, version)
        self.size = size
        self.feedback_size = feedback_size
        self.folder = shared_folder()
        self.total = window_bytes(size, latent_dim, features)
        self.paths: list[Path] = []
        if self.folder is None:
            self.window = ScoreWindow(size, latent_dim, features, threshold=threshold)
            self.feedback = FeedbackRing(feedback_size, threshold=threshold)
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        stem = f"{self.key}.{os.getpid()}-{next(_serial)}"
        window_path = self.folder / f"{stem}{WINDOW_SUFFIX}"
        feedback_path = self.folder / f"{stem}{FEEDBACK_SUFFIX}"
        self.paths = [window_path, feedback_path]
        self.window = ScoreWindow(
            size,
            latent_dim,
            features,
            memoryview(_mapped(window_path, self.total, True)),
            threshold=threshold,
        )
        self.feedback = FeedbackRing(
            feedback_size,
            memoryview(_mapped(feedback_path, feedback_bytes(feedback_size), True)),
            threshold=threshold,
        )

    @property
    def path(self) -> Path | None:
        """This worker's window file (None without a shared folder, or once closed)."""
        return self.paths[0] if self.paths else None

    def _others(self, suffix: str, expected_bytes: int) -> Iterator[Path]:
        """Live workers' files of this model version; a dead worker's are removed."""
        assert self.folder is not None
        for path in sorted(self.folder.glob(f"{self.key}.*{suffix}")):
            if path in self.paths:
                continue
            pid_text = path.name[len(self.key) + 1 : -len(suffix)].partition("-")[0]
            if not pid_text.isdigit():
                continue
            if not process_exists(int(pid_text)):
                path.unlink(missing_ok=True)
                continue
            try:
                if path.stat().st_size != expected_bytes:  # every worker runs one setting
                    continue
            except OSError:  # removed meanwhile
                continue
            yield path

    def gather(self) -> list[WindowItems]:
        """This worker's window and every live worker's window of the same model version."""
        parts = [self.window.items()]
        if self.folder is None:
            return parts
        for path in self._others(WINDOW_SUFFIX, self.total):
            try:
                parts.append(read_window(np.fromfile(path, dtype=np.uint8)))
            except (OSError, WindowLayoutError) as error:  # removed meanwhile, or not ours
                log.debug("skipped window file %s: %s", path, error)
        return parts

    def feedback_rings(self) -> list[FeedbackRing]:
        """This worker's feedback ring and every live worker's, writable (labels go where the
        item was scored)."""
        rings = [self.feedback]
        if self.folder is None:
            return rings
        expected = feedback_bytes(self.feedback_size)
        for path in self._others(FEEDBACK_SUFFIX, expected):
            try:
                mapping = memoryview(_mapped(path, expected, False))
                rings.append(FeedbackRing(self.feedback_size, mapping, existing=True))
            except (OSError, ValueError) as error:  # FeedbackLayoutError included
                log.debug("skipped feedback file %s: %s", path, error)
        return rings

    def close(self) -> None:
        """The worker is done with this model version: its files go (readers skip them)."""
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.paths = []
