"""Hot reload of the model repository, in process: the real app, real bundles, real files.

Each test serves its own repository in tmp_path, starting from a copy of the committed
digits-vae/1. A "new version" is that bundle copied to another version folder (written aside in
a hidden staging folder and renamed into place, as the trainer does) with model.json's version
changed to match; the checksums in model.json cover only the graphs, which stay the same.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from service.api.app import create_app
from service.dataplane.reload import Reloader
from service.dataplane.state import ServiceState
from service.models.repository import ModelRepository
from service.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMITTED_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"
DIGITS = load_digits().data[:4].astype(np.float32)
BODY = {"inputs": DIGITS.tolist()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    repository = tmp_path / "models"
    shutil.copytree(COMMITTED_BUNDLE, repository / "digits-vae" / "1")
    return repository


def add_version(root: Path, version: str, *, source: str = "1") -> Path:
    """Publish digits-vae/<version> the safe way: build it aside, rename it into place."""
    staging = root / "digits-vae" / f".{version}.staging"
    shutil.copytree(root / "digits-vae" / source, staging)
    manifest_path = staging / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = version
    manifest_path.write_text(json.dumps(manifest, indent=2))
    target = root / "digits-vae" / version
    staging.rename(target)
    return target


def flip_byte(path: Path, offset: int = 100) -> bytes:
    """Damage a graph in place so its sha256 no longer matches; returns the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return original


def settings_for(root: Path, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(model_repository=root, intra_op_threads=1, **overrides)


@contextmanager
def serving(settings: ServiceSettings, reload_dir: Path | None = None) -> Iterator[TestClient]:
    app = create_app(settings, reload_dir=reload_dir)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def encode(client: TestClient, path: str = "/encode") -> dict[str, Any]:
    response = client.post(path, json=BODY)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def reload(client: TestClient, status: int = 200) -> dict[str, Any]:
    response = client.post("/admin/reload")
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


# --------------------------------------------------------------------------- the endpoint


def test_a_new_version_is_loaded_warmed_and_served(root: Path) -> None:
    with serving(settings_for(root)) as client:
        before = encode(client)
        assert before["model"] == {"name": "digits-vae", "version": "1"}

        add_version(root, "2")
        body = reload(client)
        assert body["status"] == "reloaded"
        assert body["loaded"] == ["digits-vae/2"]
        assert body["kept"] == ["digits-vae/1"]
        assert body["unloaded"] == []
        assert body["replaced"] == []
        assert body["refused"] == {}
        assert body["served"] == {"digits-vae": "2"}
        assert body["default_model"] == "digits-vae"
        # Not started by vae-serve: one process, and the answer says so.
        assert body["others"]["signalled"] is False

        after = encode(client)
        assert after["model"] == {"name": "digits-vae", "version": "2"}
        # The same graphs: the same numbers.
        np.testing.assert_array_equal(np.asarray(after["mu"]), np.asarray(before["mu"]))
        old = encode(client, "/models/digits-vae/versions/1/encode")
        assert old["model"] == {"name": "digits-vae", "version": "1"}
        assert client.get("/readyz").json()["models"] == {"digits-vae": "2"}
        assert client.get("/models/digits-vae").json()["versions"] == ["1", "2"]


def test_a_reload_with_nothing_new_changes_nothing(root: Path) -> None:
    with serving(settings_for(root)) as client:
        body = reload(client)
        assert body["status"] == "unchanged"
        assert body["kept"] == ["digits-vae/1"]
        assert body["loaded"] == []
        assert body["refused"] == {}


def test_a_bundle_being_written_in_a_hidden_folder_is_ignored(root: Path) -> None:
    staging = root / "digits-vae" / ".2.staging"
    shutil.copytree(root / "digits-vae" / "1", staging)
    with serving(settings_for(root)) as client:
        body = reload(client)
        assert body["status"] == "unchanged"
        assert body["refused"] == {}
        assert client.get("/readyz").json()["refused"] == {}


def test_a_corrupt_new_version_is_refused_and_the_served_one_keeps_serving(root: Path) -> None:
    with serving(settings_for(root)) as client:
        add_version(root, "2")
        reload(client)
        corrupt = add_version(root, "3")
        flip_byte(corrupt / "encoder.onnx")

        body = reload(client)
        refusal = body["refused"]["digits-vae/3"]
        assert "sha256" in refusal["reason"]
        assert refusal["loaded_copy_serves"] is False
        assert body["loaded"] == []
        assert body["served"] == {"digits-vae": "2"}

        assert encode(client)["model"]["version"] == "2"
        missing = client.post("/models/digits-vae/versions/3/encode", json=BODY)
        assert missing.status_code == 404
        assert "sha256" in client.get("/readyz").json()["refused"]["digits-vae/3"]
        # Looked at once: a second reload does not load it again, and still reports it.
        again = reload(client)
        assert again["status"] == "unchanged"
        assert "digits-vae/3" in again["refused"]


def test_a_served_version_corrupted_in_place_keeps_its_loaded_copy(root: Path) -> None:
    with serving(settings_for(root)) as client:
        served = add_version(root, "2")
        reload(client)
        before = encode(client)
        original = flip_byte(served / "encoder.onnx")

        body = reload(client)
        refusal = body["refused"]["digits-vae/2"]
        assert "sha256" in refusal["reason"]
        assert refusal["loaded_copy_serves"] is True
        assert "digits-vae/2" in body["kept"]
        assert body["served"] == {"digits-vae": "2"}
        after = encode(client)
        assert after["model"]["version"] == "2"
        np.testing.assert_array_equal(np.asarray(after["mu"]), np.asarray(before["mu"]))

        # Repaired: the files match the loaded copy again, which goes on serving, unrefused.
        (served / "encoder.onnx").write_bytes(original)
        repaired = reload(client)
        assert repaired["refused"] == {}
        assert repaired["loaded"] == []
        assert repaired["replaced"] == []
        assert "digits-vae/2" in repaired["kept"]


def test_a_version_changed_in_place_that_validates_is_replaced(root: Path) -> None:
    with serving(settings_for(root)) as client:
        bundle = add_version(root, "2")
        reload(client)
        manifest_path = bundle / "model.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["created_at"] = "2030-01-01T00:00:00+00:00"
        manifest_path.write_text(json.dumps(manifest, indent=2))

        body = reload(client)
        assert body["replaced"] == ["digits-vae/2"]
        assert body["status"] == "reloaded"
        metadata = client.get("/models/digits-vae/versions/2").json()
        assert metadata["created_at"] == "2030-01-01T00:00:00+00:00"


def test_a_removed_version_is_unloaded(root: Path) -> None:
    with serving(settings_for(root)) as client:
        bundle = add_version(root, "2")
        reload(client)
        shutil.rmtree(bundle)

        body = reload(client)
        assert body["unloaded"] == ["digits-vae/2"]
        assert body["served"] == {"digits-vae": "1"}
        assert encode(client)["model"]["version"] == "1"
        assert client.post("/models/digits-vae/versions/2/encode", json=BODY).status_code == 404


def test_a_reload_that_would_serve_nothing_is_refused_whole(root: Path) -> None:
    with serving(settings_for(root, default_model="digits-vae")) as client:
        shutil.move(root / "digits-vae", root.parent / "parked")

        response = client.post("/admin/reload")
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "reload_refused"
        assert "no loadable model" in error["message"]
        assert error["detail"]["served"] == {"digits-vae": "1"}
        # Everything that served goes on serving.
        assert encode(client)["model"] == {"name": "digits-vae", "version": "1"}
        assert client.get("/readyz").status_code == 200

        shutil.move(root.parent / "parked", root / "digits-vae")
        assert reload(client)["status"] == "unchanged"


def test_a_reload_that_breaks_a_pin_is_refused_whole(root: Path) -> None:
    add_version(root, "2")
    with serving(settings_for(root, pinned_versions="digits-vae=2")) as client:
        assert encode(client)["model"]["version"] == "2"
        shutil.rmtree(root / "digits-vae" / "2")
        add_version(root, "3")

        error = reload(client, 409)["error"]
        assert "VAE_PINNED_VERSIONS" in error["message"]
        assert "digits-vae=2" in error["message"]
        # Neither the unload of 2 nor the load of 3 happened.
        assert encode(client)["model"]["version"] == "2"
        assert client.get("/models/digits-vae").json()["versions"] == ["1", "2"]


def test_a_reload_that_loses_the_default_model_is_refused_whole(root: Path) -> None:
    shutil.copytree(root / "digits-vae" / "1", root / "other" / "1")
    manifest_path = root / "other" / "1" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = "other"
    manifest_path.write_text(json.dumps(manifest, indent=2))
    with serving(settings_for(root, default_model="digits-vae")) as client:
        shutil.rmtree(root / "digits-vae")

        error = reload(client, 409)["error"]
        assert "VAE_DEFAULT_MODEL=digits-vae" in error["message"]
        assert encode(client)["model"] == {"name": "digits-vae", "version": "1"}


def test_the_route_is_documented() -> None:
    with serving(settings_for(COMMITTED_BUNDLE.parents[1])) as client:
        operation = client.get("/openapi.json").json()["paths"]["/admin/reload"]["post"]
    assert "every worker" in operation["summary"]
    assert {"200", "409", "503"} <= set(operation["responses"])
    content = operation["responses"]["200"]["content"]["application/json"]
    assert {"loaded", "unloaded", "refused", "kept", "served"} <= set(
        content["schema"]["properties"]
    )


# --------------------------------------------------------------------------- polling


def wait_for(condition: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_polling_picks_up_a_new_version_without_the_endpoint(root: Path) -> None:
    with serving(settings_for(root, reload_interval_s=0.1)) as client:
        add_version(root, "2")
        wait_for(lambda: encode(client)["model"]["version"] == "2")
        assert client.get("/readyz").json()["models"] == {"digits-vae": "2"}

        corrupt = add_version(root, "3")
        flip_byte(corrupt / "decoder.onnx")
        wait_for(lambda: "digits-vae/3" in client.get("/readyz").json()["refused"])
        assert encode(client)["model"]["version"] == "2"

        shutil.rmtree(root / "digits-vae" / "2")
        shutil.rmtree(corrupt)
        wait_for(lambda: client.get("/readyz").json()["models"] == {"digits-vae": "1"})
        assert client.get("/readyz").json()["refused"] == {}


def test_polling_is_off_by_default(root: Path) -> None:
    with serving(settings_for(root)) as client:
        add_version(root, "2")
        time.sleep(1.0)
        assert encode(client)["model"]["version"] == "1"


# --------------------------------------------------------------------------- several workers


def test_every_worker_sharing_the_signal_folder_reloads(root: Path, tmp_path: Path) -> None:
    """Two apps in one process stand in for two uvicorn workers of one server."""
    signals = tmp_path / "signals"
    signals.mkdir()
    settings = settings_for(root)
    with serving(settings, signals) as first, serving(settings, signals) as second:
        add_version(root, "2")
        body = reload(first)
        assert body["served"] == {"digits-vae": "2"}
        others = body["others"]
        assert others["signalled"] is True
        assert others["pending"] == []
        [(worker, report)] = others["reports"].items()
        assert worker != body["worker"]["id"]
        assert report["ok"] is True
        assert report["generation"] >= others["generation"]
        assert report["result"]["served"] == {"digits-vae": "2"}
        # The answer came after the other worker reported: it already serves version 2.
        assert encode(second)["model"]["version"] == "2"

        corrupt = add_version(root, "3")
        flip_byte(corrupt / "encoder.onnx")
        body = reload(second)
        assert "digits-vae/3" in body["refused"]
        [report] = body["others"]["reports"].values()
        assert "digits-vae/3" in report["result"]["refused"]
        assert encode(first)["model"]["version"] == "2"
    # Stopped workers withdraw their reports.
    assert list(signals.glob("worker-*")) == []


# --------------------------------------------------------------------------- the reloader


def test_callers_arriving_during_a_reload_share_the_next_one(root: Path) -> None:
    settings = settings_for(root)
    state = ServiceState(settings, repository=ModelRepository.load(settings), ready=True)

    async def scenario() -> None:
        reloader = Reloader(state, None)
        together = await asyncio.gather(reloader.reload(), reloader.reload())
        # Neither had looked at the disk yet: one reload served both.
        assert together[0] is together[1]

        first = asyncio.ensure_future(reloader.reload())
        while not reloader.busy:
            await asyncio.sleep(0)
        # Arriving while the first runs: the disk may have changed since it looked.
        later = await asyncio.gather(reloader.reload(), reloader.reload())
        assert later[0] is later[1]
        assert (await first) is not later[0]
        await reloader.stop()

    asyncio.run(scenario())


def test_unchanged_bundles_keep_their_loaded_copy(root: Path) -> None:
    settings = settings_for(root)
    repository = ModelRepository.load(settings)
    add_version(root, "2")
    reloaded, changes = repository.reload(settings)
    assert reloaded.loaded("digits-vae/1") is repository.loaded("digits-vae/1")
    assert changes.loaded == ["digits-vae/2"]
    assert changes.kept == ["digits-vae/1"]
    assert changes.served == {"digits-vae": ("1", "2")}
    # The previous repository is left as it was: requests holding it are unaffected.
    assert repository.versions_of("digits-vae") == ["1"]
    assert repository.served_version == {"digits-vae": "1"}


def test_polling_refuses_a_broken_repository_once_and_serves_on(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(settings_for(root, reload_interval_s=0.1)) as client:
        shutil.move(root / "digits-vae", root.parent / "parked")
        wait_for(lambda: "reload refused" in caplog.text)
        time.sleep(1.0)  # ten more polls: the same files, so no second attempt
        assert caplog.text.count("reload refused") == 1
        assert encode(client)["model"] == {"name": "digits-vae", "version": "1"}

        shutil.move(root.parent / "parked", root / "digits-vae")
        add_version(root, "2")
        wait_for(lambda: encode(client)["model"]["version"] == "2")
