"""Cost of the trust outputs against inference: ``python -m benchmarks.trust_bench [--smoke] [--scales 4 2]``.

Per scale, on the suite's synthetic volume (``slices`` × ``side``² LR, the inference section's sizes),
in one process after a warm-up: FA-GAN inference (``SuperResolver``, torch), then the k-space
consistency maps (``consistency.consistency_maps``: re-degradation, residual on both grids,
noise estimate, summary), hard consistency (``enforce_consistency``), the out-of-distribution
checks (``ood.ood_warnings`` with a full data profile) and the TTA uncertainty on the first
``uncertainty_slices`` slices (7 extra inferences; its ratio is against inference of those
slices). Target: consistency ≤ 10 % of inference. ``benchmarks.run`` includes it as ``trust``.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from .common import FULL, SMOKE, Sizes, checked_device, prepare_checkpoint, synthetic_volume

UNCERTAINTY_SLICES = 16


def trust_section(sizes: Sizes, device: str, tmp: Path) -> List[Dict[str, Any]]:
    """One row per scale of ``sizes``; a scale that fails is a row with its ``error`` (the suite's other sections are kept)."""
    rows = []
    for scale in sizes.scales:
        try:
            rows.append(trust_row(scale, sizes, device, tmp))
        except Exception as exc:  # in the suite's own process, after its other sections: keep them
            rows.append({"scale": scale, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def trust_row(scale: int, sizes: Sizes, device: str, tmp: Path) -> Dict[str, Any]:
    import SimpleITK as sitk

    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.trust.consistency import consistency_maps, enforce_consistency
    from fagan_engine.trust.ood import ood_warnings
    from fagan_engine.trust.profile import HISTOGRAM_EDGES
    from fagan_engine.trust.uncertainty import tta_uncertainty
    from fagan_engine.util.options import RunOptions

    side = sizes.output // scale
    model = prepare_checkpoint(scale, tmp)
    # the network's single pass, the denominator of every ratio: no per-scan adaptation, no self-ensemble, no projection
    resolver = SuperResolver(RunOptions(scale=scale, checkpoint=model["checkpoint"], device=device, backend="torch", batch_size=sizes.batch,
                                        adapt_iterations=0, ensemble=1, enforce_consistency=False))
    image = synthetic_volume(sizes.slices, side)
    axes = (0, 1)
    resolver(synthetic_volume(min(sizes.batch, sizes.slices), side, seed=1), plane=axes)  # warm-up
    sr, inference_s = _timed(lambda: resolver(image, plane=axes))
    _, consistency_s = _timed(lambda: consistency_maps(image, sr, scale, axes, "kspace"))
    _, enforce_s = _timed(lambda: enforce_consistency(image, sr, scale, axes, "kspace"))
    profile = {"lr_spacing_mm": [1.0, 1.0], "lr_slice_size": [side, side], "max_noise": 0.04,
               "histogram": [1.0 / (len(HISTOGRAM_EDGES) - 1)] * (len(HISTOGRAM_EDGES) - 1)}
    _, ood_s = _timed(lambda: ood_warnings(image, axes, profile))
    count = min(UNCERTAINTY_SLICES, sizes.slices)
    subset = image[:, :, :count]
    plain, subset_s = _timed(lambda: resolver(subset, plane=axes))
    _, uncertainty_s = _timed(lambda: tta_uncertainty(subset, resolver, axes, plain))
    return {
        "scale": scale, "slices": sizes.slices, "side": side, "output": side * scale, "device": device,
        "weights": model["weights"], "inference_s": inference_s, "consistency_s": consistency_s,
        "consistency_fraction": consistency_s / inference_s, "enforce_s": enforce_s, "ood_s": ood_s,
        "uncertainty_slices": count, "uncertainty_s": uncertainty_s, "uncertainty_vs_inference": uncertainty_s / subset_s,
        "sr_voxels": int(sitk.GetArrayViewFromImage(sr).size),
        "adapted": resolver.adaptation is not None, "ensemble_members": resolver.options.ensemble_members,
    }


def markdown(rows: List[Dict[str, Any]]) -> str:
    header = ("| scale | volume (LR → SR) | weights | inference s | consistency s | consistency / inference | enforce s "
              "| OOD checks s | TTA uncertainty / inference |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| ×{r['scale']} | {r['slices']} × {r['side']}² → {r['output']}² | {r['weights']} | {r['inference_s']:.2f} "
            f"| {r['consistency_s']:.3f} | {100 * r['consistency_fraction']:.1f} % | {r['enforce_s']:.3f} | {r['ood_s']:.3f} "
            f"| {r['uncertainty_vs_inference']:.1f}× ({r['uncertainty_slices']} slices) |"
        )
    return "\n".join(lines)


def _timed(call: Callable[[], Any]) -> Tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def main() -> int:
    import sys
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m benchmarks.trust_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--scales", type=int, nargs="+", default=None)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    checked_device(args.device)
    sizes = SMOKE if args.smoke else FULL
    if args.scales:
        sizes = dataclasses.replace(sizes, scales=tuple(args.scales))
    with tempfile.TemporaryDirectory(prefix="fagan-trust-") as folder:
        rows = trust_section(sizes, args.device, Path(folder))
    measured = [row for row in rows if "error" not in row]
    if measured:
        print(markdown(measured))
    for row in rows:
        if "error" in row:
            sys.stderr.write(f"error: x{row['scale']}: {row['error']}\n")
    return 0 if len(measured) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
