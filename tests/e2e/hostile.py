"""Tools of the hostile-client suite: a server's worker processes and their memory, and raw
HTTP exchanges over a socket (for what no client library would send)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
MIB = 1024 * 1024


def worker_pids(server: subprocess.Popen[str]) -> list[int]:
    """uvicorn's worker processes: the server's children started by multiprocessing's spawn."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.pid and b"spawn_main" in command:
            pids.append(int(entry.name))
    return sorted(pids)


def _status(pid: int, field: str) -> int:
    """A /proc/PID/status size in bytes (VmRSS: resident now; VmHWM: the peak since reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def resident(pid: int) -> int:
    return _status(pid, "VmRSS")


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the present resident size (Linux clear_refs, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def can_reset_peaks() -> bool:
    try:
        reset_peak(os.getpid())
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Cost:
    result: object
    seconds: float
    peak_extra: int  # the largest rise of any worker's resident size above where it started


def measured(pids: list[int], call: Callable[[], T]) -> tuple[T, Cost]:
    """Run `call` and say what it cost the workers: wall time, and the peak resident size
    above each worker's size before it (the worst worker; 0 where peaks cannot be reset)."""
    before = {}
    for pid in pids:
        # Where it cannot, the caller knows (can_reset_peaks) and does not read the peak.
        with contextlib.suppress(OSError):
            reset_peak(pid)
        before[pid] = resident(pid)
    began = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - began
    extra = max(max(0, _status(pid, "VmHWM") - before[pid]) for pid in pids)
    return result, Cost(result, seconds, extra)


def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection and read until the server closes it or `timeout`
    passes; what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        # The server may close before taking it all: its answer is what counts.
        with contextlib.suppress(OSError):
            connection.sendall(data)
        return read_all(connection, timeout)


def read_all(connection: socket.socket, timeout: float) -> bytes:
    connection.settimeout(timeout)
    received = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            break
        except OSError:
            break  # reset after the answer: what was read stands
        if not chunk:
            break
        received += chunk
    return bytes(received)


def statuses(raw: bytes) -> list[int]:
    """The status of every response in a raw byte stream, in order: each head is read, and
    its Content-Length says where the next response starts."""
    found = []
    position = 0
    while raw.startswith(b"HTTP/1.1 ", position):
        end = raw.find(b"\r\n\r\n", position)
        if end < 0:
            break
        lines = raw[position:end].split(b"\r\n")
        found.append(int(lines[0][9:12]))
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        position = end + 4 + length
    return found


def is_closed(connection: socket.socket) -> bool:
    """Whether the server has answered and closed (a read gives data then EOF, or EOF)."""
    connection.setblocking(False)
    try:
        data = connection.recv(65536)
        return True if not data else is_closed_after(connection)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        connection.setblocking(True)


def is_closed_after(connection: socket.socket) -> bool:
    try:
        return connection.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
