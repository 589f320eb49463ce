"""Evaluation of through-plane SR and of per-scan adaptation (docs/model-card.md, "Through-plane").

One command per suite (results as JSON lines and a Markdown table):

    python -m fagan_engine.training.through_plane_eval SUITE [--threads N] [--iterations N] [--output FILE.json]

Suites:

``template``  ICBM152 T1, held-out axial slab (z 63-100, never drawn by any pretraining), cropped
              to the head; 3/4/5 mm slices from 1 mm, with and without a 1 mm gap, along each axis,
              made with ``forward_model.degrade_through_plane`` (box profile).
``contrasts`` The same slab as T2-, PD- and FLAIR-like 3D volumes built from the template's tissue
              maps (``SliceSynthesizer.tissue_maps``, mid-range class means, no texture).
``small``     Proxy of the issue's real-data bar: the T1 and the three contrasts at 2 and 3 mm
              voxels (box-averaged from 1 mm, 37-63 slices), made anisotropic x2 and x4 along one
              axis with a box profile.
``curve``     Quality against fit iterations (pretrained start and from scratch).
``adapt``     Per-scan adaptation of the in-plane x2 model on the held-out slab, per contrast.
``realdev``   The real development volumes (``../shared/realdev``, validation only) x2 and x4 along their
              ``axis`` by realdev/README.md's through-plane protocol and score (``--realdev`` folder).

Methods: cubic B-spline and Lanczos-3 along the axis, the bundled in-plane FA-GAN x4 applied to the
slices that contain the axis (4 mm cases only; its fine axis is box-averaged back), the pretrained
through-plane network without fit, the default fit from the pretrained start, the same fit from
random weights. PSNR/SSIM with ``metrics.volume_metrics`` (foreground mask, reference's robust
normalisation), SSIM over the planes that contain the through-plane axis.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from fagan_engine.inference.runners import load_runner
from fagan_engine.models.checkpoint import default_checkpoint
from fagan_engine.mri.forward_model import AcquisitionConfig, degrade_through_plane, degrade_volume
from fagan_engine.mri.metrics import psnr, volume_metrics
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.mri.synthesis import icbm152_arrays
from fagan_engine.pipeline.report import super_resolve
from fagan_engine.through_plane.fit import FitConfig, load_weights
from fagan_engine.through_plane.plan import interpolate_through_plane, plan_through_plane
from fagan_engine.through_plane.run import DEFAULT_ITERATIONS, apply_through_plane, fit_to_scan, super_resolve_through_plane
from fagan_engine.training.realscan_eval import DEFAULT_REALDEV
from fagan_engine.util.atomic import prepare_output_folder
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import OutputError

SLAB = (63, 101)
CROP_Y = (24, 212)
CROP_X = (24, 174)
CONTRAST_MEANS = {  # mid-range class means of synthesis.CONTRAST_RANGES (csf, gm, wm)
    "t2": (0.90, 0.51, 0.30),
    "pd": (0.92, 0.73, 0.56),
    "flair": (0.085, 0.65, 0.43),
}


def _arrays() -> Dict[str, np.ndarray]:
    t1, gm, wm, _ = icbm152_arrays()
    return {"t1": t1.astype(np.float32), "gm": gm.astype(np.float32) / 255.0, "wm": wm.astype(np.float32) / 255.0}


def volumes(names: Sequence[str], full: bool = False) -> Dict[str, np.ndarray]:
    """(z, y, x) 1 mm float32 volumes: ``t1`` and the 3D contrasts, cropped to the held-out slab (or whole)."""
    arrays = _arrays()
    t1 = arrays["t1"]
    head = ndi.gaussian_filter((t1 > 0).astype(np.float32), 0.6)
    gm, wm = arrays["gm"] * head, arrays["wm"] * head
    csf = np.maximum(head - gm - wm, 0)
    out = {}
    for name in names:
        if name == "t1":
            volume = t1
        else:
            c, g, w = CONTRAST_MEANS[name]
            volume = c * csf + g * gm + w * wm
        if not full:
            volume = volume[SLAB[0] : SLAB[1], CROP_Y[0] : CROP_Y[1], CROP_X[0] : CROP_X[1]]
        out[name] = np.ascontiguousarray(volume, dtype=np.float32)
    return out


def make_case(hr: np.ndarray, np_axis: int, spacing: float, thickness: float, voxel: float = 1.0) -> Tuple[sitk.Image, np.ndarray]:
    """(thick-slice image, ground truth on its output grid): slices of ``spacing``/``thickness`` mm along ``np_axis``."""
    ratio = spacing / voxel
    lr = degrade_through_plane(hr, np_axis, ratio, thickness / voxel)
    n_lr = lr.shape[np_axis]
    covered = int(round(n_lr * ratio))
    truth = np.take(hr, np.arange(covered), axis=np_axis)
    image = sitk.GetImageFromArray(lr)
    sp = [voxel] * 3
    sp[2 - np_axis] = spacing
    image.SetSpacing(sp)
    image.SetOrigin((0.0, 0.0, 0.0))
    origin = [voxel / 2] * 3
    origin[2 - np_axis] = spacing / 2  # corners at 0: the LR box is the first n_lr·ratio HR voxels
    image.SetOrigin(origin)
    return image, truth


def score(truth: np.ndarray, result: np.ndarray, np_axis: int) -> Dict[str, float]:
    other = 2 if np_axis != 2 else 1
    metrics = volume_metrics(truth, result, in_plane_axes=tuple(sorted((np_axis, other))))
    return {"psnr": round(metrics["psnr"], 3), "ssim": round(metrics["ssim"], 4)}


def inplane_through_plane(image: sitk.Image, scale: int) -> np.ndarray:
    """The bundled in-plane FA-GAN ×scale on the slices that contain the through-plane axis; the fine axis box-averaged back."""
    plan = plan_through_plane(image)
    runner, normalization, _ = load_runner(scale, default_checkpoint(scale, "kspace"), "cpu", "torch", False)
    volume = sitk.GetArrayFromImage(image)
    normalizer = IntensityNormalizer.fit(volume, normalization or NormalizationConfig())
    through = 2 - plan.axis
    moved = np.moveaxis(normalizer.forward(volume), through, 0)  # (n, A, B)
    stack = np.moveaxis(moved, 1, 0)  # (A, n, B): slices containing the axis
    out = np.empty((stack.shape[0], stack.shape[1] * scale, stack.shape[2]), np.float32)
    for start in range(0, stack.shape[0], 4):
        sr = runner(np.ascontiguousarray(stack[start : start + 4, None]))[:, 0]
        out[start : start + 4] = sr.reshape(sr.shape[0], sr.shape[1], stack.shape[2], scale).mean(axis=3)
    return np.moveaxis(normalizer.inverse(np.moveaxis(out, 1, 0)), 0, through)


def run_methods(
    image: sitk.Image, truth: np.ndarray, np_axis: int, methods: Sequence[str], iterations: Optional[int], seed: int = 0,
    weights: Optional[Path] = None,
) -> Dict[str, Dict[str, Any]]:
    rows: Dict[str, Dict[str, Any]] = {}
    for method in methods:
        started = time.time()
        fits: List[Any] = []
        if method == "fit" and "fourier" in methods:  # one fit, both fusions
            average, fourier = fit_both_fusions(image, iterations, seed, weights)
            rows["fourier"] = dict(score(truth, fourier, np_axis), seconds=0.0)
            result: Optional[np.ndarray] = average
        elif method == "fourier":
            continue
        else:
            result = method_output(image, method, iterations, seed, weights=weights, on_fit=fits.append)
        if result is not None:
            rows[method] = dict(score(truth, result, np_axis), seconds=round(time.time() - started, 1))
            if fits:
                rows[method]["fit"] = fits[-1].summary()
    return rows


def method_output(
    image: sitk.Image, method: str, iterations: Optional[int], seed: int = 0, target_spacing: Optional[float] = None,
    lr: Optional[float] = None, weights: Optional[Path] = None, on_fit: Optional[Callable[[Any], None]] = None,
) -> Optional[np.ndarray]:
    """One method's output array on the plan's grid (None: the method does not apply to this case); ``lr``: the fit's
    learning rate; ``weights``: pretrained through-plane weights other than the bundled ones; ``on_fit``: receives
    the fit's ``FitOutcome`` (``super_resolve_through_plane``)."""
    plan = plan_through_plane(image, target_spacing=target_spacing)
    if method in ("bspline", "lanczos"):
        return sitk.GetArrayFromImage(interpolate_through_plane(image, plan, method))
    if method == "inplane":
        ratio = plan.input_spacing / plan.output_spacing
        if abs(ratio - round(ratio)) > 1e-6 or int(round(ratio)) not in (2, 4):
            return None
        return inplane_through_plane(image, int(round(ratio)))
    if method in ("pretrained0", "fit", "scratch"):
        out = super_resolve_through_plane(
            image, target_spacing=plan.target_spacing, iterations=0 if method == "pretrained0" else iterations,
            device="cpu", pretrained=method != "scratch", seed=seed, fit_config=FitConfig(lr=lr) if lr else None,
            weights=weights, on_fit=on_fit,
        )
        return sitk.GetArrayFromImage(out)
    raise ValueError(method)


def fit_both_fusions(
    image: sitk.Image, iterations: Optional[int], seed: int = 0, weights: Optional[Path] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """The default fit once, applied with averaging and with Fourier fusion (input units)."""

    plan = plan_through_plane(image)
    volume = sitk.GetArrayFromImage(image)
    normalizer = IntensityNormalizer.fit(volume, NormalizationConfig())
    volume01 = normalizer.forward(volume)
    cfg = FitConfig(iterations=DEFAULT_ITERATIONS if iterations is None else iterations, seed=seed)
    model, _ = load_weights(weights, ratio=plan.ratio)
    fit_to_scan(model, volume01, plan, cfg)
    both = [normalizer.inverse(apply_through_plane(model, volume01, plan, "cpu", fusion)) for fusion in ("average", "fourier")]
    return both[0], both[1]


AXIS_NAMES = {0: "z (axial slices)", 1: "y (coronal slices)", 2: "x (sagittal slices)"}


def suite_template(args: argparse.Namespace, names: Sequence[str]) -> List[Dict[str, Any]]:
    results = []
    for name, hr in volumes(names).items():
        for np_axis in args.axes:
            for thickness in args.thicknesses:
                for gap in args.gaps:
                    image, truth = make_case(hr, np_axis, thickness + gap, thickness)
                    methods = args.methods or ["bspline", "lanczos", "inplane", "pretrained0", "fit", "scratch"]
                    row = {"volume": name, "axis": np_axis, "thickness": thickness, "gap": gap, "n_in": image.GetSize()[2 - np_axis]}
                    row["methods"] = run_methods(image, truth, np_axis, methods, args.iterations, weights=args.weights)
                    emit(row, args)
                    results.append(row)
    return results


def box_downsample(volume: np.ndarray, factor: int) -> np.ndarray:
    shape = [s // factor for s in volume.shape]
    v = volume[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    return v.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5)).astype(np.float32)


def suite_small(args: argparse.Namespace, names: Sequence[str]) -> List[Dict[str, Any]]:
    results = []
    full = volumes(names, full=True)
    for name, hr1 in full.items():
        for voxel in args.voxels:
            hr = box_downsample(hr1[14:182, 24:212, 20:176], int(voxel))  # head box, 168x188x156 mm
            for np_axis in args.axes:
                for factor in (2, 4):
                    image, truth = make_case(hr, np_axis, factor * voxel, factor * voxel, voxel)
                    methods = args.methods or ["bspline", "fit"]
                    row = {"volume": name, "voxel": voxel, "axis": np_axis, "factor": factor, "shape": list(hr.shape)}
                    row["n_in"] = image.GetSize()[2 - np_axis]
                    row["methods"] = run_methods(image, truth, np_axis, methods, args.iterations, weights=args.weights)
                    emit(row, args)
                    results.append(row)
    return results


def realdev_case(image: sitk.Image, axis: int, factor: int) -> Tuple[sitk.Image, np.ndarray]:
    """realdev/README.md's through-plane protocol: crop to a multiple of ``factor`` along SimpleITK ``axis``,
    box-average ``factor`` slices, move the origin by half a slab (same voxel-corner box); (LR image, HR array)."""
    np_axis = 2 - axis
    hr = sitk.GetArrayFromImage(image).astype(np.float32)
    hr = np.take(hr, np.arange(hr.shape[np_axis] // factor * factor), axis=np_axis)
    lr = sitk.GetImageFromArray(degrade_through_plane(hr, np_axis, factor, factor))
    spacing = list(image.GetSpacing())
    shift = np.zeros(3)
    shift[axis] = 0.5 * spacing[axis] * (factor - 1)
    spacing[axis] *= factor
    lr.SetSpacing(spacing)
    lr.SetDirection(image.GetDirection())
    lr.SetOrigin(tuple(np.asarray(image.GetOrigin()) + np.asarray(image.GetDirection()).reshape(3, 3) @ shift))
    return lr, hr


def realdev_psnr(truth: np.ndarray, result: np.ndarray) -> float:
    """PSNR over HR > 0.05 after dividing both by the HR's 99.9th percentile (realdev/README.md)."""
    top = float(np.percentile(truth, 99.9))
    return round(psnr(truth / top, result / top, 1.0, truth / top > 0.05), 3)


def suite_realdev(args: argparse.Namespace, names: Sequence[str]) -> List[Dict[str, Any]]:
    """The real development volumes (validation only), x2 and x4 along their ``axis``: PSNR per method and its gain over B-spline."""
    folder = args.realdev / "volumes"
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    results = []
    for case in index["cases"]:
        if names and case["name"] not in names:
            continue
        image = sitk.ReadImage(str(folder / case["file"]), sitk.sitkFloat32)
        for factor in (2, 4):
            lr, hr = realdev_case(image, case["axis"], factor)
            row: Dict[str, Any] = {"volume": case["name"], "factor": factor, "n_in": lr.GetSize()[case["axis"]]}
            row.update(iterations=args.iterations, lr=args.lr, weights=str(args.weights) if args.weights else None)
            row["methods"] = {}
            for method in args.methods or ["bspline", "pretrained0", "fit"]:
                started = time.time()
                fits: List[Any] = []
                out = method_output(
                    lr, method, args.iterations, target_spacing=image.GetSpacing()[case["axis"]], lr=args.lr, weights=args.weights,
                    on_fit=fits.append,
                )
                row["methods"][method] = {"psnr": realdev_psnr(hr, out), "seconds": round(time.time() - started, 1)}
                if fits:
                    row["methods"][method]["fit"] = fits[-1].summary()
            emit(row, args)
            results.append(row)
    return results


def suite_curve(args: argparse.Namespace, names: Sequence[str]) -> List[Dict[str, Any]]:
    results = []
    cases = []

    for name, hr in volumes(names).items():
        for np_axis in args.axes:
            cases.append((f"{name} slab 4 mm along {'zyx'[np_axis]}", *make_case(hr, np_axis, 4.0, 4.0), np_axis))
    if args.small_curve:
        for name, hr1 in volumes(names, full=True).items():
            hr = box_downsample(hr1[14:182, 24:212, 20:176], 3)
            cases.append((f"{name} 3 mm x4 along z", *make_case(hr, 0, 12.0, 12.0, 3.0), 0))
    for label, image, truth, np_axis in cases:
        for pretrained in (True, False) if args.scratch_curve else (True,):
            for n in args.curve:
                if n == 0 and not pretrained:
                    continue
                started = time.time()
                cfg = FitConfig(iterations=n, lr=args.lr) if args.lr else None
                out = super_resolve_through_plane(image, iterations=n, device="cpu", pretrained=pretrained, fit_config=cfg)
                row = {"case": label, "pretrained": pretrained, "iterations": n, "lr": args.lr or FitConfig().lr}
                row.update(score(truth, sitk.GetArrayFromImage(out), np_axis), seconds=round(time.time() - started, 1))
                emit(row, args)
                results.append(row)
    return results


def suite_adapt(args: argparse.Namespace, names: Sequence[str]) -> List[Dict[str, Any]]:
    results = []
    for name, hr in volumes(names).items():
        image = sitk.GetImageFromArray(hr[:, :188, :150])
        lr = degrade_volume(image, 2, (0, 1), AcquisitionConfig("kspace"))
        for n in [0] + list(args.adapt):
            started = time.time()
            out = super_resolve(lr, 2, plane=(0, 1), adapt_iterations=n, device="cpu", acquisition="kspace")
            row = {"volume": name, "adapt_iterations": n}
            row.update(volume_metrics_axial(hr[:, :188, :150], sitk.GetArrayFromImage(out)), seconds=round(time.time() - started, 1))
            emit(row, args)
            results.append(row)
    return results


def volume_metrics_axial(truth: np.ndarray, result: np.ndarray) -> Dict[str, float]:
    metrics = volume_metrics(truth, result)
    return {"psnr": round(metrics["psnr"], 3), "ssim": round(metrics["ssim"], 4)}


def check_results_file(path: Path) -> None:
    """OutputError unless ``path`` is new or an earlier results file of this tool (JSON lines, appended to): rows used to
    be appended to whatever file ``--output`` named."""
    if not path.exists():
        return
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
        earlier = not first or isinstance(json.loads(first.decode("utf-8")), dict)
    except (OSError, ValueError):
        earlier = False
    if not earlier:
        raise OutputError(f"{path} exists and is not a results file of this tool (JSON lines); choose another --output")


def emit(row: Dict[str, Any], args: argparse.Namespace) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if args.output is not None:
        with open(args.output, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


METHOD_NAMES = {
    "bspline": "cubic B-spline",
    "lanczos": "Lanczos-3",
    "inplane": "in-plane FA-GAN x4",
    "pretrained0": "pretrained, no fit",
    "fit": "FA-GAN fit (pretrained start)",
    "scratch": "FA-GAN fit from scratch",
    "fourier": "fit, Fourier fusion",
}


def render(path: Path) -> str:
    """Markdown tables of a JSON-lines results file (the rows this module prints)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    out: List[str] = []
    cases = [r for r in rows if "methods" in r]
    if cases:
        methods = [m for m in METHOD_NAMES if any(m in r["methods"] for r in cases)]
        out.append("| case | n_in | " + " | ".join(METHOD_NAMES[m] for m in methods) + " |")
        out.append("| --- | --- |" + " --- |" * len(methods))
        for r in cases:
            if "factor" in r:
                label = f"{r['volume']} {r['voxel']:g} mm, x{r['factor']} along {'zyx'[r['axis']]}"
            else:
                gap = f" + {r['gap']:g} gap" if r["gap"] else ""
                label = f"{r['volume']} {r['thickness']:g} mm{gap} along {'zyx'[r['axis']]}"
            cells = []
            for m in methods:
                v = r["methods"].get(m)
                cells.append(f"{v['psnr']:.2f} / {v['ssim']:.4f}" if v else "-")
            out.append(f"| {label} | {r['n_in']} | " + " | ".join(cells) + " |")
        gains = [
            r["methods"]["fit"]["psnr"] - r["methods"]["bspline"]["psnr"] for r in cases if "fit" in r["methods"] and "bspline" in r["methods"]
        ]
        if gains:
            out.append("")
            out.append(
                f"Mean gain of the fit over cubic B-spline: {np.mean(gains):+.2f} dB over {len(gains)} cases "
                f"(min {min(gains):+.2f}, max {max(gains):+.2f})."
            )
    curve = [r for r in rows if "iterations" in r and "case" in r]
    if curve:
        out.append("| case | start, fit lr | iterations | PSNR | SSIM | seconds |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for r in curve:
            start = f"{'pretrained' if r['pretrained'] else 'scratch'}, lr {r.get('lr', 2e-4):g}"
            out.append(f"| {r['case']} | {start} | {r['iterations']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['seconds']} |")
    adapt = [r for r in rows if "adapt_iterations" in r]
    if adapt:
        out.append("| contrast | adapt iterations | PSNR | SSIM | seconds |")
        out.append("| --- | --- | --- | --- | --- |")
        for r in adapt:
            out.append(f"| {r['volume']} | {r['adapt_iterations']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['seconds']} |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fagan_engine.training.through_plane_eval")
    parser.add_argument("suite", choices=("template", "contrasts", "small", "curve", "adapt", "realdev", "table"))
    parser.add_argument("results", nargs="?", type=Path, help="table: the JSON-lines file to render")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="fit iterations (default: the engine default)")
    parser.add_argument("--axes", type=int, nargs="*", default=[0, 1, 2], choices=(0, 1, 2), help="numpy axes (0 = z)")
    parser.add_argument("--thicknesses", type=float, nargs="+", default=[3.0, 4.0, 5.0])
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--voxels", type=float, nargs="+", default=[2.0, 3.0])
    parser.add_argument("--volumes", nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--curve", type=int, nargs="+", default=[0, 50, 100, 200, 300, 500])
    parser.add_argument("--adapt", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--lr", type=float, default=None, help="curve, realdev: fit learning rate (default FitConfig's)")
    parser.add_argument("--small-curve", action="store_true", help="curve: also the 3 mm x4 volume")
    parser.add_argument("--scratch-curve", action="store_true", help="curve: also from scratch")
    parser.add_argument("--realdev", type=Path, default=DEFAULT_REALDEV, help="the real-scan development set (default ../shared/realdev)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--weights", type=Path, default=None,
        help="template, small, realdev: pretrained through-plane weights (default: the bundled start for each case's slice ratio)",
    )
    args = parser.parse_args(argv)
    if args.suite == "table":
        if args.results is None:
            print("error: table needs the JSON-lines results file to render", file=sys.stderr)
            return 2
        try:
            print(render(args.results))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # missing, unreadable or not this tool's rows
            print(f"error: cannot render {args.results}: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.suite == "realdev" and not (args.realdev / "volumes" / "index.json").is_file():
        print(f"error: no real-scan development set at {args.realdev} (volumes/index.json is missing)", file=sys.stderr)
        return 2
    if args.output is not None:
        try:
            prepare_output_folder(args.output)  # before hours of fits, not after the first
            check_results_file(Path(args.output))
        except OutputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.threads:
        import torch  # lazy: keeps torch out of this module's import

        torch.set_num_threads(args.threads)
    default_names = {
        "table": [], "template": ["t1"], "contrasts": ["t2", "pd", "flair"], "small": ["t1", "t2", "pd", "flair"],
        "curve": ["t1"], "adapt": ["t1", "t2", "pd", "flair"], "realdev": [],
    }
    names = args.volumes or default_names[args.suite]
    suites = {"template": suite_template, "contrasts": suite_template, "small": suite_small, "curve": suite_curve, "adapt": suite_adapt}
    suite = dict(suites, realdev=suite_realdev)[args.suite]
    suite(args, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
