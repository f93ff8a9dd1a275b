"""docker-compose.yml works as docs/deployment.md writes it under Docker Compose v2 and
podman-compose 1.0.x (issue 19): `up` starts and builds the service alone, from the checkout;
training lives in its own file, whose paths lead back to this checkout. scripts/compose-smoke.sh
runs the serving file with a real engine; these hold the properties where none runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "docker-compose.yml"
TRAINING = ROOT / "deploy" / "compose" / "docker-compose.train.yml"


def _services(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())["services"]
    return loaded


def _mount(volume: str) -> tuple[str, Path]:
    """(container path, host path) of a `${VAR:-default}:/dest[:ro]` volume, with the
    default taken, relative to the training file's folder as compose resolves it."""
    volume = volume.removesuffix(":ro")
    host, destination = volume.rsplit(":", 1)
    host = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", host)
    return destination, (TRAINING.parent / host).resolve()


def test_the_serving_file_holds_the_service_alone() -> None:
    # podman-compose 1.0.x ignores `profiles:`: any second service would be built and started
    # by a plain `up`, a torch image and a trainer with it.
    services = _services(SERVING)
    assert list(services) == ["vae-service"]
    assert "profiles" not in services["vae-service"]


def test_up_builds_the_image_from_the_checkout() -> None:
    service = _services(SERVING)["vae-service"]
    assert service["build"] == {"context": ".", "target": "serve"}
    assert service["pull_policy"] == "build"  # Docker Compose v2: a build on every `up`
    readme = (ROOT / "docs" / "deployment.md").read_text()
    assert "docker compose up -d --build" in readme  # podman-compose 1.0.x: only with --build
    assert "podman-compose up -d --build" in readme


def test_the_serving_file_names_no_default_model() -> None:
    environment = _services(SERVING)["vae-service"]["environment"]
    assert environment["VAE_DEFAULT_MODEL"] == "${VAE_DEFAULT_MODEL:-none}"


def test_the_training_file_builds_and_mounts_this_checkout() -> None:
    trainer = _services(TRAINING)["vae-train"]
    context = (TRAINING.parent / trainer["build"]["context"]).resolve()
    assert context == ROOT
    assert trainer["build"]["target"] == "train"
    assert "AS train" in (context / "Dockerfile").read_text()
    hosts = dict(_mount(volume) for volume in trainer["volumes"])
    assert hosts == {"/data": ROOT / "data", "/models": ROOT / "models"}
    assert trainer["user"].startswith("${TRAIN_UID")  # bundles owned by the caller, not root
