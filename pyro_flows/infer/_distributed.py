"""Data parallelism on PyTorch's DistributedDataParallel (started by ``torchrun``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device: torch.device) -> Distributed:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), if any.

    Uses NCCL for CUDA devices and gloo otherwise; a group the user already initialised is used
    as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available():
        return Distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size())


def shard(indices: torch.Tensor, where: Distributed) -> torch.Tensor:
    """This rank's share of a global batch: every ``world_size``-th index from ``rank``.

    Every rank holds the same epoch permutation (same seed), so the shards of one global batch
    are disjoint and cover it, like ``torch.utils.data.DistributedSampler``.
    """
    if not where.enabled:
        return indices
    return indices[where.rank :: where.world_size]
