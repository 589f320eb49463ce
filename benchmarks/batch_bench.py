"""Batch mode against separate calls: N small volumes in one ``fagan-sr --output-dir`` process
versus N ``fagan-sr INPUT OUTPUT`` processes (import, checkpoint load and backend set-up paid
N times), and the batch with and without ``--prefetch`` (reading the next volume meanwhile).

``python -m benchmarks.batch_bench [--count 20] [--size 64 64 16] [--scale 2] [--device cpu]
[--threads N] [--method fagan|bicubic|lanczos] [--separate N] [--smoke] [--output FILE.json]``. Every run is a fresh ``python -m fagan_engine sr``
process with the bundled checkpoint; wall-clock times include process start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from benchmarks.common import checked_device, checked_output, write_output


def make_volumes(folder: Path, count: int, size: Sequence[int], seed: int = 0) -> List[Path]:
    """``count`` smooth random float32 NIfTI volumes of ``size`` (x, y, z), 1×1×3 mm."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(seed)
    for n in range(count):
        noise = rng.random(tuple(size[::-1])).astype(np.float32)
        image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(noise * 1000), 1.5)
        image.SetSpacing((1.0, 1.0, 3.0))
        path = folder / f"case{n:03d}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


def _sr(args: List[str], threads: Optional[int], cpu: List[float]) -> float:
    """Run one ``fagan-sr`` process; return its wall seconds and append its CPU seconds (user + system) to ``cpu``."""
    import resource

    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fagan_engine", "sr", *args, "--progress", "none"], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"fagan-sr failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return seconds


def run_batch_bench(count: int, size: Sequence[int], scale: int, device: str, threads: Optional[int], folder: Path,
                    prefetch: bool = True, method: str = "fagan", separate: Optional[int] = None) -> Dict[str, Any]:
    """Separate calls, then the batch, then the batch with --prefetch (unless ``prefetch`` is False).

    Wall and CPU seconds (user + system of the process) are both recorded: on a shared machine the
    wall time depends on the other jobs, the CPU time much less. ``separate``: how many of the
    volumes get a separate call (default all); the separate totals are then the median call × count."""
    inputs = make_volumes(folder / "in", count, size)
    common = ["--scale", str(scale), "--method", method] + (["--device", device] if method == "fagan" else [])
    (folder / "separate").mkdir()
    separate_cpu: List[float] = []
    measured = count if separate is None else max(0, min(separate, count))
    calls = [_sr([str(p), str(folder / "separate" / p.name), *common], threads, separate_cpu) for p in inputs[:measured]]
    batch_cpu: List[float] = []
    batch = _sr([str(folder / "in"), "--output-dir", str(folder / "batch"), *common], threads, batch_cpu)
    call, call_cpu = (float(np.median(calls)), float(np.median(separate_cpu))) if calls else (None, None)
    result: Dict[str, Any] = {
        "count": count, "size": list(size), "scale": scale, "method": method, "device": device, "threads": threads,
        "separate_calls_measured": measured,
        "separate_median_call_s": round(call, 3) if call else None,
        "separate_median_call_cpu_s": round(call_cpu, 3) if call_cpu else None,
        "separate_total_s": round(call * count if measured < count else sum(calls), 3) if call else None,
        "separate_total_cpu_s": round(call_cpu * count if measured < count else sum(separate_cpu), 3) if call_cpu else None,
        "batch_s": round(batch, 3), "batch_cpu_s": round(batch_cpu[0], 3),
        "batch_per_case_s": round(batch / count, 3), "batch_per_case_cpu_s": round(batch_cpu[0] / count, 3),
    }
    if call:
        result["speedup"] = round(result["separate_total_s"] / batch, 2)
        result["cpu_speedup"] = round(result["separate_total_cpu_s"] / batch_cpu[0], 2)
    if prefetch:
        prefetch_cpu: List[float] = []
        result["batch_prefetch_s"] = round(_sr([str(folder / "in"), "--output-dir", str(folder / "prefetch"), "--prefetch", *common],
                                               threads, prefetch_cpu), 3)
        result["batch_prefetch_cpu_s"] = round(prefetch_cpu[0], 3)
        result["prefetch_gain"] = round(batch / result["batch_prefetch_s"], 3)
    return result


def batch_section(smoke: bool, device: str, tmp: Path) -> List[Dict[str, Any]]:
    """The suite's "batch" section (benchmarks/run.py): 20 volumes of 64×64×16 (smoke: 2 of 16×16×4)."""
    count, size = (2, (16, 16, 4)) if smoke else (20, (64, 64, 16))
    try:
        return [run_batch_bench(count, size, 2, device, 1 if smoke else None, tmp / "batch_bench", prefetch=not smoke)]
    except RuntimeError as exc:
        return [{"error": str(exc)}]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=3, default=(64, 64, 16), metavar=("X", "Y", "Z"))
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--method", default="fagan", choices=("fagan", "bicubic", "lanczos"))
    parser.add_argument("--separate", type=int, metavar="N", help="separate calls for only N of the volumes (totals: median × count)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every fagan-sr process")
    parser.add_argument("--smoke", action="store_true", help="2 volumes of 16×16×4")
    parser.add_argument("--output", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    checked_device(args.device)
    output = checked_output(args.output)
    count, size = (2, (16, 16, 4)) if args.smoke else (args.count, tuple(args.size))
    with tempfile.TemporaryDirectory(prefix="fagan-batch-bench-") as folder:
        try:
            result = run_batch_bench(count, size, args.scale, args.device, args.threads, Path(folder), method=args.method,
                                     separate=args.separate)
        except RuntimeError as exc:  # a fagan-sr run failed: its last line, nothing written
            sys.stderr.write(f"error: {exc}\n")
            return 1
    from .machine import load_average, machine_info

    result["machine"] = machine_info(args.device)
    result["load_average_after"] = load_average()
    result["command"] = " ".join(["python -m benchmarks.batch_bench"] + list(sys.argv[1:] if argv is None else argv))
    text = json.dumps(result, indent=2)
    print(text)
    if output is not None:
        write_output(output, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
