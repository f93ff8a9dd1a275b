"""service.codecs.wire: a request's bytes become one typed request, a typed result becomes the
answer's bytes, on the committed digits-vae bundle (a real onnxruntime model)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pytest

from bundle.runtime import OnnxBundle
from service.codecs import media
from service.codecs.wire import RawRequest, decode_request, encode_result, negotiate
from service.errors import InvalidInput, MalformedBody, NotAcceptable, ServiceError
from service.models.requests import (
    DecodeRequest,
    EncodeRequest,
    ReconstructRequest,
    SampleRequest,
    ScoreRequest,
)
from service.models.results import EncodeResult, ReconstructResult, ScoreResult
from service.models.served_model import Limits, ServedModel
from service.settings import ServiceSettings
from tests.bundles import COMMITTED_BUNDLE

SETTINGS = ServiceSettings()


@pytest.fixture(scope="module")
def model() -> ServedModel:
    return ServedModel(OnnxBundle(COMMITTED_BUNDLE), Limits(64, 16, 8))


def json_raw(payload: dict[str, Any], query: dict[str, str] | None = None) -> RawRequest:
    return RawRequest("application/json", None, query or {}, orjson.dumps(payload))


def npy_raw(array: np.ndarray, query: dict[str, str]) -> RawRequest:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return RawRequest(media.NPY_MEDIA_TYPE, None, query, buffer.getvalue())


def one_item(model: ServedModel) -> list[list[float]]:
    return [[0.5] * model.feature_count]


# --------------------------------------------------------------------------- decoding


def test_each_route_decodes_into_its_typed_request(model: ServedModel) -> None:
    item = one_item(model)
    score = decode_request(
        model,
        "anomaly-score",
        json_raw({"inputs": item, "score_type": "recon_mse", "per_feature": True}),
        SETTINGS,
        "json",
    )
    assert isinstance(score, ScoreRequest)
    assert (score.score_type, score.per_feature) == ("recon_mse", True)
    assert score.inputs.dtype == np.float32
    assert score.inputs.shape == (1, model.feature_count)

    encode = decode_request(
        model, "encode", json_raw({"inputs": item, "sample": True, "seed": 7}), SETTINGS, "json"
    )
    assert isinstance(encode, EncodeRequest)
    assert (encode.sample, encode.seed) == (True, 7)

    reconstruct = decode_request(
        model, "reconstruct", json_raw({"inputs": item, "samples": 3}), SETTINGS, "json"
    )
    assert isinstance(reconstruct, ReconstructRequest)
    assert (reconstruct.samples, reconstruct.seed) == (3, None)

    latents = [[0.0] * model.latent_dim]
    decode = decode_request(model, "decode", json_raw({"latents": latents}), SETTINGS, "json")
    assert isinstance(decode, DecodeRequest)
    assert decode.latents.shape == (1, model.latent_dim)

    sample = decode_request(
        model, "sample", json_raw({"n": 4, "temperature": 0.5}), SETTINGS, "json"
    )
    assert sample == SampleRequest(n=4, seed=None, temperature=0.5)


def test_npy_and_body_less_requests_take_their_scalars_from_the_query(model: ServedModel) -> None:
    x = np.full((2, model.feature_count), 0.25, np.float32)
    score = decode_request(
        model, "anomaly-score", npy_raw(x, {"per_feature": "yes"}), SETTINGS, "json"
    )
    assert isinstance(score, ScoreRequest)
    assert score.per_feature is True
    np.testing.assert_array_equal(score.inputs, x)

    body_less = RawRequest(None, None, {"n": "3", "seed": "11", "temperature": "0"}, b"")
    sample = decode_request(model, "sample", body_less, SETTINGS, "json")
    assert sample == SampleRequest(n=3, seed=11, temperature=0.0)


def test_defaults_fill_what_the_request_leaves_out(model: ServedModel) -> None:
    sample = decode_request(model, "sample", json_raw({}), SETTINGS, "json")
    assert sample == SampleRequest(n=1, seed=None, temperature=1.0)
    score = decode_request(
        model, "anomaly-score", json_raw({"inputs": one_item(model)}), SETTINGS, "json"
    )
    assert isinstance(score, ScoreRequest)
    assert (score.score_type, score.per_feature) == (None, False)


def test_a_png_answer_of_anomaly_score_asks_for_per_feature_errors(model: ServedModel) -> None:
    raw = json_raw({"inputs": one_item(model)})
    score = decode_request(model, "anomaly-score", raw, SETTINGS, "png")
    assert isinstance(score, ScoreRequest)
    assert score.per_feature is True


@pytest.mark.parametrize(
    ("route", "payload", "query", "field"),
    [
        ("encode", {"seed": "7"}, None, "seed"),
        ("encode", {"seed": True}, None, "seed"),
        ("encode", {"sample": "true"}, None, "sample"),
        ("reconstruct", {"samples": 1.5}, None, "samples"),
        ("anomaly-score", {"score_type": 3}, None, "score_type"),
        ("anomaly-score", {"per_feature": 1}, None, "per_feature"),
        ("sample", {"temperature": "hot"}, None, "temperature"),
        ("sample", {"n": [1]}, None, "n"),
    ],
)
def test_a_field_of_the_wrong_type_is_a_422_naming_it(
    model: ServedModel,
    route: str,
    payload: dict[str, Any],
    query: dict[str, str] | None,
    field: str,
) -> None:
    array_field = {"decode": "latents", "sample": None}.get(route, "inputs")
    body = dict(payload)
    if array_field is not None:
        body[array_field] = one_item(model)
    with pytest.raises(InvalidInput) as refused:
        decode_request(model, route, json_raw(body, query), SETTINGS, "json")
    assert refused.value.status == 422
    assert refused.value.detail == {"field": field}


@pytest.mark.parametrize(
    ("query", "field"),
    [({"seed": "1e3"}, "seed"), ({"sample": "maybe"}, "sample"), ({"seed": "9" * 5000}, "seed")],
)
def test_a_query_parameter_that_does_not_parse_is_a_422(
    model: ServedModel, query: dict[str, str], field: str
) -> None:
    x = np.zeros((1, model.feature_count), np.float32)
    with pytest.raises(InvalidInput) as refused:
        decode_request(model, "encode", npy_raw(x, query), SETTINGS, "json")
    assert field in refused.value.message
    assert len(refused.value.message) < 300  # a 5,000-digit value is quoted cut short


def test_a_body_that_is_not_json_or_carries_too_many_numbers_is_refused(
    model: ServedModel,
) -> None:
    with pytest.raises(MalformedBody):
        decode_request(
            model, "encode", RawRequest("application/json", None, {}, b"{"), SETTINGS, "json"
        )
    # More items than VAE_MAX_BATCH_SIZE: refused by the codec, before any model sees them.
    small_batches = ServiceSettings(max_batch_size=2)
    three = {"inputs": one_item(model) * 3}
    with pytest.raises(ServiceError) as refused:
        decode_request(model, "encode", json_raw(three), small_batches, "json")
    assert refused.value.status == 413
    with pytest.raises(InvalidInput, match="JSON body"):
        decode_request(model, "sample", npy_raw(np.zeros((1, 2), np.float32), {}), SETTINGS, "json")


# --------------------------------------------------------------------------- encoding


def test_json_answers_list_the_result_fields_in_order_then_the_model(model: ServedModel) -> None:
    x = np.full((2, model.feature_count), 0.5, np.float32)
    result = model.reconstruct(x, samples=2, seed=5)
    response = encode_result(result, model, "reconstruct", "json", {})
    assert (response.status, response.media_type) == (200, media.JSON_MEDIA_TYPE)
    body = orjson.loads(response.body)
    assert list(body) == ["samples", "seed", "outputs", "model"]
    assert body["model"] == {"name": model.name, "version": model.version}
    np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32), result.outputs)

    mean_path = orjson.loads(
        encode_result(
            model.reconstruct(x, samples=None, seed=5), model, "reconstruct", "json", {}
        ).body
    )
    assert list(mean_path) == ["outputs", "model"]  # nothing was drawn: no seed to echo


def test_npy_answers_carry_the_primary_array_or_the_one_asked_for(model: ServedModel) -> None:
    x = np.full((3, model.feature_count), 0.5, np.float32)
    result = model.score(x, score_type=None, per_feature=True)
    response = encode_result(result, model, "anomaly-score", "npy", {})
    assert response.headers["X-Output"] == "scores"
    assert response.headers["X-Threshold"] == str(result.threshold)
    assert response.headers["X-Model-Name"] == model.name
    np.testing.assert_array_equal(np.load(io.BytesIO(response.body)), result.scores)

    chosen = encode_result(result, model, "anomaly-score", "npy", {"output": "feature_errors"})
    assert chosen.headers["X-Output"] == "feature_errors"
    assert np.load(io.BytesIO(chosen.body)).shape == x.shape

    with pytest.raises(InvalidInput) as refused:
        encode_result(result, model, "anomaly-score", "npy", {"output": "threshold"})
    assert refused.value.detail["allowed"] == [
        "feature_errors",
        "is_anomaly",
        "scores",
        "tail_probability",
    ]


def test_npz_answers_carry_every_array(model: ServedModel) -> None:
    x = np.full((1, model.feature_count), 0.5, np.float32)
    result = model.encode(x, sample=True, seed=3)
    response = encode_result(result, model, "encode", "npz", {})
    with np.load(io.BytesIO(response.body)) as arrays:
        assert sorted(arrays.files) == ["logvar", "mu", "z"]
    assert response.headers["X-Seed"] == "3"


def test_negotiation_offers_png_only_where_images_can_be_drawn(model: ServedModel) -> None:
    assert negotiate(model, "reconstruct", None) == "json"
    assert negotiate(model, "encode", "application/x-npy") == "npy"
    # image/* beside JSON: JSON wins where no PNG can be drawn
    assert negotiate(model, "encode", "image/*, application/json;q=0.5") == "json"
    with pytest.raises(NotAcceptable, match="sends arrays only"):
        negotiate(model, "encode", "image/png")


def test_result_fields_leave_out_what_the_operation_did_not_make() -> None:
    mu = np.zeros((1, 2), np.float32)
    assert list(EncodeResult(mu, z=mu).fields()) == ["mu", "z"]
    assert list(ReconstructResult(None, None, mu).fields()) == ["outputs"]
    scores = np.zeros(1)
    score = ScoreResult(scores, 0.5, scores > 0.5, "recon_mse", scores.astype(np.float32))
    assert "feature_errors" not in score.fields()
    assert score.item_count() == 1
