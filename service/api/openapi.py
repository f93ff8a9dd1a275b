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
# Optional request fields are nullable: null means the same as leaving the field out.
SEED = {
    "type": ["integer", "null"],
    "minimum": 0,
    "maximum": 2**63 - 1,
    "description": "seed of every random draw; echoed back. Absent or null: a fresh one",
}
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
            # detail is always there (null when there is nothing to add): one shape to parse.
            "required": ["code", "message", "detail"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "detail": {},
            },
        }
    },
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before calling again",
        "schema": {"type": "integer", "minimum": 0},
    }
}
DIGIT_ROW = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
DIGIT = [v for _ in range(8) for v in DIGIT_ROW]  # one 8x8 image, flattened, values 0..16


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = {"description": description, "content": {"application/json": {"schema": ERROR_BODY}}}
    if headers:
        response["headers"] = headers
    return response


# npy and npz responses carry the scalar fields of the JSON body as headers instead.
BINARY_RESPONSE_HEADERS = {
    "X-Model-Name": {
        "description": "npy/npz: the model that answered",
        "schema": {"type": "string"},
    },
    "X-Model-Version": {"description": "npy/npz: its version", "schema": {"type": "string"}},
    "X-Output": {"description": "npy: the array in the body", "schema": {"type": "string"}},
}


# PNG responses (image models): the grid's layout, and on /anomaly-score the per-item arrays a
# heat map cannot show, comma-separated in batch order.
PNG_RESPONSE_HEADERS = {
    "X-Grid-Rows": {
        "description": "png: rows of the grid, filled row-major in batch order",
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-Grid-Columns": {"description": "png: columns of the grid", "schema": {"type": "integer"}},
}
HEAT_MAP_HEADERS = {
    "X-Scores": {"description": "png: the scores, comma-separated", "schema": {"type": "string"}},
    "X-Is-Anomaly": {
        "description": "png: true/false per item, comma-separated",
        "schema": {"type": "string"},
    },
    "X-Tail-Probability": {
        "description": "png: tail probability per item, comma-separated",
        "schema": {"type": "string"},
    },
    "X-Threshold": {
        "description": "npy/npz/png: the calibrated threshold",
        "schema": {"type": "string"},
    },
    "X-Score-Type": {"description": "npy/npz/png: the score type", "schema": {"type": "string"}},
}
BINARY = {"type": "string", "format": "binary"}
IMAGE_REQUEST_CONTENT = {
    "image/png": {
        "schema": BINARY,
        "description": "image models: one image, a batch of one (greyscaled or made RGB and "
        "resized to the model's input as training did); other fields go in the query string",
    },
    "image/jpeg": {"schema": BINARY, "description": "image models: one JPEG image, as PNG"},
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"images": {"type": "array", "items": BINARY}},
        },
        "description": "image models: several image files (image/png or image/jpeg parts, any "
        "field name), the batch in upload order; other fields go in the query string",
    },
}


def json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@dataclass(frozen=True)
class OperationDoc:
    summary: str
    description: str
    request_schema: dict[str, Any]
    request_example: dict[str, Any]
    response_schema: dict[str, Any]
    npy_field: str | None  # the array an application/x-npy body carries
    extra_errors: dict[int, str] = field(default_factory=dict)
    image_input: bool = False  # image models take PNG/JPEG/multipart bodies (service.codecs.images)
    image_output: str | None = None  # what an image model's `Accept: image/png` answer shows
    image_output_headers: dict[str, Any] = field(default_factory=dict)  # beyond the grid's

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
        if self.image_input:
            content.update(IMAGE_REQUEST_CONTENT)
        return {"requestBody": {"required": self.npy_field is not None, "content": content}}

    def responses(self, path_parameters: bool) -> dict[int | str, dict[str, Any]]:
        """Every status the route can answer; `path_parameters`: the /models/{name}/... forms,
        which can also meet the router's 404 and 405 (`routing_errors`)."""
        ok: dict[str, Any] = {
            "description": "arrays in the user's units; Accept: application/x-npy sends one "
            "array (?output=NAME), application/x-npz all of them",
            "content": {
                "application/json": {"schema": self.response_schema},
                "application/x-npy": {"schema": BINARY},
                "application/x-npz": {"schema": BINARY},
            },
            "headers": BINARY_RESPONSE_HEADERS,
        }
        if self.image_output is not None:
            ok["description"] += f"; image models: Accept: image/png sends {self.image_output}"
            ok["content"]["image/png"] = {"schema": BINARY}
            ok["headers"] = {
                **BINARY_RESPONSE_HEADERS,
                **PNG_RESPONSE_HEADERS,
                **self.image_output_headers,
            }
        responses: dict[int | str, dict[str, Any]] = {
            200: ok,
            **(routing_errors() if path_parameters else {404: _error("no default model")}),
            400: _error("malformed JSON, npy, image or multipart body"),
            406: _error(
                "Accept names no format this route can send (image/png: image models only)"
            ),
            413: _error("body, batch, n or image pixels above the configured limit"),
            415: _error(
                "Content-Type is not application/json or application/x-npy (nor, for image "
                "models on /reconstruct and /anomaly-score, image/png, image/jpeg or "
                "multipart/form-data)"
            ),
            422: _error("bad shape, dtype, NaN/Inf, empty batch or a bad field"),
            503: _error(
                "models are not loaded yet, every model slot is busy, or the request took "
                "longer than VAE_REQUEST_TIMEOUT_S",
                RETRY_AFTER,
            ),
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
                "samples": {"type": ["integer", "null"], "minimum": 1},
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
        image_input=True,
        image_output="the outputs as one image, or a grid of them for several items",
    ),
    "sample": OperationDoc(
        summary="Generate new data from the prior",
        description="`n` draws z ~ N(0, temperature^2 I) from `seed`, decoded to user units. "
        "VAEs only.",
        request_schema=_object(
            {
                "n": {"type": ["integer", "null"], "minimum": 1},
                "seed": SEED,
                "temperature": {"type": ["number", "null"], "minimum": 0},
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
        image_output="the samples as a grid of images (latents only in JSON/npz)",
    ),
    "anomaly-score": OperationDoc(
        summary="Anomaly scores with the calibrated threshold",
        description="Higher is more anomalous. `is_anomaly` compares with the threshold fixed "
        "on validation data; `tail_probability` is the share of normal validation items that "
        "scored at least as high. `score_type` picks recon_mse, neg_elbo (VAEs) or "
        "recon_complexity (images: the error against that of normal images as busy); "
        "`per_feature: true` adds each feature's squared error.",
        request_schema=_object(
            {
                "inputs": NESTED_NUMBERS,
                "score_type": {"enum": ["recon_mse", "neg_elbo", "recon_complexity", None]},
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
        extra_errors={
            409: "neg_elbo asked of a model without a posterior, or recon_complexity of a "
            "model of tables"
        },
        image_input=True,
        image_output="heat maps of each pixel's error (a grid for several items), with "
        "scores, threshold and is_anomaly as X-* headers",
        image_output_headers=HEAT_MAP_HEADERS,
    ),
}


# --------------------------------------------------------------------------- routing errors


def routing_errors(not_found: dict[str, Any] = ERROR_BODY) -> dict[int | str, dict[str, Any]]:
    """What a route with path parameters can answer besides its own statuses.

    An escaped "/" in a parameter (`/models/a%2Fencode`) is a "/" by the time the router sees
    the path, so the path may name no route (404) or a route of another method (405). FastAPI
    documents a 422 validation body for every route with parameters unless the route names one;
    ours is answered in ERROR_BODY (string parameters cannot fail validation today).
    """
    return {
        404: {
            "description": "unknown model or version, or no route at this path",
            "content": {"application/json": {"schema": not_found}},
        },
        405: _error("the path names a route of another method"),
        422: _error("the path parameters do not match the route"),
    }


# --------------------------------------------------------------------------- metadata, health

NOT_READY = _error("models are not loaded yet", RETRY_AFTER)
HEALTH = _object({"status": {"const": "ok"}}, ["status"])
READY = _object(
    {
        "status": {"const": "ready"},
        "models": {"type": "object", "additionalProperties": {"type": "string"}},
        "default_model": {"type": ["string", "null"]},
        "refused": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    ["status", "models", "default_model", "refused"],
)
LOADING = _object({"status": {"const": "loading"}}, ["status"])
MODEL_METADATA = _object(
    {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "kind": {"type": "string", "enum": ["vae", "ae", "sparse_ae", "denoising_ae"]},
        "created_at": {"type": "string"},
        "input": {"type": "object"},
        "accepted_input_layouts": {"type": "array", "items": ANY_ARRAY},
        "latent_dim": {"type": "integer"},
        "likelihood": {"type": "object"},
        "preprocessing": {"type": "string"},
        "value_range": {
            "type": ["object", "null"],
            "description": "user-unit values the model sees as 0 and 1 (an image's black and "
            "white); one entry or one per feature; null for standardised data",
            "properties": {"low": NUMBER_LIST, "high": NUMBER_LIST},
            "required": ["low", "high"],
        },
        "anomaly": {"type": "object"},
        "operations": {"type": "array", "items": {"type": "string"}},
        "metrics": {"type": "object"},
        "versions": {"type": "array", "items": {"type": "string"}},
    },
    ["name", "version", "kind", "input", "latent_dim", "operations", "versions"],
)
MODEL_LIST = _object(
    {
        "default_model": {"type": ["string", "null"]},
        "models": {"type": "array", "items": MODEL_METADATA},
    },
    ["default_model", "models"],
)


def health_responses() -> dict[int | str, dict[str, Any]]:
    return {200: json_body("the process answers", HEALTH)}


def ready_responses() -> dict[int | str, dict[str, Any]]:
    return {
        200: json_body("every model loaded and ran its warm-up batch", READY),
        503: {**json_body("models are still loading", LOADING), "headers": RETRY_AFTER},
    }


def models_responses() -> dict[int | str, dict[str, Any]]:
    return {200: json_body("every loaded model, served versions", MODEL_LIST), 503: NOT_READY}


def model_responses() -> dict[int | str, dict[str, Any]]:
    return {
        200: json_body("the model version's public metadata", MODEL_METADATA),
        **routing_errors(),
        503: NOT_READY,
    }


_DRIFT_COLUMN = _object(
    {
        "dimension": {"type": "integer", "description": "latent dimension (dimensions only)"},
        "feature": {"type": "integer", "description": "feature column (features only)"},
        "name": {"type": "string", "description": "the feature's name, when the bundle has it"},
        "statistic": {"type": "number"},
        "p_value": {"type": "number", "description": "Holm-adjusted over the columns"},
        "drifted": {"type": "boolean"},
        "mean_shift_in_sd": {"type": "number"},
    },
    ["statistic", "p_value", "drifted", "mean_shift_in_sd"],
)
MONITORING_REPORT = _object(
    {
        "model": {"type": "string"},
        "version": {"type": "string"},
        "score_type": {"type": "string"},
        "window": {
            "type": "object",
            "description": "items judged (the most recent, over every worker), the window's "
            "size, and from/to (Unix seconds) once it holds any",
        },
        "alpha": {"type": "number"},
        "anomaly_rate": {"type": ["number", "null"]},
        "expected_anomaly_rate": {"type": "number"},
        "calibration_items": {
            "type": "integer",
            "description": "normal scores the threshold was set from: the fewer, the less "
            "sure its promised rate, which the anomaly-rate test takes into account",
        },
        "threshold": {"type": "number"},
        "anomaly_rate_test": {
            "type": "object",
            "description": "one-sided beta-binomial test (the promised rate with the "
            "calibration's own uncertainty): flagged, p_value, alert",
        },
        "score_histogram": {
            "type": ["object", "null"],
            "description": "the window's scores and the reference's as shares of each on one "
            "set of bins (edges), with the shares below and above them and the threshold",
        },
        "time_windows": {
            "type": "array",
            "description": "the anomaly rate of the last 5 minutes and hour: seconds, items, "
            "complete, anomaly_rate, anomaly_rate_test",
            "items": {"type": "object"},
        },
        "feedback": {
            "type": ["object", "null"],
            "description": "from labels posted to .../feedback: n, precision, recall, "
            "false_alarm_rate and the counts behind them",
        },
        "score_drift": {
            "type": ["object", "null"],
            "description": "two-sample Kolmogorov-Smirnov of the window's scores against the "
            "reference: statistic, p_value, drifted",
        },
        "input_drift": {
            "type": ["object", "null"],
            "description": "per latent dimension (and, for tables, per feature) "
            "Kolmogorov-Smirnov, Holm-corrected: drifted, dimensions, features",
            "properties": {
                "drifted": {"type": "boolean"},
                "dimensions": {"type": "array", "items": _DRIFT_COLUMN},
                "features": {"type": "array", "items": _DRIFT_COLUMN},
            },
        },
        "missing": {
            "type": "array",
            "items": {"type": "string"},
            "description": "what keeps a verdict from being given (too few items, no reference)",
        },
    },
    ["model", "version", "window", "alpha", "expected_anomaly_rate", "anomaly_rate"],
)


FEEDBACK_REQUEST = _object(
    {
        "labels": {
            "type": "array",
            "minItems": 1,
            "maxItems": 10_000,
            "items": _object(
                {
                    "request_id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 128,
                        "description": "the X-Request-ID of the scoring answer",
                    },
                    "item": {
                        "type": "integer",
                        "minimum": 0,
                        "default": 0,
                        "description": "the item's index in that request",
                    },
                    "anomaly": {"type": "boolean"},
                },
                ["request_id", "anomaly"],
            ),
        }
    },
    ["labels"],
)
FEEDBACK_ANSWER = _object(
    {
        "accepted": {"type": "integer"},
        "unknown": {
            "type": "integer",
            "description": "labels whose item no worker remembers (too old, or never scored)",
        },
        "unknown_labels": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "indexes of the first 20 of them in the request's labels",
        },
    },
    ["accepted", "unknown", "unknown_labels"],
)


def feedback_request_body() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": FEEDBACK_REQUEST,
                    "example": {
                        "labels": [
                            {"request_id": "4bf92f3577b34da6a3ce929d0e0e4736", "anomaly": True},
                            {"request_id": "batch-17", "item": 3, "anomaly": False},
                        ]
                    },
                }
            },
        }
    }


def feedback_responses() -> dict[int | str, dict[str, Any]]:
    return {
        200: json_body("how many labels found their item", FEEDBACK_ANSWER),
        400: _error("the body is not JSON"),
        **routing_errors(),
        409: _error("monitoring is off (VAE_MONITORING=false)"),
        413: _error("the body is above 1 MiB"),
        422: _error("a label is not what it should be; the error names it"),
        503: NOT_READY,
    }


def monitoring_responses() -> dict[int | str, dict[str, Any]]:
    return {
        200: json_body("the monitor's verdicts", MONITORING_REPORT),
        **routing_errors(),
        409: _error("monitoring is off (VAE_MONITORING=false)"),
        503: NOT_READY,
    }


# --------------------------------------------------------------------------- v2 protocol
# The Open Inference Protocol's own bodies (its REST spec), errors included: {"error": "..."}.

V2_ERROR_BODY = _object({"error": {"type": "string"}}, ["error"])
V2_LIVE = _object({"live": {"type": "boolean"}}, ["live"])
V2_MODEL_READY = _object(
    {"name": {"type": "string"}, "ready": {"type": "boolean"}}, ["name", "ready"]
)
V2_DATATYPE = {
    "type": "string",
    "description": "FP16/32/64, (U)INT8/16/32/64 are read and converted to float32",
}
V2_TENSOR_METADATA = _object(
    {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
    ["name", "datatype", "shape"],
)
V2_SERVER_METADATA = _object(
    {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
    ["name", "version", "extensions"],
)
V2_MODEL_METADATA = _object(
    {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": V2_TENSOR_METADATA},
        "outputs": {"type": "array", "items": V2_TENSOR_METADATA},
    },
    ["name", "platform", "inputs", "outputs"],
)
V2_INFER_REQUEST = _object(
    {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": _object(
                {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": V2_DATATYPE,
                    "parameters": {"type": "object"},
                    "data": ANY_ARRAY,
                },
                ["name", "shape", "datatype"],
            ),
        },
        "outputs": {
            "type": "array",
            "items": _object(
                {"name": {"type": "string"}, "parameters": {"type": "object"}}, ["name"]
            ),
        },
    },
    ["inputs"],
)
V2_INFER_EXAMPLE = {
    "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": DIGIT}],
    "outputs": [{"name": "anomaly_score"}],
}
V2_INFER_BINARY_OUTPUT_EXAMPLE = {
    **V2_INFER_EXAMPLE,
    "outputs": [{"name": "anomaly_score", "parameters": {"binary_data": True}}],
}
V2_INFER_RESPONSE = _object(
    {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": _object(
                {
                    "name": {"type": "string"},
                    "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "parameters": {"type": "object"},
                    "data": NUMBER_LIST,
                },
                ["name", "datatype", "shape"],
            ),
        },
    },
    ["model_name", "model_version", "outputs"],
)
V2_HEADER_LENGTH = {
    "description": "binary tensor data extension: the length of the JSON part, the raw "
    "little-endian tensor bytes follow it",
    "schema": {"type": "integer", "minimum": 0},
}


def _v2_error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = json_body(description, V2_ERROR_BODY)
    if headers:
        response["headers"] = headers
    return response


def v2_ready_responses() -> dict[int | str, dict[str, Any]]:
    ready = _object({"ready": {"type": "boolean"}}, ["ready"])
    return {
        200: json_body("every model loaded", ready),
        503: {**json_body("models are still loading", ready), "headers": RETRY_AFTER},
    }


def v2_model_responses(schema: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {
        200: json_body("the model", schema),
        # Routing errors use the service's body; an unknown model the protocol's.
        **routing_errors({"anyOf": [V2_ERROR_BODY, ERROR_BODY]}),
        503: _v2_error("models are not loaded yet", RETRY_AFTER),
    }


def v2_infer_openapi_extra() -> dict[str, Any]:
    return {
        "parameters": [
            {"name": "Inference-Header-Content-Length", "in": "header", **V2_HEADER_LENGTH}
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": V2_INFER_REQUEST,
                    "examples": {
                        "json": {"summary": "JSON tensors", "value": V2_INFER_EXAMPLE},
                        "binary_output": {
                            "summary": "the output as raw bytes after the JSON part",
                            "value": V2_INFER_BINARY_OUTPUT_EXAMPLE,
                        },
                    },
                },
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "binary tensor data extension: the JSON request, then the "
                    "raw tensors its inputs' parameters.binary_data_size announce",
                },
            },
        },
    }


def v2_infer_responses() -> dict[int | str, dict[str, Any]]:
    return {
        **v2_model_responses(V2_INFER_RESPONSE),
        200: {
            "description": "the outputs; with binary_data outputs, the JSON part then the "
            "raw tensor bytes",
            "content": {
                "application/json": {"schema": V2_INFER_RESPONSE},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
            "headers": {"Inference-Header-Content-Length": V2_HEADER_LENGTH},
        },
        400: _v2_error("malformed request, bad tensor, or an output the model lacks"),
        413: _v2_error("body or batch above the configured limit"),
    }
