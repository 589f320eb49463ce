"""DistributedDataParallel under torchrun: process group from RANK/WORLD_SIZE/LOCAL_RANK.

gloo on CPU, nccl on CUDA. Rank 0 alone logs, validates and writes the run folder; every
rank reads the resumable state when resuming.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fagan_engine.util.errors import ConfigError


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


RENDEZVOUS = ("RANK", "MASTER_ADDR", "MASTER_PORT")
"""The variables torchrun sets that the process group's env:// rendezvous needs when WORLD_SIZE > 1."""


def launch_environment() -> Dist:
    """This process's place in a torchrun launch (RANK, LOCAL_RANK, WORLD_SIZE; unset: one process), checked before any
    work: a ConfigError naming the variable that is not a whole number, is out of range or is missing."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world_size < 1:
        raise ConfigError(f"environment variable WORLD_SIZE must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"environment variable RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    if local_rank < 0:
        raise ConfigError(f"environment variable LOCAL_RANK must be >= 0, got {local_rank}")
    if world_size > 1:
        _check_rendezvous(world_size)
    return Dist(rank, local_rank, world_size)


def _check_rendezvous(world_size: int) -> None:
    """ConfigError naming the first rendezvous variable that is unset, or a MASTER_PORT that is no port."""
    missing = [name for name in RENDEZVOUS if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world_size} needs environment variable {missing[0]}; start the processes with torchrun")
    if not 0 < _env_int("MASTER_PORT", 0) < 65536:
        raise ConfigError(f"environment variable MASTER_PORT must be a port in [1, 65535], got {os.environ['MASTER_PORT']}")


def _env_int(name: str, default: int) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset); ConfigError naming it otherwise."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a whole number, got {raw!r}") from None


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; ``device`` is "cpu" or "cuda"."""
    launch = launch_environment()
    if not launch.enabled:
        return Dist()
    if device == "cuda":
        if launch.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"environment variable LOCAL_RANK={launch.local_rank} names no GPU of the {torch.cuda.device_count()} here")
        torch.cuda.set_device(launch.local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Dist(dist.get_rank(), launch.local_rank, dist.get_world_size())


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
