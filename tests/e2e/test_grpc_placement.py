"""gRPC connections spread over a real `vae-serve`'s workers (service/grpc/native/placement.py):
which worker holds each connection is read from /proc (bench.placement), never asked of the
server. Without the balancing, the kernel's hash put 8 connections 4/4 in 9 to 11 of 30 bursts
(`python -m bench.placement`); with it, 27 to 29."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from bench.placement import burst_split, children, connections_by_process, listening
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as pb_grpc
from tests.bundles import committed_repository
from tests.e2e.processes import free_port, serve, terminate, wait_ready

ROW = load_digits().data[:1].astype(np.float32)
CALLERS = 8


class Served:
    def __init__(self) -> None:
        port, self.grpc_port = free_port(), free_port()
        self.process = serve(
            "--model-repository",
            str(committed_repository()),
            "--port",
            str(port),
            env={"VAE_WORKERS": "2", "VAE_GRPC_PORT": str(self.grpc_port)},
        )
        wait_ready(f"http://127.0.0.1:{port}", self.process)
        time.sleep(1.0)  # /readyz answered from one worker: the other listening too

    def workers(self) -> set[int]:
        """The processes listening on the gRPC port (not the supervisor's helpers)."""
        return listening(self.grpc_port, children(self.process.pid))


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    running = Served()
    yield running
    terminate(running.process)


def callers_answered(served: Served) -> list[int]:
    """8 callers, each a channel of its own (its own connection), each answered one infer
    while all 8 are open; what each worker held meanwhile, most first."""
    request = pb.ModelInferRequest(model_name="digits-vae")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(ROW.tobytes())
    options = [("grpc.use_local_subchannel_pool", 1)]  # no connection shared between them
    target = f"127.0.0.1:{served.grpc_port}"
    channels = [grpc.insecure_channel(target, options=options) for _ in range(CALLERS)]
    try:
        answers = [
            pb_grpc.GRPCInferenceServiceStub(c).ModelInfer(request, timeout=30) for c in channels
        ]
        assert all(answer.model_name == "digits-vae" for answer in answers)
        scores = {answer.raw_output_contents[-1] for answer in answers}
        assert len(scores) == 1  # the same row, the same answer, whichever worker served it
        held = connections_by_process(served.grpc_port, served.workers())
        return sorted(held.values(), reverse=True)
    finally:
        for channel in channels:
            channel.close()


def wait_until_released(served: Served) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not sum(connections_by_process(served.grpc_port, served.workers(), False).values()):
            time.sleep(0.1)  # a worker forgets a connection a loop turn after its socket
            return
        time.sleep(0.05)
    pytest.fail("the workers still hold connections 10 s after their clients left")


def test_bursts_of_connections_are_split_evenly(served: Served) -> None:
    splits = []
    for _ in range(6):
        held = burst_split(served.grpc_port, served.workers(), CALLERS)
        splits.append(sorted(held.values(), reverse=True)[:2])
    # Two workers accepting at the same moment may each keep one: 5/3 now and then, never
    # worse. The kernel alone gave 4/4 in about a third of bursts, 6/2 to 8/0 in another.
    assert all(most <= 5 for most, _ in splits), splits
    assert sum(split == [4, 4] for split in splits) >= 4, splits


def test_connections_handed_over_serve_calls(served: Served) -> None:
    wait_until_released(served)
    held = callers_answered(served)
    assert sum(held) == CALLERS, held
    assert held[0] <= 5, held


def test_a_killed_worker_loses_no_new_connection_and_its_replacement_takes_its_share(
    served: Served,
) -> None:
    """A worker killed outright (its row still names it, its mailbox still on disk): new
    connections the other accepts are all served there (a send to the dead one fails and the
    connection is kept); the worker uvicorn starts in its place takes the dead one's row, and
    connections are split over both again."""
    wait_until_released(served)
    before = served.workers()
    assert len(before) == 2, before
    victim = max(before)
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)
    held_after_kill = callers_answered(served)
    assert held_after_kill == [CALLERS], held_after_kill  # all answered, all by the survivor
    # uvicorn replaces the dead worker; once it serves, connections are split again.
    deadline = time.monotonic() + 60
    while len(served.workers()) < len(before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert victim not in served.workers()
    assert len(served.workers()) == 2
    wait_until_released(served)
    splits = [
        sorted(burst_split(served.grpc_port, served.workers(), CALLERS).values(), reverse=True)
        for _ in range(3)
    ]
    assert all(split[0] <= 5 and split[1] >= 3 for split in splits), splits
