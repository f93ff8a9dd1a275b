"""Fill a bundle's report/ folder with the plots of one training run.

Everything shown goes through the exported graphs (what a server will compute), and data are
shown in the user's units, not model space.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bundle.preprocessing import Preprocessing
from training.data import DataSplits, LoadedData
from training.export import OnnxGraphs
from training.factory import ModelInput
from training.models import VAE, Autoencoder, ConvEncoder, MLPEncoder
from training.report import (
    plot_latent_space,
    plot_loss_curves,
    plot_reconstructions,
    plot_samples,
    plot_score_histogram,
    plot_unit_inputs,
)

SAMPLE_COUNT = 64
RECONSTRUCTION_COUNT = 16


def write_report(
    report_dir: Path,
    *,
    model: VAE | Autoencoder,
    history: list[dict[str, float]],
    refit_history: list[dict[str, float]] | None = None,
    data: LoadedData,
    splits: DataSplits,
    shape: ModelInput,
    prep: Preprocessing,
    graphs: OnnxGraphs,
    test_scores: npt.NDArray[np.float64] | None,
    threshold: float,
    score_type: str,
    seed: int,
) -> list[Path]:
    image_shape = shape.image_shape
    written = [
        plot_loss_curves(history, report_dir / "loss_curves.png", refit_history=refit_history)
    ]

    # Held-out items (test when there is one) show what the model does on unseen data.
    shown, shown_labels = splits.test, splits.test_labels
    shown_anomaly: npt.NDArray[np.bool_] | None = splits.test_is_anomaly
    if len(shown) == 0:
        shown, shown_labels, shown_anomaly = splits.validation, splits.validation_labels, None
    x_model = prep.apply(shown.reshape((len(shown), *shape.shape)))
    mu, _ = graphs.encode(x_model)

    # Put anomalies into the reconstruction grid too when there are any: the contrast is the
    # point of an anomaly detector.
    picks = np.arange(min(RECONSTRUCTION_COUNT, len(shown)))
    if shown_anomaly is not None and shown_anomaly.any():
        normal_idx = np.flatnonzero(~shown_anomaly)[: RECONSTRUCTION_COUNT // 2]
        anomaly_idx = np.flatnonzero(shown_anomaly)[: RECONSTRUCTION_COUNT - len(normal_idx)]
        picks = np.concatenate([normal_idx, anomaly_idx])
    reconstructions = prep.invert(graphs.decode(mu[picks]))
    written.append(
        plot_reconstructions(
            shown[picks].reshape(len(picks), -1),
            reconstructions.reshape(len(picks), -1),
            report_dir / "reconstructions.png",
            image_shape=image_shape,
        )
    )

    if isinstance(model, VAE):
        z = np.random.default_rng(seed).standard_normal((SAMPLE_COUNT, model.latent_dim))
        samples = prep.invert(graphs.decode(z.astype(np.float32)))
        written.append(
            plot_samples(
                samples.reshape(SAMPLE_COUNT, -1),
                report_dir / "samples.png",
                image_shape=image_shape,
            )
        )

    written.append(
        plot_latent_space(
            mu,
            report_dir / "latent_space.png",
            labels=shown_labels,
            label_names=data.label_names,
            is_anomaly=shown_anomaly if shown_anomaly is not None and shown_anomaly.any() else None,
        )
    )

    if test_scores is not None and len(test_scores):
        written.append(
            plot_score_histogram(
                test_scores,
                threshold,
                report_dir / "score_histogram.png",
                is_anomaly=splits.test_is_anomaly,
                score_type=score_type,
            )
        )

    encoder = model.encoder
    if isinstance(encoder, MLPEncoder | ConvEncoder):
        weights = encoder.first_layer_weights.detach().cpu().numpy()
        if isinstance(encoder, ConvEncoder):
            assert image_shape is not None
            unit_shape: tuple[int, int, int] | None = (image_shape[0], 3, 3)
        else:
            unit_shape = image_shape
        written.append(
            plot_unit_inputs(weights, report_dir / "hidden_unit_inputs.png", image_shape=unit_shape)
        )

    index = {path.name: _CAPTIONS.get(path.name, "") for path in written}
    (report_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return written


_CAPTIONS = {
    "loss_curves.png": "training and validation loss per epoch; the line marks the epoch early "
    "stopping kept (with a refit, the model served trained again on every row that long)",
    "reconstructions.png": "held-out inputs (top) and their mean-path reconstructions (bottom)",
    "samples.png": "decoder means for z drawn from N(0, I)",
    "latent_space.png": "posterior means of held-out items; PCA when latent_dim > 2",
    "score_histogram.png": "anomaly scores of the test split with the calibrated threshold",
    "hidden_unit_inputs.png": "the norm-bounded input x_j = W_ij / ||W_i|| each first-layer "
    "unit responds to most",
}
