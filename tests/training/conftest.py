"""Fixtures of the training tests that start processes or time-critical training."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread, as each process torchrun starts has (OMP_NUM_THREADS=1): torch's
    default, a thread per core, spins against whatever else runs on a shared machine, which
    made the runs of these tests 25 times slower on the 2-core machine they were written on."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
