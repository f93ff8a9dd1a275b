"""Dynamic batching and the ASGI fast path: same answers, fewer onnxruntime calls."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from bundle.runtime import OnnxBundle
from service.api.app import create_app
from service.dataplane.batching import DynamicBatcher, split_result
from service.errors import InvalidInput
from service.models.results import EncodeResult, OperationResult, ScoreResult
from service.models.served_model import Limits, ServedModel
from service.settings import ServiceSettings

DIGITS = load_digits().data.astype(np.float32)


@pytest.fixture(scope="module")
def served(model_repository: Path) -> ServedModel:
    bundle = OnnxBundle(model_repository / "tiny-vae" / "2")
    return ServedModel(bundle, Limits(4096, 100, 64))


def test_split_result_cuts_per_item_fields_and_shares_the_rest() -> None:
    scores = np.arange(5.0)
    tail, errors = (scores / 10).astype(np.float32), np.ones((5, 3), np.float32)
    result = ScoreResult(scores, 1.5, scores > 1.5, "recon_mse", tail, errors)
    first, second = split_result(result, [2, 3])
    assert isinstance(first, ScoreResult)
    assert isinstance(second, ScoreResult)
    np.testing.assert_array_equal(first.scores, [0.0, 1.0])
    np.testing.assert_array_equal(second.scores, [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(second.is_anomaly, [True, True, True])
    np.testing.assert_array_equal(first.tail_probability, tail[:2])
    assert first.threshold == second.threshold == 1.5
    assert first.score_type == second.score_type == "recon_mse"
    assert second.feature_errors is not None
    assert second.feature_errors.shape == (3, 3)


def test_a_split_without_optional_fields_leaves_them_out() -> None:
    mu = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    _first, second = split_result(EncodeResult(mu, z=mu), [1, 2])
    assert isinstance(second, EncodeResult)
    assert list(second.fields()) == ["mu", "z"]  # a plain autoencoder: no logvar, no seed
    np.testing.assert_array_equal(second.z, mu[1:])


def _run_concurrently(
    batcher: DynamicBatcher, calls: list[tuple[Any, np.ndarray, Any]]
) -> list[Any]:
    async def main() -> list[Any]:
        tasks = [batcher.run(key, items, compute) for key, items, compute in calls]
        results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
        return results

    return asyncio.run(main())


def test_batched_scores_equal_scores_computed_alone(served: ServedModel) -> None:
    executor = ThreadPoolExecutor(2)
    batcher = DynamicBatcher(executor, max_items=1000, max_delay_seconds=0.05)
    requests = [DIGITS[i : i + 1 + i % 3] for i in range(0, 60, 3)]  # 20 requests, 1-3 items

    def compute(x: np.ndarray) -> ScoreResult:
        return served.score(x, score_type="neg_elbo", per_feature=True)

    results = _run_concurrently(batcher, [("k", served.check_inputs(r), compute) for r in requests])
    assert batcher.batches_run == 1  # all twenty joined one onnxruntime batch
    for request, result in zip(requests, results, strict=True):
        alone = compute(served.check_inputs(request))
        # Exactly what the caller would have got alone, to the last bit.
        np.testing.assert_array_equal(result.scores, alone.scores)
        np.testing.assert_array_equal(result.feature_errors, alone.feature_errors)
        assert result.threshold == alone.threshold
    executor.shutdown()


def test_a_batch_runs_at_max_items_without_waiting(served: ServedModel) -> None:
    executor = ThreadPoolExecutor(1)
    # A delay far longer than the test: only the size limit can release these batches.
    batcher = DynamicBatcher(executor, max_items=4, max_delay_seconds=60.0)

    def compute(x: np.ndarray) -> OperationResult:
        return served.reconstruct(x, samples=None, seed=None)

    calls = [("k", served.check_inputs(DIGITS[i : i + 1]), compute) for i in range(8)]
    results = _run_concurrently(batcher, calls)
    assert batcher.batches_run == 2
    assert all(r.outputs.shape == (1, 64) for r in results)
    executor.shutdown()


def test_one_bad_request_does_not_fail_its_batch(served: ServedModel) -> None:
    executor = ThreadPoolExecutor(1)
    batcher = DynamicBatcher(executor, max_items=100, max_delay_seconds=0.05)

    def compute(x: np.ndarray) -> OperationResult:
        if np.any(x < 0):
            raise InvalidInput("negative values refused by this test's computation")
        return served.reconstruct(x, samples=None, seed=None)

    good = [served.check_inputs(DIGITS[i : i + 1]) for i in range(3)]
    bad = -served.check_inputs(DIGITS[5:6]) - 1.0
    results = _run_concurrently(
        batcher, [("k", good[0], compute), ("k", bad, compute), ("k", good[1], compute)]
    )
    assert isinstance(results[1], InvalidInput)
    np.testing.assert_array_equal(
        results[0].outputs, served.reconstruct(good[0], samples=None, seed=None).outputs
    )
    np.testing.assert_array_equal(
        results[2].outputs, served.reconstruct(good[1], samples=None, seed=None).outputs
    )
    executor.shutdown()


@pytest.fixture(scope="module")
def clients(settings: ServiceSettings) -> Any:
    """Four apps on the same repository: fast path (default), FastAPI routes, batching on,
    inline calls never coalesced."""
    variants = {
        "fast": settings,
        "alone": settings.model_copy(update={"coalesce_inline_calls": False}),
        "routed": settings.model_copy(update={"fast_path": False}),
        "batched": settings.model_copy(
            update={"dynamic_batching": True, "batching_max_delay_us": 200}
        ),
    }
    opened = {name: TestClient(create_app(s)) for name, s in variants.items()}
    for client in opened.values():
        client.__enter__()
    yield opened
    for client in opened.values():
        client.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/encode", {"inputs": DIGITS[:3].tolist()}),
        ("/encode", {"inputs": DIGITS[:2].tolist(), "sample": True, "seed": 3}),
        ("/decode", {"latents": [[0.5] * 8, [-1.0] * 8]}),
        ("/reconstruct", {"inputs": DIGITS[:2].reshape(2, 1, 8, 8).tolist()}),
        ("/reconstruct", {"inputs": DIGITS[:2].tolist(), "samples": 3, "seed": 1}),
        ("/sample", {"n": 3, "seed": 9}),
        ("/models/tiny-vae/anomaly-score", {"inputs": DIGITS[:4].tolist(), "per_feature": True}),
        ("/anomaly-score", {"inputs": [[1.0, 2.0]]}),
        ("/models/nope/encode", {"inputs": DIGITS[:1].tolist()}),
        ("/anomaly-score", {"inputs": DIGITS[:1].tolist(), "score_type": "neg_elbo"}),
        (
            "/v2/models/digits-vae/infer",
            {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32",
                         "data": DIGITS[:2].ravel().tolist()}], "id": "r1"},
        ),
        (
            "/v2/models/digits-vae-encoder/versions/1/infer",
            {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64",
                         "data": DIGITS[:1].ravel().tolist()}],
             "outputs": [{"name": "mu", "parameters": {"binary_data": True}}]},
        ),
        ("/v2/models/digits-vae/infer", {"inputs": [{"name": "x", "shape": [3, 64]}]}),
        ("/v2/models/nope/infer", {"inputs": []}),
    ],
)  # fmt: skip
def test_every_path_gives_the_same_bytes(
    clients: dict[str, TestClient], path: str, body: dict[str, Any]
) -> None:
    answers = {name: client.post(path, json=body) for name, client in clients.items()}
    fast = answers["fast"]
    for name, answer in answers.items():
        assert answer.status_code == fast.status_code, name
        assert answer.content == fast.content, name
        assert answer.headers["content-type"] == fast.headers["content-type"], name


def _png(item: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.rint(item.reshape(8, 8) * 255 / 16).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _multipart(items: np.ndarray[Any, Any]) -> bytes:
    parts = [
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + _png(item) + b"\r\n"
        for item in items
    ]
    return b"".join(parts) + b"--b--\r\n"


MULTIPART = "multipart/form-data; boundary=b"


@pytest.mark.parametrize(
    ("path", "content_type", "body", "accept"),
    [
        ("/anomaly-score", "image/png", _png(DIGITS[0]), None),
        ("/anomaly-score?per_feature=true", MULTIPART, _multipart(DIGITS[:3]), "image/png"),
        ("/models/tiny-conv/reconstruct", MULTIPART, _multipart(DIGITS[3:5]), "image/png"),
        ("/reconstruct?samples=2&seed=4", "image/png", _png(DIGITS[5]), "application/x-npy"),
        ("/sample?n=3&seed=2", None, b"", "image/png"),
        ("/models/cancer-vae/anomaly-score", "image/png", _png(DIGITS[0]), None),
        ("/models/cancer-vae/reconstruct", "application/json", b'{"inputs": [[0]]}', "image/png"),
        ("/encode", "image/png", _png(DIGITS[0]), None),
        ("/reconstruct", "image/png", _png(DIGITS[0])[:40], None),
    ],
)  # fmt: skip
def test_image_requests_give_the_same_bytes_on_every_path(
    clients: dict[str, TestClient],
    path: str,
    content_type: str | None,
    body: bytes,
    accept: str | None,
) -> None:
    headers = {"content-type": content_type, "accept": accept}
    sent = {key: value for key, value in headers.items() if value is not None}
    answers = {
        name: client.post(path, content=body, headers=sent) for name, client in clients.items()
    }
    fast = answers["fast"]
    for name, answer in answers.items():
        assert answer.status_code == fast.status_code, name
        assert answer.content == fast.content, name
        for header in ("content-type", "x-scores", "x-grid-rows", "x-seed"):
            assert answer.headers.get(header) == fast.headers.get(header), (name, header)


def test_fast_path_passes_everything_else_to_fastapi(clients: dict[str, TestClient]) -> None:
    fast = clients["fast"]
    assert fast.get("/healthz").json() == {"status": "ok"}
    assert fast.get("/encode").status_code == 405  # GET on a POST route: FastAPI answers
    assert fast.post("/nothing-here", json={}).status_code == 404
    assert fast.get("/openapi.json").status_code == 200
