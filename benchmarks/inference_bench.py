"""Volume inference tasks, each run in a fresh worker process so its peak RSS is its own.

``volume``: a synthetic LR volume (slices × side²) super-resolved end to end through
``fagan_engine.pipeline.report.super_resolve`` (checkpoint load, normalisation, batching, output
volume), after one warm-up call on one batch (compiled rows: ``COMPILED_WARMUPS`` calls on the whole volume, every batch
shape included); then the model alone on ``model_batches``
prepared batches (``model_s`` = that per-slice time × slices). ``tiling``: one ×8 slice with
and without ``tile_size``. The ONNX Runtime worker never imports torch, as in a Slicer
without PyTorch.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict

import numpy as np

from .common import current_rss_mib, peak_rss_mib, synthetic_volume

PLANE = (0, 1)
COMPILED_WARMUPS = 3
"""Warm-up calls of a ``torch.compile(mode="reduce-overhead")`` row: its first call runs eagerly and a later one records
the CUDA graph, so a single warm-up left that recording inside the timed calls."""


def volume(p: Dict[str, Any]) -> Dict[str, Any]:
    """End-to-end and model-only time of one backend on one volume."""
    image = synthetic_volume(p["slices"], p["side"])
    warmup = synthetic_volume(min(p["batch"], p["slices"]), p["side"], seed=1)
    end_to_end = _end_to_end(p)
    for _ in range(COMPILED_WARMUPS if p.get("compiled") else 1):
        end_to_end(image if p.get("compiled") else warmup)
    baseline = current_rss_mib()
    start = time.perf_counter()
    end_to_end(image)
    volume_s = time.perf_counter() - start
    model_slice_s, cuda_peak = _model_only(p)
    result = {
        "volume_s": volume_s,
        "slice_s": volume_s / p["slices"],
        "model_s": model_slice_s * p["slices"],
        "model_slice_s": model_slice_s,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
    }
    if cuda_peak is not None:
        result["cuda_peak_mib"] = cuda_peak
    return result


def tiling(p: Dict[str, Any]) -> Dict[str, Any]:
    """One ×scale slice (torch fp32, or bf16 on CUDA) with ``tile`` (None: whole slice)."""
    from fagan_engine.pipeline.report import super_resolve

    image = synthetic_volume(1, p["side"])
    kwargs = dict(checkpoint=p["checkpoint"], plane=PLANE, device=p["device"], batch_size=1, tile_size=p["tile"],
                  adapt_iterations=0, enforce_consistency=False, ensemble=1)
    super_resolve(image, p["scale"], **kwargs)
    cuda = p["device"] == "cuda"
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    baseline = current_rss_mib()
    start = time.perf_counter()
    super_resolve(image, p["scale"], **kwargs)
    result = {"slice_s": time.perf_counter() - start, "baseline_rss_mib": baseline, "peak_rss_mib": peak_rss_mib()}
    if cuda:
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _end_to_end(p: Dict[str, Any]) -> Callable[[Any], Any]:
    from fagan_engine.inference.resolver import super_resolve_with_model
    from fagan_engine.pipeline.report import super_resolve

    common = dict(plane=PLANE, batch_size=p["batch"])
    # the network alone, one pass per slice (the default path, with its x4/x8 self-ensemble: default_run_bench)
    network = dict(common, adapt_iterations=0, enforce_consistency=False, ensemble=1)
    if p["backend"] == "bicubic":
        return lambda image: super_resolve(image, p["scale"], method="bicubic", **common)
    if p["backend"] == "onnx":
        return lambda image: super_resolve(image, p["scale"], checkpoint=p["onnx"], backend="onnx", **network)
    if p["precision"] == "fp32" and not p["compiled"]:
        return lambda image: super_resolve(image, p["scale"], checkpoint=p["checkpoint"], device=p["device"], **network)
    model, normalization = _cuda_model(p)
    return lambda image: super_resolve_with_model(image, model, normalization, **common)


def _model_only(p: Dict[str, Any]) -> "tuple[float, Any]":
    """Seconds per slice of the network alone, over ``model_batches`` prepared batches."""
    batches = p["model_batches"]
    rng = np.random.default_rng(0)
    batch = rng.random((p["batch"], 1, p["side"], p["side"]), dtype=np.float32)
    if p["backend"] in ("onnx", "bicubic"):
        if p["backend"] == "onnx":
            from fagan_engine.inference.onnx_backend import onnx_runner

            runner = onnx_runner(p["onnx"], p["scale"])[0]
        else:
            from fagan_engine.inference.runners import bicubic_runner

            runner = bicubic_runner(p["scale"])
        runner(batch)
        start = time.perf_counter()
        for _ in range(batches):
            runner(batch)
        return (time.perf_counter() - start) / (batches * p["batch"]), None
    import torch

    from fagan_engine.inference.runners import load_runner

    cuda = p["device"] == "cuda"
    if cuda:
        model, _ = _cuda_model(p)
        x = torch.from_numpy(batch).to("cuda")
        call = lambda: model(x)  # noqa: E731
    else:
        runner = load_runner(p["scale"], p["checkpoint"], "cpu", "torch", False)[0]
        call = lambda: runner(batch)  # noqa: E731
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
        for _ in range(COMPILED_WARMUPS if p.get("compiled") else 1):
            call()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(batches):
            call()
        sync()
        seconds = time.perf_counter() - start
    return seconds / (batches * p["batch"]), (torch.cuda.max_memory_allocated() / 2**20 if cuda else None)


def _cuda_model(p: Dict[str, Any]) -> "tuple[Any, Any]":
    """The checkpoint's generator on CUDA, channels_last, in bf16 autocast and/or compiled."""
    import torch

    from fagan_engine.models.checkpoint import load_generator

    model, metadata = load_generator(p["checkpoint"], expected_scale=p["scale"], device="cuda")
    from .cuda_generator import CudaGenerator

    model = model.to(memory_format=torch.channels_last)
    return CudaGenerator(model, p["precision"], p["compiled"]), metadata.normalization_config()



def variants(p: Dict[str, Any]) -> Dict[str, Any]:
    """Model-only ms/slice of CPU variants, measured round-robin in one process (fair ratios
    on a noisy machine), and each variant's max |Δ| against the first (fp32 NCHW torch)."""
    from .cpu_variants import build_variants, call_with_threads

    batch = np.random.default_rng(0).random((16, 1, p["side"], p["side"]), dtype=np.float32)
    table = build_variants(p)
    reference = table[0]["run"](batch[: p["batch"]])
    errors, first_call = {}, {}
    for variant in table:  # warm-up call (compilation, kernel setup), also the accuracy check
        start = time.perf_counter()
        out = call_with_threads(variant, batch[: variant["batch"]])
        first_call[variant["name"]] = time.perf_counter() - start
        n = min(len(out), len(reference))
        errors[variant["name"]] = float(np.abs(out[:n] - reference[:n]).max())
    best: Dict[str, float] = {}
    for _ in range(p["rounds"]):
        for variant in table:
            start = time.perf_counter()
            call_with_threads(variant, batch[: variant["batch"]])
            per_slice = (time.perf_counter() - start) / variant["batch"]
            best[variant["name"]] = min(best.get(variant["name"], float("inf")), per_slice)
    return {
        "variants": [
            {"name": v["name"], "batch": v["batch"], "ms_per_slice": 1000 * best[v["name"]],
             "max_abs_vs_first": errors[v["name"]], "first_call_s": first_call[v["name"]]}
            for v in table
        ]
    }
