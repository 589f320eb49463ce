"""Does the uncertainty map predict the error, and what does hard consistency do to PSNR?

``python -m fagan_engine.training.trust_eval [--scales 2 4 | --checkpoints C ...] [--acquisition kspace]
[--noise 0] [--output trust_eval.json]``: for each bundled checkpoint (``checkpoint.default_checkpoint``)
or each given one, the ICBM152 template's held-out slab recorded in its metadata
(``training.validation_slab`` along ``training.through_plane_axis``) goes through the evaluation
protocol (``evaluation.make_case``: crop, LR by the forward model) and ``super_resolve_report``
with the TTA uncertainty. Then, in
the reference's robust [0, 1] units with its foreground mask and the border crop of
``evaluation.normalised_stacks``:

- Spearman ρ between the uncertainty map and the true error |SR − HR|, per slice (mean, min,
  max over slices with foreground) and pooled over the slab's foreground voxels;
- the same for the gradient magnitude of the bicubic upsampling (the trivial "edges" map),
  ρ(uncertainty, bicubic gradient) (how much of the uncertainty is edge detection) and the pooled
  partial rank correlation of uncertainty and error given the gradient (what it adds to edges);
- PSNR/SSIM of bicubic, FA-GAN and FA-GAN with ``enforce_consistency`` (``metrics`` convention),
  and the consistency summary of the FA-GAN result.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk
from scipy.stats import spearmanr

from fagan_engine.io.geometry import SliceLayout
from fagan_engine.models.checkpoint import default_checkpoint, read_metadata
from fagan_engine.mri.forward_model import AcquisitionConfig
from fagan_engine.pipeline.report import super_resolve_report
from fagan_engine.training.acquisition_eval import held_out_slab
from fagan_engine.training.evaluation import EvalCase, interpolated, make_case, normalised_stacks, volume_scores
from fagan_engine.trust.consistency import enforce_consistency
from fagan_engine.util.options import RunOptions


def held_out_case(checkpoint: str, scale: int, acquisition: AcquisitionConfig) -> EvalCase:
    """The held-out slab of the template recorded in ``checkpoint``, degraded by ``acquisition``."""
    slab, axes, first = held_out_slab(Path(checkpoint))
    through = ({0, 1, 2} - set(axes)).pop()
    name = f"icbm152:t1[slices {first}-{first + slab.GetSize()[through] - 1}]"
    return make_case(name, sitk.Cast(slab, sitk.sitkFloat32), scale, axes, acquisition)


def evaluate_checkpoint(checkpoint: str, acquisition: AcquisitionConfig) -> Dict[str, Any]:
    """The trust figures of one checkpoint on its held-out slab (see the module docstring)."""
    metadata = read_metadata(checkpoint)
    scale = metadata.scale
    case = held_out_case(checkpoint, scale, acquisition)
    options = RunOptions(scale=scale, checkpoint=checkpoint, acquisition=acquisition.model, plane=metadata.plane)
    result = super_resolve_report(case.lr, options, uncertainty=True)
    enforced = enforce_consistency(case.lr, result.image, scale, case.axes, acquisition.model)
    bicubic = interpolated(case, "bicubic")
    reference, test, mask = normalised_stacks(case, result.image)
    error = np.abs(test - reference)
    uncertainty = _cropped(case, result.uncertainty)
    gradient = _gradient_magnitude(_cropped(case, bicubic))
    row: Dict[str, Any] = {
        "checkpoint": checkpoint.split("/")[-1],
        "scale": scale,
        "acquisition": acquisition.describe(),
        "case": case.name,
        "psnr_ssim": {
            "bicubic": volume_scores(case, bicubic),
            "fagan": volume_scores(case, result.image),
            "fagan_enforced": volume_scores(case, enforced),
        },
        "consistency": result.summary,
        "spearman_uncertainty_vs_error": _spearman(uncertainty, error, mask),
        "spearman_bicubic_gradient_vs_error": _spearman(gradient, error, mask),
        "spearman_uncertainty_vs_bicubic_gradient": _spearman(uncertainty, gradient, mask),
        "warnings": result.warnings,
    }
    row["partial_spearman_given_gradient"] = _partial(
        row["spearman_uncertainty_vs_error"]["pooled"],
        row["spearman_bicubic_gradient_vs_error"]["pooled"],
        row["spearman_uncertainty_vs_bicubic_gradient"]["pooled"],
    )
    return row


def _cropped(case: EvalCase, image: sitk.Image) -> np.ndarray:
    """A map as a slice stack with ``normalised_stacks``' border crop (values unchanged)."""
    stack = SliceLayout.for_axes(case.axes).to_slices(sitk.GetArrayViewFromImage(image)).astype(np.float64)
    return stack[:, case.scale : -case.scale, case.scale : -case.scale]


def _gradient_magnitude(stack: np.ndarray) -> np.ndarray:
    rows, cols = np.gradient(stack, axis=(1, 2))
    return np.hypot(rows, cols)


def _spearman(predictor: np.ndarray, target: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """Per-slice (mean, min, max, count) and pooled Spearman ρ inside ``mask``."""
    per_slice = [
        float(spearmanr(predictor[i][mask[i]], target[i][mask[i]])[0])
        for i in range(len(mask))
        if mask[i].sum() >= 100
    ]
    pooled = float(spearmanr(predictor[mask], target[mask])[0])
    return {
        "per_image_mean": float(np.mean(per_slice)),
        "per_image_min": float(np.min(per_slice)),
        "per_image_max": float(np.max(per_slice)),
        "images": float(len(per_slice)),
        "pooled": pooled,
    }


def _partial(uncertainty_error: float, gradient_error: float, uncertainty_gradient: float) -> float:
    """Pooled partial rank correlation of uncertainty and error with the bicubic gradient held fixed."""
    denominator = np.sqrt((1 - uncertainty_gradient**2) * (1 - gradient_error**2))
    return float((uncertainty_error - uncertainty_gradient * gradient_error) / denominator) if denominator > 0 else 0.0


def to_markdown(rows: List[Dict[str, Any]]) -> str:
    """Two tables: uncertainty against error, and the PSNR effect of hard consistency."""
    lines = [
        "| scale | acquisition | ρ(uncertainty, error) per image: mean [min, max] | pooled | ρ(bicubic gradient, error) per image | pooled "
        "| ρ(uncertainty, bicubic gradient) pooled | partial ρ(uncertainty, error given gradient) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        u, g, ug = r["spearman_uncertainty_vs_error"], r["spearman_bicubic_gradient_vs_error"], r["spearman_uncertainty_vs_bicubic_gradient"]
        lines.append(
            f"| ×{r['scale']} | {r['acquisition']} | {u['per_image_mean']:.3f} [{u['per_image_min']:.3f}, {u['per_image_max']:.3f}] "
            f"| {u['pooled']:.3f} | {g['per_image_mean']:.3f} [{g['per_image_min']:.3f}, {g['per_image_max']:.3f}] | {g['pooled']:.3f} "
            f"| {ug['pooled']:.3f} | {r['partial_spearman_given_gradient']:.3f} |"
        )
    lines += [
        "",
        "| scale | acquisition | bicubic PSNR / SSIM | FA-GAN PSNR / SSIM | FA-GAN + enforce PSNR / SSIM | relative RMS residual "
        "| fraction > 3σ |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, c = r["psnr_ssim"], r["consistency"]
        lines.append(
            f"| ×{r['scale']} | {r['acquisition']} | {_score(s['bicubic'])} | {_score(s['fagan'])} | {_score(s['fagan_enforced'])} "
            f"| {c['relative_rms_residual']:.4f} | {c['fraction_above_3sigma']:.3f} |"
        )
    return "\n".join(lines)


def _score(scores: Dict[str, float]) -> str:
    return f"{scores['psnr']:.2f} / {scores['ssim']:.4f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fagan_engine.training.trust_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4], help="bundled checkpoints to evaluate")
    parser.add_argument("--checkpoints", nargs="+", help="evaluate these checkpoints instead (each at its scale)")
    parser.add_argument("--acquisition", default="kspace", choices=("kspace", "bicubic", "gaussian"))
    parser.add_argument("--noise", type=float, default=0.0, help="Rician noise of the LR (forward_model convention)")
    parser.add_argument("--output", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    acquisition = AcquisitionConfig(model=args.acquisition, noise=args.noise).validate()
    checkpoints = args.checkpoints or [default_checkpoint(scale, args.acquisition) for scale in args.scales]
    if None in checkpoints:
        print(f"error: no bundled checkpoint for x{args.scales[checkpoints.index(None)]}", file=sys.stderr)
        return 2
    rows = [evaluate_checkpoint(str(path), acquisition) for path in checkpoints]
    print(to_markdown(rows))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
