"""API keys and CORS in front of the real app: who gets in, what they are told, what is open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.dataplane.api_keys import presented_key
from service.settings import ApiKeyError, ServiceSettings

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"
DIGIT = {"inputs": [[0.0] * 64]}


def _with(settings: ServiceSettings, **changes: object) -> ServiceSettings:
    """The fixture's settings with some changed, validated as the environment's would be."""
    return ServiceSettings(**{**settings.model_dump(), **changes})


@pytest.fixture(scope="module")
def guarded(settings: ServiceSettings) -> Iterator[TestClient]:
    keyed = _with(settings, api_keys=f"{KEY_A}, {KEY_B}", auth_open_paths="/healthz,/readyz,/docs*")
    with TestClient(create_app(keyed), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY_A}"},
        {"Authorization": f"bearer {KEY_B}"},  # the scheme is case-insensitive (RFC 7235)
        {"X-API-Key": KEY_A},
        {"X-API-Key": KEY_B},  # several keys: rotation
    ],
)
def test_a_valid_key_opens_every_kind_of_route(
    guarded: TestClient, headers: dict[str, str]
) -> None:
    assert guarded.post("/anomaly-score", json=DIGIT, headers=headers).status_code == 200
    assert guarded.get("/models", headers=headers).status_code == 200
    v2 = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    assert guarded.post("/v2/models/digits-vae/infer", json=v2, headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/anomaly-score", "/models/digits-vae/encode"])
def test_no_key_is_401_with_a_challenge(guarded: TestClient, path: str) -> None:
    response = guarded.post(path, json=DIGIT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "key-a-0123456789abcdeX"},
        {"Authorization": "Bearer " + KEY_A[:-1]},
        {"X-API-Key": KEY_A + KEY_B},
    ],
)
def test_a_wrong_key_is_403_and_never_echoed(guarded: TestClient, headers: dict[str, str]) -> None:
    response = guarded.post("/encode", json=DIGIT, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    sent = next(iter(headers.values())).removeprefix("Bearer ")
    assert sent not in response.text


def test_a_basic_auth_header_is_not_a_key(guarded: TestClient) -> None:
    response = guarded.get("/models", headers={"Authorization": f"Basic {KEY_A}"})
    assert response.status_code == 401


def test_get_routes_and_unknown_paths_need_a_key_too(guarded: TestClient) -> None:
    assert guarded.get("/models").status_code == 401
    assert guarded.get("/openapi.json").status_code == 401
    # 401 before 404: a stranger cannot map which routes exist
    assert guarded.get("/no-such-route").status_code == 401


def test_open_paths_need_no_key(guarded: TestClient) -> None:
    assert guarded.get("/healthz").status_code == 200
    assert guarded.get("/readyz").status_code == 200
    assert guarded.get("/docs").status_code == 200  # a prefix entry: /docs*


def test_the_schema_documents_the_keys(guarded: TestClient) -> None:
    schema = guarded.get("/openapi.json", headers={"X-API-Key": KEY_A}).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    encode = schema["paths"]["/encode"]["post"]
    assert encode["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"401", "403"} <= set(encode["responses"])
    assert "security" not in schema["paths"]["/healthz"]["get"]  # open path: no key asked


def test_v2_routes_refuse_with_the_protocols_error_body(guarded: TestClient) -> None:
    response = guarded.get("/v2/models/digits-vae")
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)
    # not in this app's open paths, so the v2 health routes need the key as well
    assert guarded.get("/v2/health/ready").status_code == 401


def test_no_keys_means_no_authentication(client: TestClient) -> None:
    assert client.post("/encode", json=DIGIT).status_code == 200
    assert client.post("/encode", json=DIGIT, headers={"X-API-Key": "anything"}).status_code == 200


def test_header_parsing() -> None:
    assert presented_key([(b"x-api-key", b" k1 ")]) == b"k1"
    assert presented_key([(b"authorization", b"Bearer   k2")]) == b"k2"
    assert presented_key([(b"authorization", b"Bearer ")]) is None
    assert presented_key([(b"authorization", b"Token k3")]) is None
    assert presented_key([]) is None


def test_keys_from_a_file_and_the_variable_add_up(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# rotated 2026-11\n{KEY_B}\n\n")
    settings = ServiceSettings(api_keys=KEY_A, api_keys_file=keys_file)
    assert settings.api_key_list() == [KEY_A, KEY_B]
    assert ServiceSettings(api_keys="none", api_keys_file="none").api_key_list() == []


@pytest.mark.parametrize("keys", ["short", f"{KEY_A},tiny", "has a space in it 0123456789"])
def test_weak_keys_are_refused_without_being_shown(keys: str) -> None:
    settings = ServiceSettings(api_keys=keys)
    with pytest.raises(ApiKeyError) as caught:
        settings.api_key_list()
    for key in keys.split(","):
        assert key not in str(caught.value)
    assert keys not in repr(settings)  # SecretStr: settings print without the keys


def test_an_unreadable_keys_file_stops_the_app(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="VAE_API_KEYS_FILE"):
        create_app(ServiceSettings(api_keys_file=tmp_path / "missing"))


# --- CORS ----------------------------------------------------------------------------------

ORIGIN = "https://dashboard.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-api-key",
}


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.post("/encode", json=DIGIT, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert client.options("/encode", headers=PREFLIGHT).status_code == 405


@pytest.fixture(scope="module")
def cors_client(settings: ServiceSettings) -> Iterator[TestClient]:
    configured = _with(
        settings, cors_allow_origins=f"{ORIGIN},https://other.example", api_keys=KEY_A
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        yield client


def test_cors_preflight_passes_without_a_key(cors_client: TestClient) -> None:
    response = cors_client.options("/encode", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()


def test_cors_headers_on_answers_from_the_fast_path(cors_client: TestClient) -> None:
    response = cors_client.post(
        "/anomaly-score", json=DIGIT, headers={"Origin": ORIGIN, "X-API-Key": KEY_A}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-expose-headers"] == "*"
    # refusals carry them too, so the browser can show the 401 instead of a CORS failure
    refused = cors_client.post("/encode", json=DIGIT, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_cors_ignores_other_origins(cors_client: TestClient) -> None:
    response = cors_client.post(
        "/encode", json=DIGIT, headers={"Origin": "https://evil.example", "X-API-Key": KEY_A}
    )
    assert "access-control-allow-origin" not in response.headers
    preflight = cors_client.options(
        "/encode", headers={**PREFLIGHT, "Origin": "https://evil.example"}
    )
    assert preflight.status_code == 400
