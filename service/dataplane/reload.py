"""Hot reload of the model repository: what changed is loaded and warmed off the event loop, then
`state.repository` is swapped in one assignment.

Requests resolve their model from `state.repository` once and keep that `ServedModel` to the
end, so the swap is atomic for new requests and in-flight ones finish on the copy they started
with. The rules (what is kept, loaded, refused, unloaded) live in `ModelRepository.reload`.

Three triggers, one code path (`Reloader.reload`, one run at a time per worker):
- `POST /admin/reload`: this worker reloads now and signals the server's other workers;
- a signal from another worker of the same server;
- polling (VAE_RELOAD_INTERVAL_S > 0): a worker reloads when the repository's files changed.

uvicorn's workers are separate processes and a request reaches only one of them. `vae-serve`
gives every server a private folder (its path in VAE_SERVE_RELOAD_DIR, see `WorkerSignals`)
holding a generation counter, bumped by each POST /admin/reload, and one report file per worker:
the last generation it reloaded for and how that went. Each worker reads the counter twice a
second; the endpoint waits for every other live worker's report before it answers, so after a
200 every worker serves the new repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from service.dataplane.state import ServiceState
from service.errors import NotReady, ReloadIncomplete, ReloadRefused, ServiceError
from service.models.repository import (
    Fingerprint,
    ModelRepository,
    RepositoryChanges,
    RepositoryError,
    repository_fingerprint,
)
from service.processes import process_exists

log = logging.getLogger("vae_service.reload")
_T = TypeVar("_T")

# Set by `vae-serve` for its workers: the folder they signal each other through.
RELOAD_DIR_VARIABLE = "VAE_SERVE_RELOAD_DIR"
# How often a worker reads the generation counter: one small file read, so a signalled reload
# starts within half a second without costing anything measurable.
SIGNAL_CHECK_INTERVAL_S = 0.5
# How long POST /admin/reload waits for the other workers to report: long enough for a big
# bundle to load and warm up on a busy machine; past it the answer is 503 reload_incomplete.
WORKER_REPORT_TIMEOUT_S = 120.0
WORKER_REPORT_CHECK_S = 0.05


def reload_dir_from_environment() -> Path | None:
    value = os.environ.get(RELOAD_DIR_VARIABLE)
    return Path(value) if value else None


# --------------------------------------------------------------------------- reports


def repository_state(repository: ModelRepository) -> dict[str, Any]:
    """What a repository serves, and what on disk it refuses."""
    return {
        "served": {name: repository.served_version[name] for name in sorted(repository.models)},
        "default_model": repository.default_name,
        "refused": {
            key: {
                "reason": reason,
                # The files on disk were refused, but a copy loaded before they changed serves.
                "loaded_copy_serves": repository.loaded(key) is not None,
            }
            for key, reason in sorted(repository.refused.items())
        },
    }


@dataclass(frozen=True)
class ReloadReport:
    """One reload of this worker: what changed and what it serves now."""

    repository: ModelRepository
    changes: RepositoryChanges
    seconds: float

    def to_json(self) -> dict[str, Any]:
        changes = self.changes
        return {
            "status": "reloaded" if changes.changed else "unchanged",
            "loaded": changes.loaded,
            "replaced": changes.replaced,
            "unloaded": changes.unloaded,
            "kept": changes.kept,
            **repository_state(self.repository),
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        changes = self.changes
        parts = [
            f"{what} {keys}"
            for what, keys in (
                ("loaded", changes.loaded),
                ("replaced", changes.replaced),
                ("unloaded", changes.unloaded),
                ("refused", changes.refused),
            )
            if keys
        ]
        served = repository_state(self.repository)["served"]
        return f"{', '.join(parts) or 'nothing changed'}; serving {served}"


# --------------------------------------------------------------------------- worker signals


def _write_atomically(path: Path, text: str) -> None:
    # Readers (other workers) must never see half a file: write aside, then rename over.
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def _alive(pid: object) -> bool:
    return isinstance(pid, int) and process_exists(pid)


class WorkerSignals:
    """The folder one server's workers share (made private, 0700, by `vae-serve`).

    `generation` holds a counter that POST /admin/reload bumps (under a lock, so two workers
    bumping at once get two numbers); `worker-<id>.json` is each worker's latest report: the
    highest generation one of its reloads started after, and how its latest reload went. Small
    files on the temporary file system: read and written on the event loop, microseconds each.
    """

    def __init__(self, folder: Path, worker_id: str | None = None):
        self.folder = folder
        # pid plus a random part: unique even for several apps in one process (tests).
        self.worker_id = worker_id or f"{os.getpid()}-{secrets.token_hex(3)}"
        self.report_path = folder / f"worker-{self.worker_id}.json"

    def generation(self) -> int:
        try:
            return int((self.folder / "generation").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return 0

    def signal(self) -> int:
        """Ask every worker to reload; the new generation, which their reports will reach."""
        with (self.folder / "generation.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            generation = self.generation() + 1
            _write_atomically(self.folder / "generation", str(generation))
        return generation

    def publish(self, report: dict[str, Any]) -> None:
        _write_atomically(self.report_path, json.dumps(report))

    def withdraw(self) -> None:
        self.report_path.unlink(missing_ok=True)

    def others(self) -> dict[str, dict[str, Any]]:
        """Worker id -> latest report, for every other worker still alive."""
        reports: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("worker-*.json")):
            if path == self.report_path:
                continue
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # withdrawn while we looked: that worker is stopping
            if not isinstance(report, dict) or not _alive(report.get("pid")):
                # A worker that was killed could not withdraw its report.
                path.unlink(missing_ok=True)
                continue
            reports[str(report.get("worker"))] = report
        return reports


# --------------------------------------------------------------------------- the reloader


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    # Callers may all have gone (cancelled): the outcome is logged already, so mark it seen
    # rather than have asyncio report an exception that was never retrieved.
    if not task.cancelled():
        task.exception()


class Reloader:
    """One per worker: runs reloads one at a time, answers POST /admin/reload, and watches
    for signals and (when VAE_RELOAD_INTERVAL_S is set) for changed files."""

    def __init__(self, state: ServiceState, signals: WorkerSignals | None):
        self.state = state
        self.signals = signals
        self._lock = asyncio.Lock()
        self._queued: asyncio.Task[ReloadReport] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seen_generation = 0  # the highest generation this worker has acted on
        self._done_generation = 0  # the highest generation one of its reloads started after
        # The repository's files when a whole reload was last refused: polling does not retry
        # (and log the same refusal again) until they change.
        self._refused_snapshot: dict[str, Fingerprint] | None = None

    def generation(self) -> int:
        return self.signals.generation() if self.signals is not None else 0

    @property
    def busy(self) -> bool:
        """Whether a reload is running now."""
        return self._lock.locked()

    # --- lifecycle (the app's lifespan) ---

    def announce(self) -> int:
        """Before the first load: the generation it starts from. The worker is listed among
        the server's workers from now on, so a reload signalled while it loads waits for it
        (its watcher picks the signal up once it is loaded) instead of missing it."""
        generation = self.generation()
        self._seen_generation = self._done_generation = generation
        self._publish(True, {"status": "starting"})
        return generation

    async def start(self, generation: int) -> None:
        """After the first load, which began at `generation` (from `announce`)."""
        self._seen_generation = self._done_generation = generation
        assert self.state.repository is not None
        if self.signals is not None:
            self._publish(True, {"status": "started", **repository_state(self.state.repository)})
            self._spawn(self._watch_signals())
        interval = self.state.settings.reload_interval_s
        if interval > 0:
            self._spawn(self._poll_repository(interval))

    async def stop(self) -> None:
        # Watchers and reloads alike: a reload cut short swaps nothing in (its thread runs to
        # the end, unobserved), and the repository that served goes down with the worker.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.signals is not None:
            self.signals.withdraw()

    def _spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- one reload of this worker ---

    async def reload(self) -> ReloadReport:
        """Reload this worker. A caller arriving while a reload runs waits for the next one,
        shared with every caller arriving meanwhile: each result reflects the disk as it was
        at the call or later, and at most one reload runs and one waits."""
        if self._queued is None or self._queued.done():
            self._queued = self._spawn(self._run())
            self._queued.add_done_callback(_retrieve_outcome)
        # shield: a caller that goes away does not cancel the reload others are waiting for.
        return await asyncio.shield(self._queued)

    async def _run(self) -> ReloadReport:
        async with self._lock:
            # Started: from now on a caller needs a later look at the disk, so it queues anew.
            if self._queued is asyncio.current_task():
                self._queued = None
            previous = self.state.repository
            if previous is None or not self.state.ready:
                raise NotReady("models are still loading", headers={"Retry-After": "1"})
            generation = self.generation()
            settings = self.state.settings
            started = time.perf_counter()
            snapshot = await asyncio.to_thread(repository_fingerprint, settings.model_repository)
            try:
                repository, changes = await asyncio.to_thread(previous.reload, settings)
            except RepositoryError as error:
                self._refused_snapshot = snapshot
                log.error("reload refused; the models loaded before go on serving: %s", error)
                refusal = ReloadRefused(
                    f"reload refused; the models loaded before go on serving: {error}",
                    repository_state(previous),
                )
                self._publish(False, refusal.body()["error"], generation)
                raise refusal from error
            except Exception:
                log.exception("reload failed; the models loaded before go on serving")
                self._publish(False, ServiceError("internal error").body()["error"], generation)
                raise
            self._refused_snapshot = None
            # The swap, one assignment: requests that already resolved their model finish on
            # the old copy, every later one resolves from the new repository.
            self.state.repository = repository
            if self.state.metrics is not None:
                self.state.metrics.models_loaded(repository)
            report = ReloadReport(repository, changes, time.perf_counter() - started)
            log.info("reload done in %.2f s: %s", report.seconds, report.summary())
            self._publish(True, report.to_json(), generation)
            return report

    def _publish(self, ok: bool, result: dict[str, Any], generation: int = 0) -> None:
        if self.signals is None:
            return
        self._done_generation = max(self._done_generation, generation)
        try:
            self.signals.publish(
                {
                    "worker": self.signals.worker_id,
                    "pid": os.getpid(),
                    "generation": self._done_generation,
                    "ok": ok,
                    "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    ("result" if ok else "error"): result,
                }
            )
        except OSError as error:  # the folder went away (server stopping): nothing to tell
            log.warning("could not publish this worker's reload report: %s", error)

    # --- the watchers ---

    async def _watch_signals(self) -> None:
        assert self.signals is not None
        while True:
            await asyncio.sleep(SIGNAL_CHECK_INTERVAL_S)
            generation = self.signals.generation()
            if generation > self._seen_generation:
                self._seen_generation = generation
                log.info("reload signalled by another worker (generation %d)", generation)
                await self._reload_logged()

    async def _poll_repository(self, interval: float) -> None:
        root = self.state.settings.model_repository
        while True:
            await asyncio.sleep(interval)
            repository = self.state.repository
            if repository is None:
                continue
            snapshot = await asyncio.to_thread(repository_fingerprint, root)
            if snapshot == repository.fingerprints or snapshot == self._refused_snapshot:
                continue
            log.info("the files in %s changed: reloading", root)
            await self._reload_logged()

    async def _reload_logged(self) -> None:
        """A reload nobody waits for: its outcome is in the log (and the report file)."""
        # Refusals and failures are logged where they happen; the watcher keeps watching,
        # since the next change may well load.
        with contextlib.suppress(Exception):
            await self.reload()

    # --- POST /admin/reload ---

    async def reload_everywhere(self) -> dict[str, Any]:
        """Reload this worker, signal the others and wait for their reports. Raises
        ReloadRefused (409) when this or another worker refused, ReloadIncomplete (503) when
        another worker did not report in time."""
        self.state.require_ready()
        generation = 0
        if self.signals is not None:
            # Signal first: the other workers reload while this one does.
            generation = self.signals.signal()
            self._seen_generation = max(self._seen_generation, generation)
        own: dict[str, Any] | None = None
        refusal: ReloadRefused | None = None
        try:
            own = (await self.reload()).to_json()
        except ReloadRefused as error:
            refusal = error
        others = await self._wait_for_others(generation)
        if refusal is not None:
            refusal.detail = {**refusal.detail, "worker": self._identity(), "others": others}
            raise refusal
        assert own is not None
        body = {**own, "worker": self._identity(), "others": others}
        for worker, report in others.get("reports", {}).items():
            if not report.get("ok"):
                message = report.get("error", {}).get("message")
                raise ReloadRefused(
                    f"this worker reloaded, but worker {worker} refused: {message}", body
                )
        if others.get("pending"):
            raise ReloadIncomplete(
                f"this worker reloaded; workers {others['pending']} did not report within "
                f"{WORKER_REPORT_TIMEOUT_S:g} s and may still serve the models from before",
                body,
                headers={"Retry-After": "5"},
            )
        return body

    def _identity(self) -> dict[str, Any]:
        worker_id = self.signals.worker_id if self.signals is not None else str(os.getpid())
        return {"id": worker_id, "pid": os.getpid()}

    async def _wait_for_others(self, generation: int) -> dict[str, Any]:
        if self.signals is None:
            return {
                "signalled": False,
                "note": "not started by vae-serve (no VAE_SERVE_RELOAD_DIR): only this "
                "process reloaded",
            }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKER_REPORT_TIMEOUT_S
        while True:
            # Re-read each time: a worker that dies meanwhile drops out instead of being
            # waited for.
            reports = self.signals.others()
            pending = sorted(w for w, r in reports.items() if r.get("generation", 0) < generation)
            if not pending or loop.time() >= deadline:
                break
            await asyncio.sleep(WORKER_REPORT_CHECK_S)
        return {
            "signalled": True,
            "generation": generation,
            "reports": {
                worker: report for worker, report in reports.items() if worker not in pending
            },
            "pending": pending,
        }
