"""One Arrow record batch in, the same rows scored out: what a distributed engine's workers run.

An engine (batch_scoring.spark) hands a worker batches of its rows as Arrow record batches: a
table's columns, or an image file's `path` and `content`. `RecordBatchScorer` scores each with
the local path's pieces (sources.table_rows and read_image turn values into items and bad rows
with the same reasons; scorer.ChunkScorer runs the service's mean path and scores) and answers
a batch of the same rows, in the same order: the columns asked to be kept, `score`,
`is_anomaly`, `tail_probability` (and each feature's error), null where the row is bad, and
`bad_reason`, null where it is not. An engine has no row numbers to hand, so a row is known by
the columns it keeps (an id, a file's path and row index).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_scoring.chunks import BadRow, Chunk, ScoreJobError
from batch_scoring.scorer import ChunkScorer, ScoreOptions
from batch_scoring.sources import IMAGE_ERRORS, read_image, table_rows
from bundle.image_decoding import ImageSpec
from bundle.runtime import OnnxBundle

BAD_REASON = "bad_reason"
# An image batch's columns, as Spark's binaryFile source names them.
PATH_COLUMN, CONTENT_COLUMN, LENGTH_COLUMN = "path", "content", "length"


@dataclass(frozen=True)
class ImageLimits:
    spec: ImageSpec
    max_pixels: int  # a file may decode to
    max_file_bytes: int | None  # a file may have, where the reader left larger ones unread


class RecordBatchScorer:
    def __init__(
        self,
        bundle: OnnxBundle,
        options: ScoreOptions,
        memory_bytes: int,
        keep: Sequence[str],
        features: Sequence[str] | None,  # a table's feature columns, in the model's order
        images: ImageLimits | None = None,
    ) -> None:
        if (features is None) == (images is None):
            raise ValueError("score either a table's feature columns or image files")
        # Only-flagged is a filter on the engine's result, where bad rows are kept apart.
        self.scorer = ChunkScorer(
            bundle, ScoreOptions(options.score_type, options.per_feature, False), memory_bytes
        )
        self.keep = list(keep)
        self.features = list(features) if features is not None else None
        self.names = [f"column {name!r}" for name in self.features or []]
        self.images = images
        self.item_shape = tuple(bundle.manifest.input.shape)

    def result_fields(self) -> list[pa.Field]:
        """The fields after the kept columns: the scorer's (less its row number) and why a row
        is bad."""
        scored = [field for field in self.scorer.schema if field.name != "row"]
        return [*scored, pa.field(BAD_REASON, pa.string())]

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        positions = np.arange(batch.num_rows, dtype=np.int64)
        if self.features is not None:
            try:
                selected = pa.RecordBatch.from_arrays(
                    [batch.column(name) for name in self.features], names=self.features
                )
            except KeyError as error:
                raise ScoreJobError(f"the batch has no column {error}") from None
            ids, values, bad = table_rows(selected, positions, self.names)
        else:
            ids, values, bad = self._images(batch, positions)
        chunk = Chunk(0, 0, batch.num_rows, ids, values, bad)
        results, bad = self.scorer.score(chunk)
        return self._merged(batch, results, bad)

    def _images(
        self, batch: pa.RecordBatch, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[BadRow]]:
        assert self.images is not None
        spec = self.images.spec
        paths = batch.column(PATH_COLUMN).to_pylist()
        contents = batch.column(CONTENT_COLUMN)
        names = batch.schema.names
        lengths = batch.column(LENGTH_COLUMN).to_pylist() if LENGTH_COLUMN in names else None
        items, ids, bad = [], [], []
        for at in positions:
            data = contents[int(at)].as_py()
            try:
                if data is None:
                    raise ValueError(self._unread(None if lengths is None else lengths[at]))
                items.append(read_image(io.BytesIO(data), spec, self.images.max_pixels))
            except IMAGE_ERRORS as error:
                bad.append(BadRow(int(at), f"{paths[at]}: {error}"))
                continue
            ids.append(at)
        shape = (spec.channels, spec.height, spec.width)
        x = np.stack(items) if items else np.empty((0, *shape), np.float32)
        return np.array(ids, np.int64), x, bad

    def _unread(self, length: int | None) -> str:
        limit = self.images.max_file_bytes if self.images else None
        if length is not None and limit is not None and length > limit:
            return f"{length} bytes, above the {limit} a file may have (--memory-mb raises it)"
        return "no content"

    def _merged(
        self, batch: pa.RecordBatch, results: pa.Table, bad: list[BadRow]
    ) -> pa.RecordBatch:
        """The kept columns of every row, the results where a row was scored, null elsewhere,
        and the reason where it was not."""
        size = batch.num_rows
        slot = np.full(size, -1, dtype=np.int64)  # each input row's result row, -1: none
        slot[results.column("row").to_numpy()] = np.arange(results.num_rows)
        take = pa.array(slot, mask=slot < 0)
        columns = [batch.column(name) for name in self.keep]
        for field in self.result_fields()[:-1]:
            columns.append(pc.take(results.column(field.name), take).combine_chunks())
        reasons: list[str | None] = [None] * size
        for row in bad:
            reasons[row.row] = row.reason
        columns.append(pa.array(reasons, pa.string()))
        names = [*self.keep, *(field.name for field in self.result_fields())]
        return pa.RecordBatch.from_arrays(columns, names=names)
