"""The replicas compose file (deploy/compose) keeps the properties scripts/replicas-smoke.sh
proves at run time, so a slip shows in the test suite too, where no container engine runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.replicas.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def test_only_the_balancer_is_published_and_only_on_loopback(services: dict[str, Any]) -> None:
    assert "ports" not in services["vae-service"]
    ports = services["lb"]["ports"]
    assert ports
    assert all(str(p).startswith("127.0.0.1:") for p in ports)


def test_replicas_are_many_and_read_only(services: dict[str, Any]) -> None:
    replica = services["vae-service"]
    assert replica["deploy"]["replicas"] == "${VAE_REPLICAS:-3}"
    assert any(str(v).endswith(":/models:ro") for v in replica["volumes"])
    for name in ("vae-service", "lb"):
        assert services[name]["read_only"] is True
        assert services[name]["tmpfs"] == ["/tmp"]


def test_the_balancer_is_built_here_not_pulled(services: dict[str, Any]) -> None:
    lb = services["lb"]
    assert lb["build"]["context"] == "./lb"
    dockerfile = (COMPOSE.parent / "lb" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile  # the serving image's base, no new pull
    assert "USER lb" in dockerfile


def test_healthchecks_are_strings(services: dict[str, Any]) -> None:
    # podman-compose 1.0.3 consumes a list-form test while creating the first replica and
    # then refuses the second; the string form works with it and with docker compose.
    for name in ("vae-service", "lb"):
        assert isinstance(services[name]["healthcheck"]["test"], str)
