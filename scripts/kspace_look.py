"""``python scripts/kspace_look.py [--scale N] [OUTPUT]``: the model card's visual check of a bundled model.

Held-out slice 19 of the template's validation slab (the evaluation protocol's data), un-filtered
k-space input (×4 by default) made by the forward model: T1 and FLAIR-like noise-free, T2-like at noise 0.03.
Columns: HR, Lanczos, FA-GAN, FA-GAN − HR (±30 % of the robust range). Default output:
docs/images/x<scale>-kspace-look.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

ROWS = (("t1", 0.0), ("flair", 0.0), ("t2", 0.03))
SLICE = 19


def main(argv: Optional[List[str]] = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.io.geometry import SliceLayout
    from fagan_engine.models.checkpoint import default_checkpoint
    from fagan_engine.mri.forward_model import AcquisitionConfig, crop_to_multiple, degrade_volume
    from fagan_engine.mri.normalization import IntensityNormalizer
    from fagan_engine.training.acquisition_eval import contrast_volume, held_out_slab
    from fagan_engine.util.config import NormalizationConfig
    from fagan_engine.util.options import RunOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    parser.add_argument("output", nargs="?")
    args = parser.parse_args(argv)
    scale = args.scale
    output = Path(args.output or f"docs/images/x{scale}-kspace-look.png")
    slab, axes, first = held_out_slab(default_checkpoint(scale, "kspace"))
    layout = SliceLayout.for_axes(axes)
    methods = {name: SuperResolver(RunOptions(scale=scale, method=name, plane="auto")) for name in ("lanczos", "fagan")}
    figure, cells = plt.subplots(len(ROWS), 4, figsize=(12, 3.4 * len(ROWS)))
    for row, (contrast, noise) in enumerate(ROWS):
        hr = crop_to_multiple(contrast_volume(slab, axes, first, contrast), scale, axes)
        lr = degrade_volume(hr, scale, axes, AcquisitionConfig(model="kspace", noise=noise), np.random.default_rng(7))
        hr_slices = layout.to_slices(sitk.GetArrayFromImage(hr))
        normalizer = IntensityNormalizer.fit(hr_slices, NormalizationConfig())
        images = {"HR": normalizer.forward(hr_slices)[SLICE]}
        for name, resolver in methods.items():
            sr = layout.to_slices(sitk.GetArrayFromImage(resolver(lr, plane=axes)))
            images["Lanczos" if name == "lanczos" else "FA-GAN"] = normalizer.forward(sr)[SLICE]
        label = f"{contrast.upper()}" + (f", noise {noise:g}" if noise else "")
        for col, (title, image) in enumerate(images.items()):
            cells[row, col].imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
            cells[row, col].set_title(f"{label}: {title}", fontsize=9)
        error = images["FA-GAN"] - images["HR"]
        cells[row, 3].imshow(error, cmap="RdBu_r", vmin=-0.3, vmax=0.3)
        cells[row, 3].set_title(f"{label}: FA-GAN − HR", fontsize=9)
    for cell in cells.flat:
        cell.axis("off")
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=80)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
