"""Self-attention cost at a given number of positions: fused SDPA, ONNX Runtime, and naive N×N.

``attention`` runs in a fresh worker: one SelfAttention(C=32) call on a (1, 32, side, side)
feature map, its time and the RSS (and on CUDA the GPU memory) it added. ``torch_peak_bytes`` measures the torch path's peak
allocation with the profiler (used by the memory test).
"""
from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np

from .common import current_rss_mib, peak_rss_mib

CHANNELS = 32


def attention(p: Dict[str, Any]) -> Dict[str, Any]:
    """``impl``: "sdpa" (the module), "naive" (explicit softmax matrix) or "onnx" (exported module,
    CPU); ``device`` (default cpu) for the torch ones. On CUDA the added GPU memory is reported too."""
    x = np.random.default_rng(0).random((1, CHANNELS, p["side"], p["side"]), dtype=np.float32)
    cuda = p.get("device", "cpu") == "cuda"
    if p["impl"] == "onnx":
        call = _onnx_call(p["onnx"], x)
    else:
        call = _torch_call(p["impl"], p["pool"], x, "cuda" if cuda else "cpu")
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    baseline = current_rss_mib()
    seconds = []
    for _ in range(p["repeats"]):
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = peak_rss_mib()
    result = {"seconds": min(seconds), "baseline_rss_mib": baseline, "peak_rss_mib": peak, "added_rss_mib": peak - baseline}
    if cuda:
        result["cuda_added_mib"] = (torch.cuda.max_memory_allocated() - gpu_before) / 2**20
    return result


def build_module(pool: bool) -> Any:
    """SelfAttention with γ = 1 (so its output depends on the attention) and fixed weights."""
    import torch

    from fagan_engine.models.archs import SelfAttention

    torch.manual_seed(0)
    module = SelfAttention(CHANNELS, pool=pool).eval()
    with torch.no_grad():
        module.gamma.fill_(1.0)
    return module


def naive_attention(module: Any, x: Any) -> Any:
    """The paper's literal form: the full softmax(QKᵀ) matrix, then its product with V."""
    import torch

    batch, channels, height, width = x.shape
    query, key, value = module.project(x)
    weights = torch.softmax(query @ key.transpose(-1, -2), dim=-1)
    attended = (weights @ value).squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)
    return module.gamma * module.v(attended) + x


def torch_peak_bytes(side: int, pool: bool, naive: bool = False) -> int:
    """Peak bytes held by torch tensors during one forward (profiler memory timeline, CPU).

    The timeline records every allocation, including a kernel's internal temporaries.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    module = build_module(pool)
    x = torch.rand(1, CHANNELS, side, side)
    activities = [ProfilerActivity.CPU]
    with torch.inference_mode(), profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        naive_attention(module, x) if naive else module(x)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of a CUDA-only API
        path = Path(folder) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return int(max(sum(row) for row in sizes))


def _torch_call(impl: str, pool: bool, x: np.ndarray, device: str) -> Any:
    import torch

    module = build_module(pool).to(device)
    tensor = torch.from_numpy(x).to(device)

    def call() -> None:
        with torch.inference_mode():
            naive_attention(module, tensor) if impl == "naive" else module(tensor)

    return call


def _onnx_call(path: str, x: np.ndarray) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the engine's runner
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def export_module(pool: bool, path: str) -> str:
    """Export ``build_module(pool)`` with the engine's ONNX path (dynamic size)."""
    import torch

    from fagan_engine.inference.onnx_backend import trace_to_onnx
    from fagan_engine.util.atomic import atomic_write_bytes

    proto = trace_to_onnx(build_module(pool), torch.rand(2, CHANNELS, 12, 10))
    atomic_write_bytes(path, proto.SerializeToString())
    return path
