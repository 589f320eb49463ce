"""``python -m benchmarks.memory_bench [--slices A B] [--configs ...] [--output F.json]``: peak memory of ``fagan-sr`` per output voxel.

Template volumes (axial slices of the ICBM152 template, zero-padded to 128², 1 mm) with two numbers
of slices are super-resolved ×2 by the ``fagan-sr`` command, each in a fresh process, for each
configuration (the default path, and ``--adapt 0``). The child reports its own ``VmHWM`` (peak RSS
of its address space; ``ru_maxrss`` from ``os.wait4`` is recorded too, but Linux lets it start at the
parent's RSS). The slope between the two sizes, in bytes per output voxel, is what grows with the
volume; subtracting the input's own 4 bytes per input voxel gives the figure of issue #19
(≤ 16 bytes per output voxel on top of the input). ``--repo`` runs another checkout (before/after).
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
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from benchmarks.common import checked_output, write_output

SCALE = 2
SIDE = 128
CONFIGS = {"default": [], "no adaptation": ["--adapt", "0"]}
CHILD = """
import sys
from fagan_engine.__main__ import main
code = main(["sr"] + sys.argv[2:])
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
open(sys.argv[1], "w").write(peak)
sys.exit(code)
"""

def make_input(path: Path, slices: int, side: int = SIDE) -> None:
    """Template slices padded (or cropped) to side², 1 mm isotropic."""
    from fagan_engine.mri.sample_data import icbm152_t1_path

    template = sitk.GetArrayFromImage(sitk.ReadImage(str(icbm152_t1_path()))).astype(np.float32)
    first = max(0, template.shape[0] // 2 - slices // 2)
    volume = np.zeros((slices, side, side), np.float32)
    source = template[first : first + slices, ::2, ::2]
    rows, cols = min(side, source.shape[1]), min(side, source.shape[2])
    volume[: len(source), :rows, :cols] = source[:, :rows, :cols]
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path))


def run_row(config: str, slices: int, folder: Path, threads: int, repo: Path, extension: str) -> Dict[str, Any]:
    """One fresh ``fagan-sr`` process: peak RSS (its VmHWM and ``ru_maxrss``) and wall time."""
    name = f"{config.replace(' ', '_')}_{slices}"
    source = folder / f"input_{slices}.nii.gz"
    if not source.exists():
        make_input(source, slices)
    peak_file = folder / f"{name}.peak"
    output = folder / f"{name}{extension}"
    flags = CONFIGS[config]
    command = [sys.executable, "-c", CHILD, str(peak_file), str(source), str(output), "--scale", str(SCALE),
               "--device", "cpu", "--progress", "none", "--report", str(folder / f"{name}.json"), "--force", *flags]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(repo))
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=str(repo))
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {status}")
    output_voxels = slices * (SIDE * SCALE) ** 2
    return {"config": config, "flags": " ".join(flags), "slices": slices, "input_voxels": slices * SIDE**2,
            "output_voxels": output_voxels, "seconds": round(time.perf_counter() - started, 1),
            "peak_kib": int(peak_file.read_text()), "ru_maxrss_kib": usage.ru_maxrss}


def slopes(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per configuration: bytes per output voxel between the smallest and the largest volume, and that minus the input."""
    result = []
    for config in dict.fromkeys(row["config"] for row in rows):
        mine = sorted((r for r in rows if r["config"] == config), key=lambda r: r["output_voxels"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        per_voxel = (large["peak_kib"] - small["peak_kib"]) * 1024 / (large["output_voxels"] - small["output_voxels"])
        input_share = 4 / SCALE**2  # the float32 input, per output voxel
        result.append({"config": config, "bytes_per_output_voxel": round(per_voxel, 1),
                       "over_input": round(per_voxel - input_share, 1)})
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs=2, default=[24, 96], metavar=("SMALL", "LARGE"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extension", default=".nii.gz", help="output file extension (default .nii.gz)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose fagan_engine runs (default: this one)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    output = checked_output(args.output)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fagan-memory-bench-") as name:
        for config in args.configs:
            for slices in args.slices:
                rows.append(run_row(config, slices, Path(name), args.threads, args.repo.resolve(), args.extension))
                print(json.dumps(rows[-1]), flush=True)
    summary = slopes(rows)
    for line in summary:
        print(json.dumps(line), flush=True)
    if output is not None:
        write_output(output, json.dumps({"threads": args.threads, "rows": rows, "slopes": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
