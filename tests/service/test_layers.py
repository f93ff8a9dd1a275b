"""The service's packages are layers, and imports run one way: down (docs/architecture.md).

Read from the source with `ast`, so a module that imports upwards fails here, where a cycle
would otherwise show only as an import-order accident. The data plane, the models and the
codecs know nothing of the web framework, so a transport added beside `api/` reuses them whole.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

# Lowest first; a module may import its own layer and any layer below it.
LAYERS = (
    "base",
    "monitoring",
    "models",
    "observability",
    "codecs",
    "dataplane",
    "grpc",
    "api",
    "server",
)
BASE_MODULES = {"settings", "errors", "asgi", "processes"}
TRANSPORT_FREE = ("monitoring", "models", "codecs", "dataplane")
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")


def layer_of(module: str) -> str | None:
    """`service.api.app` -> "api"; `service.errors` -> "base"; anything else -> None."""
    parts = module.split(".")
    if parts[0] != "service" or len(parts) < 2:
        return None
    return "base" if parts[1] in BASE_MODULES else parts[1]


def imports_of(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from service.codecs import npy` imports service.codecs.npy
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


MODULES = sorted(p for p in SERVICE.rglob("*.py") if p.parent != SERVICE or p.stem in BASE_MODULES)


def test_every_module_sits_in_a_known_layer() -> None:
    loose = [p.name for p in SERVICE.glob("*.py") if p.stem not in BASE_MODULES | {"__init__"}]
    assert loose == [], "put these in a layer package (docs/architecture.md)"
    packages = {p.name for p in SERVICE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS) - {"base"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SERVICE)))
def test_imports_run_down_the_layers(path: Path) -> None:
    own = layer_of("service." + ".".join(path.relative_to(SERVICE).with_suffix("").parts))
    assert own is not None
    upward = [
        module
        for module in imports_of(path)
        if (layer := layer_of(module)) is not None and LAYERS.index(layer) > LAYERS.index(own)
    ]
    assert upward == [], f"{own} imports a layer above it"
    if own in TRANSPORT_FREE:
        web = [m for m in imports_of(path) if m.split(".")[0] in WEB_FRAMEWORKS]
        assert web == [], f"{own} must not know the web framework"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "upward.py"
    module.write_text("from service.api.app import create_app\nimport fastapi\n")
    assert imports_of(module) == ["service.api.app.create_app", "fastapi"]
    assert LAYERS.index(layer_of("service.api.app.create_app") or "") > LAYERS.index("models")
