"""The committed bundle (`models/digits-vae/1`, what `make serve` serves) is one the current
trainer writes: it carries the monitoring reference, whose scores are the very ones its
thresholds were set from, so a fresh checkout's monitoring report judges drift too."""

from __future__ import annotations

import pytest

from bundle.manifest import ModelManifest
from bundle.reference import read_reference
from tests.bundles import COMMITTED_BUNDLE
from training.calibration.thresholds import score_percentile


def test_the_committed_bundle_carries_a_reference_that_set_its_thresholds() -> None:
    manifest = ModelManifest.read(COMMITTED_BUNDLE)
    assert manifest.reference is not None, "retrain it: make train"
    reference = read_reference(COMMITTED_BUNDLE, manifest.reference)
    assert set(reference.scores) == set(manifest.anomaly.scores)
    for score_type, calibration in manifest.anomaly.scores.items():
        scores = reference.scores[score_type]
        assert len(scores) == calibration.n_samples  # every validation score: 270 < 2,000
        threshold = float(score_percentile(scores, calibration.percentile))
        assert threshold == pytest.approx(calibration.threshold, rel=1e-12)
    assert reference.latent_mu.shape == (manifest.reference.n_items, manifest.latent_dim)
