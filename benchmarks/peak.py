"""Measured machine peak: a large 3×3 convolution and a large matmul, best of a few runs."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict

import torch
import torch.nn.functional as F


def best_seconds(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Minimum wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure_peak(device: str, dtype: torch.dtype, smoke: bool) -> Dict[str, float]:
    """GFLOP/s of a 3×3 conv (64→64 ch, channels_last) and of a square matmul; peak = the larger."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    big = device == "cuda"
    n = 256 if smoke else (8192 if big else 2048)
    batch, size = (1, 32) if smoke else ((64, 256) if big else (8, 128))
    repeats = 2 if smoke else 5
    with torch.inference_mode():
        a = torch.rand(n, n, device=device, dtype=dtype)
        b = torch.rand(n, n, device=device, dtype=dtype)
        matmul = 2 * n**3 / best_seconds(lambda: a @ b, repeats, sync)
        x = torch.rand(batch, 64, size, size, device=device, dtype=dtype).to(memory_format=torch.channels_last)
        w = torch.rand(64, 64, 3, 3, device=device, dtype=dtype).to(memory_format=torch.channels_last)
        conv = 2 * 9 * 64 * 64 * batch * size * size / best_seconds(lambda: F.conv2d(x, w, padding=1), repeats, sync)
    return {"conv3x3_gflops": conv / 1e9, "matmul_gflops": matmul / 1e9, "peak_gflops": max(conv, matmul) / 1e9}
