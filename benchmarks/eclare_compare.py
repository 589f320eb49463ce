"""ECLARE and the product side by side on the same thick-sliced volumes (PSNR/SSIM gain over cubic B-spline, time).

``python -m benchmarks.eclare_compare --eclare PATH/TO/run-eclare --output-dir DIR [--n-patches N] [--threads N] [--template]``
(``benchmarks/eclare_compare.sh`` installs ECLARE into its own virtual environment and calls this.)

ECLARE (Remedios et al., GPL-3.0, PyPI ``eclare``) is only *called*, as a program (``run-eclare``), from its own
environment; none of its code is imported or copied. Cases: the real development volumes
(``../shared/realdev``, validation only) made ×2 and ×4 thick along their ``axis`` by realdev/README.md's
protocol (box profile, no gap), and the ICBM152 T1 template at 2 mm voxels (head box), ×2 and ×4 along z.
Both methods are told the same slice profile (a box as thick as the spacing: the product's default;
ECLARE ``--relative-slice-thickness`` in in-plane pixels, ``--relative-slice-profile-type boxcar``, so its
ESPRESO profile estimate is not run). ECLARE's output grid is its own (its slice separation is rounded and
scaled from the in-plane pixel); it is resampled linearly, from physical coordinates, onto the HR grid
before scoring. Scores as ``through_plane_eval realdev``: PSNR over HR > 0.05 after dividing by the HR's
99.9th percentile, SSIM (``metrics.volume_metrics``) over the planes that contain the slice axis.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

REALDEV = Path(__file__).resolve().parents[2] / "shared" / "realdev"


def cases(
    realdev: Path, template: bool, names: Optional[List[str]], factors: Tuple[int, ...] = (2, 4)
) -> Iterator[Tuple[str, sitk.Image, sitk.Image, int]]:
    """(name, thick-sliced image, HR image on the product's output grid, SimpleITK slice axis)."""
    from fagan_engine.training.through_plane_eval import box_downsample, realdev_case, volumes

    sources: List[Tuple[str, sitk.Image, int]] = []
    index = json.loads((realdev / "volumes" / "index.json").read_text(encoding="utf-8"))
    for case in index["cases"]:
        sources.append((case["name"], sitk.ReadImage(str(realdev / "volumes" / case["file"]), sitk.sitkFloat32), case["axis"]))
    if template:
        t1 = box_downsample(volumes(["t1"], full=True)["t1"][14:182, 24:212, 20:176], 2)  # 2 mm voxels, head box
        image = sitk.GetImageFromArray(t1)
        image.SetSpacing((2.0, 2.0, 2.0))
        sources.append(("icbm152_t1_2mm", image, 2))
    for name, image, axis in sources:
        if names and name not in names:
            continue
        for factor in factors:
            lr, hr = realdev_case(image, axis, factor)
            reference = sitk.GetImageFromArray(hr)
            reference.CopyInformation(image[tuple(slice(0, n) for n in reference.GetSize())])
            yield f"{name} x{factor}", lr, reference, axis


def scores(hr: np.ndarray, out: np.ndarray, axis: int) -> Dict[str, float]:
    from fagan_engine.mri.metrics import volume_metrics
    from fagan_engine.training.through_plane_eval import realdev_psnr

    top = float(np.percentile(hr, 99.9))
    np_axis = 2 - axis
    planes = tuple(sorted((np_axis, 2 if np_axis != 2 else 1)))
    ssim = volume_metrics(hr / top, out / top, in_plane_axes=planes)["ssim"]
    return {"psnr": realdev_psnr(hr, out), "ssim": round(float(ssim), 4)}


def run_product(lr: sitk.Image, reference: sitk.Image, axis: int) -> Tuple[np.ndarray, float]:
    from fagan_engine.through_plane.run import super_resolve_through_plane

    started = time.perf_counter()
    out = super_resolve_through_plane(lr, target_spacing=reference.GetSpacing()[axis], device="cpu")
    seconds = time.perf_counter() - started
    if out.GetSize() != reference.GetSize() or not np.allclose(out.GetOrigin(), reference.GetOrigin(), atol=1e-3):
        raise AssertionError(f"product grid {out.GetSize()} {out.GetOrigin()} is not the HR grid {reference.GetSize()} {reference.GetOrigin()}")
    return sitk.GetArrayFromImage(out), seconds


def run_eclare(
    executable: Path, lr: sitk.Image, reference: sitk.Image, axis: int, folder: Path, n_patches: int, batch_size: int, threads: int
) -> Dict[str, Any]:
    """ECLARE as a program on ``lr`` (NIfTI); its output resampled onto ``reference``; or the error it gave."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "thick.nii.gz"
    sitk.WriteImage(lr, str(source))
    in_plane = min(s for a, s in enumerate(lr.GetSpacing()) if a != axis)
    command = [
        str(executable), "--in-fpath", str(source), "--out-dir", str(folder), "--n-patches", str(n_patches),
        "--batch-size", str(batch_size), "--relative-slice-thickness", f"{lr.GetSpacing()[axis] / in_plane:.4f}",
        "--relative-slice-profile-type", "boxcar",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    (folder / "eclare.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr, encoding="utf-8")
    outputs = sorted(folder.glob("thick_eclare.nii*"))
    if proc.returncode != 0 or not outputs:
        tail = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"error": tail[-1] if tail else f"exit {proc.returncode}", "seconds": round(seconds, 1), "command": " ".join(command)}
    produced = sitk.ReadImage(str(outputs[0]), sitk.sitkFloat32)
    resampled = sitk.Resample(produced, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
    return {
        "array": sitk.GetArrayFromImage(resampled), "seconds": round(seconds, 1), "grid": list(produced.GetSize()),
        "spacing": [round(s, 4) for s in produced.GetSpacing()], "command": " ".join(command),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eclare_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--eclare", type=Path, default=None, help="the run-eclare program of ECLARE's own environment (none: product only)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--n-patches", type=int, default=12800, help="ECLARE training patches (its default 1,000,000 is for a GPU)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--template", action="store_true", help="also the ICBM152 T1 at 2 mm")
    parser.add_argument("--volumes", nargs="+", default=None, help="case names (realdev index names, icbm152_t1_2mm)")
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--realdev", type=Path, default=REALDEV)
    parser.add_argument("--no-product", action="store_true", help="ECLARE only (the product's column from another run)")
    args = parser.parse_args(argv)
    import torch

    from fagan_engine.through_plane.plan import interpolate_through_plane, plan_through_plane

    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, lr, reference, axis in cases(args.realdev, args.template, args.volumes, tuple(args.factors)):
        hr = sitk.GetArrayFromImage(reference)
        plan = plan_through_plane(lr, target_spacing=reference.GetSpacing()[axis])
        base = scores(hr, sitk.GetArrayFromImage(interpolate_through_plane(lr, plan, "bspline")), axis)
        row: Dict[str, Any] = {"case": name, "input": list(lr.GetSize()), "bspline": base}
        if not args.no_product:
            product, seconds = run_product(lr, reference, axis)
            row["product"] = dict(scores(hr, product, axis), seconds=round(seconds, 1))
        if args.eclare is not None:
            folder = args.output_dir / name.replace(" ", "_")
            eclare = run_eclare(args.eclare, lr, reference, axis, folder, args.n_patches, args.batch_size, args.threads)
            array = eclare.pop("array", None)
            row["eclare"] = dict(eclare, **(scores(hr, array, axis) if array is not None else {}))
        print(json.dumps(row), flush=True)
        rows.append(row)
        with open(args.output_dir / "results.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
    print(table(rows))
    return 0


def table(rows: List[Dict[str, Any]]) -> str:
    """Markdown: per case, B-spline PSNR/SSIM and each method's gain over it and time."""
    out = [
        "| case | B-spline PSNR / SSIM | product ΔPSNR / ΔSSIM | product s | ECLARE ΔPSNR / ΔSSIM | ECLARE s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        b = r["bspline"]
        cells = [f"{r['case']}", f"{b['psnr']:.2f} / {b['ssim']:.4f}"]
        for method in ("product", "eclare"):
            m = r.get(method)
            if m is None or "psnr" not in m:
                cells += [f"error: {m['error']}" if m else "not run", str(m.get("seconds", "")) if m else ""]
            else:
                cells += [f"{m['psnr'] - b['psnr']:+.2f} / {m['ssim'] - b['ssim']:+.4f}", f"{m['seconds']}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
