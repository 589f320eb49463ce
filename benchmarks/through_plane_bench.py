"""Through-plane SR end to end: a 256×256×40 volume at 1×1×4 mm to 1 mm isotropic (fit + inference).

``python -m benchmarks.through_plane_bench [--iterations N] [--threads N] [--device cpu|cuda] [--smoke] [--no-bar] [--output FILE.json]``

The volume is the ICBM152 T1 template zero-padded to 256×256 in-plane, 160 mm of it made into 40
slices of 4 mm with the forward model's box profile, so the fit sees real anatomy and the result
can be scored (PSNR/SSIM against the 1 mm template, and cubic B-spline for comparison). The work
runs in a fresh process, so its peak RSS (VmHWM) is its own; wall time covers the whole
``super_resolve_through_plane`` call (plan, fit, inference, fusion) and the phase split comes from
the progress callback, which also draws the user's progress bar (``cli.phase_bar.PhaseBar``, the bar of
``fagan-sr --progress bar``) unless ``--no-bar``. The result records what the fit did (``fit``: steps, the step kept,
held-out errors). The machine (CPU, cores, load average before and
after, date, commit) is recorded with the result: the CPU may be shared. ``--smoke``: 64×64×10 and 5
iterations (seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from benchmarks.common import checked_device, checked_output, write_output


def make_volume(smoke: bool):
    import SimpleITK as sitk

    from fagan_engine.mri.forward_model import degrade_through_plane
    from fagan_engine.mri.synthesis import icbm152_arrays

    hr = icbm152_arrays()[0].astype(np.float32)[60:100, 80:144, 60:124] if smoke else padded_template((160, 256, 256))
    lr = degrade_through_plane(hr, 0, 4.0, 4.0)
    image = sitk.GetImageFromArray(lr)
    image.SetSpacing((1.0, 1.0, 4.0))
    image.SetOrigin((0.5, 0.5, 2.0))
    return image, hr


def padded_template(shape: Tuple[int, int, int]) -> np.ndarray:
    """The ICBM152 T1 template (z, y, x; 189×233×197 at 1 mm) centred in a zero array of ``shape`` (cropped where larger)."""
    from fagan_engine.mri.synthesis import icbm152_arrays

    t1 = icbm152_arrays()[0].astype(np.float32)
    out = np.zeros(shape, np.float32)
    source, target = [], []
    for n_in, n_out in zip(t1.shape, shape):
        skip = max(n_in - n_out, 0) // 2
        pad = max(n_out - n_in, 0) // 2
        size = min(n_in, n_out)
        source.append(slice(skip, skip + size))
        target.append(slice(pad, pad + size))
    out[tuple(target)] = t1[tuple(source)]
    return out


def measure(params: Dict[str, Any]) -> Dict[str, Any]:
    """In this process: run the case and return times, peak RSS and quality."""
    import SimpleITK as sitk
    import torch

    from benchmarks.common import peak_rss_mib
    from fagan_engine.cli.phase_bar import PhaseBar
    from fagan_engine.mri.metrics import volume_metrics
    from fagan_engine.through_plane.plan import interpolate_through_plane, plan_through_plane
    from fagan_engine.through_plane.run import super_resolve_through_plane

    if params.get("threads"):
        torch.set_num_threads(params["threads"])
    image, hr = make_volume(params["smoke"])
    baseline_rss = peak_rss_mib()
    marks: Dict[str, float] = {}
    bar = PhaseBar()
    fits: List[Any] = []

    def progress(done: int, total: int, phase: str = "fit", loss: Optional[float] = None) -> None:
        marks.setdefault(phase + "_start", time.perf_counter())
        marks[phase + "_end"] = time.perf_counter()
        if params.get("bar", True):
            bar.update(done, total, phase)

    started = time.perf_counter()
    out = super_resolve_through_plane(
        image, iterations=params.get("iterations"), device=params["device"], progress=progress, on_fit=fits.append
    )
    if params["device"] == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    bar.close()
    peak = peak_rss_mib()  # before scoring (SSIM maps of the whole volume are large)
    result = sitk.GetArrayFromImage(out)
    bspline = sitk.GetArrayFromImage(interpolate_through_plane(image, plan_through_plane(image), "bspline"))
    score = volume_metrics(hr, result, in_plane_axes=(0, 2))
    base = volume_metrics(hr, bspline, in_plane_axes=(0, 2))
    return {
        "input": list(image.GetSize()),
        "output": list(out.GetSize()),
        "iterations": params.get("iterations"),
        "threads": torch.get_num_threads(),
        "device": params["device"],
        "seconds": round(seconds, 1),
        "fit_seconds": round(marks.get("fit_end", started) - started, 1),
        "inference_seconds": round(marks.get("inference_end", 0) - marks.get("fit_end", started), 1),
        "peak_rss_mib": round(peak, 0),
        "peak_rss_with_scoring_mib": round(peak_rss_mib(), 0),
        "baseline_rss_mib": round(baseline_rss, 0),
        "psnr": round(score["psnr"], 2),
        "ssim": round(score["ssim"], 4),
        "bspline_psnr": round(base["psnr"], 2),
        "bspline_ssim": round(base["ssim"], 4),
        "bar": params.get("bar", True),
        "fit": fits[-1].summary() if fits else None,
    }


def run(smoke: bool, device: str, iterations: Optional[int] = None, threads: Optional[int] = None, bar: bool = False) -> Dict[str, Any]:
    """Measure in a fresh process (its own peak RSS), with the machine and its load; on failure ``{"error": ...}``."""
    from benchmarks.machine import cpu_model, git_commit, usable_cores

    params = {"smoke": smoke, "device": device, "iterations": 5 if smoke and iterations is None else iterations, "threads": threads, "bar": bar}
    before = [round(x, 2) for x in os.getloadavg()]
    result = run_worker("benchmarks.through_plane_bench", params, show_stderr=bar)
    machine = {"cpu": cpu_model(), "cores": usable_cores(), "load_before": before, "load_after": [round(x, 2) for x in os.getloadavg()]}
    return dict(result, machine=dict(machine, date=time.strftime("%Y-%m-%d %H:%M"), commit=git_commit()))


def serve_worker(params: Optional[str], measure: Callable[[Dict[str, Any]], Dict[str, Any]]) -> bool:
    """In a worker (``--worker PARAMS``): print ``RESULT`` of ``measure(PARAMS)`` and return True; else False."""
    if params is None:
        return False
    print("RESULT " + json.dumps(measure(json.loads(params))), flush=True)
    return True


def run_worker(module: str, params: Dict[str, Any], show_stderr: bool = False) -> Dict[str, Any]:
    """``python -m module --worker PARAMS`` in a fresh process: its ``RESULT {json}`` line, or ``{"error": ...}``.
    ``show_stderr``: the worker's stderr (its progress bar) goes to this terminal instead of the error message."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", module, "--worker", json.dumps(params)], cwd=str(repo), stdout=subprocess.PIPE,
        stderr=None if show_stderr else subprocess.PIPE, text=True, env=dict(os.environ),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = [line for line in (proc.stderr or "").splitlines() if line.strip()]
        return {"error": tail[-1] if tail else f"worker exited with {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT ") :])


def through_plane_section(smoke: bool, device: str, tmp: Path) -> List[Dict[str, Any]]:
    """The ``through_plane`` section of ``benchmarks.run``: the default fit, end to end."""
    return [run(smoke, device)]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.through_plane_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--iterations", type=int, default=None, help="fit iterations (default: the engine default)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-bar", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    checked_device(args.device)
    output = checked_output(args.output)
    if serve_worker(args.worker, measure):
        return 0
    result = run(args.smoke, args.device, args.iterations, args.threads, bar=not args.no_bar)
    print(json.dumps(result))
    if "error" in result:  # an earlier result at --output stays as it was
        sys.stderr.write(f"error: {result['error']}\n")
        return 1
    if output is not None:
        write_output(output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
