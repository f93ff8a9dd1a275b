"""Tests for bundle.preprocessing: the one normalisation both trainer and server apply."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bundle.preprocessing import Preprocessing, PreprocessingKind, fit_preprocessing

F32_EPS = float(np.finfo(np.float32).eps)


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _assert_same(a: Preprocessing, b: Preprocessing) -> None:
    assert a.kind == b.kind
    assert a.clip == b.clip
    assert a.offset.dtype == b.offset.dtype == np.float32
    assert a.scale.dtype == b.scale.dtype == np.float32
    np.testing.assert_array_equal(a.offset, b.offset)
    np.testing.assert_array_equal(a.scale, b.scale)


# --- apply / invert ------------------------------------------------------------------------


def test_apply_follows_the_formula_with_global_parameters() -> None:
    prep = Preprocessing(
        kind="minmax",
        offset=np.array([2.0], dtype=np.float32),
        scale=np.array([4.0], dtype=np.float32),
    )
    x = np.array([[2.0, 4.0, 6.0, 10.0]])
    out = prep.apply(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0, 2.0]])
    np.testing.assert_array_equal(prep.invert(out), x)


def test_apply_follows_the_formula_with_per_feature_parameters() -> None:
    prep = Preprocessing(
        kind="standard",
        offset=np.array([1.0, -1.0, 0.0], dtype=np.float32),
        scale=np.array([2.0, 0.5, 1.0], dtype=np.float32),
    )
    x = np.array([[3.0, 0.0, 7.0], [1.0, -1.0, -7.0]])
    np.testing.assert_array_equal(prep.apply(x), [[1.0, 2.0, 7.0], [0.0, 0.0, -7.0]])


@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("shape", [(5, 64), (5, 1, 8, 8)])
def test_round_trip_flat_and_image_shaped(per_feature: bool, shape: tuple[int, ...]) -> None:
    rng = _rng()
    size = 64 if per_feature else 1
    prep = Preprocessing(
        kind="standard",
        offset=rng.normal(0.0, 3.0, size).astype(np.float32),
        scale=rng.uniform(0.1, 5.0, size).astype(np.float32),
    )
    x = rng.normal(0.0, 10.0, shape).astype(np.float32)
    model = prep.apply(x)
    assert model.shape == shape
    assert model.dtype == np.float32
    back = prep.invert(model)
    assert back.shape == shape
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5)


def test_per_feature_parameters_map_to_the_same_pixel_flat_or_image_shaped() -> None:
    rng = _rng()
    prep = Preprocessing(
        kind="standard",
        offset=rng.normal(size=64).astype(np.float32),
        scale=rng.uniform(0.5, 2.0, 64).astype(np.float32),
    )
    flat = rng.normal(size=(3, 64)).astype(np.float32)
    image = flat.reshape(3, 1, 8, 8)
    np.testing.assert_array_equal(prep.apply(image).reshape(3, 64), prep.apply(flat))
    np.testing.assert_array_equal(prep.invert(image).reshape(3, 64), prep.invert(flat))


def test_identity_changes_nothing() -> None:
    x = np.array([[-3.5, 0.0, 1e6]], dtype=np.float32)
    prep = Preprocessing.identity()
    assert prep.kind == "none"
    np.testing.assert_array_equal(prep.apply(x), x)
    np.testing.assert_array_equal(prep.invert(x), x)


def test_apply_does_not_modify_its_input() -> None:
    prep = Preprocessing(
        kind="minmax",
        offset=np.array([0.0], dtype=np.float32),
        scale=np.array([2.0], dtype=np.float32),
        clip=(0.0, 1.0),
    )
    x = np.array([[-4.0, 1.0, 8.0]], dtype=np.float32)
    kept = x.copy()
    prep.apply(x)
    np.testing.assert_array_equal(x, kept)


# --- clip ----------------------------------------------------------------------------------


def test_clip_only_when_requested() -> None:
    offset = np.array([0.0], dtype=np.float32)
    scale = np.array([10.0], dtype=np.float32)
    x = np.array([[-5.0, 0.0, 5.0, 10.0, 25.0]])
    clipped = Preprocessing(kind="minmax", offset=offset, scale=scale, clip=(0.0, 1.0))
    plain = Preprocessing(kind="minmax", offset=offset, scale=scale)
    np.testing.assert_array_equal(clipped.apply(x), [[0.0, 0.0, 0.5, 1.0, 1.0]])
    np.testing.assert_array_equal(plain.apply(x), [[-0.5, 0.0, 0.5, 1.0, 2.5]])


def test_fit_passes_clip_through() -> None:
    x_train = np.array([[0.0, 1.0], [2.0, 3.0]])
    fitted = fit_preprocessing(x_train, "minmax", per_feature=False, clip=(0.0, 1.0))
    assert fitted.clip == (0.0, 1.0)
    out = fitted.apply(np.array([[-3.0, 9.0]]))
    np.testing.assert_array_equal(out, [[0.0, 1.0]])
    assert fit_preprocessing(x_train, "minmax", per_feature=False).clip is None


# --- fit_preprocessing -----------------------------------------------------------------------


def test_fit_minmax_global_uses_one_min_and_span() -> None:
    x_train = np.array([[1.0, 3.0], [5.0, 9.0]])
    fitted = fit_preprocessing(x_train, "minmax", per_feature=False)
    assert fitted.kind == "minmax"
    np.testing.assert_array_equal(fitted.offset, [1.0])
    np.testing.assert_array_equal(fitted.scale, [8.0])
    out = fitted.apply(x_train)
    assert out.min() == 0.0
    assert out.max() == 1.0


def test_fit_minmax_per_feature_maps_each_column_onto_unit_interval() -> None:
    rng = _rng()
    x_train = rng.uniform(-50.0, 50.0, (40, 6)) * np.arange(1, 7)
    fitted = fit_preprocessing(x_train, "minmax", per_feature=True)
    assert fitted.offset.shape == fitted.scale.shape == (6,)
    np.testing.assert_allclose(fitted.offset, x_train.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fitted.scale, np.ptp(x_train, axis=0), rtol=1e-6)
    out = fitted.apply(x_train)
    np.testing.assert_allclose(out.min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=0), 1.0, atol=1e-6)


def test_fit_minmax_on_images_flattens_features() -> None:
    rng = _rng()
    x_train = rng.uniform(0.0, 16.0, (20, 1, 8, 8))
    per_feature = fit_preprocessing(x_train, "minmax", per_feature=True)
    assert per_feature.offset.shape == (64,)
    np.testing.assert_allclose(per_feature.offset, x_train.reshape(20, 64).min(axis=0), rtol=1e-6)
    glob = fit_preprocessing(x_train, "minmax", per_feature=False)
    assert glob.offset.shape == (1,)
    assert per_feature.apply(x_train).shape == (20, 1, 8, 8)


@pytest.mark.parametrize("per_feature", [False, True])
def test_fit_standard_gives_zero_mean_unit_std(per_feature: bool) -> None:
    rng = _rng()
    x_train = rng.normal(loc=[3.0, -20.0, 100.0], scale=[0.5, 4.0, 30.0], size=(500, 3))
    fitted = fit_preprocessing(x_train, "standard", per_feature=per_feature)
    assert fitted.kind == "standard"
    out = fitted.apply(x_train).astype(np.float64)
    if per_feature:
        assert fitted.offset.shape == (3,)
        np.testing.assert_allclose(fitted.offset, x_train.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(fitted.scale, x_train.std(axis=0), rtol=1e-6)
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-5)
    else:
        assert fitted.offset.shape == (1,)
        np.testing.assert_allclose(fitted.offset, [x_train.mean()], rtol=1e-6)
        np.testing.assert_allclose(fitted.scale, [x_train.std()], rtol=1e-6)
        assert abs(out.mean()) < 1e-5
        assert abs(out.std() - 1.0) < 1e-5


@pytest.mark.parametrize("per_feature", [False, True])
def test_fit_none_is_identity(per_feature: bool) -> None:
    x_train = np.array([[5.0, -7.0], [100.0, 3.0]])
    fitted = fit_preprocessing(x_train, "none", per_feature=per_feature)
    assert fitted.kind == "none"
    np.testing.assert_array_equal(fitted.offset, [0.0])
    np.testing.assert_array_equal(fitted.scale, [1.0])
    np.testing.assert_array_equal(fitted.apply(x_train), x_train)


@pytest.mark.parametrize("kind", ["minmax", "standard"])
def test_constant_feature_gets_scale_one_and_finite_output(kind: PreprocessingKind) -> None:
    x_train = np.array([[0.0, 7.0, 1.0], [4.0, 7.0, 2.0], [8.0, 7.0, 6.0]])
    fitted = fit_preprocessing(x_train, kind, per_feature=True)
    assert fitted.scale[1] == 1.0
    assert np.all(fitted.scale[[0, 2]] != 1.0)
    out = fitted.apply(np.array([[1.0, 7.0, 1.0], [1.0, 9.0, 1.0]]))
    assert np.all(np.isfinite(out))
    assert out[0, 1] == 0.0
    assert out[1, 1] == 2.0


@pytest.mark.parametrize("kind", ["minmax", "standard"])
def test_entirely_constant_training_set_is_finite(kind: PreprocessingKind) -> None:
    x_train = np.full((10, 1, 4, 4), 3.0)
    fitted = fit_preprocessing(x_train, kind, per_feature=False)
    np.testing.assert_array_equal(fitted.scale, [1.0])
    np.testing.assert_array_equal(fitted.apply(x_train), np.zeros((10, 1, 4, 4)))


def test_nearly_constant_large_feature_is_treated_as_constant() -> None:
    # Spread 1e-3 on values near 1e6 is below the relative floor 1e-8 * |offset| = 1e-2.
    x_train = np.array([[1e6], [1e6 + 1e-3]])
    fitted = fit_preprocessing(x_train, "minmax", per_feature=True)
    np.testing.assert_array_equal(fitted.scale, [1.0])


@pytest.mark.parametrize("kind", ["minmax", "standard", "none"])
@pytest.mark.parametrize("shape", [(0, 5), (0, 1, 8, 8)])
def test_empty_training_set_is_refused(kind: PreprocessingKind, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # the message is checked below
        fit_preprocessing(np.zeros(shape), kind, per_feature=True)


def test_empty_training_set_message_says_empty() -> None:
    with pytest.raises(ValueError, match="empty training set"):
        fit_preprocessing(np.zeros((0, 5)), "minmax", per_feature=True)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preprocessing kind"):
        fit_preprocessing(np.ones((3, 2)), "robust", per_feature=True)  # type: ignore[arg-type]


# --- constructor ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "scale"),
    [
        (np.zeros(3, dtype=np.float32), np.ones(2, dtype=np.float32)),
        (np.zeros((2, 2), dtype=np.float32), np.ones((2, 2), dtype=np.float32)),
        (np.zeros((), dtype=np.float32), np.ones((), dtype=np.float32)),
    ],
)
def test_constructor_refuses_mismatched_or_non_flat_shapes(
    offset: npt.NDArray[np.float32], scale: npt.NDArray[np.float32]
) -> None:
    with pytest.raises(ValueError, match="same length"):
        Preprocessing(kind="standard", offset=offset, scale=scale)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_constructor_refuses_non_positive_scale(bad: float) -> None:
    scale = np.array([1.0, bad, 2.0], dtype=np.float32)
    with pytest.raises(ValueError, match="strictly positive"):
        Preprocessing(kind="standard", offset=np.zeros(3, dtype=np.float32), scale=scale)


# --- manifest --------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [None, (0.0, 1.0)])
@pytest.mark.parametrize("per_feature", [False, True])
def test_manifest_round_trip(clip: tuple[float, float] | None, per_feature: bool) -> None:
    rng = _rng()
    x_train = rng.normal(3.0, 7.0, (30, 5))
    original = fit_preprocessing(x_train, "standard", per_feature=per_feature, clip=clip)
    entry = original.to_manifest()
    assert entry["kind"] == "standard"
    assert entry["clip"] == (list(clip) if clip is not None else None)
    assert all(isinstance(v, float) for v in entry["offset"] + entry["scale"])
    restored = Preprocessing.from_manifest(entry)
    _assert_same(original, restored)
    x = rng.normal(3.0, 7.0, (4, 5))
    np.testing.assert_array_equal(restored.apply(x), original.apply(x))


def test_manifest_entry_survives_json() -> None:
    import json

    original = fit_preprocessing(
        np.array([[0.1, 0.7], [0.3, 0.2]]), "minmax", per_feature=True, clip=(0.0, 1.0)
    )
    entry: dict[str, Any] = json.loads(json.dumps(original.to_manifest()))
    _assert_same(original, Preprocessing.from_manifest(entry))


# --- property --------------------------------------------------------------------------------

_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def _fitted_and_batch(
    draw: st.DrawFn,
) -> tuple[Preprocessing, npt.NDArray[np.float64]]:
    features = draw(st.integers(1, 6))
    rows = draw(st.integers(1, 8))
    x_train = draw(arrays(np.float64, (rows, features), elements=_finite))
    kind: PreprocessingKind = draw(st.sampled_from(["minmax", "standard", "none"]))
    per_feature = draw(st.booleans())
    prep = fit_preprocessing(x_train, kind, per_feature=per_feature)
    batch = draw(st.integers(1, 5))
    x = draw(arrays(np.float64, (batch, features), elements=_finite))
    return prep, x


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_fitted_and_batch())
def test_invert_undoes_apply_without_clip(
    case: tuple[Preprocessing, npt.NDArray[np.float64]],
) -> None:
    prep, x = case
    model = prep.apply(x)
    assert np.all(np.isfinite(model))
    back = prep.invert(model).astype(np.float64)
    x32 = x.astype(np.float32).astype(np.float64)
    # float32 arithmetic: error relative to the magnitudes involved in (x - offset) / scale.
    magnitude = np.abs(x32) + np.abs(prep.offset.astype(np.float64)) + prep.scale
    np.testing.assert_array_less(np.abs(back - x32), 8 * F32_EPS * magnitude + 1e-30)
