"""The one table of array routes (service.api.routes): the fast path matches paths with it, and
FastAPI, and so OpenAPI, registers exactly its routes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.routes import ARRAY_ROUTES, match
from service.models.requests import OPERATIONS
from service.settings import ServiceSettings
from tests.bundles import committed_repository


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/encode", ("/encode", None, None)),
        ("/anomaly-score", ("/anomaly-score", None, None)),
        ("/models/digits-vae/decode", ("/models/{name}/decode", "digits-vae", None)),
        ("/models/a/versions/7/sample", ("/models/{name}/versions/{version}/sample", "a", "7")),
        ("/v2/models/digits-vae/infer", ("/v2/models/{name}/infer", "digits-vae", None)),
        (
            "/v2/models/a-encoder/versions/2/infer",
            ("/v2/models/{name}/versions/{version}/infer", "a-encoder", "2"),
        ),
        ("/models//encode", None),
        ("/models/a/versions//encode", None),
        ("/v2/models//infer", None),
        ("/v2/models/a/versions//infer", None),
        ("/healthz", None),
        ("/models/a", None),
        ("/other/a/encode", None),
        ("/models/a/b/encode", None),
        ("/models/a/versions/7/unknown", None),
        ("/v2/models/a/ready", None),
        ("/v2/models/a/b/infer", None),
        ("/v2/other/a/infer", None),
        ("/v2/health/ready", None),
        ("encode", None),
        ("", None),
    ],
)
def test_paths_match_their_route(
    path: str, expected: tuple[str, str | None, str | None] | None
) -> None:
    found = match(path)
    assert (None if found is None else (found[0].template, found[1], found[2])) == expected


def test_every_operation_has_its_three_routes_and_v2_its_two() -> None:
    native = [route for route in ARRAY_ROUTES if route.protocol == "native"]
    assert len(native) == 3 * len(OPERATIONS)
    assert {route.operation for route in native} == set(OPERATIONS)
    assert [route.template for route in ARRAY_ROUTES if route.protocol == "v2"] == [
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ]


def test_fastapi_registers_exactly_the_table_s_post_routes() -> None:
    app = create_app(ServiceSettings(model_repository=committed_repository()))
    with TestClient(app) as client:
        paths = client.get("/openapi.json").json()["paths"]
    posted = {path for path, operations in paths.items() if "post" in operations}
    # The POST routes that take no arrays: the reload, and labels for earlier answers.
    other = {
        "/admin/reload",
        "/models/{name}/feedback",
        "/models/{name}/versions/{version}/feedback",
    }
    assert posted - other == {route.template for route in ARRAY_ROUTES}
