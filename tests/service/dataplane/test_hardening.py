"""The bounds of issue 18, piece by piece, in-process: body limits, the body budget and
deadline, memory errors as 4xx/503, memory given back, failing closed without keys, readiness
without paths, report files that vanish, and heat-map headers that stay small. The same bounds
against a real server: tests/e2e/test_hostile_clients.py."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.codecs import images, v2_json
from service.codecs.wire import RawRequest, decodes_inline
from service.dataplane import memory
from service.dataplane.body import (
    BODY_SLACK_BYTES,
    BodyBudget,
    BodyReader,
    array_body_limit,
    route_body_limit,
)
from service.dataplane.inference import Inference, Plan
from service.dataplane.state import ServiceState
from service.errors import (
    MalformedBody,
    NotReady,
    OutOfMemory,
    Overloaded,
    PayloadTooLarge,
    RequestBodyTimeout,
    excerpt,
)
from service.models.repository import ModelRepository
from service.models.results import DecodeResult
from service.server.cli import main
from service.settings import ApiKeyError, ServiceSettings
from tests.bundles import committed_repository

KEY = "hardening-test-key-5e8a1c"
REPO_ROOT = Path(__file__).resolve().parents[3]


def _receive(*chunks: bytes, then_wait: bool = False) -> Any:
    """An ASGI receive that hands out `chunks`, then waits forever (or ends the body)."""
    queue = list(chunks)

    async def receive() -> Mapping[str, Any]:
        if queue:
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue) or then_wait}
        if then_wait:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


# --------------------------------------------------------------------------- body limits


def test_each_route_s_limit_follows_from_its_model() -> None:
    settings = ServiceSettings(
        model_repository=committed_repository(), max_body_bytes=1 << 30, max_batch_size=4096
    )
    model = ModelRepository.load(settings).resolve("digits-vae", None)
    json_limit = route_body_limit(settings, model, "anomaly-score", "application/json")
    assert json_limit == 4096 * 64 * 32 + BODY_SLACK_BYTES
    npy_limit = route_body_limit(settings, model, "encode", "application/x-npy")
    assert npy_limit == 4096 * 64 * 8 + BODY_SLACK_BYTES
    assert route_body_limit(settings, model, "decode", None) == 4096 * 8 * 32 + BODY_SLACK_BYTES
    assert route_body_limit(settings, model, "sample", "application/json") == BODY_SLACK_BYTES
    image = route_body_limit(settings, model, "anomaly-score", "image/png")
    assert image == array_body_limit(0, "image", settings.max_image_pixels)
    # VAE_MAX_BODY_BYTES caps every derived limit
    capped = ServiceSettings(max_body_bytes=2048)
    assert route_body_limit(capped, model, "anomaly-score", None) == 2048


def test_a_declared_length_above_the_limit_is_refused_unread() -> None:
    async def main() -> None:
        reader = BodyReader(_receive(b"never read"), "5000", None)
        with pytest.raises(PayloadTooLarge) as refused:
            await reader.read(4096)
        assert refused.value.headers["Connection"] == "close"  # the rest is not read either

    asyncio.run(main())


def test_a_streamed_body_is_cut_off_as_it_passes_the_limit() -> None:
    async def main() -> None:
        reader = BodyReader(_receive(b"a" * 3000, b"a" * 3000, b"a" * 3000), None, None)
        with pytest.raises(PayloadTooLarge):
            await reader.read(4096)
        assert reader.received == 6000  # the third chunk was never asked for

    asyncio.run(main())


# The last: full-width digits, which str.isdigit() alone would take.
@pytest.mark.parametrize("length", ["9" * 5000, "-1", "1e3", " ", "\uff11\uff12"])
def test_a_content_length_that_is_not_a_byte_count_is_400(length: str) -> None:
    async def main() -> None:
        with pytest.raises(MalformedBody):
            await BodyReader(_receive(b"{}"), length, None).read(4096)

    asyncio.run(main())


def test_a_body_that_stops_short_of_its_length_is_408() -> None:
    """What the app sees when the protocol cuts a slow body off (service.server.http_limits), or the
    client goes away: the request ends before its Content-Length."""

    async def disconnecting() -> Mapping[str, Any]:
        return {"type": "http.disconnect"}

    async def main() -> None:
        with pytest.raises(RequestBodyTimeout) as short:
            await BodyReader(disconnecting, "100", None).read(4096)
        assert short.value.status == 408

    asyncio.run(main())


def test_the_budget_bounds_bodies_held_at_once_and_is_given_back() -> None:
    async def main() -> None:
        budget = BodyBudget(10_000, retry_after_s=2)
        first = BodyReader(_receive(b"a" * 6000), "6000", budget)
        assert await first.read(8000) == b"a" * 6000
        second = BodyReader(_receive(b"b" * 6000), "6000", budget)
        with pytest.raises(Overloaded) as full:
            await second.read(8000)
        assert full.value.status == 503
        assert full.value.headers["Retry-After"] == "2"
        first.release()
        assert budget.held == 0
        third = BodyReader(_receive(b"c" * 6000), None, budget)  # charged as it streams
        await third.read(8000)
        assert budget.held == 6000
        third.release()
        assert budget.held == 0

    asyncio.run(main())


# --------------------------------------------------------------------------- memory errors


def test_running_out_of_memory_is_413_decoding_and_503_computing() -> None:
    async def main() -> None:
        inference = Inference(ServiceSettings(inline_max_values=0))

        def exhausted() -> Plan:
            raise MemoryError

        with pytest.raises(PayloadTooLarge):
            await inference.run(exhausted)
        with pytest.raises(PayloadTooLarge):
            await inference.run(exhausted, inline=False)

        def compute(items: Any) -> DecodeResult:
            raise MemoryError

        plan = Plan(compute, np.zeros((1, 4), np.float32), (4,), None, values=4)
        with pytest.raises(OutOfMemory) as computing:
            await inference.run(lambda: plan)
        assert computing.value.status == 503
        assert inference.admission.running == 0  # every slot came back
        inference.close()

    asyncio.run(main())


def test_a_request_scope_answers_503_out_of_memory_and_gives_its_body_back() -> None:
    """ServiceState.serving(), what native and v2 requests share: the body read in it leaves
    the worker's budget when the request ends, however it ends; a MemoryError while answering
    (rendering a huge answer, say) is the worker's state, 503 with Retry-After."""

    async def main() -> None:
        settings = ServiceSettings()
        inference = Inference(settings)
        state = ServiceState(settings, ModelRepository(Path(".")), inference, ready=True)
        budget = inference.body_budget
        with state.serving() as call:
            assert await call.read_body(_receive(b"x" * 5000), "5000", 8000) == b"x" * 5000
            assert budget.held == 5000
        assert budget.held == 0

        async def answer_too_large() -> None:
            with state.serving() as call:
                await call.read_body(_receive(b"y" * 300), None, 8000)
                raise MemoryError

        with pytest.raises(OutOfMemory) as answering:
            await answer_too_large()
        assert answering.value.status == 503
        assert answering.value.headers == {"Retry-After": "1"}
        assert budget.held == 0
        with pytest.raises(PayloadTooLarge), state.serving() as call:
            await call.read_body(_receive(b"z" * 9000), "9000", 8000)
        assert budget.held == 0
        state.ready = False
        with pytest.raises(NotReady):
            state.serving()
        inference.close()

    asyncio.run(main())


@pytest.mark.skipif(memory._malloc_trim() is None, reason="no glibc malloc_trim here")
def test_a_large_request_is_followed_by_one_trim() -> None:
    async def main() -> None:
        inference = Inference(ServiceSettings())
        returner = inference.memory
        returner.after(100)  # small: nothing
        for _ in range(5):  # a burst: one trim, a moment after it
            returner.after(2 * memory.TRIM_AFTER_BYTES)
        await asyncio.sleep(memory.TRIM_INTERVAL_S + 0.5)
        assert returner.trims == 1
        inference.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- failing closed


@pytest.mark.parametrize(
    ("host", "keys", "allow", "refused"),
    [
        ("127.0.0.1", "", False, False),
        ("::1", "", False, False),
        ("localhost", "", False, False),
        ("0.0.0.0", "", False, True),
        ("10.1.2.3", "", False, True),
        ("vae.internal", "", False, True),
        ("0.0.0.0", "", True, False),
        ("0.0.0.0", KEY, False, False),
    ],
)
def test_without_keys_only_loopback_or_an_explicit_choice_starts(
    host: str, keys: str, allow: bool, refused: bool
) -> None:
    settings = ServiceSettings(host=host, api_keys=keys, allow_unauthenticated=allow)
    reason = settings.authentication_refusal(settings.api_key_list())
    assert (reason is not None) == refused
    if reason is not None:
        assert "VAE_ALLOW_UNAUTHENTICATED" in reason


def test_a_key_file_without_keys_stops_start_up(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.write_text("# rotated out\n\n")
    with pytest.raises(ApiKeyError, match="holds no keys"):
        ServiceSettings(api_keys=KEY, api_keys_file=empty).api_key_list()


def test_vae_serve_refuses_to_start_open_on_a_public_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("VAE_API_KEYS", "VAE_API_KEYS_FILE", "VAE_ALLOW_UNAUTHENTICATED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAE_HOST", "0.0.0.0")
    assert main(["--port", "1"]) == 2
    assert "no API keys" in capsys.readouterr().err


# --------------------------------------------------------------------------- readiness


def _repository_with_a_refused_version(root: Path, default_bundle: Path) -> Path:
    shutil.copytree(default_bundle, root / "digits-vae" / "1")
    shutil.copytree(default_bundle, root / "digits-vae" / "2")
    damaged = root / "digits-vae" / "2" / "encoder.onnx"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    return root


def test_readyz_gives_refusal_reasons_only_to_a_caller_with_a_key(tmp_path: Path) -> None:
    default_bundle = REPO_ROOT / "models" / "digits-vae" / "1"
    root = _repository_with_a_refused_version(tmp_path, default_bundle)
    settings = ServiceSettings(model_repository=root, api_keys=KEY, metrics=False)
    with TestClient(create_app(settings)) as keyed:
        anonymous = keyed.get("/readyz").json()["refused"]
        assert list(anonymous) == ["digits-vae/2"]
        assert str(tmp_path) not in str(anonymous)
        assert "sha256" not in str(anonymous)
        known = keyed.get("/readyz", headers={"X-API-Key": KEY}).json()["refused"]
        assert "sha256" in known["digits-vae/2"]
    # keyless on loopback (a developer's machine): the reasons are shown
    with TestClient(create_app(ServiceSettings(model_repository=root, metrics=False))) as local:
        assert "sha256" in local.get("/readyz").json()["refused"]["digits-vae/2"]


# --------------------------------------------------------------------------- small things


def test_a_report_file_removed_after_the_listing_is_404_not_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = tmp_path / "loss_curves.png"
    monkeypatch.setattr("service.api.pages.report_files", lambda model: {"loss_curves.png": gone})
    answer = client.get("/models/digits-vae/versions/1/report/loss_curves.png")
    assert answer.status_code == 404
    listing = client.get("/models/digits-vae/versions/1/report")
    assert listing.status_code == 200
    assert listing.json()["files"] == []


def test_heat_map_headers_stay_small_for_large_batches(client: TestClient) -> None:
    rows = np.resize(np.arange(64, dtype=np.float32) % 17, (200, 64)).tolist()
    answer = client.post("/anomaly-score", json={"inputs": rows}, headers={"accept": "image/png"})
    assert answer.status_code == 200
    assert "x-scores" not in answer.headers
    assert "200 items" in answer.headers["x-per-item-omitted"]
    assert sum(len(k) + len(v) for k, v in answer.headers.items()) < 4096
    few = client.post("/anomaly-score", json={"inputs": rows[:3]}, headers={"accept": "image/png"})
    assert len(few.headers["x-scores"].split(",")) == 3
    assert images.MAX_ITEM_HEADER_BYTES <= 2048


def test_head_is_answered_on_get_routes(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/models", "/v2"):
        assert client.head(path).status_code == 200, path


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("x" * 10_000, "'" + "x" * 60 + "..."),
        (10**5000, "<an integer of 16610 bits>"),
        (list(range(100_000)), "<an array of 100000 items>"),
        ("a\nb\x00", "'a\\nb\\x00'"),
        (1.5, "1.5"),
        (None, "None"),
    ],
    ids=["long string", "huge int", "long list", "control characters", "float", "null"],
)
def test_errors_quote_a_short_escaped_excerpt(value: object, shown: str) -> None:
    assert excerpt(value) == shown
    assert len(excerpt(value)) <= 64


def test_an_oversized_parameter_is_refused_with_a_short_message(client: TestClient) -> None:
    answer = client.post("/sample", json={"n": "9" * 50_000})
    assert answer.status_code == 422
    assert len(answer.content) < 512


@pytest.mark.parametrize(
    ("content_type", "size", "inline"),
    [
        ("application/json", 1_000, True),
        (None, 1_000, True),
        ("application/json", 100_000, False),
        ("application/x-npy", 200_000, True),
        ("application/x-npy", 2_000_000, False),
        ("image/png", 1_000, False),
        ("multipart/form-data; boundary=b", 100_000, False),
        ("text/plain", 100_000, False),  # refused with 415 when decoded, not here
    ],
)
def test_large_bodies_and_images_are_decoded_off_the_event_loop(
    content_type: str | None, size: int, inline: bool
) -> None:
    raw = RawRequest(content_type, None, {}, b"x" * size)
    assert decodes_inline(raw) is inline


@pytest.mark.parametrize(
    ("header_length", "size", "inline"),
    [
        (None, 1_000, True),
        (None, 100_000, False),  # all JSON: parsed in the executor
        ("200", 200_000, True),  # binary tensors behind a short header: a copy
        (" 200 ", 200_000, True),
        ("200", 2_000_000, False),
        ("90000", 200_000, False),  # a long JSON header is parsed in the executor
        ("9" * 50, 200_000, False),
        ("-1", 200_000, False),  # refused with 400 when decoded, not here
    ],
)
def test_v2_binary_bodies_up_to_a_mebibyte_decode_inline(
    header_length: str | None, size: int, inline: bool
) -> None:
    assert v2_json.decodes_inline(b"x" * size, header_length) is inline
