"""Properties of the served maths (service.models.served_model.ServedModel on real onnxruntime
bundles, and
bundle.scoring): finite answers or a clear 4xx for any finite input, batches that equal their
items one by one, and anomaly flags and tail probabilities consistent with the scores.

Both likelihoods run: the committed Bernoulli digits VAE, whose min-max scaling clips every
input into [0, 1], and a Gaussian tabular VAE with unclipped per-column standardisation, where
a finite input in user units can be as large as float32 allows in model space.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bundle.arrays import Float64Array, FloatArray
from bundle.scoring import tail_probability
from service.errors import ServiceError
from service.models.results import OperationResult, ReconstructResult
from service.models.served_model import ServedModel
from tests.property.conftest import PROFILE

R = TypeVar("R")

# Overflow in extreme inputs must be reported as a 4xx, never surface as a numpy warning.
pytestmark = pytest.mark.filterwarnings("error")

BASE = settings.get_profile(PROFILE)
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Finite float32 values of every magnitude, the awkward ones drawn often.
extreme_float32 = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            FLOAT32_MAX,
            -FLOAT32_MAX,
            1e38,
            -1e38,
            1e20,
            -1e20,
            float(np.float32(1e-45)),
            -float(np.float32(1e-45)),
            float(np.finfo(np.float32).smallest_normal),
            -0.0,
        ]
    ),
)


@st.composite
def raw_batches(draw: st.DrawFn, model: ServedModel) -> tuple[FloatArray, bool]:
    """A batch in one of the model's accepted layouts, in user units, and whether any value
    was replaced by an extreme one.

    Items start as plausible data (model-space values within a few scales of the training
    data, mapped back through the bundle's own preprocessing), then up to three values are
    replaced by any finite float32: huge, tiny, subnormal or signed zero.
    """
    batch = draw(st.integers(1, 6), label="batch")
    layout = draw(st.sampled_from(model.accepted_layouts), label="layout")
    # numpy draws the plausible part: hypothesis drawing hundreds of floats one by one costs
    # more than the onnxruntime calls, and the extreme values below are what it should shrink.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    model_space = rng.uniform(-4.0, 4.0, (batch, model.feature_count)).astype(np.float32)
    x = model.bundle.preprocessing.invert(model_space.reshape((batch, *model.input_shape)))
    x = np.ascontiguousarray(x.reshape((batch, *layout)), dtype=np.float32)
    replaced = draw(st.integers(0, 3), label="extreme values")
    for _ in range(replaced):
        where = tuple(draw(st.integers(0, n - 1), label="index") for n in x.shape)
        x[where] = draw(extreme_float32, label="value")
    return x, replaced > 0


def call_or_refusal(operation: Callable[[], R]) -> R | ServiceError:
    """The operation's result, or the ServiceError it raised (asserted to be a 4xx)."""
    try:
        return operation()
    except ServiceError as error:
        refusal = error
    assert 400 <= refusal.status < 500, (refusal.status, refusal.message)
    return refusal


def assert_all_finite(result: OperationResult) -> None:
    for key, value in result.fields().items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert bool(np.isfinite(value).all()), f"{key} is not finite: {value}"


# --------------------------------------------------------------------------- finite or 4xx


@settings(BASE, max_examples=40)
@given(st.data())
def test_scores_are_finite_for_any_finite_input_or_refused(
    served_model: ServedModel, data: st.DataObject
) -> None:
    x, extreme = data.draw(raw_batches(served_model), label="x")
    score_type = data.draw(st.sampled_from(sorted(served_model.manifest.anomaly.scores)))
    per_feature = data.draw(st.booleans(), label="per_feature")
    result = call_or_refusal(
        lambda: served_model.score(x, score_type=score_type, per_feature=per_feature)
    )
    if isinstance(result, ServiceError):
        assert extreme, f"plausible inputs were refused: {result.message}"
        return
    assert_all_finite(result)
    scores = result.scores
    assert scores.shape == (len(x),)
    if per_feature:
        assert result.feature_errors is not None
        assert result.feature_errors.shape == x.shape
    # The flags are the scores against the calibrated threshold, and the tail probability
    # agrees with them: at or below the threshold's own tail probability iff flagged.
    threshold = result.threshold
    np.testing.assert_array_equal(result.is_anomaly, scores > threshold)
    tail = result.tail_probability
    assert bool(((tail >= 0.0) & (tail <= 1.0)).all())
    quantiles = served_model.manifest.anomaly.scores[score_type].quantiles
    at_threshold = tail_probability(np.array([threshold]), quantiles)[0]
    assert bool((tail[result.is_anomaly] <= at_threshold).all())
    assert bool((tail[~result.is_anomaly] >= at_threshold).all())


def test_per_feature_errors_beyond_float32_are_refused(gaussian_model: ServedModel) -> None:
    # Found by test_scores_are_finite_for_any_finite_input_or_refused (shrunk to this): one
    # feature at float32's max is ~1.9e38 in model space, its squared error ~3.5e76 is fine in
    # float64 but was cast to float32 inf, and the 200 answer carried `null` feature errors.
    x = gaussian_model.bundle.preprocessing.invert(
        np.zeros((1, gaussian_model.feature_count), dtype=np.float32)
    )
    x[0, 0] = FLOAT32_MAX
    for score_type in sorted(gaussian_model.manifest.anomaly.scores):
        scores = gaussian_model.score(x, score_type=score_type, per_feature=False).scores
        assert bool(np.isfinite(scores).all())  # the score alone is representable
        with pytest.raises(ServiceError, match="per-feature errors") as refused:
            gaussian_model.score(x, score_type=score_type, per_feature=True)
        assert refused.value.status == 422


@settings(BASE, max_examples=25)
@given(st.data())
def test_encode_and_reconstruct_are_finite_for_any_finite_input_or_refused(
    served_model: ServedModel, data: st.DataObject
) -> None:
    x, extreme = data.draw(raw_batches(served_model), label="x")
    seed = data.draw(st.integers(0, 2**63 - 1), label="seed")
    samples = data.draw(st.one_of(st.none(), st.integers(1, 3)), label="samples")
    operations: tuple[Callable[[], OperationResult], ...] = (
        lambda: served_model.encode(x, sample=True, seed=seed),
        lambda: served_model.reconstruct(x, samples=samples, seed=seed),
    )
    for operation in operations:
        result = call_or_refusal(operation)
        if isinstance(result, ServiceError):
            assert extreme, f"plausible inputs were refused: {result.message}"
            continue
        assert_all_finite(result)
        if isinstance(result, ReconstructResult):
            assert result.outputs.shape == x.shape  # the layout the client sent


@settings(BASE, max_examples=25)
@given(st.data())
def test_decode_is_finite_for_any_finite_latents_or_refused(
    served_model: ServedModel, data: st.DataObject
) -> None:
    batch = data.draw(st.integers(1, 6), label="batch")
    z = data.draw(
        hnp.arrays(np.float32, (batch, served_model.latent_dim), elements=extreme_float32)
    )
    result = call_or_refusal(lambda: served_model.decode(z))
    if isinstance(result, ServiceError):
        return
    assert_all_finite(result)
    assert len(result.outputs) == batch


# --------------------------------------------------------------------------- batch == one by one


def one_by_one(
    operation: Callable[[FloatArray], OperationResult], x: FloatArray
) -> list[OperationResult | ServiceError]:
    return [call_or_refusal(functools.partial(operation, x[i : i + 1])) for i in range(len(x))]


def assert_batch_equals_items(
    operation: Callable[[FloatArray], OperationResult], x: FloatArray, keys: tuple[str, ...]
) -> None:
    """Every per-item output of the batch call equals, bit for bit, the same call on that item
    alone; and the batch is refused exactly when one of its items is."""
    batch = call_or_refusal(lambda: operation(x))
    items = one_by_one(operation, x)
    refused = [item for item in items if isinstance(item, ServiceError)]
    if isinstance(batch, ServiceError):
        assert refused, f"batch refused, every item accepted: {batch.message}"
        assert batch.status == refused[0].status
        return
    assert not refused, f"batch accepted, an item refused: {refused[0].message}"
    for key in keys:
        together = np.asarray(getattr(batch, key))
        alone = np.concatenate(
            [np.asarray(getattr(item, key)) for item in items if not isinstance(item, ServiceError)]
        )
        assert together.dtype == alone.dtype, key
        assert together.tobytes() == alone.tobytes(), f"{key}: {together} != {alone}"


@settings(BASE, max_examples=25)
@given(st.data())
def test_score_of_a_batch_equals_its_items_scored_alone(
    served_model: ServedModel, data: st.DataObject
) -> None:
    x, _ = data.draw(raw_batches(served_model), label="x")
    for score_type in sorted(served_model.manifest.anomaly.scores):
        assert_batch_equals_items(
            functools.partial(served_model.score, score_type=score_type, per_feature=True),
            x,
            ("scores", "is_anomaly", "tail_probability", "feature_errors"),
        )


@settings(BASE, max_examples=25)
@given(st.data())
def test_encode_and_reconstruct_of_a_batch_equal_its_items_alone(
    served_model: ServedModel, data: st.DataObject
) -> None:
    x, _ = data.draw(raw_batches(served_model), label="x")
    assert_batch_equals_items(
        lambda items: served_model.encode(items, sample=False, seed=None), x, ("mu", "logvar")
    )
    assert_batch_equals_items(
        lambda items: served_model.reconstruct(items, samples=None, seed=None), x, ("outputs",)
    )


@settings(BASE, max_examples=25)
@given(st.data())
def test_decode_of_a_batch_equals_its_items_alone(
    served_model: ServedModel, data: st.DataObject
) -> None:
    batch = data.draw(st.integers(1, 6), label="batch")
    latents = st.one_of(st.floats(-6, 6, width=32), extreme_float32)
    z = data.draw(hnp.arrays(np.float32, (batch, served_model.latent_dim), elements=latents))
    assert_batch_equals_items(served_model.decode, z, ("outputs",))


# --------------------------------------------------------------------------- tail probability

# Calibration quantiles of every scale, ties included (many validation items with one score),
# with both ends of float64 drawn often: a segment between them spans more than float64 holds.
_score_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324]),
)


@st.composite
def quantile_lists(draw: st.DrawFn) -> list[float]:
    pool = draw(st.lists(_score_values, min_size=1, max_size=101))
    return sorted(draw(st.lists(st.sampled_from(pool), min_size=101, max_size=101)))


@settings(BASE, max_examples=120)
@given(quantile_lists(), hnp.arrays(np.float64, st.integers(1, 12), elements=_score_values))
# Found by this test: (s - q_lower) / (q_upper - q_lower) was inf / inf = NaN.
@example([-1e308] + [1e308] * 100, np.array([9e307]))
def test_tail_probability_is_a_probability_monotone_in_the_score(
    quantiles: list[float], scores: Float64Array
) -> None:
    tail = tail_probability(scores, quantiles)
    assert tail.dtype == np.float32
    assert bool(((tail >= 0.0) & (tail <= 1.0)).all()), tail
    order = np.argsort(scores, kind="stable")
    assert bool((np.diff(tail[order]) <= 0.0).all()), (scores[order], tail[order])
    np.testing.assert_array_equal(tail[scores <= quantiles[0]], 1.0)
    np.testing.assert_array_equal(tail[scores > quantiles[-1]], 0.0)


@pytest.mark.parametrize(
    "operation",
    [
        lambda m, x: m.encode(x, sample=False, seed=None),
        lambda m, x: m.reconstruct(x, samples=None, seed=None),
        lambda m, x: m.score(x, score_type=None, per_feature=False),
        lambda m, x: m.decode(x[:, : m.latent_dim]),
    ],
    ids=["encode", "reconstruct", "score", "decode"],
)
def test_an_empty_batch_is_refused_with_422(
    bernoulli_model: ServedModel, operation: Callable[[ServedModel, FloatArray], OperationResult]
) -> None:
    # Found through v2's binary path, which let a (0, 64) tensor through: scoring it raised
    # "cannot reshape array of size 0" (a 500). The codecs refuse empty batches; the domain
    # layer now does too, for every caller.
    empty = np.zeros((0, bernoulli_model.feature_count), dtype=np.float32)
    with pytest.raises(ServiceError, match="empty") as refused:
        operation(bernoulli_model, empty)
    assert refused.value.status == 422
