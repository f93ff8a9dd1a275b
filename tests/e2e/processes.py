"""Start real `vae-serve` processes on 127.0.0.1 for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.bundles import committed_repository

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.server.cli", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Each server's gRPC port its own (the default 8001 is shared through SO_REUSEPORT:
        # two test servers on it would answer each other's calls).
        env={**os.environ, "VAE_GRPC_PORT": str(free_port()), **(env or {})},
    )


def wait_ready(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"vae-serve exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("vae-serve did not become ready in time")


@contextmanager
def running_server(
    env: dict[str, str], repository: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A ready server (base URL, process) on a free port; SIGTERM and reaped afterwards."""
    port = free_port()
    repository = committed_repository() if repository is None else repository
    process = serve("--model-repository", str(repository), "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield base, process
    finally:
        terminate(process)


def terminate(process: subprocess.Popen[str], wait_s: float = 40) -> None:
    """SIGTERM, as a supervisor stops a server: uvicorn stops its workers and the server
    drains (SIGKILL would leave the workers running, orphaned, still serving their ports);
    killed only if it is still there after `wait_s`. Its output pipe is closed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    close_output(process)


def close_output(process: subprocess.Popen[str]) -> None:
    """Close the pipe of a finished server: left to the garbage collector, it is an unclosed
    file warning in whichever later test happens to collect it."""
    if process.stdout is not None and not process.stdout.closed:
        process.stdout.close()
