"""``fagan-eval`` tables: PSNR ± std and SSIM ± std per method and scale; bicubic and Lanczos always rows.

The mean is over the test volumes' scores (one volume: its score, as with several); the standard deviation is across
test volumes when there are several, and across the slices with foreground of the single volume otherwise (population
std, ddof = 0); the tables say which.
FID is computed only when Inception-v3 weights are given; otherwise it is absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.models.checkpoint import CheckpointMetadata
from fagan_engine.mri.forward_model import AcquisitionConfig
from fagan_engine.pipeline.report import super_resolve
from fagan_engine.training.evaluation import EvalCase, interpolated, make_case, normalised_stacks, slice_scores, volume_scores

BASELINES = ("bicubic", "lanczos")

PRESET_LABELS = {"fagan": "FA-GAN", "srgan": "SRGAN", "ca-srgan": "CA-SR-GAN", "sa-srgan": "SA-SR-GAN"}
Checkpoint = Tuple[str, CheckpointMetadata]


def method_labels(checkpoints: Sequence[Checkpoint]) -> List[str]:
    """Table labels, one per checkpoint and distinct within a scale: the preset's name, plus the file name where two share
    a scale and a preset, plus the file's path where two also share the file name (``runs/*/checkpoints/latest``)."""
    base = [PRESET_LABELS.get(md.model["preset"], md.model["preset"]) for _, md in checkpoints]
    keys = [(label, md.scale) for label, (_, md) in zip(base, checkpoints)]
    named = [f"{label} ({Path(path).stem})" if keys.count(key) > 1 else label for label, key, (path, _) in zip(base, keys, checkpoints)]
    scaled = [(label, md.scale) for label, (_, md) in zip(named, checkpoints)]
    return [f"{label[:-1]}, {path})" if scaled.count(key) > 1 else label
            for label, key, (path, _) in zip(named, scaled, checkpoints)]


def evaluate(
    checkpoints: Sequence[Checkpoint],
    volumes: Sequence[Tuple[str, sitk.Image, Tuple[int, int]]],
    scales: Sequence[int],
    device: str = "auto",
    batch_size: int = 8,
    inception: Optional[Any] = None,
    log: Callable[[str], None] = print,
    acquisition: Optional[AcquisitionConfig] = None,
) -> Dict[str, Any]:
    """Evaluate bicubic, Lanczos and every checkpoint at its scale on ``volumes`` (name, HR image, in-plane axes).

    The LR volumes come from the forward model under ``acquisition`` (default: noise-free k-space).
    """
    acquisition = acquisition or AcquisitionConfig()
    std_over = "volumes" if len(volumes) > 1 else "slices"
    labels = method_labels(checkpoints)
    rows = []
    for scale in scales:
        cases = [make_case(name, image, scale, axes, acquisition) for name, image, axes in volumes]
        networks = [(lab, path) for lab, (path, md) in zip(labels, checkpoints) if md.scale == scale]
        methods: List[Tuple[str, Optional[str]]] = [(b, None) for b in BASELINES] + networks
        reference_features = None
        for label, path in methods:
            log(f"x{scale} {label}: {len(cases)} volume(s)")
            scores: List[Dict[str, float]] = []
            spread: List[Dict[str, float]] = []
            pairs: List[Tuple[np.ndarray, np.ndarray]] = []
            for case in cases:
                sr = interpolated(case, label) if path is None else _checkpoint_sr(case, path, device, batch_size, acquisition.model)
                scores.append(volume_scores(case, sr))
                spread += scores[-1:] if std_over == "volumes" else slice_scores(case, sr)
                if inception is not None:
                    pairs.append(_foreground_slices(case, sr))
            row: Dict[str, Any] = {"scale": scale, "method": label, "checkpoint": path, "n": len(spread)}
            for key in ("psnr", "ssim"):
                row[key] = {"mean": float(np.mean([s[key] for s in scores])), "std": float(np.std([s[key] for s in spread]))}
            if inception is not None:
                from fagan_engine.training.inception import features, frechet_distance  # lazy: keeps torch out of this module's import

                if reference_features is None:
                    reference_features = features(inception, [s for ref, _ in pairs for s in ref])
                row["fid"] = frechet_distance(reference_features, features(inception, [s for _, out in pairs for s in out]))
            rows.append(row)
    return {
        "data": [name for name, _, _ in volumes],
        "std_over": std_over,
        "fid": "computed" if inception is not None else "absent (no --inception-weights)",
        "acquisition": acquisition.to_dict(),
        "results": rows,
    }


def _checkpoint_sr(case: EvalCase, path: str, device: str, batch_size: int, acquisition: str) -> sitk.Image:
    """The checkpoint's network alone, one pass per slice (no self-ensemble): ``fagan-eval`` compares checkpoints, as
    the trainer's validation does; the default path of ``fagan-sr`` (projection, per-scan adaptation and the ×4/×8
    self-ensemble on top) is measured by ``training.realscan_eval``."""
    return super_resolve(case.lr, case.scale, checkpoint=path, plane=case.axes, device=device, batch_size=batch_size,
                         acquisition=acquisition, adapt_iterations=0, enforce_consistency=False, ensemble=1)


def _foreground_slices(case: EvalCase, sr: sitk.Image) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    ref, out, mask = normalised_stacks(case, sr)
    keep = np.flatnonzero(mask.any(axis=(1, 2)))
    return [ref[i] for i in keep], [out[i] for i in keep]


def to_markdown(report: Dict[str, Any]) -> str:
    """The paper's layout: one row per scale, PSNR and SSIM columns per method (+ an FID table)."""
    rows = report["results"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    scales = sorted({r["scale"] for r in rows})
    cell = {(r["scale"], r["method"]): r for r in rows}
    header = ["scale"] + [f"{m} {k}" for m in methods for k in ("PSNR", "SSIM")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scale in scales:
        values = [f"×{scale}"]
        for method in methods:
            r = cell.get((scale, method))
            if r is None:
                values += ["–", "–"]
            else:
                values += [f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f}", f"{r['ssim']['mean']:.4f} ± {r['ssim']['std']:.4f}"]
        lines.append("| " + " | ".join(values) + " |")
    n = rows[0]["n"] if rows else 0
    spread = f"{n} test volumes" if report["std_over"] == "volumes" else f"{n} slices with foreground of one volume"
    lines += [
        "",
        f"Mean ± standard deviation across {spread}. PSNR (dB) and SSIM on the reference's robust [0, 1] "
        "normalisation, foreground mask, scale-voxel border crop (docs/metrics.md); LR made from the HR volume "
        f"by the forward model: {AcquisitionConfig(**report['acquisition']).describe()}.",
    ]
    if report["fid"] == "computed":
        lines += ["", "| scale | " + " | ".join(f"{m} FID" for m in methods) + " |", "|" + "---|" * (len(methods) + 1)]
        for scale in scales:
            fids = [f"{cell[(scale, m)]['fid']:.2f}" if (scale, m) in cell else "–" for m in methods]
            lines.append(f"| ×{scale} | " + " | ".join(fids) + " |")
        lines += ["", "FID from torchvision-format Inception-v3 pool3 features of the foreground slices (not comparable with TF-Inception FID)."]
    return "\n".join(lines) + "\n"
