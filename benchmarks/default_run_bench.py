"""``python -m benchmarks.default_run_bench [--threads N] [--output F.json]``: the cost of ``fagan-sr``'s default path.

A 256×256×40 input (40 axial slices of the ICBM152 template, zero-padded to 256², 1 mm) is
super-resolved ×2 by the ``fagan-sr`` command in a fresh process, once per configuration:
the default (data-consistency projection and per-scan adaptation), without adaptation
(``--adapt 0``), the network alone (``--adapt 0 --no-enforce-consistency``), the default with a two-member
self-ensemble (``--ensemble 2``, the user's trade of time for quality at ×2) and Lanczos. Wall time
and peak RSS (the child's own ``VmHWM``, as ``memory_bench`` reads it: ``ru_maxrss`` may start at the parent's) per row;
the adaptation summary of the trust report.
Issue #16's bound: the default row ≤ 90 s on the 2-core CPU.
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
from benchmarks.memory_bench import CHILD

CONFIGS = {
    "default": [],
    "no adaptation": ["--adapt", "0"],
    "network only": ["--adapt", "0", "--no-enforce-consistency"],
    "self-ensemble 2": ["--ensemble", "2"],
    "lanczos": ["--method", "lanczos"],
}


def make_input(path: Path, slices: int = 40, side: int = 256) -> None:
    """The benchmark volume: template slices padded to side², 1 mm isotropic."""
    from fagan_engine.mri.sample_data import icbm152_t1_path

    template = sitk.GetArrayFromImage(sitk.ReadImage(str(icbm152_t1_path()))).astype(np.float32)
    first = template.shape[0] // 2 - slices // 2
    volume = np.zeros((slices, side, side), np.float32)
    rows, cols = min(side, template.shape[1]), min(side, template.shape[2])
    volume[:, :rows, :cols] = template[first : first + slices, :rows, :cols]
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path))


def run_row(name: str, flags: List[str], folder: Path, threads: int) -> Dict[str, Any]:
    """One fresh ``fagan-sr`` process; wall time, child peak RSS and the report's adaptation block."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    report = folder / f"{name.replace(' ', '_')}.json"
    output = folder / f"{name.replace(' ', '_')}.nii.gz"
    peak = folder / f"{name.replace(' ', '_')}.peak"
    command = [sys.executable, "-c", CHILD, str(peak), str(folder / "input.nii.gz"), str(output), "--scale", "2",
               "--device", "cpu", "--progress", "none", "--report", str(report), *flags]
    started = time.perf_counter()
    status = subprocess.call(command, env=env)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {status}")
    identity = json.loads(report.read_text())["identity"]
    return {"config": name, "flags": " ".join(flags), "seconds": round(seconds, 1),
            "peak_rss_mib": round(int(peak.read_text()) / 1024), "adaptation": identity.get("adaptation")}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.default_run_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args(argv)
    output = checked_output(args.output)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fagan-default-bench-") as name:
        folder = Path(name)
        make_input(folder / "input.nii.gz")
        for config in args.configs:
            rows.append(run_row(config, CONFIGS[config], folder, args.threads))
            print(json.dumps(rows[-1]), flush=True)
    if output is not None:
        write_output(output, json.dumps({"threads": args.threads, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
