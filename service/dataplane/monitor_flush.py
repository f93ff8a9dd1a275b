"""Every MONITOR_FLUSH_S, each model version's monitor writes what this worker kept aside
(service.monitoring.kept_aside says why items are kept aside), so that a report answered by
another worker sees them within that time."""

from __future__ import annotations

import asyncio
import contextlib

from service.dataplane.state import ServiceState

# At 0.25 s a worker's items reach the others' reports within a quarter of a second; a flush of
# nothing costs a few microseconds per model version.
MONITOR_FLUSH_S = 0.25


class MonitorFlusher:
    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    def flush(self) -> None:
        repository = self.state.repository
        for model in repository if repository is not None else ():
            if model.monitor is not None:
                model.monitor.flush()  # never raises: a failure is logged and counted

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_FLUSH_S)
            self.flush()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()
