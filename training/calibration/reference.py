"""The bundle's monitoring reference (bundle.reference), from the exported graphs: each
calibrated score's values (those its threshold is a percentile of), and the posterior means
and, for tables, the features of held-out normal items (the validation split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from bundle.manifest import ReferenceSpec, ScoreType
from bundle.reference import build_reference, evenly_spaced, write_reference
from training.export import OnnxGraphs
from training.streaming.rows import ModelRows, SplitRows


def write_monitoring_reference(
    folder: Path,
    graphs: OnnxGraphs,
    threshold_scores: dict[ScoreType, npt.NDArray[np.float64]],
    x_val: SplitRows,
    is_image: bool,
) -> ReferenceSpec | None:
    """reference.npz in `folder`; None when the validation split is empty (nothing to show
    what normal looks like)."""
    if len(x_val) == 0:
        return None
    positions = evenly_spaced(len(x_val))
    rows = np.ascontiguousarray(
        x_val.take(positions) if isinstance(x_val, ModelRows) else x_val[positions]
    )
    mu, _ = graphs.encode(rows)  # at most MAX_REFERENCE_ITEMS rows: one call
    features = None if is_image else rows.reshape(len(rows), -1)
    reference = build_reference({str(k): v for k, v in threshold_scores.items()}, mu, features)
    return write_reference(folder, reference)
