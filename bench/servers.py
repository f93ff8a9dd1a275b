"""Start a server as a subprocess on 127.0.0.1, wait until it answers, stop it with SIGTERM.

Each server gets its own session (process group) so a server that ignores SIGTERM can still be
killed with its workers; its stdout and stderr go to a log file under bench/out/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message carries the end of its log."""


@dataclass(frozen=True)
class ServerSpec:
    label: str  # "ours", "ours-batching", "baseline", "noop"
    command: list[str]
    env: dict[str, str]  # added to the harness's environment
    ready_method: str  # how to probe readiness
    ready_path: str
    ready_body: bytes | None = None
    ready_headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # shown in RESULTS.md


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started_s: float  # seconds from spawn to ready

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)  # idle + iowait


def wait_for_quiet(idle_share: float = 0.9, max_wait_s: float = 60.0) -> float:
    """Wait until the cores are at least `idle_share` idle over one second, so a server is not
    measured while the last one's processes still wind down (Ray's daemons outlive its
    driver for seconds: a run measured 784-S1 at 3,593 req/s, 6,161 on a quiet machine).
    Returns the seconds waited."""
    began = time.perf_counter()
    while True:
        idle0, total0 = _cpu_times()
        time.sleep(1.0)
        idle1, total1 = _cpu_times()
        if total1 == total0 or (idle1 - idle0) / (total1 - total0) >= idle_share:
            return time.perf_counter() - began
        if time.perf_counter() - began > max_wait_s:
            print(f"    the machine is still busy after {max_wait_s:.0f} s; measuring anyway")
            return time.perf_counter() - began


def start(
    spec: ServerSpec, port: int, log_dir: Path, cwd: Path, timeout_s: float = 90.0
) -> RunningServer:
    waited = wait_for_quiet()
    if waited > 2.0:
        print(f"    waited {waited:.0f} s for the machine to be quiet", flush=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{spec.label}-{port}.log"
    command = [part.replace("{port}", str(port)) for part in spec.command]
    # Only the spec's settings reach the server: inherited VAE_* / BASELINE_* variables would
    # change what is measured without showing in the report.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("VAE_", "BASELINE_"))}
    env = {**inherited, **{k: v.replace("{port}", str(port)) for k, v in spec.env.items()}}
    began = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = RunningServer(spec, process, port, log_path, 0.0)
    try:
        wait_ready(server, timeout_s)
    except BaseException:
        stop(server)
        raise
    server.started_s = time.perf_counter() - began
    return server


def wait_ready(server: RunningServer, timeout_s: float) -> None:
    spec = server.spec
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            code = server.process.poll()
            if code is not None:
                raise ServerFailed(
                    f"{spec.label} exited with code {code} before it was ready; log "
                    f"{server.log_path}:\n{log_tail(server.log_path)}"
                )
            try:
                response = client.request(
                    spec.ready_method,
                    spec.ready_path,
                    content=spec.ready_body,
                    headers=spec.ready_headers,
                )
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}"
            time.sleep(0.2)
    raise ServerFailed(
        f"{spec.label} not ready after {timeout_s:.0f} s (last probe: {last}); log "
        f"{server.log_path}:\n{log_tail(server.log_path)}"
    )


def stop(server: RunningServer, timeout_s: float = 20.0) -> int | None:
    """SIGTERM, wait; SIGKILL the process group if it does not go. Returns the exit code."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # Workers of a multi-process server share its group; none may outlive it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, 0)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


@contextlib.contextmanager
def running(
    spec: ServerSpec, log_dir: Path, cwd: Path, timeout_s: float = 90.0
) -> Iterator[RunningServer]:
    server = start(spec, free_port(), log_dir, cwd, timeout_s)
    try:
        yield server
    finally:
        stop(server)
