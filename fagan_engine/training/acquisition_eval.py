"""The acquisition evaluation protocol (docs/model-card.md): FA-GAN against bicubic and Lanczos on
the template's held-out slab, under every acquisition model, four contrasts and three noise levels.

Data: the axial validation slab that the checkpoint records (``training.validation_slab``), never
seen in training. Contrasts: the real T1, and T2-, PD- and FLAIR-like images made from the slab's
own GM/WM/CSF maps (``SliceSynthesizer.brain_contrast``, fixed seeds). LR: the forward model
(``forward_model.degrade_volume``) under each case; the reference is always the noise-free HR.
Scores: PSNR/SSIM (docs/metrics.md) and the Nyquist-band overshoot ratio (``structure_checks``).

    python -m fagan_engine.training.acquisition_eval --output docs/results/acquisition-eval
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.io.geometry import SliceLayout
from fagan_engine.io.volume_io import read_volume
from fagan_engine.models.checkpoint import default_checkpoint, read_metadata
from fagan_engine.mri.forward_model import AcquisitionConfig, crop_to_multiple, degrade_volume
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.mri.sample_data import icbm152_t1_path
from fagan_engine.mri.structure_checks import nyquist_band_ratio
from fagan_engine.mri.synthesis import SliceSynthesizer
from fagan_engine.training.evaluation import EvalCase, volume_scores
from fagan_engine.util.atomic import atomic_write_bytes, prepare_output_folder
from fagan_engine.util.config import NormalizationConfig, SynthesisConfig
from fagan_engine.util.errors import FAGANError, InputError
from fagan_engine.util.options import RunOptions

CONTRASTS = ("t1", "t2", "pd", "flair")
ACQUISITION_CASES: Tuple[Tuple[str, AcquisitionConfig], ...] = (
    ("kspace", AcquisitionConfig(model="kspace")),
    ("kspace+hamming", AcquisitionConfig(model="kspace", window="hamming")),
    ("bicubic", AcquisitionConfig(model="bicubic")),
    ("gaussian", AcquisitionConfig(model="gaussian")),
    ("kspace, noise 0.01", AcquisitionConfig(model="kspace", noise=0.01)),
    ("kspace, noise 0.03", AcquisitionConfig(model="kspace", noise=0.03)),
)
"""Every acquisition model noise-free, and k-space at three noise levels (0, 0.01, 0.03 of the robust max)."""


def held_out_slab(checkpoint: Path) -> Tuple[sitk.Image, Tuple[int, int], int]:
    """The template's validation slab recorded in the checkpoint, its in-plane axes and first slice index."""
    training = read_metadata(str(checkpoint)).training
    slab, through = training.get("validation_slab"), training.get("through_plane_axis")
    if not slab or through is None:
        raise SystemExit(f"error: {checkpoint.name} records no held-out template slab")
    template = read_volume(str(icbm152_t1_path()))
    size, index = list(template.GetSize()), [0, 0, 0]
    size[through], index[through] = slab["stop"] - slab["start"], slab["start"]
    axes = tuple(a for a in range(3) if a != through)
    return sitk.RegionOfInterest(template, size, index), (axes[0], axes[1]), int(slab["start"])


def contrast_volume(t1_slab: sitk.Image, axes: Tuple[int, int], first: int, contrast: str) -> sitk.Image:
    """The slab in a synthetic contrast made from its own tissue maps (same geometry, [0, 1] units)."""
    if contrast == "t1":
        return t1_slab
    synthesizer = SliceSynthesizer(SynthesisConfig(), axes)
    layout = SliceLayout.for_axes(axes)
    n = layout.to_slices(sitk.GetArrayViewFromImage(t1_slab)).shape[0]
    seed = CONTRASTS.index(contrast)
    slices = [synthesizer.brain_contrast(first + i, contrast, np.random.default_rng([seed, first + i])) for i in range(n)]
    image = sitk.GetImageFromArray(np.ascontiguousarray(layout.from_slices(np.stack(slices)), dtype=np.float32))
    image.CopyInformation(t1_slab)
    return image


def evaluate(
    scales: Sequence[int], extra: Dict[str, Dict[int, str]], device: str = "auto", log: Any = print
) -> List[Dict[str, Any]]:
    """Score bicubic, Lanczos, the bundled FA-GAN (and ``extra`` checkpoints by label and scale) on every case."""
    rows: List[Dict[str, Any]] = []
    for scale in scales:
        bundled = default_checkpoint(scale, "kspace")
        if bundled is None:
            raise SystemExit(f"error: no bundled checkpoint for x{scale}")
        t1_slab, axes, first = held_out_slab(bundled)
        checkpoints = {"FA-GAN": str(bundled), **{label: paths[scale] for label, paths in extra.items() if scale in paths}}
        resolvers: Dict[Tuple[str, str], SuperResolver] = {}
        for contrast in CONTRASTS:
            hr = crop_to_multiple(contrast_volume(t1_slab, axes, first, contrast), scale, axes)
            for name, acquisition in ACQUISITION_CASES:
                lr = degrade_volume(hr, scale, axes, acquisition, np.random.default_rng(7))
                case = EvalCase(f"{contrast} {name}", hr, lr, axes, scale)
                row: Dict[str, Any] = {"scale": scale, "contrast": contrast, "acquisition": name, "methods": {}}
                for method in ("bicubic", "lanczos", *checkpoints):
                    key = (method, acquisition.model)
                    if key not in resolvers:
                        # the network alone (no adaptation, one pass per slice; SuperResolver does not project): the checkpoints
                        # are compared here, fagan-sr's default path is measured on real scans by training.realscan_eval
                        resolvers[key] = SuperResolver(network_alone(scale, acquisition.model, device, method, checkpoints))
                    sr = resolvers[key](lr, plane=axes)
                    row["methods"][method] = {**volume_scores(case, sr), "overshoot": _overshoot(case, sr)}
                rows.append(row)
                fagan = row["methods"]["FA-GAN"]
                log(
                    f"x{scale} {contrast:5s} {name:20s} FA-GAN {fagan['psnr']:.2f} dB (Lanczos "
                    f"{row['methods']['lanczos']['psnr']:.2f}, bicubic {row['methods']['bicubic']['psnr']:.2f}), "
                    f"overshoot {fagan['overshoot']:.3f}"
                )
    return rows


def _overshoot(case: EvalCase, sr: sitk.Image) -> float:
    """Nyquist-band amplitude ratio of SR to HR over the slab's slices (reference-normalised units)."""
    layout = SliceLayout.for_axes(case.axes)
    hr = layout.to_slices(sitk.GetArrayFromImage(case.hr))
    normalizer = IntensityNormalizer.fit(hr, NormalizationConfig())
    return nyquist_band_ratio(normalizer.forward(layout.to_slices(sitk.GetArrayFromImage(sr))), normalizer.forward(hr), case.scale)


def to_markdown(rows: List[Dict[str, Any]]) -> str:
    """One table per scale (PSNR/SSIM per method, FA-GAN − Lanczos), then the per-acquisition means."""
    lines: List[str] = []
    methods = list(rows[0]["methods"]) if rows else []
    for scale in sorted({r["scale"] for r in rows}):
        subset = [r for r in rows if r["scale"] == scale]
        lines += [f"#### ×{scale}", "", "| contrast | acquisition | " + " | ".join(f"{m} PSNR / SSIM" for m in methods)
                  + " | FA-GAN − Lanczos | FA-GAN − bicubic | overshoot |", "|" + "---|" * (len(methods) + 5)]
        for r in subset:
            m = r["methods"]
            cells = [f"{m[k]['psnr']:.2f} / {m[k]['ssim']:.4f}" for k in methods]
            lines.append(
                f"| {r['contrast']} | {r['acquisition']} | " + " | ".join(cells)
                + f" | {m['FA-GAN']['psnr'] - m['lanczos']['psnr']:+.2f} | {m['FA-GAN']['psnr'] - m['bicubic']['psnr']:+.2f}"
                + f" | {m['FA-GAN']['overshoot']:.3f} |"
            )
        lines += ["", "| acquisition (mean over contrasts) | FA-GAN − Lanczos | worst case | FA-GAN − bicubic | max overshoot |",
                  "|---|---|---|---|---|"]
        for name, _ in ACQUISITION_CASES:
            group = [r for r in subset if r["acquisition"] == name]
            gains = [r["methods"]["FA-GAN"]["psnr"] - r["methods"]["lanczos"]["psnr"] for r in group]
            bic = [r["methods"]["FA-GAN"]["psnr"] - r["methods"]["bicubic"]["psnr"] for r in group]
            over = max(r["methods"]["FA-GAN"]["overshoot"] for r in group)
            lines.append(f"| {name} | {np.mean(gains):+.2f} dB | {min(gains):+.2f} dB | {np.mean(bic):+.2f} dB | {over:.3f} |")
        lines.append("")
    return "\n".join(lines)


def network_alone(scale: int, acquisition: str, device: str, method: str, checkpoints: Dict[str, str]) -> RunOptions:
    """The options of one compared method: a checkpoint's network alone (no adaptation, one pass per slice; SuperResolver
    does not project), or an interpolation baseline (which takes no network options)."""
    options = RunOptions(scale=scale, acquisition=acquisition, device=device, plane="auto", adapt_iterations=0)
    if method in checkpoints:
        return options.replace(checkpoint=checkpoints[method], ensemble=1)
    return options.replace(method=method)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fagan_engine.training.acquisition_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4], choices=(2, 4, 8))
    parser.add_argument("--extra", nargs="*", default=[], help="LABEL:SCALE=CHECKPOINT rows to add (e.g. pixel-only:4=runs/x.safetensors)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--output", required=True, help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    out = Path(args.output)
    try:
        extra = parse_extra(args.extra)
        prepare_output_folder(out / "results.json")  # before the run: its results are written after it
        rows = evaluate(args.scales, extra, args.device, log=lambda line: print(line, file=sys.stderr))
    except FAGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_bytes(out / "results.json", (json.dumps(rows, indent=1) + "\n").encode("utf-8"))
    atomic_write_bytes(out / "results.md", to_markdown(rows).encode("utf-8"))
    print(to_markdown(rows))
    return 0


def parse_extra(items: Sequence[str]) -> Dict[str, Dict[int, str]]:
    """``LABEL:SCALE=CHECKPOINT`` items by label and scale; InputError (one line) on any other form."""
    extra: Dict[str, Dict[int, str]] = {}
    for item in items:
        label, _, rest = item.partition(":")
        scale, _, path = rest.partition("=")
        if not label or scale not in ("2", "4", "8") or not path:
            raise InputError(f"--extra takes LABEL:SCALE=CHECKPOINT with SCALE 2, 4 or 8, got {item!r}")
        extra.setdefault(label, {})[int(scale)] = path
    return extra


if __name__ == "__main__":
    sys.exit(main())
