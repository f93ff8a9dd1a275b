"""Whether a process id is still alive: shared by the worker-to-worker bookkeeping
(metrics files of dead workers, reload acknowledgements, monitoring windows)."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """Signal 0 checks existence without sending anything."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
