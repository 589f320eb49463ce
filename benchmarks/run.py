"""``python -m benchmarks.run [--smoke] [--device cpu|cuda] [--output DIR]``: the benchmark suite.

Writes ``DIR/<machine>.json`` and ``DIR/<machine>.md`` (``<machine>-smoke.*`` with --smoke).
Sections: measured peak, volume inference (bicubic yardstick, torch, ONNX Runtime; on CUDA
fp32, bf16, bf16 + torch.compile), self-attention, training step, ×8 tiling, on CPU peak
RSS against slice size and the CPU variants tried for speed, and the trust outputs' cost
(``trust_bench``, in this process). Each other timed configuration runs in a fresh worker
process, so its peak RSS is its own.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from .batch_bench import batch_section
from .common import FULL, SMOKE, Sizes, checked_device, checked_output, export_padded_onnx, export_to, prepare_checkpoint, worker_env
from .machine import REPO, load_average, machine_info, machine_name
from .through_plane_bench import through_plane_section
from .trust_bench import trust_section
from .worker import run_task


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (< 60 s), for CI")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"), help="results folder")
    args = parser.parse_args(argv)
    checked_device(args.device)
    checked_output(Path(args.output) / "results.json")  # the folder, before the run: the results are written after it
    results = run_suite(SMOKE if args.smoke else FULL, args.device, args.smoke)
    results["command"] = " ".join(["python -m benchmarks.run"] + list(sys.argv[1:] if argv is None else argv))
    paths = write_results(results, Path(args.output))
    print("\n".join(str(p) for p in paths))
    return 0


def run_suite(sizes: Sizes, device: str, smoke: bool) -> Dict[str, Any]:
    import torch

    from .peak import measure_peak

    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    info = machine_info(device)
    peak = {"fp32": measure_peak(device, torch.float32, smoke)}
    if device == "cuda":
        peak["bf16"] = measure_peak(device, torch.bfloat16, smoke)
    with tempfile.TemporaryDirectory(prefix="fagan-bench-") as folder:
        tmp = Path(folder)
        results: Dict[str, Any] = {
            "machine": info,
            "smoke": smoke,
            "device": device,
            "sizes": dataclasses.asdict(sizes),
            "peak": peak,
            "inference": inference_section(sizes, device, peak, tmp),
            "attention": attention_section(sizes, device, tmp),
            "training": training_section(sizes, device, peak),
            "tiling": tiling_section(sizes, device, tmp),
            "memory": memory_section(sizes, device, tmp),
            "cpu_variants": variants_section(sizes, tmp) if sizes.variants and device == "cpu" else [],
            "trust": trust_section(sizes, device, tmp),
            "batch": batch_section(smoke, device, tmp),
            "through_plane": through_plane_section(smoke, device, tmp),
        }
    results["machine"]["load_average_after"] = load_average()
    return results


def inference_section(sizes: Sizes, device: str, peak: Dict[str, Any], tmp: Path) -> List[Dict[str, Any]]:
    from fagan_engine.models.checkpoint import load_generator

    from .flops import analytic_generator_flops, generator_flops

    rows = []
    for scale in sizes.scales:
        side = sizes.output // scale
        model_info = prepare_checkpoint(scale, tmp)
        model, metadata = load_generator(model_info["checkpoint"])
        flops = generator_flops(model, side, side)
        analytic = analytic_generator_flops(metadata.model_config(), side, side)
        base = dict(scale=scale, slices=sizes.slices, side=side, batch=sizes.batch, model_batches=sizes.model_batches,
                    checkpoint=model_info["checkpoint"])
        configs = [dict(backend="bicubic", device="cpu", precision="fp32", compiled=False)]
        if device == "cpu":
            onnx = export_to(model_info["checkpoint"], tmp)
            configs += [
                dict(backend="torch", device="cpu", precision="fp32", compiled=False),
                dict(backend="onnx", device="cpu", precision="fp32", compiled=False, onnx=onnx),
            ]
        else:
            configs += [dict(backend="torch", device="cuda", precision=p, compiled=c) for p, c in (("fp32", False), ("bf16", False), ("bf16", True))]
        bicubic_s = None
        for config in configs:
            row = {**base, **config, "weights": model_info["weights"], "flops_per_slice": flops, "analytic_flops_per_slice": analytic}
            row.update(run_task("volume", {**base, **config}, worker_env(sizes)))
            if config["backend"] == "bicubic":
                bicubic_s = row.get("volume_s")
            elif "model_slice_s" in row:
                achieved = flops / row["model_slice_s"]
                row["achieved_gflops"] = achieved / 1e9
                row["fraction_of_peak"] = achieved / 1e9 / peak[config["precision"]]["peak_gflops"]
                if bicubic_s:
                    row["vs_bicubic"] = row["volume_s"] / bicubic_s
            row.pop("checkpoint")
            row.pop("onnx", None)
            rows.append(row)
    return rows


def attention_section(sizes: Sizes, device: str, tmp: Path) -> List[Dict[str, Any]]:
    from .attention_bench import CHANNELS, export_module

    rows = []
    exported = {pool: export_module(pool, str(tmp / f"attention_pool{int(pool)}.onnx")) for pool in sizes.attention_pools}
    for side in sizes.attention_sides:
        for pool in sizes.attention_pools:
            keys = (side // 2) ** 2 if pool else side * side
            matrix_bytes = 4 * side * side * keys
            base = {"side": side, "positions": side * side, "keys": keys, "pool": pool, "channels": CHANNELS,
                    "used_by": used_by(side, sizes.output), "nxn_matrix_mib": matrix_bytes / 2**20}
            for impl in ("sdpa", "onnx", "naive"):
                row = {**base, "impl": impl, "device": "cpu" if impl == "onnx" else device}
                if impl == "naive" and matrix_bytes > sizes.naive_limit_bytes:
                    row["skipped"] = f"N×M matrix alone is {matrix_bytes / 2**30:.0f} GiB"
                else:
                    params = {"side": side, "pool": pool, "impl": impl, "onnx": exported[pool], "repeats": sizes.repeats, "device": row["device"]}
                    row.update(run_task("attention", params, worker_env(sizes)))
                rows.append(row)
    return rows


def used_by(side: int, output: int) -> str:
    """Which default-size configurations run self-attention at side² positions."""
    uses = [f"lr x{s}" for s in (2, 4, 8) if output // s == side]
    if side == output:
        uses.append("hr (any scale)")
    return ", ".join(uses) or "-"


def training_section(sizes: Sizes, device: str, peak: Dict[str, Any]) -> List[Dict[str, Any]]:
    precision = "bf16" if device == "cuda" else "fp32"
    rows = []
    for vgg in sizes.train_vgg:
        params = dict(device=device, precision=precision, batch=sizes.train_batch, patch=sizes.train_patch, vgg=vgg, steps=sizes.train_steps)
        row = {**params, **run_task("training", params, worker_env(sizes))}
        if "step_s" in row:
            row["achieved_gflops"] = row["flops_per_step"] / row["step_s"] / 1e9
            row["mfu"] = row["achieved_gflops"] / peak[precision]["peak_gflops"]
        rows.append(row)
    return rows


def tiling_section(sizes: Sizes, device: str, tmp: Path) -> List[Dict[str, Any]]:
    scale = 8
    model_info = prepare_checkpoint(scale, tmp)
    side = sizes.tiling_output // scale
    rows = []
    for tile in (None, sizes.tiling_tile):
        params = dict(scale=scale, side=side, tile=tile, device=device, checkpoint=model_info["checkpoint"])
        row = {**params, "output": sizes.tiling_output, "weights": model_info["weights"], **run_task("tiling", params, worker_env(sizes))}
        row.pop("checkpoint")
        rows.append(row)
    return rows


def memory_section(sizes: Sizes, device: str, tmp: Path) -> List[Dict[str, Any]]:
    """Peak RSS as the slice grows: ×4, 8 slices, batch 8 (CPU backends)."""
    if device != "cpu":
        return []
    checkpoint = prepare_checkpoint(4, tmp)["checkpoint"]
    onnx = export_to(checkpoint, tmp) if sizes.memory_outputs else None
    rows = []
    for output in sizes.memory_outputs:
        for backend in ("torch", "onnx"):
            params = dict(scale=4, side=output // 4, slices=8, batch=8, model_batches=1, checkpoint=checkpoint, onnx=onnx,
                          backend=backend, device="cpu", precision="fp32", compiled=False)
            result = run_task("volume", params, worker_env(sizes))
            rows.append({"output": output, "backend": backend, "slices": 8, "batch": 8, **{k: result.get(k) for k in
                         ("volume_s", "slice_s", "baseline_rss_mib", "peak_rss_mib", "error") if k in result}})
    return rows


def variants_section(sizes: Sizes, tmp: Path) -> List[Dict[str, Any]]:
    rows = []
    for scale in sizes.scales:
        checkpoint = prepare_checkpoint(scale, tmp)["checkpoint"]
        params = dict(scale=scale, side=sizes.output // scale, batch=sizes.batch, rounds=sizes.repeats, checkpoint=checkpoint,
                      onnx=export_to(checkpoint, tmp), onnx_padded=export_padded_onnx(checkpoint, tmp / f"padded_x{scale}.onnx"))
        result = run_task("variants", params, worker_env(sizes))
        rows += [{"scale": scale, **v} for v in result.get("variants", [])] or [{"scale": scale, **result}]
    return rows


def write_results(results: Dict[str, Any], folder: Path) -> List[Path]:
    from fagan_engine.util.atomic import atomic_write_bytes
    from fagan_engine.util.json_values import finite_json

    from .report import markdown

    folder.mkdir(parents=True, exist_ok=True)
    stem = machine_name(results["machine"]) + ("-smoke" if results["smoke"] else "")
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    atomic_write_bytes(json_path, (json.dumps(finite_json(results), indent=2, allow_nan=False) + "\n").encode("utf-8"))
    atomic_write_bytes(md_path, markdown(results).encode("utf-8"))
    return [json_path, md_path]


if __name__ == "__main__":
    sys.exit(main())
