"""The request kinds of the mix: each one's bytes and the one status it must get."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.bodies import JSON, NPY, OCTET, json_inputs, json_number, npy_bytes, v2_binary_infer
from bench.hostile_mix import hostile_requests
from bench.models import BenchModel
from bench.soak.config import MAX_BODY_BYTES, NPY_ROWS


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix and the one status it must get."""

    key: str
    title: str
    status: int  # the documented status (README "Call it", Statuses)
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    media_type: str = JSON  # the Content-Type its answer must carry

    @property
    def valid(self) -> bool:
        return self.status < 400


def post(
    key: str,
    title: str,
    status: int,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    media_type: str = JSON,
) -> Kind:
    headers = {"Content-Type": JSON} if headers is None else headers
    return Kind(key, title, status, "POST", path, headers, body, media_type)


def json_item(numbers: Sequence[str]) -> bytes:
    return ('{"inputs":[[' + ",".join(numbers) + "]]}").encode()


def digits_kinds(model: BenchModel) -> list[Kind]:
    """The mix against the server's default model (the committed 64-input bundle)."""
    rows, name, features = model.rows, model.name, model.features
    version = model.bundle.name
    one, batch = rows[:1], rows[:64]
    numbers = [json_number(v) for v in one[0]]
    v2_body, v2_head = v2_binary_infer(batch)
    v2_json = {
        "inputs": [{"name": "x", "shape": [1, features], "datatype": "FP32",
                    "data": [float(v) for v in one[0]]}]
    }  # fmt: skip
    # The declared shape needs 64 x features x 4 bytes; binary_data_size (and the bytes that
    # follow) say 4 fewer, a client's off-by-one.
    short = np.ascontiguousarray(batch, dtype="<f4").tobytes()[:-4]
    bad_head = json.dumps(
        {"inputs": [{"name": "x", "shape": [64, features], "datatype": "FP32",
                     "parameters": {"binary_data_size": len(short)}}]},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    latents = np.random.default_rng(0).standard_normal((4, 8)).round(3).tolist()
    # A real batch, just too big (about twice the limit): refused from its Content-Length.
    oversized = json_inputs(np.tile(one, (2 * MAX_BODY_BYTES // len(json_item(numbers)) + 1, 1)))
    v2_path = f"/v2/models/{name}/infer"
    return [
        post("reconstruct-json", "1 item, JSON", 200, "/reconstruct", json_item(numbers)),
        post("anomaly-json64", "64 items, JSON", 200, "/anomaly-score", json_inputs(batch)),
        post("encode-npy", f"{NPY_ROWS} items, npy in and out", 200,
             f"/models/{name}/versions/{version}/encode", npy_bytes(rows[:NPY_ROWS]),
             {"Content-Type": NPY, "Accept": NPY}, NPY),
        post("sample-seed", "n 8, seed 7", 200, "/sample", b'{"n":8,"seed":7}'),
        post("decode-json", "4 latents, JSON", 200, "/decode",
             json.dumps({"latents": latents}).encode()),
        post("v2-json", "1 item, JSON tensor", 200, v2_path, json.dumps(v2_json).encode()),
        post("v2-binary", "64 items, binary tensor in and out", 200, v2_path, v2_body,
             {"Content-Type": OCTET, "Inference-Header-Content-Length": str(v2_head)}, OCTET),
        Kind("readyz", "readiness", 200, "GET", "/readyz"),
        Kind("models", "model list", 200, "GET", "/models"),
        post("malformed-json", "JSON cut off after 40 bytes", 400, "/reconstruct",
             json_item(numbers)[:40]),
        post("wrong-features", f"{features - 1} features instead of {features}", 422,
             "/reconstruct", json_item(numbers[1:])),
        post("nan", "NaN as the first value", 422, "/reconstruct",
             json_item(["NaN", *numbers[1:]])),
        post("unknown-model", "model that is not loaded", 404,
             "/models/no-such-model/reconstruct", json_item(numbers)),
        post("empty-batch", "inputs []", 422, "/anomaly-score", b'{"inputs":[]}'),
        post("too-large", f"{len(oversized):,} bytes, limit {MAX_BODY_BYTES:,}", 413,
             "/reconstruct", oversized),
        post("wrong-content-type", "Content-Type text/plain", 415, "/reconstruct",
             json_item(numbers), {"Content-Type": "text/plain"}),
        post("not-acceptable", "Accept text/html", 406, "/reconstruct", json_item(numbers),
             {"Content-Type": JSON, "Accept": "text/html"}),
        post("v2-size-mismatch", "binary_data_size 4 bytes short of the shape", 400, v2_path,
             bad_head + short,
             {"Content-Type": OCTET, "Inference-Header-Content-Length": str(len(bad_head))}),
        # issue 18: bodies built to cost a worker as much as they can (bench/hostile_mix.py)
        *(post(h.key, h.title, h.status, h.path, h.body, h.headers)
          for h in hostile_requests(name, features)),
    ]  # fmt: skip


def image_kinds(model: BenchModel) -> list[Kind]:
    """A second model, addressed by name and by version (the server's default is the first)."""
    rows, name, version = model.rows, model.name, model.bundle.name
    return [
        post("reconstruct-784-json", "1 item, JSON", 200, f"/models/{name}/reconstruct",
             json_inputs(rows[:1])),
        post("anomaly-784-npy", f"{NPY_ROWS} items, npy in", 200,
             f"/models/{name}/versions/{version}/anomaly-score", npy_bytes(rows[:NPY_ROWS]),
             {"Content-Type": NPY}),
        post("wrong-features-784", "64 features instead of 784", 422,
             f"/models/{name}/reconstruct", json_inputs(rows[:1, :64])),
    ]  # fmt: skip


def build_kinds(models: Sequence[BenchModel]) -> list[Kind]:
    kinds: list[Kind] = []
    for model in models:
        kinds += digits_kinds(model) if model.key == "default" else image_kinds(model)
    return kinds
