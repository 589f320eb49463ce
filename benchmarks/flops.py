"""Model FLOPs: measured with torch.utils.flop_counter, and an analytic count to check it.

FLOPs = 2 × multiply-accumulates of convolutions, linear layers and attention matmuls;
element-wise ops, pooling, pixel shuffle and the bicubic residual are not counted. Attention is
counted as executed: q and k are zero-padded to C channels before SDPA (see archs/attention.py),
so QKᵀ costs 2·N·M·C and (softmax)·V another 2·N·M·C.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from fagan_engine.util.config import ModelConfig


def _cpu_sdpa(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA SDPA kernels but not the CPU flash kernel.
CPU_SDPA_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def counted_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything ``fn`` runs (forward and, if it calls backward, backward)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def generator_flops(model: torch.nn.Module, height: int, width: int, device: str = "cpu") -> int:
    """Measured forward FLOPs of ``model`` on one (1, 1, height, width) slice."""
    x = torch.rand(1, 1, height, width, device=device)
    with torch.inference_mode():
        return counted_flops(lambda: model(x))


def analytic_generator_flops(cfg: ModelConfig, height: int, width: int) -> int:
    """Forward FLOPs of the generator built from ``cfg`` on one LR slice, from its structure."""
    c = cfg.n_feats
    lr = height * width

    def conv(cin: int, cout: int, k: int, pixels: int) -> int:
        return 2 * k * k * cin * cout * pixels

    total = conv(1, c, 3, lr)
    if cfg.use_lffb:
        per_block = sum(3 * conv(c, c, k, lr) for k in (3, 5, 7)) + conv(c, c, 1, lr) + 2 * conv(2 * c, c, 1, lr)
    else:
        per_block = 2 * conv(c, c, 3, lr)
    total += cfg.n_blocks * per_block + conv(c, c, 3, lr)
    size = (height, width)
    stages = int(math.log2(cfg.scale))
    hr = (height * cfg.scale, width * cfg.scale)
    if cfg.use_ca or cfg.use_sa:
        total += _gffb_flops(cfg, size if cfg.attention_placement == "lr" else hr)
    for stage in range(stages):
        total += conv(c, 4 * c, 3, (height << stage) * (width << stage))
    return total + conv(c, 1, 3, hr[0] * hr[1])


def _gffb_flops(cfg: ModelConfig, size: Tuple[int, int]) -> int:
    c = cfg.n_feats
    pixels = size[0] * size[1]
    total = 0
    if cfg.use_ca:
        hidden = max(1, c // cfg.ca_reduction)
        total += 2 * 2 * c * hidden
    if cfg.use_sa:
        key_channels = max(1, c // 8)
        total += 2 * (2 * c * key_channels + 2 * c * c) * pixels  # f, g, h, v 1×1 convs
        keys = (size[0] // 2) * (size[1] // 2) if cfg.attention_pool and min(size) >= 2 else pixels
        total += 2 * 2 * pixels * keys * c  # QKᵀ and PV with q, k padded to C
    return total
