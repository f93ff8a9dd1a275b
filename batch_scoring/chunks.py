"""What flows through a scoring job: chunks of rows, their bad rows, and the job's errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray

RowIds = npt.NDArray[np.int64]


class ScoreJobError(Exception):
    """A job that cannot run as asked (a bundle, input or option problem), worded for a person."""


@dataclass(frozen=True)
class BadRow:
    row: int  # 0-based data row of the input (a header is not a row)
    reason: str


@dataclass
class Chunk:
    """Rows first_row .. first_row + rows_spanned - 1 of the input: the good ones' ids and
    values (float32, one item a row in one of the model's layouts), and the bad ones."""

    index: int
    first_row: int
    rows_spanned: int
    ids: RowIds
    x: FloatArray
    bad: list[BadRow] = field(default_factory=list)
    paths: list[str] | None = None  # an image folder's: each good row's file


def chunk_span(index: int, chunk_rows: int) -> tuple[int, int]:
    """The input rows chunk `index` covers: [start, stop)."""
    return index * chunk_rows, (index + 1) * chunk_rows
