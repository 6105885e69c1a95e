"""Processes and data order: torch.distributed set-up from the torchrun environment, and a resumable sampler.

`storyviz train` runs single-process as it is, and data-parallel under
`torchrun --nproc_per_node=N -m storyviz train ...` (gloo on CPU, nccl on CUDA). Rank 0 writes every file.
"""

from __future__ import annotations

import datetime
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """Where this process sits: `rank` of `world_size` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, *flags: bool) -> list[bool]:
        """For each flag, whether it is set on any process (one all-reduce for all of them)."""
        values = torch.tensor([float(flag) for flag in flags], device=self.device)
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(value) for value in values.tolist()]

    def mean(self, numbers: dict[str, float]) -> dict[str, float]:
        """The mean over processes of each number (every process must pass the same keys)."""
        if not self.enabled or not numbers:
            return dict(numbers)
        keys = list(numbers)
        if self.gather(keys) != [keys] * self.world_size:
            raise RuntimeError(f"processes log different numbers: {self.gather(keys)}")
        values = torch.tensor([float(numbers[key]) for key in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return {key: value / self.world_size for key, value in zip(keys, values.tolist())}

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every process, in rank order (on every process)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed() -> Distributed:
    """Joins the process group described by torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_*),
    or returns the single-process setting when WORLD_SIZE is unset or 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo", init_method="env://", timeout=datetime.timedelta(minutes=10)
        )
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed(dist_info: Distributed) -> None:
    """Leaves the process group together, after every DDP wrapper is gone: a DistributedDataParallel reducer that
    is only collected after `destroy_process_group` (it sits in a reference cycle) aborts the process at exit
    ("terminate called without an active exception", about one run in four with gloo here)."""
    if dist_info.enabled and dist.is_initialized():
        gc.collect()
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


class ResumableBatchSampler:
    """Yields this process's micro-batches (lists of item indices) from one global, endless stream of indices.

    The stream is the concatenation of epochs; epoch `e` is a permutation of range(size) drawn from a generator
    seeded with `seed + e` (as DistributedSampler does). Each micro-step consumes `world_size * micro_batch`
    consecutive indices of the stream and process `rank` takes its slice of them, so one optimizer step with
    `grad_accum` micro-steps consumes exactly the global `batch_size` items whatever the number of processes.
    `start` is a position in the stream (items consumed so far); starting there reads no data before it.
    """

    def __init__(self, size: int, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0):
        if size <= 0:
            raise ValueError("the training split is empty: nothing to sample")
        self.size = size
        self.micro_batch = micro_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start = start
        self._epoch = -1
        self._order: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._order = torch.randperm(self.size, generator=generator).tolist()
            self._epoch = epoch
        return self._order

    def indices(self, position: int, count: int) -> list[int]:
        """`count` indices of the global stream from `position` on."""
        out = []
        while count > 0:
            epoch, offset = divmod(position, self.size)
            take = min(count, self.size - offset)
            out.extend(self._permutation(epoch)[offset : offset + take])
            position += take
            count -= take
        return out

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        stride = self.micro_batch * self.world_size
        while True:
            yield self.indices(position + self.rank * self.micro_batch, self.micro_batch)
            position += stride
