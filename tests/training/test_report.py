"""Tests for training.report: every plot writes a real, openable PNG; the unit maths is exact."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from training import report
from training.report import (
    plot_latent_space,
    plot_loss_curves,
    plot_reconstructions,
    plot_samples,
    plot_score_histogram,
    plot_unit_inputs,
    unit_preferred_inputs,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, expected: Path, *, min_side: int = 150) -> None:
    assert path == expected
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(path) as img:
        img.verify()
    # verify() leaves the image unusable, so reopen to read the size and decode the pixels.
    with Image.open(path) as img:
        width, height = img.size
        pixels = np.asarray(img.convert("L"))
    assert min(width, height) >= min_side
    assert max(width, height) <= 5000
    # A blank canvas would still be a valid PNG; make sure something was drawn.
    assert pixels.std() > 0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# loss curves
# ---------------------------------------------------------------------------------------------


def _history(n: int, *, parts: bool, kl_weight: bool) -> list[dict[str, float]]:
    history: list[dict[str, float]] = []
    for epoch in range(1, n + 1):
        row = {"epoch": float(epoch), "train_loss": 100.0 / epoch, "val_loss": (epoch - 4) ** 2}
        if parts:
            row |= {
                "train_recon": 90.0 / epoch,
                "train_kl": 10.0 / epoch,
                "val_recon": 80.0 / epoch,
                "val_kl": 5.0,
            }
        if kl_weight:
            row["kl_weight"] = min(1.0, epoch / 5)
        history.append(row)
    return history


def test_loss_curves(tmp_path: Path) -> None:
    plain = tmp_path / "nested" / "dir" / "plain.png"
    full = tmp_path / "full.png"
    assert_png(plot_loss_curves(_history(8, parts=False, kl_weight=False), plain), plain)
    assert_png(plot_loss_curves(_history(8, parts=True, kl_weight=True), full), full)
    # The recon/KL panel only appears when those keys exist, making the figure wider.
    with Image.open(plain) as a, Image.open(full) as b:
        assert b.size[0] > a.size[0]


def test_loss_curves_show_the_refit_when_there_was_one(tmp_path: Path) -> None:
    history = _history(8, parts=True, kl_weight=True)
    refit = [{"epoch": float(e), "train_loss": 5.0 - 0.3 * e} for e in range(1, 6)]
    without, with_refit = tmp_path / "without.png", tmp_path / "with.png"
    assert_png(plot_loss_curves(history, without), without)
    assert_png(plot_loss_curves(history, with_refit, refit_history=refit), with_refit)
    with Image.open(without) as a, Image.open(with_refit) as b:
        assert a.size == b.size
        assert a.tobytes() != b.tobytes()  # the refit's curve (and its legend entry) is drawn
    # A refit history with no train loss adds nothing.
    empty = tmp_path / "empty.png"
    plot_loss_curves(history, empty, refit_history=[{"epoch": 1.0}])
    with Image.open(without) as a, Image.open(empty) as c:
        assert a.tobytes() == c.tobytes()


def test_loss_curves_edge_cases(tmp_path: Path) -> None:
    # No val_loss, no "epoch" key, negative losses, only a KL part, a single epoch, no epochs.
    train_only = [{"train_loss": -1.0, "train_kl": 2.0}, {"train_loss": -3.0, "train_kl": 1.0}]
    assert_png(plot_loss_curves(train_only, tmp_path / "t.png"), tmp_path / "t.png")
    single = [{"epoch": 1.0, "train_loss": 1.0, "val_loss": 1.5}]
    assert_png(plot_loss_curves(single, tmp_path / "s.png"), tmp_path / "s.png")
    assert_png(plot_loss_curves([], tmp_path / "e.png"), tmp_path / "e.png")


# ---------------------------------------------------------------------------------------------
# reconstructions and samples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_shape", "n", "flat"),
    [((1, 8, 8), 20, True), ((3, 6, 6), 5, False), ((2, 4, 4), 3, True)],
)
def test_reconstructions_images(
    tmp_path: Path,
    rng: np.random.Generator,
    image_shape: tuple[int, int, int],
    n: int,
    flat: bool,
) -> None:
    shape = (n, int(np.prod(image_shape))) if flat else (n, *image_shape)
    x = rng.normal(size=shape)
    r = x + 0.1 * rng.normal(size=shape)
    out = tmp_path / "recon.png"
    assert_png(plot_reconstructions(x, r, out, image_shape=image_shape, max_items=16), out)


def test_reconstructions_constant_image(tmp_path: Path) -> None:
    x = np.zeros((2, 16))
    out = tmp_path / "recon.png"
    assert_png(plot_reconstructions(x, x + 1, out, image_shape=(1, 4, 4)), out)


@pytest.mark.parametrize(("n", "d"), [(5, 12), (2, 120)])
def test_reconstructions_tabular(tmp_path: Path, rng: np.random.Generator, n: int, d: int) -> None:
    x = rng.normal(size=(n, d))
    out = tmp_path / "recon.png"
    assert_png(plot_reconstructions(x, 0.9 * x, out, image_shape=None), out)


def test_reconstructions_rejects_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ"):
        plot_reconstructions(
            np.zeros((3, 4)), np.zeros((2, 4)), tmp_path / "x.png", image_shape=None
        )
    with pytest.raises(ValueError, match="image"):
        plot_reconstructions(
            np.zeros((3, 10)), np.zeros((3, 10)), tmp_path / "x.png", image_shape=(1, 3, 3)
        )


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (3, 5, 5)])
def test_samples_images(
    tmp_path: Path, rng: np.random.Generator, image_shape: tuple[int, int, int]
) -> None:
    samples = rng.normal(size=(100, int(np.prod(image_shape))))  # more than the grid shows
    out = tmp_path / "samples.png"
    assert_png(plot_samples(samples, out, image_shape=image_shape), out)


@pytest.mark.parametrize(("n", "d"), [(200, 7), (5, 1)])
def test_samples_tabular(tmp_path: Path, rng: np.random.Generator, n: int, d: int) -> None:
    out = tmp_path / "samples.png"
    assert_png(plot_samples(rng.normal(size=(n, d)), out, image_shape=None, title="tabular"), out)


# ---------------------------------------------------------------------------------------------
# latent space
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "with_labels", "with_anomalies"),
    [
        (1, False, False),
        (1, True, True),
        (2, False, False),
        (2, False, True),
        (2, True, True),
        (5, False, False),
        (5, True, True),
    ],
)
def test_latent_space(
    tmp_path: Path, rng: np.random.Generator, d: int, with_labels: bool, with_anomalies: bool
) -> None:
    n = 150
    z = rng.normal(size=(n, d))
    labels = rng.integers(0, 4, size=n) if with_labels else None
    names = ["zero", "one", "two", "three"] if with_labels else None
    anomalies = rng.random(n) < 0.1 if with_anomalies else None
    out = tmp_path / f"latent_{d}.png"
    result = plot_latent_space(z, out, labels=labels, label_names=names, is_anomaly=anomalies)
    assert_png(result, out)


def test_latent_space_unusual_inputs(tmp_path: Path, rng: np.random.Generator) -> None:
    # Many classes (continuous colour bar), string labels, 1-D latents and degenerate PCA.
    z = rng.normal(size=(100, 3))
    out = tmp_path / "a.png"
    assert_png(plot_latent_space(z, out, labels=np.arange(100) % 25), out)
    str_labels = np.array(["cat", "dog"] * 50)
    assert_png(plot_latent_space(z, out, labels=str_labels, label_names=["x"]), out)
    assert_png(plot_latent_space(rng.normal(size=40), out), out)
    assert_png(plot_latent_space(np.ones((10, 4)), out), out)
    assert_png(plot_latent_space(rng.normal(size=(1, 4)), out), out)
    with pytest.raises(ValueError, match="labels"):
        plot_latent_space(z, out, labels=np.zeros(3))


# ---------------------------------------------------------------------------------------------
# score histogram
# ---------------------------------------------------------------------------------------------


def test_score_histogram_with_anomalies(tmp_path: Path, rng: np.random.Generator) -> None:
    scores = np.concatenate([rng.gamma(2.0, 1.0, size=300), rng.gamma(2.0, 5.0, size=30)])
    flags = np.arange(scores.size) >= 300
    out = tmp_path / "scores.png"
    result = plot_score_histogram(scores, 8.0, out, is_anomaly=flags, score_type="recon MSE")
    assert_png(result, out)


@pytest.mark.parametrize(
    "scores",
    [
        np.full(50, 3.0),  # constant
        np.array([0.7]),  # single
        np.array([0.0, 0.0, 1e-3, 5.0, 1e4]),  # zeros with a long tail
        np.logspace(-1, 3, 50),  # positive, four decades -> log bins
        np.array([-2.0, 0.0, 0.0, 2.0]),
        np.array([1.0, np.nan, np.inf, 2.0]),
    ],
)
def test_score_histogram_edge_cases(tmp_path: Path, scores: npt.NDArray[np.float64]) -> None:
    out = tmp_path / "scores.png"
    assert_png(plot_score_histogram(scores, 1.0, out), out)


def test_score_histogram_odd_thresholds(tmp_path: Path) -> None:
    scores = np.logspace(-2, 4, 100)
    out = tmp_path / "scores.png"
    # A non-positive threshold cannot sit on a log axis, so the plot falls back to linear bins.
    assert_png(plot_score_histogram(scores, 0.0, out), out)
    assert_png(plot_score_histogram(np.arange(5.0), float("nan"), out), out)
    assert_png(plot_score_histogram(np.array([np.nan]), 1.0, out), out)


# ---------------------------------------------------------------------------------------------
# first-layer units
# ---------------------------------------------------------------------------------------------


def test_unit_preferred_inputs_hand_example() -> None:
    W = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0], [1.0, 1.0]])
    expected = np.array([[0.6, 0.8], [0.0, 0.0], [0.0, -1.0], [2**-0.5, 2**-0.5]])
    got = unit_preferred_inputs(W)
    np.testing.assert_allclose(got, expected)
    assert got.dtype == np.float64
    assert np.isfinite(got).all()
    # Integer and float32 weights are accepted too.
    np.testing.assert_allclose(unit_preferred_inputs(W.astype(np.int64)), expected)
    np.testing.assert_allclose(unit_preferred_inputs(W.astype(np.float32)), expected, rtol=1e-6)


def test_unit_preferred_inputs_are_unit_norm_maximisers(rng: np.random.Generator) -> None:
    W = rng.normal(size=(20, 30)) * rng.uniform(0.01, 10, size=(20, 1))
    W[7] = 0.0
    X = unit_preferred_inputs(W)
    assert X.shape == W.shape
    norms = np.linalg.norm(X, axis=1)
    nonzero = np.arange(20) != 7
    np.testing.assert_allclose(norms[nonzero], 1.0)
    np.testing.assert_array_equal(X[7], 0.0)
    np.testing.assert_allclose(X[nonzero], W[nonzero] / np.linalg.norm(W[nonzero], axis=1)[:, None])

    # Activation of unit i at its own preferred input equals ||W_i||...
    activation = np.einsum("ij,ij->i", W, X)
    np.testing.assert_allclose(activation, np.linalg.norm(W, axis=1))
    # ...and no random unit-norm input beats it (Cauchy-Schwarz).
    probes = rng.normal(size=(2000, 30))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    probe_activations = probes @ W.T  # (probes, units)
    assert (probe_activations <= activation[None, :] + 1e-12).all()


def test_unit_preferred_inputs_rejects_non_matrix() -> None:
    with pytest.raises(ValueError, match="2-D"):
        unit_preferred_inputs(np.zeros((2, 3, 4)))


@pytest.mark.parametrize(
    ("shape", "image_shape"),
    [
        ((100, 64), (1, 8, 8)),  # dense layer on 8x8 grey images, more units than max_units
        ((16, 27), (3, 3, 3)),  # conv on RGB, kernels flattened to (out, C*kh*kw)
        ((8, 18), (2, 3, 3)),  # conv with two input channels
        ((12, 10), None),  # tabular heat map
    ],
)
def test_plot_unit_inputs(
    tmp_path: Path,
    rng: np.random.Generator,
    shape: tuple[int, int],
    image_shape: tuple[int, int, int] | None,
) -> None:
    W = rng.normal(size=shape)
    W[0] = 0.0  # a dead unit must render, not produce NaN
    out = tmp_path / "units.png"
    assert_png(plot_unit_inputs(W, out, image_shape=image_shape, max_units=64), out)


def test_plot_unit_inputs_rejects_wrong_image_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_shape"):
        plot_unit_inputs(np.zeros((4, 10)), tmp_path / "u.png", image_shape=(1, 3, 3))


# ---------------------------------------------------------------------------------------------
# module hygiene
# ---------------------------------------------------------------------------------------------


def test_module_imports_neither_torch_nor_pyplot() -> None:
    # Checked on the source rather than sys.modules: other tests in the session import both.
    tree = ast.parse(Path(report.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    assert not {name for name in imported if name.split(".")[0] == "torch"}
    assert "matplotlib.pyplot" not in imported
