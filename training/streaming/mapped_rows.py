"""Rows of a (memory-mapped) array picked by an index, read from disk only when asked for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from training.data._arrays import BoolArray, IntArray


class MappedRows:
    """One split of a streamed data set: `source[index]`, in the user's units, never all at once.

    `source` is a read-only view of a memory-mapped .npy in the file's dtype; every read
    returns a float32 copy of just the rows asked for.
    """

    def __init__(self, source: npt.NDArray[Any], index: IntArray, chunk_rows: int):
        self.source = source
        self.index = np.asarray(index, dtype=np.int64)
        self.chunk_rows = max(1, chunk_rows)  # rows per chunk of a pass, sized from the budget

    def __len__(self) -> int:
        return len(self.index)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.source.shape[1:])

    def read(self, positions: IntArray | slice) -> FloatArray:
        """The rows at these positions of the split, in the order asked for, as float32."""
        rows = self.index[positions]
        out = np.empty((len(rows), *self.feature_shape), dtype=np.float32)
        # Reading the file in ascending row order turns a shuffled batch into one forward
        # sweep over the pages it touches; the rows are put back in the order asked for.
        ascending = np.argsort(rows, kind="stable")
        out[ascending] = self.source[rows[ascending]]
        return out

    def __getitem__(self, positions: slice) -> FloatArray:
        return self.read(positions)

    def subset(self, positions: IntArray | BoolArray) -> MappedRows:
        """A split of this split (e.g. its normal items), still unread."""
        return MappedRows(self.source, self.index[positions], self.chunk_rows)

    def chunks(self) -> Iterator[FloatArray]:
        """Every row in split order, `chunk_rows` at a time."""
        for start in range(0, len(self), self.chunk_rows):
            yield self.read(slice(start, start + self.chunk_rows))
