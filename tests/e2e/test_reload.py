"""Hot reload under load: a real `vae-serve --workers 2` on 127.0.0.1, real bundles, real files.

Client threads send valid requests the whole time; meanwhile version 2 is published and
POST /admin/reload called, then a corrupt version 3. Not one request may fail, and once the
reload has answered, every request, whichever worker answers it, must come from version 2.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits

from tests.e2e.processes import STARTUP_SECONDS, running_server

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"
CLIENT_THREADS = 4
DIGITS = load_digits().data[:8].tolist()


def publish_version(root: Path, version: str) -> Path:
    """As the trainer does: build the bundle in a hidden folder, rename it into place."""
    staging = root / "digits-vae" / f".{version}.staging"
    shutil.copytree(root / "digits-vae" / "1", staging)
    manifest = json.loads((staging / "model.json").read_text())
    manifest["version"] = version
    (staging / "model.json").write_text(json.dumps(manifest, indent=2))
    target = root / "digits-vae" / version
    staging.rename(target)
    return target


@dataclass
class Server:
    base: str
    root: Path
    process: subprocess.Popen[str]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "models"
    shutil.copytree(COMMITTED_BUNDLE, root / "digits-vae" / "1")
    env = {"VAE_HOST": "127.0.0.1", "VAE_WORKERS": "2", "VAE_LOG_LEVEL": "warning"}
    with running_server(env, root) as (base, process):
        # /readyz answers from whichever worker is ready first. A reload answers once every
        # worker that has started reports; repeat it until the second worker is among them, so
        # the load below reaches two serving workers.
        deadline = time.monotonic() + STARTUP_SECONDS
        while len(httpx.post(f"{base}/admin/reload", timeout=60).json()["others"]["reports"]) < 1:
            assert time.monotonic() < deadline, "the second worker did not start in time"
            time.sleep(0.2)
        yield Server(base, root, process)


@dataclass
class Load:
    """Client threads posting /encode until stopped; every answer is checked and recorded."""

    base: str
    expected_mu: npt.NDArray[np.float64]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (sent at, finished at, model version) of every good answer
    answers: list[tuple[float, float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def client(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30.0) as http:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    response = http.post("/encode", json={"inputs": DIGITS})
                except httpx.HTTPError as error:
                    self._fail(f"{type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    self._fail(f"{response.status_code}: {response.text[:300]}")
                    continue
                body = response.json()
                mu = np.asarray(body["mu"])
                if mu.shape != self.expected_mu.shape or not np.allclose(
                    mu, self.expected_mu, rtol=1e-5, atol=1e-6
                ):
                    self._fail(f"wrong mu from {body['model']}")
                    continue
                with self.lock:
                    self.answers.append((sent, time.monotonic(), body["model"]["version"]))

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def count(self) -> int:
        with self.lock:
            return len(self.answers)


def test_reload_under_load_fails_no_request(server: Server) -> None:
    reference = httpx.post(f"{server.base}/encode", json={"inputs": DIGITS}, timeout=10).json()
    assert reference["model"] == {"name": "digits-vae", "version": "1"}
    load = Load(server.base, np.asarray(reference["mu"]))
    threads = [threading.Thread(target=load.client) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)  # under load before anything changes
        published_at = time.monotonic()
        publish_version(server.root, "2")
        reloaded = httpx.post(f"{server.base}/admin/reload", timeout=60)
        reloaded_at = time.monotonic()
        time.sleep(1.5)

        corrupt = publish_version(server.root, "3")
        encoder = corrupt / "encoder.onnx"
        damaged = bytearray(encoder.read_bytes())
        damaged[100] ^= 0xFF
        encoder.write_bytes(bytes(damaged))
        refused = httpx.post(f"{server.base}/admin/reload", timeout=60)
        time.sleep(1.0)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert load.failures == [], load.failures[:5]
    assert load.count() > 50, "the load was too light to mean anything"

    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["loaded"] == ["digits-vae/2"]
    assert body["served"] == {"digits-vae": "2"}
    # The other worker was signalled, reloaded, and reported before the answer came.
    others = body["others"]
    assert others["signalled"] is True
    assert others["pending"] == []
    [other] = others["reports"].values()
    assert other["ok"] is True
    assert other["result"]["served"] == {"digits-vae": "2"}

    before = {v for _, finished, v in load.answers if finished < published_at}
    assert before == {"1"}
    after = [v for sent, _, v in load.answers if sent > reloaded_at]
    assert after, "no request was sent after the reload"
    assert set(after) == {"2"}, f"versions answered after the reload: {sorted(set(after))}"

    assert refused.status_code == 200, refused.text
    body = refused.json()
    assert "sha256" in body["refused"]["digits-vae/3"]["reason"]
    assert body["served"] == {"digits-vae": "2"}
    [other] = body["others"]["reports"].values()
    assert "digits-vae/3" in other["result"]["refused"]

    # Fresh connections land on either worker: every one serves version 2.
    for _ in range(12):
        fresh = httpx.post(f"{server.base}/encode", json={"inputs": DIGITS[:1]}, timeout=10)
        assert fresh.json()["model"] == {"name": "digits-vae", "version": "2"}
    ready = httpx.get(f"{server.base}/readyz", timeout=10).json()
    assert ready["models"] == {"digits-vae": "2"}
    assert "digits-vae/3" in ready["refused"]

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
