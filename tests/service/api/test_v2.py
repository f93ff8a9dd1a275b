"""The Open Inference Protocol (KServe v2) routes: JSON and binary tensors, same numbers as the
service's own routes, and a 400/404 (never a 500) for every malformed request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from fastapi.testclient import TestClient

RNG = np.random.default_rng(0)
DIGITS = (RNG.random((3, 64)) * 16).astype(np.float32)
LATENTS = RNG.standard_normal((2, 8)).astype(np.float32)
HEADER = "Inference-Header-Content-Length"


class Response(Protocol):
    """What these tests read of a test-client response (whichever httpx build Starlette uses)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def content(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self) -> Any: ...


def _tensor(name: str, array: npt.NDArray[Any], datatype: str = "FP32") -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.ravel().tolist(),
    }


def _infer(client: TestClient, model: str, body: dict[str, Any], version: str = "") -> Response:
    prefix = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    response = client.post(f"{prefix}/infer", json=body)
    assert response.status_code != 500
    return response


def _outputs(response: Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return {output["name"]: output for output in response.json()["outputs"]}


def _post(client: TestClient, model: str, route: str, payload: dict[str, Any]) -> Any:
    response = client.post(f"/models/{model}/{route}", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def _binary_post(
    client: TestClient, model: str, header: dict[str, Any], tail: bytes
) -> tuple[dict[str, Any], bytes, Response]:
    head = orjson.dumps(header)
    response = client.post(
        f"/v2/models/{model}/infer",
        content=head + tail,
        headers={HEADER: str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER])
    return orjson.loads(response.content[:length]), response.content[length:], response


def _error(response: Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    message: str = body["error"]
    return message


# --------------------------------------------------------------------------- server, health


def test_server_metadata(client: TestClient) -> None:
    body = client.get("/v2").json()
    assert body["name"] == "vae-service"
    assert isinstance(body["version"], str)
    assert body["version"]
    assert body["extensions"] == ["binary_tensor_data"]


def test_health(client: TestClient) -> None:
    live = client.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_not_ready_is_503(client: TestClient) -> None:
    # the request observer, then the fast path, which holds the service's state
    state = client.app.app.state  # type: ignore[attr-defined]
    state.ready = False
    try:
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/ready").json() == {"ready": False}
        _error(client.get("/v2/models/digits-vae"), 503)
        body = {"inputs": [_tensor("x", DIGITS)]}
        _error(client.post("/v2/models/digits-vae/infer", json=body), 503)
    finally:
        state.ready = True


# --------------------------------------------------------------------------- model metadata


def test_model_metadata(client: TestClient) -> None:
    body = client.get("/v2/models/digits-vae").json()
    assert body == {
        "name": "digits-vae",
        "versions": ["1"],
        "platform": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "reconstruction", "datatype": "FP32", "shape": [-1, 64]},
            {"name": "anomaly_score", "datatype": "FP64", "shape": [-1]},
        ],
    }
    encoder = client.get("/v2/models/digits-vae-encoder").json()
    assert [o["name"] for o in encoder["outputs"]] == ["mu", "logvar"]
    assert encoder["outputs"][0]["shape"] == [-1, 8]
    decoder = client.get("/v2/models/digits-vae-decoder").json()
    assert decoder["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 8]}]
    assert decoder["outputs"] == [{"name": "x_hat", "datatype": "FP32", "shape": [-1, 64]}]
    ae = client.get("/v2/models/tiny-ae-encoder").json()
    assert [o["name"] for o in ae["outputs"]] == ["z"]
    cancer = client.get("/v2/models/cancer-vae").json()
    assert cancer["inputs"][0]["shape"] == [-1, 30]


def test_versioned_metadata_and_ready(client: TestClient) -> None:
    body = client.get("/v2/models/tiny-vae/versions/1").json()
    assert body["name"] == "tiny-vae"
    assert body["versions"] == ["1", "2"]
    ready = client.get("/v2/models/tiny-vae-decoder/versions/2/ready")
    assert ready.json() == {"name": "tiny-vae-decoder", "ready": True}
    assert client.get("/v2/models/digits-vae/ready").json() == {
        "name": "digits-vae",
        "ready": True,
    }
    _error(client.get("/v2/models/tiny-vae/versions/9"), 404)
    _error(client.get("/v2/models/tiny-vae/versions/9/ready"), 404)
    _error(client.get("/v2/models/nope"), 404)
    _error(client.get("/v2/models/nope-encoder/ready"), 404)


def test_openapi_lists_v2_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "open inference protocol" in paths["/v2/models/{name}/infer"]["post"]["tags"]


# --------------------------------------------------------------------------- JSON infer


def test_full_model_matches_reconstruct_and_score(client: TestClient) -> None:
    body = {"id": "req-1", "inputs": [_tensor("x", DIGITS)]}
    response = _infer(client, "digits-vae", body)
    assert response.json()["model_name"] == "digits-vae"
    assert response.json()["model_version"] == "1"
    assert response.json()["id"] == "req-1"
    outputs = _outputs(response)
    assert list(outputs) == ["reconstruction", "anomaly_score"]
    recon = outputs["reconstruction"]
    assert (recon["datatype"], recon["shape"]) == ("FP32", [3, 64])
    expected = _post(client, "digits-vae", "reconstruct", {"inputs": DIGITS.tolist()})
    np.testing.assert_array_equal(
        np.array(recon["data"], np.float32), np.array(expected["outputs"], np.float32).ravel()
    )
    score = outputs["anomaly_score"]
    assert (score["datatype"], score["shape"]) == ("FP64", [3])
    scores = _post(client, "digits-vae", "anomaly-score", {"inputs": DIGITS.tolist()})
    np.testing.assert_allclose(score["data"], scores["scores"], rtol=1e-6)


def test_score_type_parameter(client: TestClient) -> None:
    body = {
        "parameters": {"score_type": "recon_mse"},
        "inputs": [_tensor("x", DIGITS)],
        "outputs": [{"name": "anomaly_score"}],
    }
    outputs = _outputs(_infer(client, "digits-vae", body))
    payload = {"inputs": DIGITS.tolist(), "score_type": "recon_mse"}
    expected = _post(client, "digits-vae", "anomaly-score", payload)
    np.testing.assert_allclose(outputs["anomaly_score"]["data"], expected["scores"], rtol=1e-6)
    body["parameters"] = {"score_type": "nonsense"}
    _error(_infer(client, "digits-vae", body), 400)


def test_encoder_matches_encode(client: TestClient) -> None:
    outputs = _outputs(_infer(client, "digits-vae-encoder", {"inputs": [_tensor("x", DIGITS)]}))
    assert list(outputs) == ["mu", "logvar"]
    expected = _post(client, "digits-vae", "encode", {"inputs": DIGITS.tolist()})
    for name in ("mu", "logvar"):
        assert outputs[name]["shape"] == [3, 8]
        np.testing.assert_array_equal(
            np.array(outputs[name]["data"], np.float32),
            np.array(expected[name], np.float32).ravel(),
        )


def test_plain_ae_encoder_outputs_only_z(client: TestClient) -> None:
    outputs = _outputs(_infer(client, "tiny-ae-encoder", {"inputs": [_tensor("x", DIGITS)]}))
    assert list(outputs) == ["z"]
    expected = _post(client, "tiny-ae", "encode", {"inputs": DIGITS.tolist()})
    np.testing.assert_array_equal(
        np.array(outputs["z"]["data"], np.float32), np.array(expected["mu"], np.float32).ravel()
    )


def test_decoder_matches_decode(client: TestClient) -> None:
    outputs = _outputs(_infer(client, "digits-vae-decoder", {"inputs": [_tensor("z", LATENTS)]}))
    assert outputs["x_hat"]["shape"] == [2, 64]
    expected = _post(client, "digits-vae", "decode", {"latents": LATENTS.tolist()})
    np.testing.assert_array_equal(
        np.array(outputs["x_hat"]["data"], np.float32),
        np.array(expected["outputs"], np.float32).ravel(),
    )


def test_versions_differ(client: TestClient) -> None:
    body = {"inputs": [_tensor("x", DIGITS)], "outputs": [{"name": "mu"}]}
    results = {}
    for version in ("1", "2"):
        response = _infer(client, "tiny-vae-encoder", body, version)
        assert response.json()["model_version"] == version
        results[version] = np.array(_outputs(response)["mu"]["data"])
        expected = _post(
            client, f"tiny-vae/versions/{version}", "encode", {"inputs": DIGITS.tolist()}
        )
        np.testing.assert_array_equal(
            results[version].astype(np.float32), np.array(expected["mu"], np.float32).ravel()
        )
    assert not np.array_equal(results["1"], results["2"])
    full = _infer(client, "tiny-vae", {"inputs": [_tensor("x", DIGITS)]}, "2")
    assert full.json()["model_version"] == "2"


def test_requested_outputs_order(client: TestClient) -> None:
    body = {
        "inputs": [_tensor("x", DIGITS)],
        "outputs": [{"name": "logvar"}, {"name": "mu"}],
    }
    response = _infer(client, "digits-vae-encoder", body)
    assert [o["name"] for o in response.json()["outputs"]] == ["logvar", "mu"]
    only = {"inputs": [_tensor("x", DIGITS)], "outputs": [{"name": "anomaly_score"}]}
    assert list(_outputs(_infer(client, "digits-vae", only))) == ["anomaly_score"]
    assert "id" not in _infer(client, "digits-vae", only).json()


@pytest.mark.parametrize("datatype", ["FP64", "INT32", "FP16", "UINT8", "INT64"])
def test_other_datatypes_convert(client: TestClient, datatype: str) -> None:
    integers = np.round(DIGITS).astype(np.float32)
    reference = _outputs(_infer(client, "digits-vae-encoder", {"inputs": [_tensor("x", integers)]}))
    data = integers.astype(np.int64) if datatype.startswith(("INT", "UINT")) else integers
    body = {"inputs": [_tensor("x", data, datatype)]}
    converted = _outputs(_infer(client, "digits-vae-encoder", body))
    assert converted["mu"]["data"] == reference["mu"]["data"]


def test_nested_and_flat_data(client: TestClient) -> None:
    flat = {"inputs": [_tensor("x", DIGITS)]}
    nested = {
        "inputs": [{"name": "x", "shape": [3, 64], "datatype": "FP32", "data": DIGITS.tolist()}]
    }
    a = _outputs(_infer(client, "digits-vae-encoder", flat))
    b = _outputs(_infer(client, "digits-vae-encoder", nested))
    assert a == b
    image = {"inputs": [_tensor("x", DIGITS.reshape(3, 8, 8))]}
    assert _outputs(_infer(client, "digits-vae-encoder", image))["mu"] == a["mu"]


# --------------------------------------------------------------------------- binary data


def test_binary_input_and_outputs(client: TestClient) -> None:
    raw = DIGITS.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [3, 64],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "anomaly_score", "parameters": {"binary_data": True}},
            {"name": "reconstruction", "parameters": {"binary_data": False}},
        ],
    }
    body, tail, response = _binary_post(client, "digits-vae", header, raw)
    assert response.headers["content-type"] == "application/octet-stream"
    score, recon = body["outputs"]
    assert score["name"] == "anomaly_score"
    assert "data" not in score
    assert score["parameters"] == {"binary_data_size": 3 * 8}
    assert len(tail) == 24
    json_outputs = _outputs(_infer(client, "digits-vae", {"inputs": [_tensor("x", DIGITS)]}))
    assert tail == np.array(json_outputs["anomaly_score"]["data"], "<f8").tobytes()
    assert recon["data"] == json_outputs["reconstruction"]["data"]


def test_binary_outputs_byte_exact(client: TestClient) -> None:
    raw = LATENTS.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "z",
                "shape": [2, 8],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    body, tail, _ = _binary_post(client, "digits-vae-decoder", header, raw)
    (x_hat,) = body["outputs"]
    assert x_hat["parameters"] == {"binary_data_size": 2 * 64 * 4}
    expected = _post(client, "digits-vae", "decode", {"latents": LATENTS.tolist()})
    assert tail == np.array(expected["outputs"], "<f4").tobytes()


def test_binary_encoder_outputs_split(client: TestClient) -> None:
    raw = DIGITS.astype("<f8").tobytes()
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [3, 64],
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "mu", "parameters": {"binary_data": True}},
            {"name": "logvar", "parameters": {"binary_data": True}},
        ],
    }
    body, tail, _ = _binary_post(client, "digits-vae-encoder", header, raw)
    sizes = [o["parameters"]["binary_data_size"] for o in body["outputs"]]
    assert sizes == [96, 96]
    assert len(tail) == 192
    expected = _post(client, "digits-vae", "encode", {"inputs": DIGITS.tolist()})
    assert tail[:96] == np.array(expected["mu"], "<f4").tobytes()
    assert tail[96:] == np.array(expected["logvar"], "<f4").tobytes()


# --------------------------------------------------------------------------- errors


def _raw(client: TestClient, model: str, content: bytes, header_length: str | None) -> Response:
    headers = {} if header_length is None else {HEADER: header_length}
    response = client.post(f"/v2/models/{model}/infer", content=content, headers=headers)
    assert response.status_code != 500
    return response


def _binary_header(size: int) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "z",
                    "shape": [2, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )


def test_binary_sizes_must_add_up(client: TestClient) -> None:
    raw = LATENTS.tobytes()
    head = _binary_header(len(raw))
    assert "add up" in _error(
        _raw(client, "digits-vae-decoder", head + raw + b"\0", str(len(head))), 400
    )
    assert "ends after" in _error(
        _raw(client, "digits-vae-decoder", head + raw[:-4], str(len(head))), 400
    )
    # binary data without the header length: the body is not JSON
    _error(_raw(client, "digits-vae-decoder", head + raw, None), 400)


def test_binary_size_must_match_shape(client: TestClient) -> None:
    raw = LATENTS.tobytes() + b"\0" * 4
    head = _binary_header(len(raw))
    assert "needs 64" in _error(_raw(client, "digits-vae-decoder", head + raw, str(len(head))), 400)


@pytest.mark.parametrize("value", ["1000000", "-1", "abc", "1.5", ""])
def test_bad_header_length(client: TestClient, value: str) -> None:
    head = _binary_header(64)
    _error(_raw(client, "digits-vae-decoder", head + LATENTS.tobytes(), value), 400)


def test_malformed_json(client: TestClient) -> None:
    _error(_raw(client, "digits-vae", b'{"inputs": [', None), 400)
    _error(_raw(client, "digits-vae", b"[1, 2]", None), 400)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [0.0] * 64}, "needs 128"),
        ({"name": "x", "shape": [1, 64], "datatype": "BOOL", "data": [True] * 64}, "BOOL"),
        ({"name": "x", "shape": [1, 64], "datatype": "BYTES", "data": ["a"] * 64}, "BYTES"),
        ({"name": "x", "shape": [1, 64], "datatype": "FP8", "data": [0.0] * 64}, "unknown"),
        ({"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [True] * 64}, "x"),
        ({"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [1e300] * 64}, "float32"),
        ({"name": "x", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}, "shape"),
        ({"name": "x", "shape": [64], "datatype": "FP32", "data": [0.0] * 64}, "batch"),
        ({"name": "x", "shape": "64", "datatype": "FP32", "data": [0.0] * 64}, "shape"),
        ({"name": "x", "shape": [1, 64], "datatype": "FP32", "data": "zeros"}, "data"),
        ({"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}, "'x'"),
    ],
)
def test_bad_tensor(client: TestClient, tensor: dict[str, Any], fragment: str) -> None:
    message = _error(_infer(client, "digits-vae", {"inputs": [tensor]}), 400)
    assert fragment in message


def test_missing_inputs(client: TestClient) -> None:
    _error(_infer(client, "digits-vae", {}), 400)
    _error(_infer(client, "digits-vae", {"inputs": []}), 400)
    two = {"inputs": [_tensor("x", DIGITS), _tensor("y", DIGITS)]}
    _error(_infer(client, "digits-vae", two), 400)


def test_unknown_output(client: TestClient) -> None:
    body = {"inputs": [_tensor("x", DIGITS)], "outputs": [{"name": "mu"}]}
    assert "'mu'" in _error(_infer(client, "digits-vae", body), 400)


def test_unknown_model_and_version(client: TestClient) -> None:
    body = {"inputs": [_tensor("x", DIGITS)]}
    _error(_infer(client, "nope", body), 404)
    _error(_infer(client, "nope-decoder", body), 404)
    _error(_infer(client, "tiny-vae", body, "7"), 404)


def test_body_too_large(client: TestClient, settings: Any) -> None:
    content = b" " * (settings.max_body_bytes + 1)
    _error(_raw(client, "digits-vae", content, None), 413)
