"""scripts/smoke_hygiene.py: the container smokes never publish on a taken port, and clear only
their own old leftovers (a killed CI run's replicas once held 18082 and failed the next CI)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "smoke_hygiene.py"


hygiene = load_script("smoke_hygiene")


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_free_default_port_is_kept() -> None:
    port = free_port()
    done = script("port", "--default", str(port))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(port)
    assert done.stderr == ""


def test_a_taken_default_port_moves_to_a_free_one_and_says_so(taken_port: int) -> None:
    done = script("port", "--default", str(taken_port))
    assert done.returncode == 0, done.stderr
    chosen = int(done.stdout)
    assert chosen != taken_port
    assert hygiene.port_is_free(chosen)
    assert f"port {taken_port} is in use" in done.stderr
    assert f"publishing on {chosen}" in done.stderr


def test_a_taken_port_that_was_asked_for_is_an_error(taken_port: int) -> None:
    done = script("port", "--default", "18080", "--wanted", str(taken_port))
    assert done.returncode != 0
    assert done.stdout == ""
    assert f"port {taken_port} (asked for) is in use" in done.stderr


def test_a_free_port_that_was_asked_for_is_used() -> None:
    port = free_port()
    done = script("port", "--default", "18080", "--wanted", str(port))
    assert done.stdout.strip() == str(port)


def test_a_wanted_port_must_be_a_number() -> None:
    done = script("port", "--default", "18080", "--wanted", "eighty")
    assert done.returncode == 2
    assert "must be a port number" in done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T13:42:01.769433988Z", datetime(2026, 11, 24, 13, 42, 1, 769433, UTC)),
        ("2026-11-24T13:42:01.7694339+00:00", datetime(2026, 11, 24, 13, 42, 1, 769433, UTC)),
        ("2026-11-24T13:42:01Z", datetime(2026, 11, 24, 13, 42, 1, tzinfo=UTC)),
        (
            "2026-11-24T14:42:01.5+01:00",
            datetime(2026, 11, 24, 13, 42, 1, 500000, UTC),
        ),
    ],
)
def test_engine_timestamps_parse(text: str, expected: datetime) -> None:
    assert hygiene.parse_created(text) == expected


@pytest.mark.parametrize(
    ("name", "labels", "ours"),
    [
        ("vae-smoke-4242", None, True),
        ("x", {"com.docker.compose.project": "vaerepl7950"}, True),
        ("x", {"io.podman.compose.project": "vaesmoke7178"}, True),
        ("vae-smoke-", None, False),
        ("vae-smoke-12-extra", None, False),
        ("vae-service", {"com.docker.compose.project": "vaerepl"}, False),
        ("x", {"com.docker.compose.project": "vaereplica1"}, False),
        ("x", {"com.docker.compose.project": "myapp"}, False),
        ("x", {}, False),
    ],
)
def test_only_the_smokes_own_names_count(
    name: str, labels: dict[str, str] | None, ours: bool
) -> None:
    assert hygiene.is_smoke_container(name, labels) is ours


def test_only_old_leftovers_are_stale() -> None:
    now = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    young = hygiene.Leftover("container", "vae-smoke-1", now - timedelta(minutes=5))
    old = hygiene.Leftover("network", "vaerepl2_default", now - timedelta(hours=2))
    assert hygiene.stale([young, old], now, 30 * 60) == [old]
    assert hygiene.stale([young, old], now, 3 * 3600) == []


def engine_or_skip() -> str:
    """An engine that answers, as scripts/container-engine.sh picks one: a docker client whose
    daemon is not running (a machine with the CLI only) is no engine."""
    for engine in ("podman", "docker"):
        if (
            shutil.which(engine)
            and subprocess.run([engine, "info"], capture_output=True, check=False).returncode == 0
        ):
            return engine
    pytest.skip("no podman or docker engine answers here: the smokes skip too")


def names(engine: str, *listing: str) -> list[str]:
    """What `engine ps -a` or `engine network ls` lists, by name."""
    field = "{{.Names}}" if listing[0] == "ps" else "{{.Name}}"
    done = subprocess.run(
        [engine, *listing, "--format", field], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_a_real_leftover_network_is_found_dated_and_removed() -> None:
    """Against the real engine, touching only a network this test makes: one named like a
    replicas smoke's, with a PID no process can have (Linux PIDs stop at 4194304)."""
    engine = engine_or_skip()
    name = f"vaerepl{9_000_000_000 + uuid.uuid4().int % 999_999_999}_default"
    subprocess.run([engine, "network", "create", name], capture_output=True, check=True)
    try:
        found = [item for item in hygiene.smoke_leftovers(engine) if item.name == name]
        assert len(found) == 1
        assert found[0].kind == "network"
        age = datetime.now(UTC) - found[0].created
        assert timedelta(seconds=-5) < age < timedelta(minutes=5)
        # too young for the smokes' own reaping: a run may still be using it
        assert hygiene.stale(found, datetime.now(UTC), hygiene.DEFAULT_OLDER_THAN_S) == []
        assert hygiene.remove(engine, found) == [(found[0], None)]
        assert name not in names(engine, "network", "ls")
    finally:
        subprocess.run([engine, "network", "rm", name], capture_output=True, check=False)


def test_reaping_never_fails_a_smoke(tmp_path: Path) -> None:
    done = script("reap", str(tmp_path / "no-such-engine"))
    assert done.returncode == 0
    assert "could not look for earlier runs' leftovers" in done.stderr


def test_real_leftover_containers_are_found_by_name_or_compose_project() -> None:
    """Containers created (never started) from an image already here: one named like the
    container smoke's, one labelled like a compose smoke's, one that is somebody else's."""
    engine = engine_or_skip()
    image = "python:3.11-slim"  # the base image scripts/container-engine.sh provides
    if subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode:
        pytest.skip(f"{image} is not here yet (the container smokes fetch or build it)")
    tag = 9_000_000_000 + uuid.uuid4().int % 999_999_999
    named, labelled, foreign = f"vae-smoke-{tag}", f"test-{tag}", f"vae-smoke-{tag}-not"
    create = [engine, "create", "--name"]
    subprocess.run([*create, named, image, "true"], capture_output=True, check=True)
    subprocess.run(
        [*create, labelled, "--label", f"com.docker.compose.project=vaerepl{tag}", image, "true"],
        capture_output=True,
        check=True,
    )
    subprocess.run([*create, foreign, image, "true"], capture_output=True, check=True)
    try:
        found = {item.name: item for item in hygiene.smoke_leftovers(engine)}
        assert named in found
        assert labelled in found
        assert foreign not in found
        outcome = hygiene.remove(engine, [found[named], found[labelled]])
        assert [error for _, error in outcome] == [None, None]
        hygiene.remove(engine, [found[named]])  # gone already: at most said, never raised
        left = names(engine, "ps", "-a")
        assert named not in left
        assert labelled not in left
        assert foreign in left
    finally:
        # one by one: podman 4.3's `rm -f gone kept` exits 0 and leaves `kept` in place
        for name in (named, labelled, foreign):
            subprocess.run([engine, "rm", "-f", name], capture_output=True)
