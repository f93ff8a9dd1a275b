"""A split's model inputs, whether held in memory or streamed from disk a batch at a time.

In memory, a split is one float32 array of model inputs (a tensor for torch). Streamed, it is
a `ModelRows` (a `TorchRows` for torch) that reads and normalises the rows asked for, when
they are asked for. Both answer `len(x)` and `x[start:stop]`, and the torch ones
`x[positions]`, with the same numbers, so training, validation and scoring run unchanged on
either and a streamed run reproduces an in-memory one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from bundle.arrays import FloatArray
from bundle.preprocessing import Preprocessing
from training.streaming.mapped_rows import MappedRows

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class ModelRows:
    """Rows of a streamed split as model inputs: read, reshaped and normalised on demand."""

    def __init__(self, rows: MappedRows, prep: Preprocessing, shape: tuple[int, ...]):
        self.rows = rows
        self.prep = prep
        self.shape = shape  # per item, what the encoder takes: (D,) or (C, H, W)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def chunk_rows(self) -> int:
        return self.rows.chunk_rows

    def take(self, positions: IntArray | slice) -> FloatArray:
        raw = self.rows.read(positions)
        return self.prep.apply(raw.reshape((len(raw), *self.shape)))

    def __getitem__(self, positions: slice) -> FloatArray:
        return self.take(positions)

    def subset(self, positions: IntArray | BoolArray) -> ModelRows:
        return ModelRows(self.rows.subset(positions), self.prep, self.shape)


class TorchRows:
    """`ModelRows` as torch tensors on `device`, one batch per read."""

    def __init__(self, rows: ModelRows, device: torch.device):
        self.rows = rows
        self.device = device

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice | torch.Tensor) -> torch.Tensor:
        positions = key if isinstance(key, slice) else key.cpu().numpy()
        return torch.from_numpy(self.rows.take(positions)).to(self.device)


SplitRows = FloatArray | ModelRows
TrainingRows = torch.Tensor | TorchRows


def model_rows(
    x: FloatArray | MappedRows, prep: Preprocessing, shape: tuple[int, ...]
) -> SplitRows:
    """A split in the user's units -> its model inputs (computed now, or on demand if streamed)."""
    if isinstance(x, MappedRows):
        return ModelRows(x, prep, shape)
    return prep.apply(x.reshape((len(x), *shape)))


def select_rows(x: SplitRows, which: BoolArray) -> SplitRows:
    """The items where `which` is true (e.g. the test split's normal items)."""
    return x.subset(which) if isinstance(x, ModelRows) else x[which]


def batch_rows(x: FloatArray | MappedRows | ModelRows, default: int, copies: int = 1) -> int:
    """Rows per batch of a pass over a split: `default` in memory; streamed, no more than fit
    in one chunk of the memory budget when the pass holds each row `copies` times over (e.g.
    neg_elbo decodes each item once per posterior sample)."""
    if isinstance(x, np.ndarray):
        return default
    return max(1, min(default, x.chunk_rows // max(1, copies)))


def torch_rows(x: SplitRows, device: torch.device) -> TrainingRows:
    if isinstance(x, ModelRows):
        return TorchRows(x, device)
    return torch.from_numpy(x).to(device)
