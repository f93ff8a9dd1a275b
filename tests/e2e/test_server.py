"""`vae-serve` as a real process on 127.0.0.1, called over TCP with httpx."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.bundles import committed_repository
from tests.e2e.processes import free_port as _free_port
from tests.e2e.processes import serve as _serve
from tests.e2e.processes import terminate
from tests.e2e.processes import wait_ready as _wait_ready


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    # Flags and VAE_* variables both reach the workers; use one of each.
    process = _serve(
        "--model-repository",
        str(committed_repository()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env={"VAE_WORKERS": "2", "VAE_LOG_LEVEL": "warning"},
    )
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base, process)
    yield base, process
    terminate(process)


def test_every_route_answers_over_tcp(server: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = server
    digits = load_digits().data[:5].tolist()
    with httpx.Client(base_url=base, timeout=10.0) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz").json()
        assert ready["models"] == {"digits-vae": "1"}

        encoded = http.post("/encode", json={"inputs": digits}).json()
        assert np.asarray(encoded["mu"]).shape == (5, 8)
        decoded = http.post("/decode", json={"latents": encoded["mu"]}).json()
        assert np.asarray(decoded["outputs"]).shape == (5, 1, 8, 8)
        recon = http.post("/models/digits-vae/reconstruct", json={"inputs": digits}).json()
        # The mean path is decode(mu): two routes, one answer.
        np.testing.assert_allclose(
            np.asarray(recon["outputs"]).reshape(5, 64),
            np.asarray(decoded["outputs"]).reshape(5, 64),
            rtol=1e-6,
            atol=1e-6,
        )
        sampled = http.post("/sample", json={"n": 3, "seed": 4}).json()
        assert np.asarray(sampled["outputs"]).shape == (3, 1, 8, 8)
        scored = http.post(
            "/models/digits-vae/versions/1/anomaly-score", json={"inputs": digits}
        ).json()
        assert len(scored["scores"]) == 5
        assert scored["is_anomaly"] == [s > scored["threshold"] for s in scored["scores"]]

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(digits, dtype=np.float32))
        binary = http.post(
            "/anomaly-score",
            content=buffer.getvalue(),
            headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
        )
        assert binary.status_code == 200
        scores = np.load(io.BytesIO(binary.content), allow_pickle=False)
        np.testing.assert_allclose(scores, scored["scores"], rtol=1e-12)

        bad = http.post("/encode", json={"inputs": [[1.0, 2.0]]})
        assert bad.status_code == 422
        assert "inputs" in bad.json()["error"]["message"]
        assert http.get("/models").json()["default_model"] == "digits-vae"
        assert http.get("/docs").status_code == 200


def test_sigterm_stops_the_server_cleanly(server: tuple[str, subprocess.Popen[str]]) -> None:
    base, process = server
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_a_repository_with_nothing_servable_fails_loudly(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{not json")
    process = _serve("--model-repository", str(tmp_path), "--port", str(_free_port()))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "no loadable model" in output
    assert "broken/1" in output


def test_a_bad_setting_fails_before_serving(tmp_path: Path) -> None:
    process = _serve(
        "--model-repository", str(committed_repository()), env={"VAE_MAX_BATCH_SIZE": "0"}
    )
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "max_batch_size" in output


def test_concurrent_requests_with_batching_get_what_they_would_alone() -> None:
    port = _free_port()
    process = _serve(
        "--model-repository",
        str(committed_repository()),
        "--port",
        str(port),
        env={
            "VAE_DYNAMIC_BATCHING": "true",
            "VAE_BATCHING_MAX_DELAY_US": "5000",
            "VAE_LOG_LEVEL": "warning",
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        rows = load_digits().data[:48]

        async def fire() -> list[dict[str, object]]:
            async with httpx.AsyncClient(base_url=base, timeout=30.0) as http:
                calls = [
                    http.post(
                        "/anomaly-score", json={"inputs": [row.tolist()], "per_feature": True}
                    )
                    for row in rows
                ]
                return [r.json() for r in await asyncio.gather(*calls)]

        together = asyncio.run(fire())
        with httpx.Client(base_url=base, timeout=30.0) as http:
            for row, answer in zip(rows, together, strict=True):
                alone = http.post(
                    "/anomaly-score", json={"inputs": [row.tolist()], "per_feature": True}
                ).json()
                assert answer == alone  # same scores, flags and per-feature errors, bit for bit
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
