"""bundle.mean_path: one graph for preprocessing -> encoder -> decoder at mu -> inverse
preprocessing gives, bit for bit, what the bundle's two graphs and numpy give, on the committed
VAE (MLP, min-max with clip) and on a plain autoencoder and a convolutional VAE trained here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bundle.runtime import BundleError, OnnxBundle
from tests.bundles import COMMITTED_BUNDLE, BundleFactory

DIGITS = load_digits().data.astype(np.float32)


def two_graph_path(bundle: OnnxBundle, x: np.ndarray) -> dict[str, np.ndarray]:
    """The path as it ran before the graphs were composed: numpy around two sessions."""
    x_model = bundle.to_model_input(x)
    encoding = bundle.encode_model(x_model)
    decoded = bundle.decode_model(encoding.mu)
    found = {
        "x_model": x_model,
        "mu": encoding.mu,
        "decoded": decoded,
        "outputs": bundle.preprocessing.invert(decoded),
    }
    if encoding.logvar is not None:
        found["logvar"] = encoding.logvar
    return found


def assert_same_as_two_graphs(bundle: OnnxBundle, x: np.ndarray) -> None:
    batch = np.ascontiguousarray(x.reshape(len(x), *bundle.input_shape), dtype=np.float32)
    path = bundle.run_mean_path(batch)
    expected = two_graph_path(bundle, batch)
    got = {
        "x_model": path.x_model,
        "mu": path.encoding.mu,
        "decoded": path.decoded,
        "outputs": path.outputs,
    }
    if path.encoding.logvar is not None:
        got["logvar"] = path.encoding.logvar
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == np.float32, name
        assert got[name].shape == array.shape, name
        assert got[name].tobytes() == array.tobytes(), f"{name} differs"


@pytest.mark.parametrize("size", [1, 3, 64])
def test_the_committed_vae_gives_the_same_bits(size: int) -> None:
    assert_same_as_two_graphs(OnnxBundle(COMMITTED_BUNDLE), DIGITS[:size])


def test_clipped_and_out_of_range_inputs_give_the_same_bits() -> None:
    bundle = OnnxBundle(COMMITTED_BUNDLE)
    assert bundle.preprocessing.clip is not None  # min-max with a clip: Max and Min nodes
    x = DIGITS[:8].copy()
    x[0] = -50.0  # below the clip
    x[1] = 1e6  # far above it
    x[2, :5] = 3.4e38  # near float32's max: inf once scaled, clipped back
    assert_same_as_two_graphs(bundle, x)


def test_a_plain_autoencoder_has_no_logvar(train_bundle: BundleFactory) -> None:
    outcome = train_bundle(model="ae", epochs=1, hidden="16", latent_dim=2, batch_size=256)
    bundle = OnnxBundle(outcome.bundle_dir)
    assert bundle.run_mean_path(np.zeros((1, 64), np.float32)).encoding.logvar is None
    assert_same_as_two_graphs(bundle, DIGITS[:5])


def test_a_convolutional_vae_on_images_gives_the_same_bits(train_bundle: BundleFactory) -> None:
    outcome = train_bundle(arch="conv", epochs=1, latent_dim=2, batch_size=256)
    bundle = OnnxBundle(outcome.bundle_dir)
    assert bundle.input_shape == (1, 8, 8)
    assert_same_as_two_graphs(bundle, DIGITS[:4])


def test_a_graph_that_cannot_be_composed_is_a_bundle_error(tmp_path: Path) -> None:
    import shutil

    from bundle.manifest import ModelManifest, sha256_of

    copy = tmp_path / "bundle"
    shutil.copytree(COMMITTED_BUNDLE, copy)
    manifest = ModelManifest.read(copy)
    # A decoder whose declared input no longer exists in the graph: both checks must refuse it
    # before anything serves.
    decoder = copy / manifest.onnx.decoder.file
    decoder.write_bytes(b"not an onnx graph")
    text = (copy / "model.json").read_text()
    (copy / "model.json").write_text(text.replace(manifest.onnx.decoder.sha256, sha256_of(decoder)))
    with pytest.raises(BundleError):
        OnnxBundle(copy)
