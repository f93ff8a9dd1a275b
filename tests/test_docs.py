"""The documentation and container files name every setting the service reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
VARIABLES = [f"VAE_{name.upper()}" for name in ServiceSettings.model_fields]


@pytest.mark.parametrize("variable", VARIABLES)
def test_the_configuration_page_lists_every_setting(variable: str) -> None:
    assert f"`{variable}`" in (ROOT / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("variable", VARIABLES)
def test_the_container_sets_every_setting(variable: str) -> None:
    # compose carries the settings as environment entries; the image itself fixes host/port
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "Dockerfile").read_text()
    assert f"{variable}" in text
