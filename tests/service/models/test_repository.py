"""Loading a model repository: version choice, pins, refusals, defaults, providers, settings.

Each test builds its own repository in tmp_path from copies of the session's trained bundles.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api.app import create_app
from service.models.repository import ModelRepository, RepositoryError, version_key
from service.settings import ServiceSettings

ONE_ITEM = {"inputs": [[0.0] * 64]}


def copy_bundle(
    source_repo: Path, source: str, root: Path, target: str, *, edit_manifest: bool = True
) -> Path:
    """Copy `source` ("name/version") to `root/target`; rename model.json to match."""
    destination = root / target
    shutil.copytree(source_repo / source, destination)
    if edit_manifest:
        name, version = target.split("/")
        set_manifest(destination, name=name, version=version)
    return destination


def set_manifest(bundle: Path, **fields: Any) -> None:
    path = bundle / "model.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest, indent=2))


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def settings_for(root: Path, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(model_repository=root, intra_op_threads=1, **overrides)


@contextmanager
def serving(settings: ServiceSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


# --------------------------------------------------------------------------- versions


def test_version_key_is_natural_order() -> None:
    assert sorted(["10", "2", "1", "1.10", "1.9"], key=version_key) == [
        "1",
        "1.9",
        "1.10",
        "2",
        "10",
    ]


def test_newest_version_is_chosen_in_natural_order(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/2")
    copy_bundle(model_repository, "tiny-vae/2", tmp_path, "tiny-vae/10")
    repository = ModelRepository.load(settings_for(tmp_path))
    assert repository.versions_of("tiny-vae") == ["2", "10"]
    assert repository.served_version["tiny-vae"] == "10"
    assert repository.resolve("tiny-vae", None).version == "10"
    assert repository.default_name == "tiny-vae"  # the only model
    assert repository.refused == {}


def test_newest_version_is_served_over_http(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/2")
    copy_bundle(model_repository, "tiny-vae/2", tmp_path, "tiny-vae/10")
    with serving(settings_for(tmp_path)) as client:
        body = client.post("/models/tiny-vae/encode", json=ONE_ITEM).json()
        assert body["model"] == {"name": "tiny-vae", "version": "10"}
        assert client.get("/models/tiny-vae").json()["versions"] == ["2", "10"]


def test_bundle_whose_manifest_disagrees_with_its_folder_is_refused(
    model_repository: Path, tmp_path: Path
) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    # model.json still says tiny-vae/2: the folder says 3
    copy_bundle(model_repository, "tiny-vae/2", tmp_path, "tiny-vae/3", edit_manifest=False)
    # a name mismatch as well
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "other/1", edit_manifest=False)
    repository = ModelRepository.load(settings_for(tmp_path))
    assert set(repository.refused) == {"tiny-vae/3", "other/1"}
    assert "tiny-vae/2" in repository.refused["tiny-vae/3"]
    assert "folder" in repository.refused["tiny-vae/3"]
    assert "other/1" in repository.refused["other/1"]
    assert repository.versions_of("tiny-vae") == ["1"]
    assert "other" not in repository.models


# --------------------------------------------------------------------------- pins


def test_pinned_version_is_served_at_the_named_route(
    model_repository: Path, tmp_path: Path
) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    copy_bundle(model_repository, "tiny-vae/2", tmp_path, "tiny-vae/2")
    with serving(settings_for(tmp_path, pinned_versions="tiny-vae=1")) as client:
        named = client.post("/models/tiny-vae/encode", json=ONE_ITEM).json()
        assert named["model"] == {"name": "tiny-vae", "version": "1"}
        exact = client.post("/models/tiny-vae/versions/2/encode", json=ONE_ITEM).json()
        assert exact["model"] == {"name": "tiny-vae", "version": "2"}
        assert client.get("/readyz").json()["models"] == {"tiny-vae": "1"}


def test_pin_to_a_missing_version_fails(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    with pytest.raises(RepositoryError, match=r"tiny-vae=7"):
        ModelRepository.load(settings_for(tmp_path, pinned_versions="tiny-vae=7"))


def test_malformed_pin_fails_settings_validation(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="name=version"):
        settings_for(tmp_path, pinned_versions="tiny-vae")


# --------------------------------------------------------------------------- refusals


def test_corrupt_bundle_is_refused_and_the_rest_serve(
    model_repository: Path, tmp_path: Path
) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    corrupt = copy_bundle(model_repository, "tiny-vae/2", tmp_path, "tiny-vae/2")
    copy_bundle(model_repository, "tiny-ae/1", tmp_path, "tiny-ae/1")
    flip_byte(corrupt / "encoder.onnx")
    settings = settings_for(tmp_path, default_model="tiny-ae")

    repository = ModelRepository.load(settings)
    assert set(repository.refused) == {"tiny-vae/2"}
    assert "sha256" in repository.refused["tiny-vae/2"]
    assert repository.served_version == {"tiny-vae": "1", "tiny-ae": "1"}

    with serving(settings) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert "sha256" in ready.json()["refused"]["tiny-vae/2"]
        assert client.post("/models/tiny-vae/encode", json=ONE_ITEM).json()["model"] == {
            "name": "tiny-vae",
            "version": "1",
        }
        missing = client.post("/models/tiny-vae/versions/2/encode", json=ONE_ITEM)
        assert missing.status_code == 404
        assert client.post("/encode", json=ONE_ITEM).status_code == 200


def test_bundle_with_missing_graph_is_refused(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    broken = copy_bundle(model_repository, "tiny-vae/2", tmp_path, "tiny-vae/2")
    (broken / "decoder.onnx").unlink()
    repository = ModelRepository.load(settings_for(tmp_path))
    assert "decoder.onnx" in repository.refused["tiny-vae/2"]
    assert "missing" in repository.refused["tiny-vae/2"]


def test_bundle_with_invalid_manifest_is_refused(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    broken = copy_bundle(model_repository, "tiny-vae/2", tmp_path, "tiny-vae/2")
    (broken / "model.json").write_text("{not json")
    repository = ModelRepository.load(settings_for(tmp_path))
    assert "model.json" in repository.refused["tiny-vae/2"]


def test_repository_of_only_bad_bundles_fails_naming_the_reasons(
    model_repository: Path, tmp_path: Path
) -> None:
    corrupt = copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    flip_byte(corrupt / "decoder.onnx")
    copy_bundle(model_repository, "tiny-ae/1", tmp_path, "tiny-ae/9", edit_manifest=False)
    with pytest.raises(RepositoryError) as raised:
        ModelRepository.load(settings_for(tmp_path))
    message = str(raised.value)
    assert "tiny-vae/1" in message
    assert "sha256" in message
    assert "tiny-ae/9" in message
    assert "folder" in message


def test_app_start_fails_on_a_repository_of_only_bad_bundles(
    model_repository: Path, tmp_path: Path
) -> None:
    corrupt = copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    flip_byte(corrupt / "encoder.onnx")
    with pytest.raises(RepositoryError, match="sha256"), serving(settings_for(tmp_path)):
        pass  # pragma: no cover - start-up must fail


def test_empty_repository_fails(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no loadable model"):
        ModelRepository.load(settings_for(tmp_path))


def test_missing_repository_fails(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="not a folder"):
        ModelRepository.load(settings_for(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- default model


def test_no_default_with_several_models_top_level_is_404(
    model_repository: Path, tmp_path: Path
) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    copy_bundle(model_repository, "tiny-ae/1", tmp_path, "tiny-ae/1")
    with serving(settings_for(tmp_path)) as client:
        response = client.post("/encode", json=ONE_ITEM)
        assert response.status_code == 404
        error = response.json()["error"]
        # what to set, exactly, and the names to choose from (issue 19)
        assert "VAE_DEFAULT_MODEL=tiny-ae" in error["message"]
        assert "2 models are served (tiny-ae, tiny-vae)" in error["message"]
        assert error["detail"]["models"] == ["tiny-ae", "tiny-vae"]
        assert client.post("/sample", json={}).status_code == 404
        assert client.get("/models").json()["default_model"] is None
        assert client.get("/readyz").status_code == 200
        assert client.post("/models/tiny-vae/encode", json=ONE_ITEM).status_code == 200


def test_single_model_becomes_the_default(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-ae/1", tmp_path, "tiny-ae/1")
    with serving(settings_for(tmp_path)) as client:
        response = client.post("/encode", json=ONE_ITEM)
        assert response.status_code == 200
        assert response.json()["model"] == {"name": "tiny-ae", "version": "1"}
        assert client.get("/readyz").json()["default_model"] == "tiny-ae"


@pytest.mark.parametrize("spelled", ["none", "None", ""])
def test_default_model_none_means_the_rule(
    model_repository: Path, tmp_path: Path, spelled: str
) -> None:
    """Compose and Kubernetes spell "unset" as `none`: the same rule as `make serve`."""
    copy_bundle(model_repository, "tiny-ae/1", tmp_path, "tiny-ae/1")
    repository = ModelRepository.load(settings_for(tmp_path, default_model=spelled))
    assert repository.default_name == "tiny-ae"


def test_default_model_that_did_not_load_fails(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-ae/1", tmp_path, "tiny-ae/1")
    corrupt = copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    flip_byte(corrupt / "encoder.onnx")
    with pytest.raises(RepositoryError, match="VAE_DEFAULT_MODEL=tiny-vae"):
        ModelRepository.load(settings_for(tmp_path, default_model="tiny-vae"))
    with pytest.raises(RepositoryError, match="VAE_DEFAULT_MODEL=nope"):
        ModelRepository.load(settings_for(tmp_path, default_model="nope"))


# --------------------------------------------------------------------------- providers


def test_unavailable_provider_falls_back_to_cpu(model_repository: Path, tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA; the fallback cannot be observed")
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    settings = settings_for(tmp_path, providers="cuda,cpu")
    assert settings.unavailable_providers() == ["CUDAExecutionProvider"]
    assert settings.provider_chain() == ["CPUExecutionProvider"]
    repository = ModelRepository.load(settings)
    served = repository.resolve("tiny-vae", None)
    assert served.bundle.encoder.get_providers() == ["CPUExecutionProvider"]
    with serving(settings) as client:
        assert client.post("/encode", json=ONE_ITEM).status_code == 200


def test_provider_names_are_normalised(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, providers=" CPU , cuda ")
    assert settings.providers == "cpu,cuda"
    assert settings.provider_chain()[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize("providers", ["bogus", "cpu,bogus", "", " , "])
def test_unknown_provider_fails_settings_validation(tmp_path: Path, providers: str) -> None:
    with pytest.raises(ValidationError, match="provider"):
        settings_for(tmp_path, providers=providers)


# --------------------------------------------------------------------------- settings from env


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VAE_PORT", "abc"),
        ("VAE_PORT", "70000"),
        ("VAE_MAX_BATCH_SIZE", "0"),
        ("VAE_MAX_SAMPLE_N", "-1"),
        ("VAE_MAX_BODY_BYTES", "10"),
        ("VAE_MAX_JSON_DEPTH", "1"),
        ("VAE_WORKERS", "0"),
        ("VAE_LOG_LEVEL", "loud"),
        ("VAE_PROVIDERS", "gpu"),
        ("VAE_PINNED_VERSIONS", "a=1,b"),
    ],
)
def test_bad_environment_fails_fast(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        ServiceSettings()
    field = variable.removeprefix("VAE_").lower()
    assert field in str(raised.value)


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VAE_MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("VAE_MAX_BATCH_SIZE", "12")
    monkeypatch.setenv("VAE_PINNED_VERSIONS", "tiny-vae=1, other=2")
    settings = ServiceSettings()
    assert settings.model_repository == tmp_path
    assert settings.max_batch_size == 12
    assert settings.pins() == {"tiny-vae": "1", "other": "2"}


def test_batch_limit_from_settings_is_enforced(model_repository: Path, tmp_path: Path) -> None:
    copy_bundle(model_repository, "tiny-vae/1", tmp_path, "tiny-vae/1")
    with serving(settings_for(tmp_path, max_batch_size=3, max_sample_n=2)) as client:
        assert client.post("/encode", json={"inputs": [[0.0] * 64] * 3}).status_code == 200
        assert client.post("/encode", json={"inputs": [[0.0] * 64] * 4}).status_code == 413
        assert client.post("/sample", json={"n": 2}).status_code == 200
        assert client.post("/sample", json={"n": 3}).status_code == 413


def test_empty_environment_values_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose writes `VAE_INTRA_OP_THREADS=` for an unset ${VAE_INTRA_OP_THREADS:-}
    monkeypatch.setenv("VAE_INTRA_OP_THREADS", "")
    monkeypatch.setenv("VAE_PINNED_VERSIONS", "")
    settings = ServiceSettings()
    assert settings.intra_op_threads is None
    assert settings.pins() == {}


def test_auto_threads_and_no_pins_spell_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose.yml writes these when the user sets nothing
    monkeypatch.setenv("VAE_INTRA_OP_THREADS", "auto")
    monkeypatch.setenv("VAE_PINNED_VERSIONS", "none")
    settings = ServiceSettings()
    assert settings.intra_op_threads is None
    assert settings.threads_per_session() >= 1
    assert settings.pins() == {}
