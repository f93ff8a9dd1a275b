"""Tests for bundle.runtime and bundle.manifest on a real bundle trained by the real trainer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bundle.arrays import Float64Array
from bundle.manifest import (
    DECODER_FILENAME,
    ENCODER_FILENAME,
    FORMAT_VERSION,
    MANIFEST_FILENAME,
    ModelManifest,
    ScoreType,
    sha256_of,
)
from bundle.runtime import BundleError, OnnxBundle
from bundle.scoring import anomaly_scores, fixed_epsilon
from training.pipeline import TrainingOutcome


@pytest.fixture(scope="module")
def digits_x() -> Float64Array:
    """Raw digits in the user's units (0..16), flat (B, 64)."""
    data: Float64Array = load_digits().data[:40].astype(np.float64)
    return data


@pytest.fixture(scope="module")
def loaded(digits_vae: TrainingOutcome) -> OnnxBundle:
    return OnnxBundle(digits_vae.bundle_dir)


def _edit_manifest(bundle_dir: Path, change: Any) -> None:
    path = bundle_dir / MANIFEST_FILENAME
    entry = json.loads(path.read_text(encoding="utf-8"))
    change(entry)
    path.write_text(json.dumps(entry), encoding="utf-8")


# --- loading and shapes ------------------------------------------------------------------------


def test_bundle_loads_and_describes_itself(loaded: OnnxBundle, digits_vae: TrainingOutcome) -> None:
    assert loaded.kind == "vae"
    assert loaded.manifest == digits_vae.manifest
    assert loaded.input_shape == (64,)
    assert loaded.manifest.latent_dim == 2
    assert loaded.manifest.likelihood.kind == "bernoulli"
    assert set(loaded.manifest.anomaly.scores) == {"recon_mse", "neg_elbo", "recon_complexity"}
    assert loaded.manifest.anomaly.default_score == "recon_complexity"
    assert loaded.complexity is not None
    assert loaded.complexity.image_shape == (1, 8, 8)


@pytest.mark.parametrize("score_type", [None, "recon_mse", "neg_elbo", "recon_complexity"])
def test_scores_shape_and_finite(
    loaded: OnnxBundle, digits_x: Float64Array, score_type: ScoreType | None
) -> None:
    scores = loaded.scores(digits_x, score_type)
    assert scores.shape == (len(digits_x),)
    assert scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    if score_type == "recon_mse":
        assert np.all(scores >= 0.0)


def test_default_score_is_the_manifest_default(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    default = loaded.manifest.anomaly.default_score
    np.testing.assert_array_equal(loaded.scores(digits_x), loaded.scores(digits_x, default))


def test_score_types_differ(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    mse = loaded.scores(digits_x, "recon_mse")
    elbo = loaded.scores(digits_x, "neg_elbo")
    assert not np.allclose(mse, elbo)


def test_unknown_score_type_is_a_bundle_error(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    with pytest.raises(BundleError, match="unknown score type"):
        loaded.scores(digits_x[:2], "iwae")  # type: ignore[arg-type]


def test_to_model_input_accepts_flat_and_image_shaped(
    loaded: OnnxBundle, digits_x: Float64Array
) -> None:
    flat = loaded.to_model_input(digits_x)
    image = loaded.to_model_input(digits_x.reshape(-1, 1, 8, 8))
    assert flat.shape == (len(digits_x), 64)
    assert flat.dtype == np.float32
    assert flat.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(flat, image)
    # minmax with clip (0, 1) for a Bernoulli model: digits 0..16 land in [0, 1].
    assert flat.min() >= 0.0
    assert flat.max() <= 1.0
    np.testing.assert_allclose(flat, digits_x / 16.0, rtol=1e-6)


def test_scores_flat_equal_image_shaped(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    for score_type in ("recon_mse", "neg_elbo"):
        np.testing.assert_array_equal(
            loaded.scores(digits_x, score_type),
            loaded.scores(digits_x.reshape(-1, 1, 8, 8), score_type),
        )


def test_out_of_range_inputs_are_clipped(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    x = digits_x[:3].copy()
    louder = x * 10.0 + 16.0  # every pixel far above the training max
    np.testing.assert_array_equal(loaded.to_model_input(louder), np.ones((3, 64), np.float32))


def test_encode_model_shapes(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    encoding = loaded.encode_model(loaded.to_model_input(digits_x))
    assert encoding.mu.shape == (len(digits_x), 2)
    assert encoding.logvar is not None
    assert encoding.logvar.shape == (len(digits_x), 2)
    assert np.all(np.isfinite(encoding.mu))
    assert np.all(np.isfinite(encoding.logvar))


def test_decode_model_gives_bernoulli_means(loaded: OnnxBundle) -> None:
    z = fixed_epsilon(25, 2, seed=3) * np.float32(3.0)
    means = loaded.decode_model(z)
    assert means.shape == (25, 64)
    assert means.dtype == np.float32
    assert np.all((means >= 0.0) & (means <= 1.0))


def test_scores_equal_scoring_on_graph_outputs(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    x_model = loaded.to_model_input(digits_x)
    encoding = loaded.encode_model(x_model)
    anomaly = loaded.manifest.anomaly
    epsilon = fixed_epsilon(anomaly.elbo_samples, loaded.manifest.latent_dim, anomaly.elbo_seed)
    expected = anomaly_scores(
        "neg_elbo",
        x_model,
        encoding.mu,
        encoding.logvar,
        loaded.decode_model,
        "bernoulli",
        None,
        epsilon,
    )
    np.testing.assert_array_equal(loaded.scores(digits_x, "neg_elbo"), expected)


@pytest.mark.parametrize("score_type", ["recon_mse", "neg_elbo", "recon_complexity"])
def test_batch_scores_equal_one_by_one(
    loaded: OnnxBundle, digits_x: Float64Array, score_type: ScoreType
) -> None:
    batch = loaded.scores(digits_x, score_type)
    one_by_one = np.concatenate(
        [loaded.scores(digits_x[i : i + 1], score_type) for i in range(len(digits_x))]
    )
    np.testing.assert_array_equal(batch, one_by_one)


def test_two_loads_score_identically(digits_vae: TrainingOutcome, digits_x: Float64Array) -> None:
    first = OnnxBundle(digits_vae.bundle_dir).scores(digits_x, "neg_elbo")
    second = OnnxBundle(digits_vae.bundle_dir).scores(digits_x, "neg_elbo")
    np.testing.assert_array_equal(first, second)


def test_calibration_matches_the_served_scores(loaded: OnnxBundle, digits_x: Float64Array) -> None:
    # Normal digits score in the range the calibration saw: stored quantiles are in score units.
    for score_type in ("recon_mse", "neg_elbo", "recon_complexity"):
        calibration = loaded.manifest.anomaly.scores[score_type]
        scores = loaded.scores(digits_x, score_type)
        assert calibration.min <= float(np.median(scores)) <= calibration.max


# --- tampering -------------------------------------------------------------------------------


def test_recon_complexity_without_its_fit_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda entry: entry["anomaly"].update(complexity=None))
    with pytest.raises(BundleError, match=r"recon_complexity without anomaly\.complexity"):
        OnnxBundle(bundle_copy)


def test_recon_complexity_of_a_table_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda entry: entry["input"].update(image_shape=None))
    with pytest.raises(BundleError, match=r"\(C, H, W\) input\.image_shape"):
        OnnxBundle(bundle_copy)


@pytest.mark.parametrize("image_shape", [[1, 4, 4], [2, 8, 8]])
def test_recon_complexity_image_shape_must_be_the_inputs(
    bundle_copy: Path, image_shape: list[int]
) -> None:
    _edit_manifest(bundle_copy, lambda entry: entry["input"].update(image_shape=image_shape))
    with pytest.raises(BundleError, match="is not the input's size"):
        OnnxBundle(bundle_copy)


@pytest.mark.parametrize("slope", [-1.0, "NaN"])
def test_recon_complexity_fit_is_checked(bundle_copy: Path, slope: object) -> None:
    _edit_manifest(bundle_copy, lambda entry: entry["anomaly"]["complexity"].update(slope=slope))
    with pytest.raises(BundleError, match=r"model\.json is invalid"):
        OnnxBundle(bundle_copy)


def test_intact_copy_loads(bundle_copy: Path) -> None:
    assert OnnxBundle(bundle_copy).kind == "vae"


@pytest.mark.parametrize("filename", [ENCODER_FILENAME, DECODER_FILENAME])
def test_flipped_byte_is_refused(bundle_copy: Path, filename: str) -> None:
    path = bundle_copy / filename
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256") as info:
        OnnxBundle(bundle_copy)
    assert filename in str(info.value)


@pytest.mark.parametrize("filename", [ENCODER_FILENAME, DECODER_FILENAME])
def test_missing_graph_is_refused(bundle_copy: Path, filename: str) -> None:
    (bundle_copy / filename).unlink()
    with pytest.raises(BundleError, match=rf"{filename} is missing"):
        OnnxBundle(bundle_copy)


def test_missing_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_FILENAME).unlink()
    with pytest.raises(BundleError, match=r"no model\.json"):
        OnnxBundle(bundle_copy)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no model\.json"):
        OnnxBundle(tmp_path / "absent")


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"name": "x"'])
def test_invalid_json_is_refused(bundle_copy: Path, text: str) -> None:
    (bundle_copy / MANIFEST_FILENAME).write_text(text, encoding="utf-8")
    with pytest.raises(BundleError, match=r"model\.json is invalid"):
        OnnxBundle(bundle_copy)


def test_non_utf8_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_FILENAME).write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(BundleError, match=r"model\.json is invalid"):
        OnnxBundle(bundle_copy)


@pytest.mark.parametrize(
    "path",
    [
        ("latent_dim",),
        ("input",),
        ("anomaly", "elbo_seed"),
        ("onnx", "encoder", "sha256"),
        ("preprocessing", "scale"),
    ],
)
def test_missing_required_field_is_named(bundle_copy: Path, path: tuple[str, ...]) -> None:
    def drop(entry: dict[str, Any]) -> None:
        for key in path[:-1]:
            entry = entry[key]
        del entry[path[-1]]

    _edit_manifest(bundle_copy, drop)
    # pydantic names the dotted location, then the reason, e.g. "anomaly.elbo_seed\n  Field ..."
    dotted = re.escape(".".join(path))
    with pytest.raises(BundleError, match=rf"(?m)^{dotted}\s+Field required"):
        OnnxBundle(bundle_copy)


def test_mistyped_field_is_named(bundle_copy: Path) -> None:
    def mistype(entry: dict[str, Any]) -> None:
        entry["latent_dim"] = "two"

    _edit_manifest(bundle_copy, mistype)
    with pytest.raises(BundleError, match="latent_dim"):
        OnnxBundle(bundle_copy)


def test_unknown_kind_is_refused(bundle_copy: Path) -> None:
    def rename(entry: dict[str, Any]) -> None:
        entry["kind"] = "gan"

    _edit_manifest(bundle_copy, rename)
    with pytest.raises(BundleError, match=r"(?m)^kind\s+Input should be 'vae'"):
        OnnxBundle(bundle_copy)


def test_unsupported_format_version_is_refused(bundle_copy: Path) -> None:
    def bump(entry: dict[str, Any]) -> None:
        entry["format_version"] = 99

    _edit_manifest(bundle_copy, bump)
    with pytest.raises(BundleError, match=rf"format_version 99 .*reads {FORMAT_VERSION}"):
        OnnxBundle(bundle_copy)


def test_unknown_extra_keys_are_kept(bundle_copy: Path) -> None:
    def extend(entry: dict[str, Any]) -> None:
        entry["future_field"] = {"a": 1}

    _edit_manifest(bundle_copy, extend)
    loaded = OnnxBundle(bundle_copy)
    assert loaded.manifest.model_extra == {"future_field": {"a": 1}}


def _swap_graphs(bundle_copy: Path) -> None:
    encoder, decoder = bundle_copy / ENCODER_FILENAME, bundle_copy / DECODER_FILENAME
    encoder_bytes, decoder_bytes = encoder.read_bytes(), decoder.read_bytes()
    encoder.write_bytes(decoder_bytes)
    decoder.write_bytes(encoder_bytes)

    def rehash(entry: dict[str, Any]) -> None:
        entry["onnx"]["encoder"]["sha256"] = sha256_of(encoder)
        entry["onnx"]["decoder"]["sha256"] = sha256_of(decoder)

    _edit_manifest(bundle_copy, rehash)


def test_swapped_graphs_with_matching_hashes_are_refused(bundle_copy: Path) -> None:
    _swap_graphs(bundle_copy)
    with pytest.raises(BundleError, match=r"graph has inputs \['z'\] and outputs \['x_hat'\]"):
        OnnxBundle(bundle_copy)


def test_renamed_graph_input_in_manifest_is_refused(bundle_copy: Path) -> None:
    def rename(entry: dict[str, Any]) -> None:
        entry["onnx"]["decoder"]["inputs"][0]["name"] = "latent"

    _edit_manifest(bundle_copy, rename)
    with pytest.raises(BundleError, match=r"decoder.onnx: graph has inputs \['z'\]"):
        OnnxBundle(bundle_copy)


def test_wrong_declared_input_shape_is_refused(bundle_copy: Path) -> None:
    def reshape(entry: dict[str, Any]) -> None:
        entry["onnx"]["encoder"]["inputs"][0]["shape"] = ["batch", 63]

    _edit_manifest(bundle_copy, reshape)
    # Refused by the manifest's own consistency check, before the graph is even compared.
    with pytest.raises(BundleError, match="encoder input shape"):
        OnnxBundle(bundle_copy)


def test_graph_that_disagrees_with_a_consistent_manifest_is_refused(bundle_copy: Path) -> None:
    def reshape(entry: dict[str, Any]) -> None:
        entry["input"]["shape"] = [63]
        entry["input"]["feature_count"] = 63
        entry["input"]["image_shape"] = [1, 7, 9]
        entry["onnx"]["encoder"]["inputs"][0]["shape"] = ["batch", 63]
        entry["onnx"]["decoder"]["outputs"][0]["shape"] = ["batch", 63]

    _edit_manifest(bundle_copy, reshape)
    with pytest.raises(BundleError, match="input x has shape"):
        OnnxBundle(bundle_copy)


def test_unparseable_graph_with_matching_hash_is_a_bundle_error(bundle_copy: Path) -> None:
    encoder = bundle_copy / ENCODER_FILENAME
    encoder.write_bytes(b"not an onnx graph")

    def rehash(entry: dict[str, Any]) -> None:
        entry["onnx"]["encoder"]["sha256"] = sha256_of(encoder)

    _edit_manifest(bundle_copy, rehash)
    with pytest.raises(BundleError):
        OnnxBundle(bundle_copy)


# --- manifest round trip -----------------------------------------------------------------------


def test_manifest_write_then_read_is_equal(digits_vae: TrainingOutcome, tmp_path: Path) -> None:
    original = ModelManifest.read(digits_vae.bundle_dir)
    assert original == digits_vae.manifest
    written = original.write(tmp_path)
    assert written == tmp_path / MANIFEST_FILENAME
    again = ModelManifest.read(tmp_path)
    assert again == original
    assert again.model_dump() == original.model_dump()
    # Idempotent on disk too: writing the re-read manifest gives the same bytes.
    other = tmp_path / "other"
    other.mkdir()
    again.write(other)
    assert (other / MANIFEST_FILENAME).read_bytes() == written.read_bytes()


def test_manifest_read_refuses_other_format_version(
    digits_vae: TrainingOutcome, tmp_path: Path
) -> None:
    newer = digits_vae.manifest.model_copy(update={"format_version": FORMAT_VERSION + 1})
    newer.write(tmp_path)
    with pytest.raises(ValueError, match="format_version"):
        ModelManifest.read(tmp_path)


def test_manifest_quantiles_need_101_values(digits_vae: TrainingOutcome, tmp_path: Path) -> None:
    digits_vae.manifest.write(tmp_path)

    def shorten(entry: dict[str, Any]) -> None:
        entry["anomaly"]["scores"]["neg_elbo"]["quantiles"] = [0.0, 1.0]

    _edit_manifest(tmp_path, shorten)
    with pytest.raises(ValueError, match="quantiles"):
        ModelManifest.read(tmp_path)


def test_manifest_hashes_match_the_files(digits_vae: TrainingOutcome) -> None:
    onnx = digits_vae.manifest.onnx
    assert sha256_of(digits_vae.bundle_dir / onnx.encoder.file) == onnx.encoder.sha256
    assert sha256_of(digits_vae.bundle_dir / onnx.decoder.file) == onnx.decoder.sha256
    assert digits_vae.manifest.is_variational
