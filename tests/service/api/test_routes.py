"""Every route of the real app (real bundles, real onnxruntime), at every prefix.

Prefixes: "" serves the default model (digits-vae/1), "/models/tiny-vae" the newest version of
tiny-vae (2) and "/models/tiny-vae/versions/1" an exact version.
"""

from __future__ import annotations

import io
import json
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the client library of starlette's TestClient
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer, load_digits

from bundle.arrays import Float64Array
from service.settings import ServiceSettings

# prefix -> (model name, served version, latent_dim)
PREFIXES: dict[str, tuple[str, str, int]] = {
    "": ("digits-vae", "1", 8),
    "/models/tiny-vae": ("tiny-vae", "2", 2),
    "/models/tiny-vae/versions/1": ("tiny-vae", "1", 2),
}
ALL_PREFIXES = list(PREFIXES)
VAE_ROUTES = ["encode", "decode", "reconstruct", "sample", "anomaly-score"]
NPY = "application/x-npy"
NPZ = "application/x-npz"


@cache
def digits() -> Float64Array:
    data: Float64Array = load_digits().data.astype(np.float64)
    return data


@cache
def cancer() -> Float64Array:
    data: Float64Array = load_breast_cancer().data.astype(np.float64)
    return data


def post(client: TestClient, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=payload)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def arr(value: Any) -> Float64Array:
    return np.asarray(value, dtype=np.float64)


def npy_bytes(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def load_npy(response: httpx.Response) -> npt.NDArray[Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NPY)
    loaded: npt.NDArray[Any] = np.load(io.BytesIO(response.content), allow_pickle=False)
    return loaded


def load_npz(response: httpx.Response) -> dict[str, npt.NDArray[Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NPZ)
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def manifest(settings: ServiceSettings, name: str, version: str) -> dict[str, Any]:
    path = Path(settings.model_repository) / name / version / "model.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def batch(n: int = 4, start: int = 0) -> Float64Array:
    return digits()[start : start + n]


# --------------------------------------------------------------------------- /encode


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_encode_returns_mu_and_logvar_of_latent_width(client: TestClient, prefix: str) -> None:
    name, version, latent = PREFIXES[prefix]
    body = post(client, f"{prefix}/encode", {"inputs": batch(5).tolist()})
    assert arr(body["mu"]).shape == (5, latent)
    assert arr(body["logvar"]).shape == (5, latent)
    assert np.isfinite(arr(body["mu"])).all()
    assert "z" not in body
    assert body["model"] == {"name": name, "version": version}


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_encode_accepts_flat_and_image_layouts_with_identical_mu(
    client: TestClient, prefix: str
) -> None:
    x = batch(3)
    flat = post(client, f"{prefix}/encode", {"inputs": x.tolist()})
    image = post(client, f"{prefix}/encode", {"inputs": x.reshape(3, 1, 8, 8).tolist()})
    grey = post(client, f"{prefix}/encode", {"inputs": x.reshape(3, 8, 8).tolist()})
    assert flat["mu"] == image["mu"] == grey["mu"]
    assert flat["logvar"] == image["logvar"] == grey["logvar"]


def test_encode_one_item_is_a_batch_of_one(client: TestClient) -> None:
    one = post(client, "/encode", {"inputs": [digits()[7].tolist()]})
    many = post(client, "/encode", {"inputs": batch(10).tolist()})
    assert arr(one["mu"]).shape == (1, 8)
    np.testing.assert_allclose(arr(one["mu"])[0], arr(many["mu"])[7], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_encode_sample_with_seed_is_reproducible(client: TestClient, prefix: str) -> None:
    _, _, latent = PREFIXES[prefix]
    x = batch(4).tolist()
    first = post(client, f"{prefix}/encode", {"inputs": x, "sample": True, "seed": 5})
    again = post(client, f"{prefix}/encode", {"inputs": x, "sample": True, "seed": 5})
    other = post(client, f"{prefix}/encode", {"inputs": x, "sample": True, "seed": 6})
    assert first["seed"] == again["seed"] == 5
    assert other["seed"] == 6
    assert arr(first["z"]).shape == (4, latent)
    assert first["z"] == again["z"]
    assert first["mu"] == other["mu"]
    assert not np.allclose(arr(first["z"]), arr(other["z"]))


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_encode_sample_is_mu_plus_sigma_times_seeded_noise(client: TestClient, prefix: str) -> None:
    body = post(
        client, f"{prefix}/encode", {"inputs": batch(6).tolist(), "sample": True, "seed": 11}
    )
    mu, logvar = arr(body["mu"]), arr(body["logvar"])
    eps = np.random.default_rng(11).standard_normal(mu.shape)
    np.testing.assert_allclose(
        arr(body["z"]), mu + np.exp(0.5 * logvar) * eps, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_encode_sample_without_seed_returns_a_seed_that_reproduces_z(
    client: TestClient, prefix: str
) -> None:
    x = batch(3).tolist()
    first = post(client, f"{prefix}/encode", {"inputs": x, "sample": True})
    seed = first["seed"]
    assert isinstance(seed, int)
    assert seed >= 0
    again = post(client, f"{prefix}/encode", {"inputs": x, "sample": True, "seed": seed})
    assert again["z"] == first["z"]


def test_encode_on_plain_autoencoder_returns_code_as_mu_and_z(client: TestClient) -> None:
    body = post(client, "/models/tiny-ae/encode", {"inputs": batch(3).tolist()})
    assert body["mu"] == body["z"]
    assert arr(body["mu"]).shape == (3, 2)
    assert "logvar" not in body
    assert body["model"] == {"name": "tiny-ae", "version": "1"}


def test_encode_on_conv_model_accepts_flat_layout(client: TestClient) -> None:
    x = batch(3)
    flat = post(client, "/models/tiny-conv/encode", {"inputs": x.tolist()})
    image = post(client, "/models/tiny-conv/encode", {"inputs": x.reshape(3, 1, 8, 8).tolist()})
    assert flat["mu"] == image["mu"]


def test_encode_on_tabular_model(client: TestClient) -> None:
    body = post(client, "/models/cancer-vae/encode", {"inputs": cancer()[:7].tolist()})
    assert arr(body["mu"]).shape == (7, 2)
    assert np.isfinite(arr(body["logvar"])).all()


# --------------------------------------------------------------------------- /decode


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_decode_outputs_images_in_data_range(client: TestClient, prefix: str) -> None:
    _, _, latent = PREFIXES[prefix]
    z = np.random.default_rng(0).standard_normal((6, latent))
    body = post(client, f"{prefix}/decode", {"latents": z.tolist()})
    outputs = arr(body["outputs"])
    assert outputs.shape == (6, 1, 8, 8)
    # A Bernoulli mean in [0, 1] inverted through minmax scale 16: user units 0..16.
    assert outputs.min() >= 0.0
    assert outputs.max() <= 16.0
    assert outputs.max() > 1.0  # really inverted, not model units


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_decode_of_mu_equals_the_reconstruction(client: TestClient, prefix: str) -> None:
    x = batch(5, start=100)
    mu = post(client, f"{prefix}/encode", {"inputs": x.tolist()})["mu"]
    decoded = arr(post(client, f"{prefix}/decode", {"latents": mu})["outputs"])
    image = x.reshape(5, 1, 8, 8).tolist()
    reconstructed = arr(post(client, f"{prefix}/reconstruct", {"inputs": image})["outputs"])
    np.testing.assert_allclose(decoded, reconstructed, rtol=1e-5, atol=1e-5)


def test_decode_tabular_model_outputs_feature_vectors(client: TestClient) -> None:
    body = post(client, "/models/cancer-vae/decode", {"latents": [[0.0, 0.0], [1.0, -1.0]]})
    outputs = arr(body["outputs"])
    assert outputs.shape == (2, 30)
    # Inverted through standardisation: the zero latent decodes near the data's scale.
    assert np.isfinite(outputs).all()
    assert outputs[0].max() > 100.0  # area features are in the hundreds, not model units


# --------------------------------------------------------------------------- /reconstruct


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
@pytest.mark.parametrize("layout", [(64,), (1, 8, 8), (8, 8)])
def test_reconstruct_keeps_the_layout_sent(
    client: TestClient, prefix: str, layout: tuple[int, ...]
) -> None:
    x = batch(3).reshape(3, *layout)
    body = post(client, f"{prefix}/reconstruct", {"inputs": x.tolist()})
    outputs = arr(body["outputs"])
    assert outputs.shape == (3, *layout)
    assert outputs.min() >= 0.0
    assert outputs.max() <= 16.0


def test_reconstruct_conv_model_keeps_flat_layout(client: TestClient) -> None:
    body = post(client, "/models/tiny-conv/reconstruct", {"inputs": batch(2).tolist()})
    assert arr(body["outputs"]).shape == (2, 64)


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_reconstruct_is_deterministic_by_default(client: TestClient, prefix: str) -> None:
    x = batch(4).tolist()
    first = post(client, f"{prefix}/reconstruct", {"inputs": x})
    second = post(client, f"{prefix}/reconstruct", {"inputs": x})
    assert first["outputs"] == second["outputs"]
    assert "seed" not in first


def test_reconstruct_of_the_trained_model_resembles_its_input(client: TestClient) -> None:
    x = batch(20, start=300)
    outputs = arr(post(client, "/reconstruct", {"inputs": x.tolist()})["outputs"])
    for item, recon in zip(x, outputs, strict=True):
        assert np.corrcoef(item, recon)[0, 1] > 0.8


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_reconstruct_with_samples_is_seeded_and_differs_from_mean_path(
    client: TestClient, prefix: str
) -> None:
    x = batch(4).tolist()
    mean_path = post(client, f"{prefix}/reconstruct", {"inputs": x})
    first = post(client, f"{prefix}/reconstruct", {"inputs": x, "samples": 5, "seed": 1})
    again = post(client, f"{prefix}/reconstruct", {"inputs": x, "samples": 5, "seed": 1})
    other = post(client, f"{prefix}/reconstruct", {"inputs": x, "samples": 5, "seed": 2})
    assert first["samples"] == 5
    assert first["seed"] == 1
    assert first["outputs"] == again["outputs"]
    assert arr(first["outputs"]).shape == (4, 64)
    assert not np.allclose(arr(first["outputs"]), arr(mean_path["outputs"]))
    assert not np.allclose(arr(first["outputs"]), arr(other["outputs"]))


def test_reconstruct_samples_without_seed_echoes_a_reusable_seed(client: TestClient) -> None:
    x = batch(2).tolist()
    first = post(client, "/reconstruct", {"inputs": x, "samples": 3})
    again = post(client, "/reconstruct", {"inputs": x, "samples": 3, "seed": first["seed"]})
    assert first["outputs"] == again["outputs"]


def test_reconstruct_plain_autoencoder_mean_path_works_but_samples_is_409(
    client: TestClient,
) -> None:
    x = batch(2).tolist()
    body = post(client, "/models/tiny-ae/reconstruct", {"inputs": x})
    assert arr(body["outputs"]).shape == (2, 64)
    response = client.post("/models/tiny-ae/reconstruct", json={"inputs": x, "samples": 2})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "operation_not_supported"
    assert "samples" in response.json()["error"]["message"]


# --------------------------------------------------------------------------- /sample


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_sample_is_reproducible_and_shaped(client: TestClient, prefix: str) -> None:
    name, version, latent = PREFIXES[prefix]
    request = {"n": 7, "seed": 3, "temperature": 0.8}
    first = post(client, f"{prefix}/sample", request)
    again = post(client, f"{prefix}/sample", request)
    other = post(client, f"{prefix}/sample", {**request, "seed": 4})
    assert arr(first["outputs"]).shape == (7, 1, 8, 8)
    assert arr(first["latents"]).shape == (7, latent)
    assert first["seed"] == 3
    assert first["temperature"] == 0.8
    assert first["model"] == {"name": name, "version": version}
    assert first["outputs"] == again["outputs"]
    assert first["latents"] == again["latents"]
    assert not np.allclose(arr(first["latents"]), arr(other["latents"]))
    outputs = arr(first["outputs"])
    assert outputs.min() >= 0.0
    assert outputs.max() <= 16.0


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_sample_latents_are_seeded_prior_draws_times_temperature(
    client: TestClient, prefix: str
) -> None:
    _, _, latent = PREFIXES[prefix]
    body = post(client, f"{prefix}/sample", {"n": 5, "seed": 9, "temperature": 0.5})
    expected = np.random.default_rng(9).standard_normal((5, latent)) * 0.5
    np.testing.assert_allclose(arr(body["latents"]), expected, rtol=1e-6, atol=1e-7)
    decoded = post(client, f"{prefix}/decode", {"latents": body["latents"]})
    np.testing.assert_allclose(arr(body["outputs"]), arr(decoded["outputs"]), rtol=1e-6)


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_sample_temperature_zero_gives_identical_outputs(client: TestClient, prefix: str) -> None:
    _, _, latent = PREFIXES[prefix]
    body = post(client, f"{prefix}/sample", {"n": 4, "seed": 1, "temperature": 0})
    latents, outputs = arr(body["latents"]), arr(body["outputs"])
    np.testing.assert_array_equal(latents, np.zeros((4, latent)))
    for item in outputs[1:]:
        np.testing.assert_array_equal(item, outputs[0])
    decoded = post(client, f"{prefix}/decode", {"latents": [[0.0] * latent]})
    np.testing.assert_array_equal(outputs[0], arr(decoded["outputs"])[0])


def test_sample_defaults_to_one_item_and_a_fresh_seed(client: TestClient) -> None:
    first = post(client, "/sample", {})
    assert arr(first["outputs"]).shape == (1, 1, 8, 8)
    assert first["temperature"] == 1.0
    again = post(client, "/sample", {"seed": first["seed"]})
    assert again["outputs"] == first["outputs"]


def test_sample_on_tabular_model_outputs_feature_vectors(client: TestClient) -> None:
    body = post(client, "/models/cancer-vae/sample", {"n": 3, "seed": 0})
    assert arr(body["outputs"]).shape == (3, 30)


def test_sample_on_plain_autoencoder_is_409(client: TestClient) -> None:
    response = client.post("/models/tiny-ae/sample", json={"n": 2})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "operation_not_supported"
    assert "tiny-ae" in error["message"]


# --------------------------------------------------------------------------- /anomaly-score


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
@pytest.mark.parametrize("score_type", ["recon_mse", "neg_elbo", "recon_complexity"])
def test_anomaly_score_fields_and_threshold(
    client: TestClient, settings: ServiceSettings, prefix: str, score_type: str
) -> None:
    name, version, _ = PREFIXES[prefix]
    x = batch(30)
    body = post(client, f"{prefix}/anomaly-score", {"inputs": x.tolist(), "score_type": score_type})
    scores = arr(body["scores"])
    assert scores.shape == (30,)
    assert np.isfinite(scores).all()
    assert body["score_type"] == score_type
    stored = manifest(settings, name, version)["anomaly"]["scores"][score_type]["threshold"]
    assert body["threshold"] == stored
    assert body["is_anomaly"] == [bool(s > stored) for s in scores]
    tail = arr(body["tail_probability"])
    assert tail.shape == (30,)
    assert ((tail >= 0.0) & (tail <= 1.0)).all()
    assert "feature_errors" not in body


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_anomaly_score_default_type_is_the_manifests(
    client: TestClient, settings: ServiceSettings, prefix: str
) -> None:
    name, version, _ = PREFIXES[prefix]
    body = post(client, f"{prefix}/anomaly-score", {"inputs": batch(2).tolist()})
    assert body["score_type"] == manifest(settings, name, version)["anomaly"]["default_score"]


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
@pytest.mark.parametrize("layout", [(64,), (1, 8, 8), (8, 8)])
def test_anomaly_score_per_feature_errors_keep_layout_and_average_to_recon_mse(
    client: TestClient, prefix: str, layout: tuple[int, ...]
) -> None:
    x = batch(5).reshape(5, *layout)
    body = post(
        client,
        f"{prefix}/anomaly-score",
        {"inputs": x.tolist(), "score_type": "recon_mse", "per_feature": True},
    )
    errors = arr(body["feature_errors"])
    assert errors.shape == (5, *layout)
    assert (errors >= 0).all()
    np.testing.assert_allclose(errors.reshape(5, -1).mean(axis=1), body["scores"], rtol=1e-6)


def test_per_feature_with_neg_elbo_still_reports_squared_errors(client: TestClient) -> None:
    x = batch(4).tolist()
    elbo = post(
        client, "/anomaly-score", {"inputs": x, "score_type": "neg_elbo", "per_feature": True}
    )
    mse = post(client, "/anomaly-score", {"inputs": x, "score_type": "recon_mse"})
    errors = arr(elbo["feature_errors"])
    np.testing.assert_allclose(errors.mean(axis=1), mse["scores"], rtol=1e-6)
    assert elbo["scores"] != mse["scores"]


def test_recon_mse_is_mean_squared_error_in_model_units(client: TestClient) -> None:
    # digits-vae preprocessing: x_model = clip(x / 16, 0, 1); outputs come back times 16.
    x = batch(8, start=50)
    score = post(client, "/anomaly-score", {"inputs": x.tolist(), "score_type": "recon_mse"})
    recon = arr(post(client, "/reconstruct", {"inputs": x.tolist()})["outputs"])
    expected = (((x / 16.0) - (recon / 16.0)) ** 2).mean(axis=1)
    np.testing.assert_allclose(score["scores"], expected, rtol=1e-5)


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
@pytest.mark.parametrize("score_type", ["recon_mse", "neg_elbo", "recon_complexity"])
def test_tail_probability_is_non_increasing_in_score(
    client: TestClient, prefix: str, score_type: str
) -> None:
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 16, size=(10, 64))
    x = np.concatenate([batch(60, start=500), noise])
    body = post(client, f"{prefix}/anomaly-score", {"inputs": x.tolist(), "score_type": score_type})
    scores, tail = arr(body["scores"]), arr(body["tail_probability"])
    order = np.argsort(scores, kind="stable")
    assert (np.diff(tail[order]) <= 0).all()
    assert tail[order][-1] < tail[order][0]


@pytest.mark.parametrize("score_type", ["recon_mse", "neg_elbo", "recon_complexity"])
def test_noise_images_are_flagged_by_the_trained_model(client: TestClient, score_type: str) -> None:
    noise = np.random.default_rng(1).uniform(0, 16, size=(8, 64))
    body = post(client, "/anomaly-score", {"inputs": noise.tolist(), "score_type": score_type})
    assert all(body["is_anomaly"])
    assert max(body["tail_probability"]) < 0.05


def test_neg_elbo_on_plain_autoencoder_is_409(client: TestClient) -> None:
    x = batch(2).tolist()
    ok = post(client, "/models/tiny-ae/anomaly-score", {"inputs": x})
    assert ok["score_type"] == "recon_complexity"  # an image model's default
    response = client.post(
        "/models/tiny-ae/anomaly-score", json={"inputs": x, "score_type": "neg_elbo"}
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "operation_not_supported"
    assert "neg_elbo" in error["message"]
    assert "recon_mse" in error["message"]


def test_recon_complexity_on_a_table_model_is_409(client: TestClient) -> None:
    response = client.post(
        "/models/cancer-vae/anomaly-score",
        json={"inputs": cancer()[:2].tolist(), "score_type": "recon_complexity"},
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "operation_not_supported"
    assert "'recon_complexity' needs images" in error["message"]
    assert "neg_elbo" in error["message"]


def test_anomaly_score_on_tabular_model(client: TestClient, settings: ServiceSettings) -> None:
    stored = manifest(settings, "cancer-vae", "1")["anomaly"]["scores"]
    for score_type in ("recon_mse", "neg_elbo"):
        body = post(
            client,
            "/models/cancer-vae/anomaly-score",
            {"inputs": cancer()[:25].tolist(), "score_type": score_type, "per_feature": True},
        )
        assert body["threshold"] == stored[score_type]["threshold"]
        assert arr(body["feature_errors"]).shape == (25, 30)
        assert body["is_anomaly"] == [s > body["threshold"] for s in body["scores"]]


# --------------------------------------------------------------------------- version routing


def test_named_route_serves_newest_version(client: TestClient) -> None:
    x = batch(3).tolist()
    named = post(client, "/models/tiny-vae/encode", {"inputs": x})
    v2 = post(client, "/models/tiny-vae/versions/2/encode", {"inputs": x})
    v1 = post(client, "/models/tiny-vae/versions/1/encode", {"inputs": x})
    assert named["model"] == v2["model"] == {"name": "tiny-vae", "version": "2"}
    assert v1["model"] == {"name": "tiny-vae", "version": "1"}
    assert named["mu"] == v2["mu"]
    assert not np.allclose(arr(v1["mu"]), arr(v2["mu"]))


def test_top_level_routes_serve_the_default_model(client: TestClient) -> None:
    x = batch(2).tolist()
    top = post(client, "/encode", {"inputs": x})
    named = post(client, "/models/digits-vae/versions/1/encode", {"inputs": x})
    assert top["model"] == {"name": "digits-vae", "version": "1"}
    assert top["mu"] == named["mu"]


@pytest.mark.parametrize("route", VAE_ROUTES)
def test_every_route_names_the_served_model(client: TestClient, route: str) -> None:
    payloads: dict[str, dict[str, Any]] = {
        "encode": {"inputs": batch(1).tolist()},
        "decode": {"latents": [[0.0, 0.0]]},
        "reconstruct": {"inputs": batch(1).tolist()},
        "sample": {"n": 1, "seed": 0},
        "anomaly-score": {"inputs": batch(1).tolist()},
    }
    for prefix, version in (("/models/tiny-vae", "2"), ("/models/tiny-vae/versions/1", "1")):
        body = post(client, f"{prefix}/{route}", payloads[route])
        assert body["model"] == {"name": "tiny-vae", "version": version}


# --------------------------------------------------------------------------- metadata, health


def test_models_lists_every_loaded_model(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    body = response.json()
    assert body["default_model"] == "digits-vae"
    by_name = {entry["name"]: entry for entry in body["models"]}
    assert set(by_name) == {"digits-vae", "tiny-vae", "tiny-conv", "tiny-ae", "cancer-vae"}
    assert by_name["tiny-vae"]["versions"] == ["1", "2"]
    assert by_name["tiny-vae"]["version"] == "2"
    assert by_name["tiny-ae"]["kind"] == "ae"
    assert by_name["digits-vae"]["latent_dim"] == 8


def test_model_metadata(client: TestClient, settings: ServiceSettings) -> None:
    response = client.get("/models/tiny-vae")
    assert response.status_code == 200
    body = response.json()
    stored = manifest(settings, "tiny-vae", "2")
    assert body["name"] == "tiny-vae"
    assert body["version"] == "2"
    assert body["versions"] == ["1", "2"]
    assert body["kind"] == "vae"
    assert body["latent_dim"] == 2
    assert "sample" in body["operations"]
    for score_type, calibration in stored["anomaly"]["scores"].items():
        assert body["anomaly"]["scores"][score_type]["threshold"] == calibration["threshold"]
    assert ["B", 64] in body["accepted_input_layouts"]
    assert ["B", 1, 8, 8] in body["accepted_input_layouts"]


def test_plain_autoencoder_metadata(client: TestClient) -> None:
    body = client.get("/models/tiny-ae").json()
    assert body["kind"] == "ae"
    assert "sample" not in body["operations"]
    assert set(body["anomaly"]["scores"]) == {"recon_mse", "recon_complexity"}


def test_version_metadata(client: TestClient, settings: ServiceSettings) -> None:
    response = client.get("/models/tiny-vae/versions/1")
    assert response.status_code == 200
    body = response.json()
    stored = manifest(settings, "tiny-vae", "1")
    assert body["version"] == "1"
    assert body["versions"] == ["1", "2"]
    assert (
        body["anomaly"]["scores"]["neg_elbo"]["threshold"]
        == (stored["anomaly"]["scores"]["neg_elbo"]["threshold"])
    )


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_lists_models(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["models"] == {
        "cancer-vae": "1",
        "digits-vae": "1",
        "tiny-ae": "1",
        "tiny-conv": "1",
        "tiny-vae": "2",
    }
    assert body["default_model"] == "digits-vae"
    assert body["refused"] == {}


# --------------------------------------------------------------------------- npy wire format


def npy_post(
    client: TestClient,
    path: str,
    array: npt.NDArray[Any],
    params: dict[str, str] | None = None,
    accept: str = NPY,
) -> httpx.Response:
    response: httpx.Response = client.post(
        path,
        content=npy_bytes(array),
        params=params,
        headers={"content-type": NPY, "accept": accept},
    )
    return response


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
@pytest.mark.parametrize(
    ("route", "field", "main", "params"),
    [
        ("encode", "inputs", "mu", {}),
        ("encode", "inputs", "z", {"sample": "true", "seed": "3"}),
        ("decode", "latents", "outputs", {}),
        ("reconstruct", "inputs", "outputs", {}),
        ("reconstruct", "inputs", "outputs", {"samples": "3", "seed": "2"}),
        ("anomaly-score", "inputs", "scores", {}),
        ("anomaly-score", "inputs", "scores", {"score_type": "neg_elbo", "per_feature": "true"}),
    ],
)
def test_npy_body_and_response_equal_json(
    client: TestClient,
    prefix: str,
    route: str,
    field: str,
    main: str,
    params: dict[str, str],
) -> None:
    _, _, latent = PREFIXES[prefix]
    if field == "latents":
        array = np.random.default_rng(0).standard_normal((4, latent)).astype(np.float32)
    else:
        array = batch(4, start=20).astype(np.float32)
    json_params: dict[str, Any] = {
        key: (value == "true" if value in ("true", "false") else value)
        for key, value in params.items()
    }
    for key in ("seed", "samples"):
        if key in json_params:
            json_params[key] = int(json_params[key])
    expected = post(client, f"{prefix}/{route}", {field: array.tolist(), **json_params})

    query = {**params, "output": main} if main == "z" else params
    response = npy_post(client, f"{prefix}/{route}", array, query)
    got = load_npy(response)
    assert response.headers["x-output"] == main
    np.testing.assert_allclose(got, arr(expected[main]), rtol=1e-6)
    assert got.shape == arr(expected[main]).shape

    everything = load_npz(npy_post(client, f"{prefix}/{route}", array, params, accept=NPZ))
    arrays = {k: v for k, v in expected.items() if isinstance(v, list)}
    assert set(everything) == set(arrays)
    for name, values in arrays.items():
        if name == "is_anomaly":
            assert everything[name].dtype == np.bool_
            assert everything[name].tolist() == values
        else:
            np.testing.assert_allclose(everything[name], arr(values), rtol=1e-6)


def test_npy_output_selects_another_array(client: TestClient) -> None:
    x = batch(3).astype(np.float32)
    expected = post(client, "/encode", {"inputs": x.tolist()})
    response = npy_post(client, "/encode?output=logvar", x)
    np.testing.assert_allclose(load_npy(response), arr(expected["logvar"]), rtol=1e-6)
    assert response.headers["x-output"] == "logvar"


def test_npy_scalars_travel_in_headers(client: TestClient) -> None:
    x = batch(3)
    params = {"score_type": "neg_elbo"}
    expected = post(client, "/anomaly-score", {"inputs": x.tolist(), **params})
    response = npy_post(client, "/anomaly-score", x, params)
    assert load_npy(response).shape == (3,)
    assert float(response.headers["x-threshold"]) == expected["threshold"]
    assert response.headers["x-score-type"] == "neg_elbo"

    encoded = npy_post(client, "/encode", x, {"sample": "true", "seed": "3"})
    assert encoded.headers["x-seed"] == "3"


def test_json_body_with_npy_response(client: TestClient) -> None:
    x = batch(3)
    expected = post(client, "/reconstruct", {"inputs": x.tolist()})
    response = client.post("/reconstruct", json={"inputs": x.tolist()}, headers={"accept": NPY})
    np.testing.assert_allclose(load_npy(response), arr(expected["outputs"]), rtol=1e-6)


def test_sample_can_answer_in_npy_and_npz(client: TestClient) -> None:
    expected = post(client, "/sample", {"n": 3, "seed": 8})
    response = client.post("/sample", json={"n": 3, "seed": 8}, headers={"accept": NPY})
    np.testing.assert_allclose(load_npy(response), arr(expected["outputs"]), rtol=1e-6)
    assert response.headers["x-seed"] == "8"
    archive = load_npz(client.post("/sample", json={"n": 3, "seed": 8}, headers={"accept": NPZ}))
    np.testing.assert_allclose(archive["latents"], arr(expected["latents"]), rtol=1e-6)


def test_npy_body_dtypes_and_layouts_agree(client: TestClient) -> None:
    x = batch(3)
    reference = load_npy(npy_post(client, "/encode", x.astype(np.float32)))
    for array in (x, x.astype(np.int64), x.astype(np.float16), x.reshape(3, 1, 8, 8)):
        np.testing.assert_array_equal(load_npy(npy_post(client, "/encode", array)), reference)


def test_npz_response_is_a_plain_zip_of_npy_members(client: TestClient) -> None:
    response = npy_post(client, "/encode", batch(2), accept=NPZ)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["logvar.npy", "mu.npy"]


# --------------------------------------------------------------------------- OpenAPI, docs


def test_openapi_lists_every_route_with_json_examples(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for prefix in ("", "/models/{name}", "/models/{name}/versions/{version}"):
        for route in VAE_ROUTES:
            path = f"{prefix}/{route}"
            assert path in paths, path
            operation = paths[path]["post"]
            content = operation["requestBody"]["content"]
            assert "example" in content["application/json"], path
            assert isinstance(content["application/json"]["example"], dict)
    for path in ("/models", "/models/{name}", "/models/{name}/versions/{version}", "/healthz"):
        assert "get" in paths[path]
    assert "get" in paths["/readyz"]


def test_openapi_examples_are_valid_requests(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route in VAE_ROUTES:
        example = paths[f"/{route}"]["post"]["requestBody"]["content"]["application/json"][
            "example"
        ]
        response = client.post(f"/{route}", json=example)
        assert response.status_code == 200, (route, response.text)


def test_docs_page(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
