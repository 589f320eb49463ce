"""CPU inference variants compared by the benchmark: what the engine does now against the
alternatives tried (layout, threads, spinning, batch size, padding, compile, bf16)."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np


def build_variants(p: Dict[str, Any]) -> List[Dict[str, Any]]:
    """name, batch, run (numpy → numpy) and optional torch threads."""
    import onnxruntime as ort

    from fagan_engine.inference.onnx_backend import onnx_runner
    from fagan_engine.inference.runners import load_runner, torch_runner
    from fagan_engine.models.checkpoint import load_generator

    scale, batch = p["scale"], p["batch"]
    nchw, _ = load_generator(p["checkpoint"])
    engine_torch = load_runner(scale, p["checkpoint"], "cpu", "torch", False)[0]
    engine_onnx = onnx_runner(p["onnx"], scale)[0]
    spinning = ort.InferenceSession(p["onnx"], providers=["CPUExecutionProvider"])
    table = [
        dict(name="torch NCHW (before)", batch=batch, run=torch_runner(nchw, "cpu")),
        dict(name="torch channels_last (engine)", batch=batch, run=engine_torch),
        dict(name="torch channels_last, 1 thread", batch=batch, run=engine_torch, threads=1),
        dict(name="torch channels_last, batch 1", batch=1, run=engine_torch),
        dict(name="torch channels_last, batch 16", batch=16, run=engine_torch),
        dict(name="torch channels_last, bf16 autocast", batch=batch, run=_bf16(p["checkpoint"])),
        dict(name="ONNX Runtime, spinning threads (before)", batch=batch, run=lambda x: spinning.run(None, {"lr": x})[0]),
        dict(name="ONNX Runtime, padded q/k (before)", batch=batch, run=onnx_runner(p["onnx_padded"], scale)[0]),
        dict(name="ONNX Runtime (engine)", batch=batch, run=engine_onnx),
        dict(name="ONNX Runtime, 1 thread", batch=batch, run=_onnx_threads(p["onnx"], 1)),
        dict(name="ONNX Runtime, batch 1", batch=1, run=engine_onnx),
        dict(name="ONNX Runtime, batch 16", batch=16, run=engine_onnx),
    ]
    table.append(dict(name="torch.compile (inductor, freezing)", batch=batch, run=_compiled(p["checkpoint"])))
    return table


def call_with_threads(variant: Dict[str, Any], batch: np.ndarray) -> np.ndarray:
    """Run a variant with its torch thread count, restoring the previous one."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(variant.get("threads", previous))
    try:
        return variant["run"](batch)
    finally:
        torch.set_num_threads(previous)


def _bf16(checkpoint: str) -> Any:
    import torch

    from fagan_engine.models.checkpoint import load_generator

    model = load_generator(checkpoint)[0].to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(torch.from_numpy(batch)).float().numpy()

    return run


def _onnx_threads(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"lr": batch})[0]


def _compiled(checkpoint: str) -> Any:
    """torch.compile (inductor, weight freezing) of the channels_last model; compiles on first call."""
    import torch
    import torch._inductor.config as inductor_config

    from fagan_engine.models.checkpoint import load_generator

    inductor_config.freezing = True
    model = torch.compile(load_generator(checkpoint)[0].to(memory_format=torch.channels_last), dynamic=False)

    def run(data: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(data)).numpy()

    return run
