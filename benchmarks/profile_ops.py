"""``python -m benchmarks.profile_ops [--scale 4] [--batch 8]``: where inference time goes.

Prints Markdown tables of the top operators of one batch of the default FA-GAN (random
weights) at the benchmark's slice size: torch (channels_last, as the engine runs it) from
torch.profiler, and ONNX Runtime from its own per-node profile, grouped by operator type.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .common import FULL, export_to, prepare_checkpoint


def torch_top_ops(checkpoint: str, scale: int, batch: np.ndarray, rows: int) -> List[str]:
    from torch.profiler import ProfilerActivity, profile

    from fagan_engine.inference.runners import load_runner

    runner = load_runner(scale, checkpoint, "cpu", "torch", False)[0]
    runner(batch)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        runner(batch)
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=32, max_shapes_column_width=48
    )
    return ["```", table.strip(), "```"]


def onnx_top_ops(onnx_path: str, batch: np.ndarray, rows: int) -> List[str]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        session.run(None, {"lr": batch})
        session.run(None, {"lr": batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: Dict[str, float] = collections.Counter()
    runs = [e for e in events if e.get("name") == "model_run"]
    last_run_start = runs[-1]["ts"]
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= last_run_start:
            per_op[event["args"]["op_name"]] += event["dur"] / 1e6
    total = runs[-1]["dur"] / 1e6
    lines = [f"ONNX Runtime, one run of a {batch.shape[0]}-slice batch: {total:.2f} s", "", "| operator | seconds | share |", "|---|---|---|"]
    for name, seconds in sorted(per_op.items(), key=lambda kv: -kv[1])[:rows]:
        label = "Loop (contains the MultiHeadAttention below)" if name == "Loop" else name
        lines.append(f"| {label} | {seconds:.3f} | {100 * seconds / total:.0f}% |")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_ops", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    parser.add_argument("--batch", type=int, default=FULL.batch)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args(argv)
    side = FULL.output // args.scale
    batch = np.random.default_rng(0).random((args.batch, 1, side, side), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = prepare_checkpoint(args.scale, Path(folder))["checkpoint"]
        lines = [f"### ×{args.scale}, batch {args.batch} × {side}² LR", "", "torch (channels_last), top operators by self CPU time:", ""]
        lines += torch_top_ops(checkpoint, args.scale, batch, args.rows)
        lines += [""] + onnx_top_ops(export_to(checkpoint, Path(folder)), batch, args.rows)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
