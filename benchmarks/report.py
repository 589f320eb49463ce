"""Markdown tables of one benchmark run."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


def markdown(results: Dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# FA-GAN benchmarks: {m['cpu']}" + (f" + {m['gpu']}" if m.get("gpu") else ""),
        "",
        f"- machine: {m['cpu']}, {m['cores']} usable cores, {m['ram_gib']} GiB RAM"
        + (f", {m['gpu']} ({m['gpu_memory_gib']} GiB)" if m.get("gpu") else ""),
        f"- software: {m['os']}, Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}",
        f"- date: {m['date']}; commit: {m['commit']}",
        f"- load average (1, 5, 15 min) before: {m.get('load_average_before')}, after: {m.get('load_average_after')}"
        " (other jobs sharing the cores make timings noisy; compare rows of one run)",
        f"- command: `{results['command']}`" + (" (smoke sizes: not representative)" if results["smoke"] else ""),
        "",
        "## Measured peak (GFLOP/s)",
        "",
    ]
    lines += _table(
        ["precision", "3×3 conv 64→64", "matmul", "peak used"],
        [[p, _f(v["conv3x3_gflops"]), _f(v["matmul_gflops"]), _f(v["peak_gflops"])] for p, v in results["peak"].items()],
    )
    s = results["sizes"]
    lines += ["", f"## Volume inference ({s['slices']} slices, {s['output']}² output, batch {s['batch']})", ""]
    lines += _table(
        ["scale", "backend", "device", "precision", "weights", "s/volume", "s/slice", "model s/slice", "GFLOP/slice",
         "GFLOP/s", "% of peak", "× bicubic time", "peak RSS MiB", "GPU peak MiB"],
        [
            [f"×{r['scale']}", r["backend"] + (" compiled" if r["compiled"] else ""), r["device"], r["precision"], r["weights"],
             _f(r.get("volume_s")), _f(r.get("slice_s")), _f(r.get("model_slice_s")),
             _f(r["flops_per_slice"] / 1e9) if r["backend"] != "bicubic" else "",
             _f(r.get("achieved_gflops")), _pct(r.get("fraction_of_peak")), _f(r.get("vs_bicubic")),
             _f(r.get("peak_rss_mib")), _f(r.get("cuda_peak_mib")) + _err(r)]
            for r in results["inference"]
        ],
    )
    lines += ["", "GFLOP/slice: torch.utils.flop_counter (conv, linear, attention matmuls); bicubic is not counted.", ""]
    lines += ["## Self-attention (C = 32, one feature map)", ""]
    lines += _table(
        ["positions", "keys", "pooled", "used by", "implementation", "device", "seconds", "added RSS MiB", "added GPU MiB",
         "N×M matrix MiB"],
        [
            [f"{r['side']}²", r["keys"], "yes" if r["pool"] else "no", r["used_by"], _IMPL[r["impl"]], r.get("device", "cpu"),
             _f(r.get("seconds")), _f(r.get("added_rss_mib")) if "skipped" not in r else f"skipped: {r['skipped']}",
             _f(r.get("cuda_added_mib")), _f(r["nxn_matrix_mib"]) + _err(r)]
            for r in results["attention"]
        ],
    )
    lines += ["", "## Training step (default ×4 FA-GAN, G + D + losses)", ""]
    lines += _table(
        ["device", "precision", "content loss", "batch × patch", "s/step", "it/s", "HR patches/s", "GFLOP/step",
         "GFLOP/s", "MFU", "peak RSS MiB", "GPU peak MiB"],
        [
            [r["device"], r["precision"], "VGG19 φ5,4" if r["vgg"] else "pixel MSE", f"{r['batch']} × {r['patch']}²",
             _f(r.get("step_s")), _f(r.get("iterations_per_s")), _f(r.get("patches_per_s")),
             _f(r["flops_per_step"] / 1e9) if "flops_per_step" in r else "-", _f(r.get("achieved_gflops")),
             _pct(r.get("mfu")), _f(r.get("peak_rss_mib")), _f(r.get("cuda_peak_mib")) + _err(r)]
            for r in results["training"]
        ],
    )
    lines += ["", "## ×8 tiling (one slice)", ""]
    lines += _table(
        ["output", "tile (LR px)", "weights", "s/slice", "peak RSS MiB", "baseline RSS MiB", "GPU peak MiB"],
        [
            [f"{r['output']}²", r["tile"] or "none", r["weights"], _f(r.get("slice_s")), _f(r.get("peak_rss_mib")),
             _f(r.get("baseline_rss_mib")), _f(r.get("cuda_peak_mib")) + _err(r)]
            for r in results["tiling"]
        ],
    )
    if results.get("memory"):
        lines += ["", "## Peak RSS as the slice grows (×4, 8 slices, batch 8)", ""]
        lines += _table(
            ["output", "backend", "s/slice", "baseline RSS MiB", "peak RSS MiB"],
            [[f"{r['output']}²", r["backend"], _f(r.get("slice_s")), _f(r.get("baseline_rss_mib")), _f(r.get("peak_rss_mib")) + _err(r)]
             for r in results["memory"]],
        )
    if results.get("cpu_variants"):
        lines += ["", "## CPU variants (model only, measured round-robin in one process)", ""]
        lines += _table(
            ["scale", "variant", "batch", "ms/slice", "first call s", "max |Δ| vs first row"],
            [[f"×{r['scale']}", r.get("name", "-"), r.get("batch", "-"), _f(r.get("ms_per_slice")), _f(r.get("first_call_s")),
              _g(r.get("max_abs_vs_first")) + _err(r)] for r in results["cpu_variants"]],
        )
    if results.get("trust"):
        from .trust_bench import markdown as trust_markdown

        measured = [r for r in results["trust"] if "error" not in r]
        lines += ["", "## Trust outputs against the network's single pass", ""]
        lines += trust_markdown(measured).splitlines() if measured else []
        lines += [f"- ×{r.get('scale', '?')} failed: {r['error']}" for r in results["trust"] if "error" in r]
    for section, title in (("batch", "Batch mode against separate calls"), ("through_plane", "Through-plane, end to end")):
        for row in results.get(section) or []:
            lines += ["", f"## {title}", ""]
            lines += [f"- {key}: {_f(value) if isinstance(value, float) else value}" for key, value in row.items()
                      if isinstance(value, (int, float, str)) and not isinstance(value, bool)]
    return "\n".join(lines) + "\n"


_IMPL = {"sdpa": "torch SDPA (engine)", "onnx": "ONNX Runtime (engine export)", "naive": "naive N×N softmax"}


def _table(header: Sequence[str], rows: List[List[Any]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _f(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _g(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1e}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _err(row: Dict[str, Any]) -> str:
    return f" (failed: {row['error']})" if "error" in row else ""
