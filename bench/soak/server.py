"""vae-serve for the soak: its model repository and settings, its processes by role, and the
wait until every worker is up."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from bench import memory, servers
from bench.models import BenchModel
from bench.shared import BENCH, ROOT, VENV_BIN
from bench.soak.config import MAX_BODY_BYTES


def soak_repository(models: Sequence[BenchModel]) -> Path:
    """The measured models and nothing else; one model reuses the bench's own copy."""
    if len(models) == 1:
        return models[0].repository
    target = BENCH / "models" / "repo-soak"
    # Copied afresh each run (a few hundred kB): a stale bundle can never be what is served.
    if target.exists():
        shutil.rmtree(target)
    for model in models:
        destination = target / model.bundle.parent.name / model.bundle.name
        shutil.copytree(model.bundle, destination, ignore=shutil.ignore_patterns("report"))
    return target


def server_spec(repository: Path, default_model: str | None, log_level: str) -> servers.ServerSpec:
    env = {
        "VAE_MODEL_REPOSITORY": str(repository.relative_to(ROOT)),
        "VAE_HOST": "127.0.0.1",
        "VAE_PORT": "{port}",
        "VAE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "VAE_LOG_LEVEL": log_level,
    }
    if default_model is not None:  # several models: the top-level routes need a default
        env["VAE_DEFAULT_MODEL"] = default_model
    cores = os.cpu_count() or 1
    settings = {
        **{k: v for k, v in env.items() if k != "VAE_PORT"},
        "VAE_WORKERS": f"unset: one per core ({cores})",
        "every other VAE_* setting": "unset (the service's defaults)",
    }
    return servers.ServerSpec(
        "soak", [str(VENV_BIN / "vae-serve")], env, "GET", "/readyz", settings=settings
    )


def process_roles(root: int) -> dict[int, str]:
    """Each process of the server's tree by what it runs (uvicorn spawns its workers)."""
    roles: dict[int, str] = {}
    for pid in memory.process_tree(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            roles[pid] = "worker"
        elif b"resource_tracker" in command:
            roles[pid] = "resource tracker"
        else:
            roles[pid] = "supervisor" if pid == root else "other"
    if "worker" not in roles.values() and root in roles:
        roles[root] = "worker"  # one worker: uvicorn serves in the main process
    return roles


def startups(log_path: Path) -> int:
    try:
        return log_path.read_text(errors="replace").count("Application startup complete.")
    except OSError:
        return 0


def wait_for_workers(
    server: servers.RunningServer, expected: int, log_level: str, timeout_s: float = 60.0
) -> dict[int, str]:
    """/readyz answers as soon as one worker is up; the load must meet all of them ready."""
    deadline = time.monotonic() + timeout_s
    logs_startup = log_level in ("info", "debug")
    while time.monotonic() < deadline:
        roles = process_roles(server.pid)
        workers = sum(role == "worker" for role in roles.values())
        if workers >= expected and (not logs_startup or startups(server.log_path) >= expected):
            return roles
        time.sleep(0.2)
    raise servers.ServerFailed(
        f"{expected} worker(s) not started after {timeout_s:.0f} s; log {server.log_path}:\n"
        f"{servers.log_tail(server.log_path)}"
    )
