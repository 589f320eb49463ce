"""DistributedDataParallel under torchrun: process group from RANK/WORLD_SIZE/LOCAL_RANK.

gloo on CPU, nccl on CUDA. Rank 0 alone logs, validates and writes the run folder; every
rank reads the resumable state when resuming.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; ``device`` is "cpu" or "cuda"."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Dist(dist.get_rank(), local_rank, dist.get_world_size())


def any_rank(flag: bool, ctx: Dist, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (stop requests are agreed on)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
