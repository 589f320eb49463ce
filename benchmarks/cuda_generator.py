"""A generator wrapper for the CUDA benchmarks: bf16 autocast and torch.compile with CUDA graphs."""
from __future__ import annotations

import torch


class CudaGenerator(torch.nn.Module):
    """channels_last input, optional bf16 autocast, optional ``torch.compile(mode="reduce-overhead")``
    (CUDA graphs, static shapes); returns float32 like the plain generator."""

    def __init__(self, model: torch.nn.Module, precision: str, compiled: bool) -> None:
        super().__init__()
        self.model = model
        self.scale = model.scale
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.run = torch.compile(model, mode="reduce-overhead", dynamic=False) if compiled else model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.run(x).float()
