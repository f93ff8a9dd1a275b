"""One chunk of items -> its result columns, with the code the service scores with.

The mean path and `OnnxBundle.path_scores` are what `ServedModel.score` runs; the threshold
comparison and the tail probability (bundle.scoring.TailTable) are the service's too, so a
row's score here equals the service's for the same item to the last bit
(tests/batch_scoring/test_cli.py holds both to it). A row whose preprocessed values or score
overflow float32 (the service answers such a request 422) is a bad row here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from batch_scoring.chunks import BadRow, Chunk, ScoreJobError
from bundle.runtime import OnnxBundle
from bundle.scoring import SCORE_TYPES, TailTable, per_feature_squared_error

# Items run through onnxruntime at once, at most: a chunk is split into batches of this many
# (fewer when a batch's tensors would pass the job's memory share, see `batch_items`).
MAX_BATCH_ITEMS = 4096


@dataclass(frozen=True)
class ScoreOptions:
    score_type: str | None  # None: the bundle's default
    per_feature: bool  # each feature's squared reconstruction error too (tables)
    only_flagged: bool  # write only the rows above the threshold


def resolve_score_type(bundle: OnnxBundle, wanted: str | None) -> str:
    anomaly = bundle.manifest.anomaly
    chosen = wanted or anomaly.default_score
    if chosen not in SCORE_TYPES or chosen not in anomaly.scores:
        raise ScoreJobError(
            f"--score-type {chosen!r}: this bundle offers {', '.join(sorted(anomaly.scores))}"
        )
    return chosen


def batch_items(bundle: OnnxBundle, memory_bytes: int, score_type: str) -> int:
    """Items a batch may hold so that its tensors stay within `memory_bytes`: the mean path's
    four float32 tensors (input, preprocessed, decoded, output); for neg_elbo, each of the
    ELBO's posterior samples decoded (float32) and its likelihood worked out in float64, about
    40 bytes a feature and sample (measured: 70 MB for 4,096 items of 30 features and 16
    samples, the peak of `python -m batch_scoring.cli` on such a model)."""
    features = bundle.manifest.input.feature_count
    samples = bundle.manifest.anomaly.elbo_samples if score_type == "neg_elbo" else 0
    per_item = features * (16 + 40 * samples) + 256
    return int(max(1, min(MAX_BATCH_ITEMS, memory_bytes // per_item)))


class ChunkScorer:
    def __init__(
        self,
        bundle: OnnxBundle,
        options: ScoreOptions,
        memory_bytes: int,
        with_paths: bool = False,
    ) -> None:
        self.with_paths = with_paths  # an image folder's rows carry their file
        self.bundle = bundle
        self.options = options
        self.score_type = resolve_score_type(bundle, options.score_type)
        calibration = bundle.manifest.anomaly.scores[self.score_type]  # type: ignore[index]
        self.threshold = calibration.threshold
        self.tails = TailTable(calibration.quantiles)
        self.batch = batch_items(bundle, memory_bytes, self.score_type)
        spec = bundle.manifest.input
        self.input_shape = tuple(spec.shape)
        names = spec.feature_names
        self.error_names = (
            [f"error_{name}" for name in names]
            if names
            else [f"error_{j}" for j in range(spec.feature_count)]
        )
        self.schema = self._schema()  # the result columns: every chunk's, and the output's

    def _schema(self) -> pa.Schema:
        fields = [pa.field("row", pa.int64())]
        if self.with_paths:
            fields.append(pa.field("path", pa.string()))
        fields += [
            pa.field("score", pa.float64()),
            pa.field("is_anomaly", pa.bool_()),
            pa.field("tail_probability", pa.float32()),
        ]
        if self.options.per_feature:
            fields += [pa.field(name, pa.float32()) for name in self.error_names]
        return pa.schema(fields)

    def score(self, chunk: Chunk) -> tuple[pa.Table, list[BadRow]]:
        """The chunk's result rows (all, or the flagged ones) and its bad rows, the overflows
        found here included."""
        x = np.ascontiguousarray(chunk.x.reshape((len(chunk.x), *self.input_shape)))
        parts: list[dict[str, np.ndarray]] = []
        bad = list(chunk.bad)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(x), self.batch):
                parts.append(self._batch(x[start : start + self.batch], chunk, start, bad))
        columns = {
            name: np.concatenate([part[name] for part in parts])
            if parts
            else np.empty(0, field.type.to_pandas_dtype())
            for name, field in zip(self.schema.names, self.schema, strict=True)
        }
        table = pa.table(columns, schema=self.schema)
        if self.options.only_flagged:
            table = table.filter(pa.array(columns["is_anomaly"]))
        return table, sorted(bad, key=lambda row: row.row)

    def _batch(
        self, x: np.ndarray, chunk: Chunk, start: int, bad: list[BadRow]
    ) -> dict[str, np.ndarray]:
        ids = chunk.ids[start : start + len(x)]
        path = self.bundle.run_mean_path(x)
        scores = self.bundle.path_scores(path, self.score_type)
        x_model = path.x_model.reshape(len(x), -1)
        fine = np.isfinite(x_model).all(axis=1) & np.isfinite(scores)
        for at in np.flatnonzero(~fine):
            what = "preprocessed values" if not np.isfinite(x_model[at]).all() else "score"
            bad.append(
                BadRow(int(ids[at]), f"values this large overflow float32 in the model's {what}")
            )
        scores = scores[fine]
        columns: dict[str, np.ndarray] = {"row": ids[fine]}
        if self.with_paths:
            assert chunk.paths is not None
            paths = np.array(chunk.paths[start : start + len(x)], dtype=object)
            columns["path"] = paths[fine]
        columns |= {
            "score": scores,
            "is_anomaly": scores > self.threshold,
            "tail_probability": self.tails.survival(scores),
        }
        if self.options.per_feature:
            squared = per_feature_squared_error(path.x_model, path.decoded)
            errors = squared.astype(np.float32).reshape(len(x), -1)[fine]
            for j, name in enumerate(self.error_names):
                columns[name] = errors[:, j]
        return columns
