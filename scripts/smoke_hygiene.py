"""Keep the container smokes (scripts/*-smoke.sh) from tripping over each other or over the
remains of a run that was killed before its EXIT trap ran.

    python3 scripts/smoke_hygiene.py port --default 18082 [--wanted PORT]
        prints the loopback port to publish on: --wanted if given (an error if taken), else
        --default if free, else one the kernel hands out. A taken port is the dangerous case,
        not a nuisance: the smoke would wait on, or even test, somebody else's server.
    python3 scripts/smoke_hygiene.py reap ENGINE [--older-than SECONDS]
        removes the containers and networks of smoke runs that started more than SECONDS ago
        (default 30 min; a smoke's containers live about a minute) and that a crash or a killed
        shell left behind. Only the smokes' own names are touched (vae-smoke-PID,
        vaesmokePID_*, vaereplPID_*), so nothing else on the machine is at risk.

Standard library only: the smoke scripts run it with the system python3, before any venv.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# The names the smoke scripts give what they start; $$ (the script's PID) keeps runs apart.
SMOKE_CONTAINER = re.compile(r"^vae-smoke-\d+$")
SMOKE_PROJECT = re.compile(r"^(vaesmoke|vaerepl)\d+$")
SMOKE_NETWORK = re.compile(r"^(vaesmoke|vaerepl)\d+_default$")
COMPOSE_PROJECT_LABELS = ("com.docker.compose.project", "io.podman.compose.project")
DEFAULT_OLDER_THAN_S = 30 * 60


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound now (a listener on 0.0.0.0 makes it taken too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def choose_port(default: int, wanted: int | None) -> tuple[int, str | None]:
    """The port to publish on and, where it is not the default, why (for stderr)."""
    if wanted is not None:
        if not port_is_free(wanted):
            raise SystemExit(f"smoke: port {wanted} (asked for) is in use on 127.0.0.1")
        return wanted, None
    if port_is_free(default):
        return default, None
    chosen = any_free_port()
    return chosen, f"smoke: port {default} is in use on 127.0.0.1; publishing on {chosen}"


@dataclass(frozen=True)
class Leftover:
    kind: str  # "container" or "network"
    name: str
    created: datetime


def parse_created(text: str) -> datetime:
    """Docker and podman write RFC 3339 with nanoseconds ("...T13:42:01.769433988Z");
    datetime takes at most microseconds."""
    text = text.strip().replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    created = datetime.fromisoformat(text)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def is_smoke_container(name: str, labels: Mapping[str, str] | None) -> bool:
    if SMOKE_CONTAINER.match(name):
        return True
    labels = labels or {}
    return any(SMOKE_PROJECT.match(labels.get(key, "")) for key in COMPOSE_PROJECT_LABELS)


def stale(leftovers: Iterable[Leftover], now: datetime, older_than_s: float) -> list[Leftover]:
    return [item for item in leftovers if (now - item.created).total_seconds() > older_than_s]


def run(engine: str, *args: str) -> str:
    done = subprocess.run([engine, *args], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def inspect(engine: str, what: list[str], names: list[str]) -> list[dict[str, object]]:
    if not names:
        return []
    records: list[dict[str, object]] = json.loads(run(engine, *what, "inspect", *names))
    return records


def smoke_leftovers(engine: str) -> list[Leftover]:
    found: list[Leftover] = []
    # Only candidates are inspected (the patterns below decide): containers whose name holds
    # the container smoke's prefix, and compose containers.
    filters = ["name=vae-smoke-", *(f"label={key}" for key in COMPOSE_PROJECT_LABELS)]
    containers = sorted(
        {
            name
            for where in filters
            for name in run(engine, "ps", "-a", "--filter", where, "--format", "{{.Names}}").split()
        }
    )
    for record in inspect(engine, [], containers):
        name = str(record.get("Name", "")).lstrip("/")
        config = record.get("Config")
        labels = config.get("Labels") if isinstance(config, dict) else None
        if is_smoke_container(name, labels):
            found.append(Leftover("container", name, parse_created(str(record["Created"]))))
    networks = [
        n
        for n in run(engine, "network", "ls", "--format", "{{.Name}}").split()
        if SMOKE_NETWORK.match(n)
    ]
    for record in inspect(engine, ["network"], networks):
        # podman writes "created", docker "Created"
        created = record.get("created", record.get("Created"))
        found.append(
            Leftover(
                "network", str(record.get("name", record.get("Name"))), parse_created(str(created))
            )
        )
    return found


def remove(engine: str, doomed: list[Leftover]) -> list[tuple[Leftover, str | None]]:
    """Removes each leftover on its own, containers first (a network in use cannot be removed).
    One at a time because podman 4.3's `rm -f gone kept` exits 0 and leaves `kept` in place when
    `gone` vanished meanwhile. Returns each with its error, if any."""
    outcome: list[tuple[Leftover, str | None]] = []
    for item in sorted(doomed, key=lambda leftover: leftover.kind != "container"):
        command = ["rm", "-f"] if item.kind == "container" else ["network", "rm"]
        try:
            run(engine, *command, item.name)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as failure:
            outcome.append((item, str(failure)))
        else:
            outcome.append((item, None))
    return outcome


def reap(engine: str, older_than_s: float) -> int:
    try:
        doomed = stale(smoke_leftovers(engine), datetime.now(UTC), older_than_s)
    except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as failure:
        # Tidying is a courtesy: a smoke must not fail because of it; the port check guards it.
        print(f"smoke: could not look for earlier runs' leftovers: {failure}", file=sys.stderr)
        return 0
    for item, error in remove(engine, doomed):
        what = f"a leftover {item.kind} of an earlier run: {item.name}"
        if error:
            print(f"smoke: could not remove {what}: {error}", file=sys.stderr)
        else:
            print(
                f"smoke: removed {what} (created {item.created:%Y-%m-%d %H:%M:%S} UTC)",
                file=sys.stderr,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    port = commands.add_parser("port", help="print the loopback port to publish on")
    port.add_argument("--default", type=int, required=True)
    port.add_argument("--wanted", default="", help="a port the user asked for (empty: none)")
    tidy = commands.add_parser("reap", help="remove earlier smoke runs' leftovers")
    tidy.add_argument("engine", help="docker or podman")
    tidy.add_argument(
        "--older-than",
        type=float,
        default=DEFAULT_OLDER_THAN_S,
        help="seconds; younger leftovers may be a run still going",
    )
    args = parser.parse_args(argv)
    if args.command == "port":
        if args.wanted and not args.wanted.isdigit():
            parser.error(f"--wanted must be a port number, not {args.wanted!r}")
        chosen, note = choose_port(args.default, int(args.wanted) if args.wanted else None)
        if note:
            print(note, file=sys.stderr)
        print(chosen)
        return 0
    return reap(args.engine, args.older_than)


if __name__ == "__main__":
    sys.exit(main())
