"""OpenAPI documentation of the array routes: request schemas, examples, responses.

Bodies are parsed by the codecs straight into numpy, so FastAPI never sees a pydantic model for
them; this module tells `/docs` (and any client generator) what the bodies look like instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NESTED_NUMBERS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "minItems": 1, "items": {}},
    "description": "numbers nested as (B, *shape): a leading batch axis, one item is [[...]]",
}
NUMBER_LIST: dict[str, Any] = {"type": "array", "items": {"type": "number"}}
NUMBERS_2D: dict[str, Any] = {"type": "array", "items": NUMBER_LIST}
ANY_ARRAY: dict[str, Any] = {"type": "array", "items": {}}
SEED = {"type": "integer", "minimum": 0, "description": "seed of every random draw; echoed back"}
MODEL_REF = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
}
ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "detail": {},
            },
        }
    },
}
DIGIT_ROW = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
DIGIT = [v for _ in range(8) for v in DIGIT_ROW]  # one 8x8 image, flattened, values 0..16


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_BODY}}}


@dataclass(frozen=True)
class OperationDoc:
    summary: str
    description: str
    request_schema: dict[str, Any]
    request_example: dict[str, Any]
    response_schema: dict[str, Any]
    npy_field: str | None  # the array an application/x-npy body carries
    extra_errors: dict[int, str] = field(default_factory=dict)

    def openapi_extra(self) -> dict[str, Any]:
        content: dict[str, Any] = {
            "application/json": {"schema": self.request_schema, "example": self.request_example}
        }
        if self.npy_field is not None:
            content["application/x-npy"] = {
                "schema": {"type": "string", "format": "binary"},
                "description": f"the {self.npy_field} array as an .npy file; other fields go "
                "in the query string",
            }
        return {"requestBody": {"required": self.npy_field is not None, "content": content}}

    def responses(self) -> dict[int | str, dict[str, Any]]:
        responses: dict[int | str, dict[str, Any]] = {
            200: {
                "description": "arrays in the user's units; Accept: application/x-npy sends one "
                "array (?output=NAME), application/x-npz all of them",
                "content": {
                    "application/json": {"schema": self.response_schema},
                    "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
                    "application/x-npz": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            400: _error("malformed JSON or npy"),
            404: _error("unknown model or version"),
            406: _error("Accept names no format this route can send"),
            413: _error("body, batch or n above the configured limit"),
            415: _error("Content-Type is neither application/json nor application/x-npy"),
            422: _error("bad shape, dtype, NaN/Inf, empty batch or a bad field"),
            503: _error("models are not loaded yet"),
        }
        for status, text in self.extra_errors.items():
            responses[status] = _error(text)
        return responses


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


OPERATION_DOCS: dict[str, OperationDoc] = {
    "encode": OperationDoc(
        summary="Embed inputs: posterior mean and log-variance",
        description="`mu` is the embedding. With `sample: true` also `z = mu + sigma * eps`, "
        "eps drawn from `seed`. A plain autoencoder returns its code as `mu` and `z`.",
        request_schema=_object(
            {"inputs": NESTED_NUMBERS, "sample": {"type": "boolean"}, "seed": SEED},
            ["inputs"],
        ),
        request_example={"inputs": [DIGIT], "sample": True, "seed": 7},
        response_schema=_object(
            {
                "mu": NUMBERS_2D,
                "logvar": NUMBERS_2D,
                "z": NUMBERS_2D,
                "seed": {"type": "integer"},
                "model": MODEL_REF,
            },
            ["mu", "model"],
        ),
        npy_field="inputs",
        extra_errors={409: "sample=true on a model without a posterior"},
    ),
    "decode": OperationDoc(
        summary="Decode latents to data",
        description="`latents` (B, latent_dim) -> `outputs`, the decoder's mean in user units.",
        request_schema=_object({"latents": NUMBERS_2D}, ["latents"]),
        request_example={"latents": [[0.0] * 8]},
        response_schema=_object({"outputs": ANY_ARRAY, "model": MODEL_REF}, ["outputs"]),
        npy_field="latents",
    ),
    "reconstruct": OperationDoc(
        summary="Reconstruct (denoise) inputs",
        description="Deterministic mean path x -> mu -> decoder mean by default; `samples: K` "
        "averages K stochastic passes drawn from `seed` (VAEs only). Outputs keep the "
        "layout the inputs came in.",
        request_schema=_object(
            {
                "inputs": NESTED_NUMBERS,
                "samples": {"type": "integer", "minimum": 1},
                "seed": SEED,
            },
            ["inputs"],
        ),
        request_example={"inputs": [DIGIT]},
        response_schema=_object(
            {
                "outputs": ANY_ARRAY,
                "samples": {"type": "integer"},
                "seed": {"type": "integer"},
                "model": MODEL_REF,
            },
            ["outputs"],
        ),
        npy_field="inputs",
        extra_errors={409: "samples on a model without a posterior"},
    ),
    "sample": OperationDoc(
        summary="Generate new data from the prior",
        description="`n` draws z ~ N(0, temperature^2 I) from `seed`, decoded to user units. "
        "VAEs only.",
        request_schema=_object(
            {
                "n": {"type": "integer", "minimum": 1},
                "seed": SEED,
                "temperature": {"type": "number", "minimum": 0},
            },
            [],
        ),
        request_example={"n": 4, "seed": 0, "temperature": 1.0},
        response_schema=_object(
            {
                "outputs": ANY_ARRAY,
                "latents": NUMBERS_2D,
                "seed": {"type": "integer"},
                "temperature": {"type": "number"},
                "model": MODEL_REF,
            },
            ["outputs", "latents", "seed"],
        ),
        npy_field=None,
        extra_errors={409: "the model is not a VAE"},
    ),
    "anomaly-score": OperationDoc(
        summary="Anomaly scores with the calibrated threshold",
        description="Higher is more anomalous. `is_anomaly` compares with the threshold fixed "
        "on validation data; `tail_probability` is the share of normal validation items that "
        "scored at least as high. `score_type` picks recon_mse or neg_elbo (VAEs); "
        "`per_feature: true` adds each feature's squared error.",
        request_schema=_object(
            {
                "inputs": NESTED_NUMBERS,
                "score_type": {"type": "string", "enum": ["recon_mse", "neg_elbo"]},
                "per_feature": {"type": "boolean"},
            },
            ["inputs"],
        ),
        request_example={"inputs": [DIGIT], "score_type": "recon_mse"},
        response_schema=_object(
            {
                "scores": NUMBER_LIST,
                "threshold": {"type": "number"},
                "is_anomaly": {"type": "array", "items": {"type": "boolean"}},
                "score_type": {"type": "string"},
                "tail_probability": NUMBER_LIST,
                "feature_errors": ANY_ARRAY,
                "model": MODEL_REF,
            },
            ["scores", "threshold", "is_anomaly", "score_type"],
        ),
        npy_field="inputs",
        extra_errors={409: "neg_elbo asked of a model without a posterior"},
    ),
}
