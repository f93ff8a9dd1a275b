"""Data-parallel training across processes with torch.distributed (DDP), launched by torchrun.

Every process is a replica: it loads the same data, builds the same model from the same seed,
and draws the same permutation each epoch, so all replicas agree on every global batch of
`--batch-size` items without exchanging data. Each takes its own share of the batch; DDP
averages the gradients, and each share's loss is weighted by its size, so the averaged
gradient is the mean over the global batch, i.e. the single-process gradient (up to the order
of floating-point sums). Validation sums are added up across replicas, so early stopping
decides the same everywhere. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# What torchrun sets for each process it starts (env:// rendezvous).
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_COMMAND = "torchrun --nproc-per-node N -m training.cli --distributed --dataset ... --out ..."


class LaunchError(ValueError):
    """--distributed and the way the process was started do not fit together."""


@dataclass(frozen=True)
class Replicas:
    """This process's place among the replicas; one process alone is rank 0 of 1."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    distributed: bool = False

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the bundle, the log and the report."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This replica's share of n items: contiguous, sizes differing by at most one."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def loss_weight(self, share: int, total: int) -> float:
        """What this replica's mean loss over `share` of `total` items is multiplied by so that
        DDP's average of the replicas' gradients is the gradient of the mean over all `total`:
        (1 / W) sum_r (n_r W / n) mean_r = (1 / n) sum_r n_r mean_r. Exactly 1 for one process."""
        return share * self.world_size / total

    @contextmanager
    def process_group(self) -> Iterator[None]:
        """The process group, for as long as the replicas train together."""
        if not self.distributed:
            yield
            return
        cuda = self.device.type == "cuda"
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            rank=self.rank,
            world_size=self.world_size,
            device_id=self.device if cuda else None,
        )
        try:
            yield
            # Nobody tears down its connections while another still waits on them. (After an
            # error there is no barrier: the others may never arrive; torchrun stops them.)
            dist.barrier()
        finally:
            dist.destroy_process_group()

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module under DDP, whose forward pass sets up the gradient all-reduce."""
        if not self.distributed:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def sum_across(self, values: list[float]) -> list[float]:
        """The sums of `values` over all replicas, bit for bit the same on every one."""
        if not self.distributed:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        # Rank 0's bits become everyone's, so every decision taken from these numbers (early
        # stopping, the kept epoch, divergence) is the same on every replica by construction.
        dist.broadcast(total, src=0)
        return [float(v) for v in total.tolist()]

    def check_in_step(self, module: nn.Module) -> None:
        """Fail loudly if the replicas' weights differ: they must be identical bit for bit,
        since every replica applied the same averaged gradients from the same start."""
        if not self.distributed:
            return
        mine = torch.cat([t.detach().reshape(-1).double() for t in module.state_dict().values()])
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        differs = torch.tensor([float(not torch.equal(mine, reference))], device=self.device)
        dist.all_reduce(differs, op=dist.ReduceOp.MAX)
        if differs.item():
            raise RuntimeError(
                "the replicas hold different weights after training: their updates were not "
                "synchronised, so no bundle is written"
            )


def _launch_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"{name}={value!r} from the launcher is not an integer") from None


def check_launch(distributed: bool, batch_size: int) -> None:
    """Refuse a launch that would train the wrong thing, before any data are read."""
    if distributed:
        missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
        if missing:
            raise LaunchError(
                f"--distributed runs one process per replica and needs the environment torchrun "
                f"sets ({', '.join(missing)} missing): start it as '{LAUNCH_COMMAND}'"
            )
        world_size = _launch_int("WORLD_SIZE")
        if batch_size < world_size:
            raise LaunchError(
                f"--batch-size {batch_size} is the global batch, shared by {world_size} "
                f"processes: it must be at least {world_size}"
            )
        return
    if "WORLD_SIZE" in os.environ and _launch_int("WORLD_SIZE") > 1:
        raise LaunchError(
            f"this is one of {os.environ['WORLD_SIZE']} processes started together "
            "(WORLD_SIZE), but without --distributed each would train its own model and "
            "write the same bundle: add --distributed"
        )


def join_replicas(distributed: bool, device: torch.device, batch_size: int) -> Replicas:
    """This process's `Replicas`; with `distributed`, from torchrun's environment (the process
    group itself starts with `Replicas.process_group`)."""
    check_launch(distributed, batch_size)
    if not distributed:
        return Replicas(device=device)
    rank, world_size = _launch_int("RANK"), _launch_int("WORLD_SIZE")
    local_rank = _launch_int("LOCAL_RANK")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise LaunchError(
                f"LOCAL_RANK {local_rank} has no GPU of its own: torch sees "
                f"{torch.cuda.device_count()}; start at most that many processes per machine"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return Replicas(device=device, rank=rank, world_size=world_size, distributed=True)
