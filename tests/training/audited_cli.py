"""`vae-train`, keeping a record of every change the process makes to files under one folder.

tests/training/test_distributed.py starts this under torchrun to learn which rank wrote what.
Python's audit hooks (PEP 578) report every open for writing, mkdir, rename, removal and mode
change made through Python, which is how the trainer writes everything it writes; at exit the
record goes to AUDIT_RECORD_DIR/rank<RANK>.json, outside the watched folder AUDIT_WATCH.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

from training.cli import main

WATCHED = os.path.abspath(os.environ["AUDIT_WATCH"])
RECORD = Path(os.environ["AUDIT_RECORD_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
# Events whose path arguments are changed (os.replace and os.unlink report as rename, remove).
CHANGES = {
    "os.mkdir": 1,
    "os.rmdir": 1,
    "os.remove": 1,
    "os.rename": 2,
    "os.chmod": 1,
    "os.truncate": 1,
    "os.utime": 1,
    "os.link": 2,
    "os.symlink": 2,
    "shutil.rmtree": 1,
    "shutil.copyfile": 2,
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
changes: list[tuple[str, str]] = []


def _watched(path: Any) -> str | None:
    if not isinstance(path, str | bytes | os.PathLike):
        return None  # a file descriptor
    text = os.path.abspath(os.fsdecode(path))
    return text if text == WATCHED or text.startswith(WATCHED + os.sep) else None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else False
        writing = writing or (isinstance(flags, int) and bool(flags & WRITE_FLAGS))
        if writing and (where := _watched(path)) is not None:
            changes.append((event, where))
    elif event in CHANGES:
        for path in args[: CHANGES[event]]:
            if (where := _watched(path)) is not None:
                changes.append((event, where))


def _write_record() -> None:
    RECORD.write_text(json.dumps(changes))


if __name__ == "__main__":
    sys.addaudithook(_hook)
    atexit.register(_write_record)
    raise SystemExit(main(sys.argv[1:]))
