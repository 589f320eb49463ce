"""Real-scan development protocol: FA-GAN against bicubic and Lanczos on real MRI slices.

``python -m fagan_engine.training.realscan_eval [--realdev ../shared/realdev]`` reads the real
slices of the development set (``slices/index.json``) and the central slice of each of its volumes
(``volumes/index.json``; the oblique copy is the same voxels and is skipped), makes the LR by the
engine's forward model (``kspace``: a smaller acquisition matrix; ``bicubic``: the paper's
anti-aliased bicubic) and super-resolves it with the product's own path (``super_resolve_report``)
for every method and FA-GAN variant:

- ``bicubic``, ``lanczos`` (the product's Lanczos-3), ``sitk_lanczos`` (the README's: SimpleITK's
  ``sitkLanczosWindowedSinc``, a radius-5 Lanczos-windowed sinc): the baselines;
- ``plain``: the network alone (no projection, no adaptation);
- ``projected``: the network projected onto the measured data;
- ``default``: ``fagan-sr``'s defaults, whatever they are (the decision being measured).

Scores follow ``realdev/README.md``: PSNR over the mask HR > 0.05 with the output clipped to
[0, 1], SSIM on the full slice, and the Nyquist-band overshoot of ``structure_checks``. A slice with
a side below 32 px after the crop is listed but left out of the means. The gain columns are against
SimpleITK's Lanczos for k-space input and against bicubic for bicubic input (the protocol's reference).

This is **validation only**: nothing here trains on these images.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from fagan_engine.io.paths import check_output_folder
from fagan_engine.mri.forward_model import AcquisitionConfig, degrade
from fagan_engine.mri.metrics import psnr, ssim
from fagan_engine.mri.structure_checks import nyquist_band_ratio
from fagan_engine.pipeline.report import super_resolve_report
from fagan_engine.util.atomic import atomic_write_bytes
from fagan_engine.util.errors import FAGANError, InputError
from fagan_engine.util.options import RunOptions

DEFAULT_REALDEV = Path(__file__).resolve().parents[2].parent / "shared" / "realdev"
MIN_SIDE = 32
"""Slices with an HR side below this (after the crop to a multiple of the scale) are left out of the means."""
MASK_THRESHOLD = 0.05
VARIANTS: Dict[str, Dict[str, Any]] = {
    "bicubic": {"method": "bicubic", "enforce_consistency": False, "adapt_iterations": 0},
    "lanczos": {"method": "lanczos", "enforce_consistency": False, "adapt_iterations": 0},
    "plain": {"method": "fagan", "enforce_consistency": False, "adapt_iterations": 0},
    "projected": {"method": "fagan", "enforce_consistency": True, "adapt_iterations": 0},
    "adapted": {"method": "fagan", "enforce_consistency": True, "adapt_iterations": 100},
    "default": {},
}
"""Each variant's RunOptions fields over the defaults (``default``: none, so it follows ``fagan-sr``)."""
PROTOCOL_LANCZOS = "sitk_lanczos"
"""The k-space reference of realdev/README.md: SimpleITK's ``sitkLanczosWindowedSinc`` onto the HR grid. Its kernel is a
Lanczos-windowed sinc of radius 5 (measured), not the product's Lanczos-3 (``lanczos``), and it scores higher on k-space LR."""


@dataclass
class RealSlice:
    """One real HR slice in [0, 1] with its pixel spacing (mm) and description."""

    name: str
    image: np.ndarray
    spacing: Sequence[float]
    contrast: str


def load_slices(realdev: Path) -> List[RealSlice]:
    """The development slices and the central slice of each volume (clipped at 0 and divided by the whole volume's 99.9th
    percentile, the README's normalisation applied to the volume rather than to the one slice)."""
    slices_dir, volumes_dir = realdev / "slices", realdev / "volumes"
    if not (slices_dir / "index.json").is_file():
        raise InputError(f"no real-scan development set at {realdev} (slices/index.json is missing)")
    cases: List[RealSlice] = []
    for case in json.loads((slices_dir / "index.json").read_text())["cases"]:
        image = np.load(slices_dir / case["file"]).astype(np.float32)
        cases.append(RealSlice(case["name"], image, case["spacing_mm"][:2], case["contrast"]))
    index = volumes_dir / "index.json"
    if index.is_file():
        for case in json.loads(index.read_text())["cases"]:
            if "oblique" in case["name"]:
                continue
            volume = sitk.GetArrayFromImage(sitk.ReadImage(str(volumes_dir / case["file"]))).astype(np.float32)
            axis = 2 - int(case["axis"])
            middle = np.take(volume, volume.shape[axis] // 2, axis=axis)
            top = float(np.percentile(np.clip(volume, 0, None), 99.9)) or 1.0
            spacing = [s for a, s in enumerate(case["spacing_mm"]) if a != int(case["axis"])][::-1]
            cases.append(RealSlice(case["name"] + "_mid", np.clip(middle / top, 0, 1), spacing, case["contrast"]))
    return cases


def slice_image(array: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    """A one-slice 3D image (rows, cols) → size (cols, rows, 1) with the given (row, col) spacing."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array[None], dtype=np.float32))
    image.SetSpacing((float(spacing[1]), float(spacing[0]), 1.0))
    return image


def protocol_lanczos(lr: np.ndarray, scale: int) -> np.ndarray:
    """``lr`` resampled by SimpleITK's ``sitkLanczosWindowedSinc`` onto the HR grid (HR pixel ``i`` at LR coordinate
    ``(i + 0.5)/scale − 0.5``, the product's convention), as realdev/README.md's baseline."""
    image = sitk.GetImageFromArray(lr.astype(np.float64))
    image.SetSpacing((float(scale), float(scale)))
    grid = sitk.Image(lr.shape[1] * scale, lr.shape[0] * scale, sitk.sitkFloat64)
    grid.SetOrigin(((1 - scale) / 2.0, (1 - scale) / 2.0))
    resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLanczosWindowedSinc, 0.0, sitk.sitkFloat64)
    return sitk.GetArrayFromImage(resampled).astype(np.float32)


def evaluate_slice(
    case: RealSlice, scale: int, acquisition: str, variants: Iterable[str], base: RunOptions
) -> Dict[str, Any]:
    """Scores of every variant on one slice at one scale and acquisition; ``outputs`` keeps the images."""
    rows, cols = (n - n % scale for n in case.image.shape)
    hr = case.image[:rows, :cols]
    row: Dict[str, Any] = {"case": case.name, "contrast": case.contrast, "scale": scale, "acquisition": acquisition,
                           "size": [rows, cols], "in_means": min(rows, cols) >= MIN_SIDE, "scores": {}, "outputs": {}}
    if min(rows, cols) // scale < 4:
        row["in_means"] = False
        return row
    lr = degrade(hr, scale, AcquisitionConfig(model=acquisition))
    row["outputs"]["lr"] = lr
    image = slice_image(lr, [s * scale for s in case.spacing])
    mask = hr > MASK_THRESHOLD
    for name in variants:
        if name == PROTOCOL_LANCZOS:
            row["outputs"][name] = out = np.clip(protocol_lanczos(lr, scale), 0.0, 1.0)
            row["scores"][name] = _scores(hr, out, mask, scale)
            continue
        fields = dict(VARIANTS[name])
        if fields.get("method", base.method) != "fagan":
            fields.update(checkpoint=None, ensemble=None)
        options = base.replace(scale=scale, acquisition=acquisition, plane="axial", **fields)

        sr = super_resolve_report(image, options, consistency=False).image
        row["outputs"][name] = out = np.clip(sitk.GetArrayFromImage(sr)[0], 0.0, 1.0)
        row["scores"][name] = _scores(hr, out, mask, scale)
    return row


def _scores(hr: np.ndarray, out: np.ndarray, mask: np.ndarray, scale: int) -> Dict[str, float]:
    """The protocol's scores of one output: PSNR over the mask, SSIM on the whole slice, the Nyquist-band overshoot."""
    return {"psnr": psnr(hr, out, 1.0, mask), "ssim": ssim(hr, out, 1.0), "overshoot": nyquist_band_ratio(out, hr, scale)}


def uncertainty_correlation(case: RealSlice, scale: int, acquisition: str, base: RunOptions) -> Optional[Dict[str, float]]:
    """Spearman ρ, inside the HR mask, between |error| of the default output and (a) its uncertainty map,
    (b) the free proxy: the gradient magnitude of the bicubic image. None for a slice left out of the means."""
    from scipy import stats  # lazy: scipy.stats is slow to import and only this correlation needs it

    rows, cols = (n - n % scale for n in case.image.shape)
    if min(rows, cols) < MIN_SIDE:
        return None
    hr = case.image[:rows, :cols]
    image = slice_image(degrade(hr, scale, AcquisitionConfig(model=acquisition)), [s * scale for s in case.spacing])
    options = base.replace(scale=scale, acquisition=acquisition, plane="axial", uncertainty=True)
    result = super_resolve_report(image, options, consistency=False)
    error = np.abs(sitk.GetArrayFromImage(result.image)[0] - hr)
    bicubic = sitk.GetArrayFromImage(super_resolve_report(image, options.replace(method="bicubic", checkpoint=None, adapt_iterations=None,
                                                                              uncertainty=False), consistency=False).image)[0]
    proxy = np.hypot(*np.gradient(bicubic.astype(np.float64)))
    mask = hr > MASK_THRESHOLD
    return {
        "uncertainty_rho": float(stats.spearmanr(sitk.GetArrayFromImage(result.uncertainty)[0][mask], error[mask])[0]),
        "gradient_rho": float(stats.spearmanr(proxy[mask], error[mask])[0]),
    }


def reference_method(acquisition: str) -> str:
    """The baseline gains are measured against: realdev/README.md's Lanczos (SimpleITK's) for k-space and Gaussian input,
    bicubic for bicubic input."""
    return "bicubic" if acquisition == "bicubic" else PROTOCOL_LANCZOS


def summarise(rows: List[Dict[str, Any]], variants: Sequence[str]) -> List[Dict[str, Any]]:
    """Means per (scale, acquisition, variant): PSNR gain over the reference (mean, worst), SSIM ≥ reference share, overshoot."""
    groups: Dict[Any, List[Dict[str, Any]]] = {}
    for row in rows:
        if row["in_means"] and row["scores"]:
            groups.setdefault((row["scale"], row["acquisition"]), []).append(row)
    table = []
    for (scale, acquisition), members in sorted(groups.items()):
        ref = reference_method(acquisition)
        for name in variants:
            gains = [r["scores"][name]["psnr"] - r["scores"][ref]["psnr"] for r in members]
            ssim_ok = [r["scores"][name]["ssim"] >= r["scores"][ref]["ssim"] for r in members]
            table.append({
                "scale": scale, "acquisition": acquisition, "variant": name, "reference": ref, "slices": len(members),
                "psnr": float(np.mean([r["scores"][name]["psnr"] for r in members])),
                "gain_mean": float(np.mean(gains)), "gain_worst": float(np.min(gains)),
                "ssim": float(np.mean([r["scores"][name]["ssim"] for r in members])),
                "ssim_at_least_reference": float(np.mean(ssim_ok)),
                "overshoot_max": float(np.max([r["scores"][name]["overshoot"] for r in members])),
            })
    return table


def to_markdown(table: List[Dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| scale | LR | variant | slices | PSNR (dB) | gain vs ref, mean (worst) | SSIM | SSIM ≥ ref | max overshoot |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| ×{r['scale']} | {r['acquisition']} | {r['variant']} | {r['slices']} | {r['psnr']:.2f} | "
            f"{r['gain_mean']:+.2f} ({r['gain_worst']:+.2f}) vs {r['reference']} | {r['ssim']:.4f} | "
            f"{100 * r['ssim_at_least_reference']:.0f} % | {r['overshoot_max']:.3f} |"
        )
    return "\n".join(lines)


def save_panel(row: Dict[str, Any], hr: np.ndarray, path: Path, variant: str) -> None:
    """PNG of HR, LR, Lanczos, one FA-GAN variant and its absolute error (×4 for visibility)."""
    import matplotlib  # lazy: optional dependency (matplotlib), only for the panels

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: optional dependency (matplotlib), only for the panels

    outputs = row["outputs"]
    rows, cols = row["size"]
    hr = hr[:rows, :cols]
    panels = [("HR", hr), ("LR", outputs["lr"]), ("Lanczos (SimpleITK)", outputs[PROTOCOL_LANCZOS]), (f"FA-GAN {variant}", outputs[variant]),
              ("|error| x4", np.clip(4 * np.abs(outputs[variant] - hr), 0, 1))]
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.suptitle(f"{row['case']} x{row['scale']} {row['acquisition']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def run(
    realdev: Path, scales: Sequence[int], acquisitions: Sequence[str], variants: Sequence[str], base: RunOptions,
    panels: Optional[Path] = None, panel_variant: str = "default", log: Any = None,
) -> Dict[str, Any]:
    """Evaluate every slice, scale, acquisition and variant; returns per-slice scores and the summary table."""
    names = list(dict.fromkeys(["bicubic", "lanczos", PROTOCOL_LANCZOS, *variants]))
    cases = load_slices(realdev)
    rows = []
    for case in cases:
        for scale in scales:
            for acquisition in acquisitions:
                row = evaluate_slice(case, scale, acquisition, names, base)
                if panels is not None and row["scores"] and panel_variant in row["outputs"]:
                    panels.mkdir(parents=True, exist_ok=True)
                    save_panel(row, case.image, panels / f"{case.name}_x{scale}_{acquisition}.png", panel_variant)
                row.pop("outputs")
                rows.append(row)
                if log is not None and row["scores"]:
                    ref = reference_method(acquisition)
                    gains = "  ".join(f"{n} {row['scores'][n]['psnr'] - row['scores'][ref]['psnr']:+.2f}" for n in names if n != ref)
                    print(f"{case.name:22s} x{scale} {acquisition:7s} {gains}", file=log, flush=True)
    return {"realdev": str(realdev), "base_options": base.to_dict(), "slices": rows, "summary": summarise(rows, names)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fagan_engine.training.realscan_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--realdev", type=Path, default=DEFAULT_REALDEV, help="the real-scan development set (default ../shared/realdev)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--acquisitions", nargs="+", default=["kspace", "bicubic"], choices=["kspace", "bicubic", "gaussian"])
    parser.add_argument(
        "--variants", nargs="+", default=["plain", "projected", "default"], choices=[v for v in VARIANTS if v not in ("bicubic", "lanczos")]
    )
    parser.add_argument("--checkpoint", action="append", default=[], metavar="SCALE=PATH", help="a candidate checkpoint for one scale")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a RunOptions field for every FA-GAN variant (e.g. adapt_iterations=0)"
    )
    parser.add_argument("--json", type=Path, help="write per-slice scores and the summary here")
    parser.add_argument("--markdown", type=Path, help="write the summary table here")
    parser.add_argument("--panels", type=Path, help="write PNG panels (HR, LR, Lanczos, FA-GAN, error) into this folder")
    parser.add_argument("--panel-variant", default="default")
    parser.add_argument(
        "--uncertainty", action="store_true", help="instead of the scores: Spearman ρ of the uncertainty map and of the gradient proxy with |error|"
    )
    args = parser.parse_args(argv)
    try:
        fields = {key: _field_value(value) for key, value in _pairs(args.set, "--set", "FIELD=VALUE").items()}
        base = RunOptions.from_dict(fields)
        checkpoints = _pairs(args.checkpoint, "--checkpoint", "SCALE=PATH")
        unused = sorted(set(checkpoints) - {str(scale) for scale in args.scales})
        if unused:
            raise InputError(f"--checkpoint {unused[0]}=... names no scale of --scales {' '.join(map(str, args.scales))}")
        if args.panels is not None and args.panel_variant not in args.variants:
            raise InputError(f"--panel-variant {args.panel_variant} is not among --variants {' '.join(args.variants)}: no panel would be written")
        for target in (args.json, args.markdown):  # checked before the run: its results are written after it
            if target is not None:
                check_output_folder(target.absolute().parent)
        if args.uncertainty:
            return _uncertainty_main(args, base, checkpoints)
        results: Dict[str, Any] = {"scales": {}}
        for scale in args.scales:
            options = base.replace(checkpoint=checkpoints.get(str(scale), base.checkpoint))
            results["scales"][scale] = run(args.realdev, [scale], args.acquisitions, args.variants, options, args.panels,
                                           args.panel_variant, sys.stdout)
        summary = [r for part in results["scales"].values() for r in part["summary"]]
        results["summary"] = summary
    except FAGANError as exc:  # bad input, a missing or damaged --checkpoint
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(summary))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(results, indent=1, default=_json_default).encode("utf-8"))
    if args.markdown:
        atomic_write_bytes(args.markdown, (to_markdown(summary) + "\n").encode("utf-8"))
    return 0


def _pairs(items: List[str], flag: str, form: str) -> Dict[str, str]:
    """``KEY=VALUE`` items as a dict; InputError (one line) on an item without ``=`` or a key given twice."""
    pairs: Dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise InputError(f"{flag} takes {form}, got {item!r}")
        if key in pairs:
            raise InputError(f"{flag} gives {key} twice")
        pairs[key] = value
    return pairs


def _field_value(text: str) -> Any:
    """A ``--set`` value: JSON (numbers, true/false, null, lists), else the text itself (``device=cpu``); empty is None."""
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _uncertainty_main(args: argparse.Namespace, base: RunOptions, checkpoints: Dict[str, str]) -> int:
    """``--uncertainty``: per slice and mean ρ for each scale and acquisition."""
    rows = []
    for case in load_slices(args.realdev):
        for scale in args.scales:
            for acquisition in args.acquisitions:
                found = uncertainty_correlation(case, scale, acquisition, base.replace(checkpoint=checkpoints.get(str(scale), base.checkpoint)))
                if found is not None:
                    rows.append(dict(found, case=case.name, scale=scale, acquisition=acquisition))
                    print(f"{case.name:22s} x{scale} {acquisition:7s} uncertainty rho {found['uncertainty_rho']:.3f} "
                          f"gradient rho {found['gradient_rho']:.3f}", flush=True)
    mean_u = float(np.mean([r["uncertainty_rho"] for r in rows]))
    mean_g = float(np.mean([r["gradient_rho"] for r in rows]))
    print(f"mean Spearman rho with |error| over {len(rows)} cases: uncertainty map {mean_u:.3f}, bicubic-gradient proxy {mean_g:.3f}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps({"cases": rows, "uncertainty_rho": mean_u, "gradient_rho": mean_g}, indent=1).encode("utf-8"))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON: {type(value)}")


if __name__ == "__main__":
    sys.exit(main())
