"""The web page's server side: `/`, its assets, the report routes, and what stays open with keys.

The page itself is driven in a browser by tests/e2e/test_web_page.py; these are the quick
in-process checks of the routes it relies on, path traversal included.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.pages import STATIC_DIR
from service.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"
REPORT = "/models/digits-vae/versions/1/report"
KEY = "pages-test-key-0123456789"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed bundle, its report/ seeded with files that must never be served."""
    root = tmp_path_factory.mktemp("pages-repository")
    bundle = root / "digits-vae" / "1"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    report = bundle / "report"
    (report / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (report / ".hidden.png").write_bytes(b"\x89PNG hidden")
    (report / "escape.png").symlink_to(bundle / "model.json")
    (report / "sub").mkdir()
    (report / "sub" / "inner.png").write_bytes(b"\x89PNG inner")
    return root


@pytest.fixture(scope="module")
def client(repository: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(model_repository=repository, intra_op_threads=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_page_and_every_asset_it_names_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assets = re.findall(r'(?:src|href)="(ui/[^"]+)"', page.text)
    assert {"ui/app.js", "ui/style.css"} <= set(assets)
    for asset in assets:
        assert client.get(f"/{asset}").status_code == 200, asset
    # Nothing from the internet: no absolute URLs in what the browser loads.
    for name in ("index.html", "ui/app.js", "ui/style.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text), name


def test_static_files_ship_in_the_package() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["service.api"]
    files = [
        p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()
    ]
    assert files
    missing = [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)]
    assert missing == [], "add these to [tool.setuptools.package-data] in pyproject.toml"


def test_metadata_gives_the_value_range(client: TestClient) -> None:
    metadata = client.get("/models/digits-vae").json()
    assert metadata["value_range"] == {"low": [0.0], "high": [16.0]}


def test_report_listing_names_only_servable_files(client: TestClient) -> None:
    answer = client.get(REPORT)
    assert answer.status_code == 200
    body = answer.json()
    names = [f["name"] for f in body["files"]]
    committed = sorted(
        p.name
        for p in (DEFAULT_BUNDLE / "report").iterdir()
        if p.suffix in (".png", ".json", ".jsonl")
    )
    assert names == committed
    plots = {f["name"]: f for f in body["files"]}
    assert plots["samples.png"]["description"] == "decoder means for z drawn from N(0, I)"
    assert plots["samples.png"]["media_type"] == "image/png"
    assert plots["samples.png"]["url"] == f"{REPORT}/samples.png"


def test_report_file_is_served_as_is(client: TestClient) -> None:
    answer = client.get(f"{REPORT}/samples.png")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.content == (DEFAULT_BUNDLE / "report" / "samples.png").read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "model.json",  # in the bundle, not in report/
        "drawing.svg",  # a type that could carry script
        ".hidden.png",
        "escape.png",  # a symbolic link
        "sub",
        "nothing.png",
        "%2e%2e",  # a literal ".." the client would resolve before sending
        "..%2Fmodel.json",
        "sub%2Finner.png",
        "%2e%2e%2fmodel.json",
    ],
)
def test_anything_else_is_404(client: TestClient, name: str) -> None:
    answer = client.get(f"{REPORT}/{name}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] in ("report_file_not_found", "not_found")


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    assert client.get("/models/nope/versions/1/report").status_code == 404
    assert client.get("/models/digits-vae/versions/9/report/samples.png").status_code == 404


def test_a_bundle_without_report_lists_nothing(tmp_path: Path) -> None:
    bundle = tmp_path / "digits-vae" / "1"
    shutil.copytree(DEFAULT_BUNDLE, bundle, ignore=shutil.ignore_patterns("report"))
    settings = ServiceSettings(model_repository=tmp_path, intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        assert client.get(REPORT).json()["files"] == []
        assert client.get(f"{REPORT}/samples.png").status_code == 404


def test_report_routes_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    listing = paths["/models/{name}/versions/{version}/report"]["get"]
    single = paths["/models/{name}/versions/{version}/report/{file}"]["get"]
    assert {"200", "404", "503"} <= set(listing["responses"])
    assert {"200", "404", "503"} <= set(single["responses"])
    assert "image/png" in single["responses"]["200"]["content"]
    assert "/" not in paths  # the page is not part of the API


def test_with_keys_the_page_is_open_and_the_data_is_not(repository: Path) -> None:
    settings = ServiceSettings(model_repository=repository, intra_op_threads=1, api_keys=KEY)
    with TestClient(create_app(settings)) as client:
        assert client.get("/").status_code == 200
        assert client.get("/ui/app.js").status_code == 200
        assert client.get("/models").status_code == 401
        assert client.get(f"{REPORT}/samples.png").status_code == 401
        authorised = {"Authorization": f"Bearer {KEY}"}
        assert client.get(f"{REPORT}/samples.png", headers=authorised).status_code == 200
