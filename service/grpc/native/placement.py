"""Spreading gRPC connections evenly over the workers that share the port.

Every worker listens on the gRPC port with SO_REUSEPORT and the kernel picks the worker of each
new connection by a hash of its addresses, blind to what each worker holds. A gRPC client keeps
its connection for its whole life, so one unlucky hash lasts: 8 callers split 8/0 or 7/1 in 4
bursts of 30 (`python -m bench.placement`), and one core then serves most of the traffic while
the other waits. Here a worker that accepts a connection while it holds more than a sibling
passes the socket to the sibling that holds fewest (SCM_RIGHTS over a Unix datagram socket in
the server's private folder) before reading a byte of it; the client sees nothing.

What each worker holds is kept in a small table every worker maps (one row a worker, in the
same private folder). Each cell has one writer, so no lock is taken on the way of a connection:
a worker writes its own row (its pid, what it holds, what it took from siblings) and its own
sends to each sibling; a sibling's load is what it holds plus what was sent to it and not yet
taken. A sibling that is gone (its pid no longer exists) gets nothing; a send that fails (the
sibling's queue full, its socket gone) keeps the connection here: a connection is never lost
to the mechanism, only placed less well.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import mmap
import os
import socket
from pathlib import Path

import numpy as np

from service.processes import process_exists

log = logging.getLogger("vae_service.grpc")

TABLE_NAME = "grpc-placement"
_PID, _HELD, _TAKEN, _SENT = 0, 1, 2, 3  # columns; _SENT + j: connections sent to worker j
RECEIVE_PER_WAKE = 64  # sockets taken from the queue per wake-up, so one wake stays short


def _socket_path(folder: Path, slot: int) -> str:
    return str(folder / f"grpc-{slot}.sock")


class Placement:
    """This worker's row of the shared table and its mailbox for handed sockets."""

    def __init__(self, folder: Path, table: np.ndarray, file: mmap.mmap, slot: int) -> None:
        self.folder = folder
        self.table = table  # int64 [workers, 3 + workers], mapped by every worker
        self._file = file  # the mapping `table` views: kept open as long as this worker runs
        self.slot = slot
        self.workers = table.shape[0]
        self.mailbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = _socket_path(folder, slot)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a worker that died in this slot left its socket behind
        self.mailbox.bind(path)
        self.mailbox.setblocking(False)
        self.outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.outbox.setblocking(False)  # a full sibling queue keeps the connection here

    @classmethod
    def join(cls, folder: Path, workers: int) -> Placement | None:
        """Take a free row of the folder's table (creating the table first); None when every
        row belongs to a live process (more processes than VAE_WORKERS, or a second server)."""
        columns = _SENT + workers
        size = workers * columns * 8
        path = folder / TABLE_NAME
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # rows are claimed one worker at a time
            if os.fstat(descriptor).st_size != size:
                os.ftruncate(descriptor, size)
            file = mmap.mmap(descriptor, size)
            table = np.frombuffer(file, dtype=np.int64).reshape(workers, columns)
            for slot in range(workers):
                pid = int(table[slot, _PID])
                if pid == 0 or pid == os.getpid() or not process_exists(pid):
                    table[slot, _HELD] = 0
                    # What siblings sent the worker that died here is lost with it: counted as
                    # taken, so it is not charged to this one. What it sent them stays
                    # counted (their taken counts include it) and this worker counts on.
                    table[slot, _TAKEN] = int(table[:, _SENT + slot].sum())
                    table[slot, _PID] = os.getpid()
                    break
            else:
                del table
                file.close()
                return None
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)
        return cls(folder, table, file, slot)

    # --- what this worker holds ----------------------------------------------------------

    def hold(self, connections: int) -> None:
        self.table[self.slot, _HELD] = connections

    def _load(self, slot: int) -> int:
        row = self.table[slot]
        on_the_way = int(self.table[:, _SENT + slot].sum()) - int(row[_TAKEN])
        return int(row[_HELD]) + max(on_the_way, 0)

    def elsewhere(self) -> int | None:
        """The sibling a new connection should go to, or None to keep it: the live sibling that
        holds fewest, when it holds fewer than this worker."""
        mine = self._load(self.slot)
        best: int | None = None
        best_load = mine
        for slot in range(self.workers):
            if slot == self.slot:
                continue
            pid = int(self.table[slot, _PID])
            if pid == 0 or not process_exists(pid):
                continue
            load = self._load(slot)
            if load < best_load:
                best, best_load = slot, load
        return best

    # --- handing sockets over ------------------------------------------------------------

    def hand_over(self, connection: socket.socket, slot: int) -> bool:
        """Send the accepted socket to worker `slot`; False (and the socket still ours) when
        the send fails."""
        rights = array.array("i", [connection.fileno()])
        try:
            # sendmsg itself: socket.send_fds drops its address argument (Python 3.11).
            self.outbox.sendmsg(
                [b"c"],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)],
                0,
                _socket_path(self.folder, slot),
            )
        except OSError:
            return False
        self.table[self.slot, _SENT + slot] += 1
        return True

    def receive(self) -> tuple[list[socket.socket], int]:
        """The sockets siblings sent (each a connected TCP socket; anything else is closed) and
        how many messages brought them: the caller counts its connections first and then
        `took` the messages, so a sibling never sees a connection in neither place."""
        taken: list[socket.socket] = []
        messages = 0
        for _ in range(RECEIVE_PER_WAKE):
            try:
                _, descriptors, _, _ = socket.recv_fds(self.mailbox, 16, 4)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                log.warning("gRPC placement: receiving a connection failed: %s", error)
                break
            messages += 1
            for number, descriptor in enumerate(descriptors):
                # One TCP socket a message: what a sibling sends. Anything else in the
                # mailbox (a pipe, a second socket) is not ours to serve, and is closed.
                try:
                    connection = socket.socket(fileno=descriptor)
                except OSError:  # not a socket
                    os.close(descriptor)
                    continue
                tcp = connection.family in (socket.AF_INET, socket.AF_INET6)
                if number > 0 or not tcp or connection.type != socket.SOCK_STREAM:
                    connection.close()
                    continue
                taken.append(connection)
        return taken, messages

    def took(self, messages: int) -> None:
        self.table[self.slot, _TAKEN] += messages

    def leave(self) -> None:
        """Stop taking connections: siblings see the row free and send nothing more."""
        self.table[self.slot, _HELD] = 0
        self.table[self.slot, _PID] = 0
        self.mailbox.close()
        self.outbox.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_socket_path(self.folder, self.slot))
