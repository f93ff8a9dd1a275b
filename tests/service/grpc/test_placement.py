"""The table and mailboxes through which workers spread gRPC connections
(service/grpc/native/placement.py), with real files, sockets and processes. A sibling worker is
a live process whose pid fills a row (a `sleep`), a gone one the pid of a process that ended."""

from __future__ import annotations

import array
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.grpc.native.placement import _SENT, _TAKEN, Placement


@pytest.fixture
def sibling_pid() -> Iterator[int]:
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def gone_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def connected_pair() -> tuple[socket.socket, socket.socket]:
    """A TCP connection on 127.0.0.1: (the client's end, the server's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def test_a_worker_takes_a_free_row_and_a_dead_workers_row(tmp_path: Path, sibling_pid: int) -> None:
    first = Placement.join(tmp_path, 2)
    assert first is not None
    assert first.slot == 0
    first.table[1, 0] = sibling_pid  # a live sibling holds the other row
    # Every row held by a live process (this one counts as free for itself: rejoining): a
    # third process finds none.
    first.table[0, 0] = sibling_pid
    assert Placement.join(tmp_path, 2) is None
    # The sibling in row 0 died with 3 connections on their way to it: the worker that takes
    # its row is not charged with them.
    first.table[0, 0] = gone_pid()
    first.table[1, _SENT + 0] = 3
    # It had sent the sibling 2, which the sibling took: they stay counted on both sides, or
    # the sibling's connections on their way would read 2 fewer from then on.
    first.table[0, _SENT + 1] = 2
    first.table[1, _TAKEN] = 2
    second = Placement.join(tmp_path, 2)
    assert second is not None
    assert second.slot == 0
    assert second.table[0, _TAKEN] == 3
    assert second.table[0, _SENT + 1] == 2
    second.table[1, 1] = 1
    second.table[0, _SENT + 1] = 3  # one more on its way to the sibling
    second.hold(2)
    assert second.elsewhere() is None  # the sibling's 1 held + 1 on the way: even
    assert second.elsewhere() is None  # it holds nothing: it keeps what it accepts


def test_a_new_connection_goes_to_the_live_sibling_that_holds_fewest(
    tmp_path: Path, sibling_pid: int
) -> None:
    placement = Placement.join(tmp_path, 3)
    assert placement is not None
    assert placement.slot == 0
    placement.table[1, 0] = sibling_pid
    placement.table[2, 0] = gone_pid()  # holds nothing, but is gone: never chosen
    placement.hold(2)
    placement.table[1, 1] = 1
    assert placement.elsewhere() == 1
    placement.table[1, 1] = 2
    assert placement.elsewhere() is None  # even: kept
    # Connections sent and not yet taken count as the sibling's.
    placement.table[1, 1] = 1
    placement.table[0, _SENT + 1] = 1
    assert placement.elsewhere() is None


def test_a_socket_handed_over_arrives_connected(tmp_path: Path, sibling_pid: int) -> None:
    sender = Placement.join(tmp_path, 2)
    assert sender is not None
    sender.table[sender.slot, 0] = sibling_pid  # free the row for the receiver, then restore
    receiver = Placement.join(tmp_path, 2)
    assert receiver is not None
    assert receiver.slot == 1
    sender.table[sender.slot, 0] = os.getpid()
    client, server_end = connected_pair()
    with client:
        assert sender.hand_over(server_end, receiver.slot)
        server_end.close()  # as the worker does: the receiver holds its own descriptor
        taken, messages = receiver.receive()
        assert messages == 1
        assert len(taken) == 1
        receiver.took(messages)
        with taken[0] as received:
            client.sendall(b"ping")
            assert received.recv(4) == b"ping"
            received.sendall(b"pong")
            assert client.recv(4) == b"pong"
    assert sender.table[0, _SENT + 1] == 1
    assert receiver.table[1, _TAKEN] == 1


def test_a_send_to_a_sibling_that_is_gone_keeps_the_connection(tmp_path: Path) -> None:
    placement = Placement.join(tmp_path, 2)
    assert placement is not None
    client, server_end = connected_pair()
    with client, server_end:
        # No mailbox bound for row 1: the send fails and nothing is counted as sent.
        assert not placement.hand_over(server_end, 1)
        assert placement.table[0, _SENT + 1] == 0
        client.sendall(b"still ours")
        assert server_end.recv(10) == b"still ours"


def test_anything_but_one_stream_socket_a_message_is_closed(tmp_path: Path) -> None:
    """Another process of the same user writing into a mailbox: a message without a socket,
    a pipe, two sockets at once. Nothing is served but the first of the two; every
    descriptor that is not served is closed, not leaked."""
    placement = Placement.join(tmp_path, 2)
    assert placement is not None
    path = str(tmp_path / "grpc-0.sock")
    read_end, write_end = os.pipe()
    first_client, first = connected_pair()
    second_client, second = connected_pair()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(b"nothing", path)
        rights = array.array("i", [read_end])
        stranger.sendmsg([b"p"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, path)
        both = array.array("i", [first.fileno(), second.fileno()])
        stranger.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, both)], 0, path)
    os.close(read_end)
    first.close()
    second.close()
    descriptors_before = len(os.listdir("/proc/self/fd"))
    taken, messages = placement.receive()
    assert messages == 3
    assert len(taken) == 1
    assert len(os.listdir("/proc/self/fd")) == descriptors_before + 1  # only the one served
    taken[0].close()
    # The second socket was closed by the placement: its client sees the end.
    second_client.settimeout(5)
    assert second_client.recv(1) == b""
    os.close(write_end)
    first_client.close()
    second_client.close()


def test_leaving_frees_the_row_and_the_mailbox(tmp_path: Path) -> None:
    placement = Placement.join(tmp_path, 2)
    assert placement is not None
    placement.hold(5)
    placement.leave()
    assert placement.table[0, 0] == 0
    assert placement.table[0, 1] == 0
    assert not (tmp_path / "grpc-0.sock").exists()
