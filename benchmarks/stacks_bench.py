"""Multi-stack reconstruction end to end: three orthogonal 256×256×40 stacks of 1×1×4 mm with motion to 1 mm isotropic.

``python -m benchmarks.stacks_bench [--threads N] [--network-iterations N] [--through-plane-iterations N] [--smoke] [--output FILE.json]``

The object is the ICBM152 T1 template zero-padded to a 256 mm cube; each stack (axial, coronal,
sagittal) is its central 160 mm made into 40 slices of 4 mm by ``stack_simulation.simulate_stack``
(the forward model's box profile, 1 % Rician noise), the coronal and sagittal ones after a rigid
motion of 2-3 mm and 2-3 degrees. The stacks are written to files and reconstructed in a fresh
process (``reconstruct_stacks``), so its wall time and peak RSS (VmHWM) are the reconstruction's
alone. Scored against the template on the output grid: PSNR (the through-plane protocol's
normalisation and mask), the motion error, register-and-average and each stack's cubic B-spline;
``--network-iterations N`` reconstructs with the FA-GAN prior (``reconstruct_stacks``);
``--through-plane-iterations N`` adds each stack's through-plane FA-GAN result with an N-step fit
(slow on CPU). ``--smoke``: a 64 mm cube, 16-slice stacks (seconds).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks.common import checked_output, write_output
from benchmarks.through_plane_bench import padded_template, run_worker, serve_worker

PLANES = ("axial", "coronal", "sagittal")
MOTIONS = (((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((2.0, -1.5, 2.5), (2.0, -2.5, 1.0)), ((-2.5, 2.0, -1.0), (-1.5, 2.0, 2.5)))
NOISE = 0.01


def make_object(smoke: bool):
    """The 1 mm isotropic object, centred on the world origin."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(padded_template((64, 64, 64) if smoke else (256, 256, 256)))
    image.SetOrigin(tuple(-(n - 1) / 2.0 for n in image.GetSize()))
    return image


def make_stacks(smoke: bool, folder: Path) -> Dict[str, Any]:
    """Write the three stacks to ``folder``; return their paths and the true motions."""
    import SimpleITK as sitk

    from fagan_engine.through_plane.stack_simulation import motion, orientation, simulate_stack

    volume = make_object(smoke)
    slices = 16 if smoke else 40
    paths, motions = [], []
    for index, (plane, (rotation, translation)) in enumerate(zip(PLANES, MOTIONS)):
        moved = motion(rotation, translation, (0.0, 0.0, 0.0))
        stack = simulate_stack(volume, orientation(plane), 4.0, 4.0, moved, noise=NOISE, seed=index)
        first = (stack.GetSize()[2] - slices) // 2
        stack = sitk.RegionOfInterest(stack, [stack.GetSize()[0], stack.GetSize()[1], slices], [0, 0, first])
        path = folder / f"{plane}.nrrd"
        sitk.WriteImage(stack, str(path))
        paths.append(str(path))
        motions.append(list(moved.GetParameters()) + list(moved.GetFixedParameters()))
    return {"paths": paths, "motions": motions}


def measure(params: Dict[str, Any]) -> Dict[str, Any]:
    """In this process: reconstruct the stacks and write the output; times, peak RSS and the report."""
    import SimpleITK as sitk
    import torch

    from benchmarks.common import peak_rss_mib
    from fagan_engine.through_plane.stacks import reconstruct_stacks

    if params.get("threads"):
        torch.set_num_threads(params["threads"])
    stacks = [sitk.ReadImage(p, sitk.sitkFloat32) for p in params["paths"]]
    baseline = peak_rss_mib()
    started = time.perf_counter()
    out, report = reconstruct_stacks(stacks, network_iterations=params.get("network_iterations"))
    seconds = time.perf_counter() - started
    sitk.WriteImage(out, params["output"])
    transforms = [list(t.GetParameters()) + list(t.GetFixedParameters()) for t in report.transforms]
    return {
        "stacks": [list(s.GetSize()) for s in stacks],
        "output": list(out.GetSize()),
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_rss_mib(), 0),
        "baseline_rss_mib": round(baseline, 0),
        "report": report.to_dict(),
        "transforms": transforms,
    }


def score(case: Dict[str, Any], result: Dict[str, Any], output: str, smoke: bool, tp_iterations: Optional[int]) -> Dict[str, Any]:
    """PSNR of the reconstruction and the baselines against the object, and the motion errors."""
    import SimpleITK as sitk

    from fagan_engine.io.geometry import SRGeometry
    from fagan_engine.mri.metrics import psnr
    from fagan_engine.through_plane.stack_geometry import rotation_angle_degrees, transform_matrix
    from fagan_engine.through_plane.stacks import average_stacks

    out = sitk.ReadImage(output)
    truth = sitk.GetArrayFromImage(sitk.Resample(make_object(smoke), out, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32))
    top = float(np.percentile(truth, 99.9))
    mask = truth / top > 0.05

    def rate(array: np.ndarray) -> float:
        return round(psnr(truth / top, array / top, 1.0, mask), 2)

    stacks = [sitk.ReadImage(p, sitk.sitkFloat32) for p in case["paths"]]
    estimates = [_euler(p) for p in result["transforms"]]
    grid = SRGeometry(out.GetSize(), out.GetSpacing(), out.GetOrigin(), out.GetDirection())
    gains = [s["intensity_scale"] for s in result["report"]["stacks"]]
    scores = {"reconstruction": rate(sitk.GetArrayFromImage(out)), "register_and_average": rate(average_stacks(stacks, estimates, grid, gains))}
    for plane, stack, transform in zip(PLANES, stacks, estimates):
        scores[f"bspline_{plane}"] = rate(sitk.GetArrayFromImage(sitk.Resample(stack, out, transform.GetInverse(), sitk.sitkBSpline)))
        if tp_iterations is not None:
            from fagan_engine.through_plane.run import super_resolve_through_plane

            through = super_resolve_through_plane(stack, iterations=tp_iterations, device="cpu")
            scores[f"through_plane_{plane}"] = rate(sitk.GetArrayFromImage(sitk.Resample(through, out, transform.GetInverse(), sitk.sitkBSpline)))
    points = np.random.default_rng(0).uniform(-60, 60, (500, 3))
    errors = []
    for truth_params, estimate in zip(case["motions"], estimates):
        (r_true, o_true), (r_est, o_est) = transform_matrix(_euler(truth_params)), transform_matrix(estimate)
        errors.append({
            "rotation_deg": round(rotation_angle_degrees(r_est @ r_true.T), 3),
            "max_displacement_mm": round(float(np.linalg.norm(points @ (r_est - r_true).T + o_est - o_true, axis=1).max()), 3),
        })
    return {"psnr": scores, "motion_error": errors}


def _euler(parameters: List[float]):
    import SimpleITK as sitk

    transform = sitk.Euler3DTransform()
    transform.SetFixedParameters(parameters[6:])
    transform.SetParameters(parameters[:6])
    return transform


def run(smoke: bool, threads: Optional[int] = None, tp_iterations: Optional[int] = None, network: Optional[int] = None) -> Dict[str, Any]:
    """Simulate, reconstruct in a fresh process, score; on failure ``{"error": ...}``."""
    with tempfile.TemporaryDirectory() as tmp:
        case = make_stacks(smoke, Path(tmp))
        output = str(Path(tmp) / "iso.nrrd")
        params = {"paths": case["paths"], "output": output, "threads": threads, "network_iterations": network}
        result = run_worker("benchmarks.stacks_bench", params)
        if "error" in result:
            return result
        result.update(score(case, result, output, smoke, tp_iterations))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stacks_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--through-plane-iterations", type=int, default=None, help="also score each stack's through-plane SR (fit length)")
    parser.add_argument("--network-iterations", type=int, default=None, help="reconstruct with the FA-GAN prior (its fit length)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    output = checked_output(args.output)
    if serve_worker(args.worker, measure):
        return 0
    result = run(args.smoke, args.threads, args.through_plane_iterations, args.network_iterations)
    print(json.dumps(result, indent=2))
    if "error" in result:  # an earlier result at --output stays as it was
        sys.stderr.write(f"error: {result['error']}\n")
        return 1
    if output is not None:
        write_output(output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
