"""The README demo: super-resolve the ICBM152 T1 template at ×2 and ×4 from a simulated acquisition.

The LR input comes from the forward model (``--acquisition``, default ``kspace``: a smaller
acquisition matrix, as a real faster scan loses resolution). Writes, per scale, the
HR/LR/bicubic/Lanczos/FA-GAN volumes, a PNG comparing crops of one slice, and a JSON of PSNR/SSIM
per method (docs/metrics.md). FA-GAN runs with ``fagan-sr``'s defaults (data-consistency projection and
per-scan adaptation); the network alone is scored too, so the metrics show what the two steps add.
When no trained checkpoint is bundled for a scale, the network runs with random weights and
everything it writes says "untrained".
"""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from fagan_engine.cli import OneLineParser, entry_point, missing_package_advice
from fagan_engine.io.geometry import SliceLayout, plane_axes
from fagan_engine.io.volume_io import read_volume, write_volume
from fagan_engine.models.checkpoint import default_checkpoint, read_metadata
from fagan_engine.mri.forward_model import AcquisitionConfig, crop_to_multiple, degrade_volume
from fagan_engine.mri.metrics import volume_metrics
from fagan_engine.mri.sample_data import icbm152_t1_path
from fagan_engine.pipeline.report import super_resolve
from fagan_engine.util.atomic import prepared_output_folder, publish_files
from fagan_engine.util.config import ACQUISITIONS
from fagan_engine.util.errors import InputError, OutputError

OUTPUT_FILES = ("metrics.json", "comparison.png")
VOLUMES = ("hr", "lr", "bicubic", "lanczos", "fagan_network_only", "fagan")
"""The volumes each ``x<scale>/`` folder holds (``<name>.nii.gz``)."""


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m fagan_engine demo", description=__doc__)
    parser.add_argument("--output", default="demo_output", help="folder for volumes, figure and metrics")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4], choices=(2, 4, 8))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--acquisition", default="kspace", choices=ACQUISITIONS, help="how the LR input is simulated")
    parser.add_argument("--force", action="store_true", help="replace the files of an earlier demo in --output")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    return run_demo(Path(args.output), args.scales, args.device, args.acquisition, args.force)


def demo_files(output: Path, scales: List[int]) -> List[Path]:
    """Every file the demo writes into ``output``."""
    return [output / name for name in OUTPUT_FILES] + [output / f"x{s}" / f"{v}.nii.gz" for s in scales for v in VOLUMES]


def run_demo(output: Path, scales: List[int], device: str = "auto", acquisition: str = "kspace", force: bool = False) -> int:
    """Write the demo into ``output``: every file is staged and published together at the end, so a failed or
    interrupted demo leaves nothing, and an earlier demo's files are replaced only with ``force``."""
    if importlib.util.find_spec("matplotlib") is None:  # its figure is drawn last: say so before minutes of work
        raise InputError(missing_package_advice("matplotlib"))
    existing = [path for path in demo_files(output, scales) if path.exists()]
    if existing and not force:
        raise OutputError(f"{existing[0]} already exists (an earlier demo?): pass --force to replace the demo's files, or choose "
                          "another --output")
    with prepared_output_folder(output / OUTPUT_FILES[0]):  # one error line when --output is a file or not writable
        with tempfile.TemporaryDirectory(prefix=".demo-", dir=output) as staging:
            _write_demo(Path(staging), scales, device, acquisition)
            for scale in scales:
                (output / f"x{scale}").mkdir(exist_ok=True)
            publish_files([(Path(staging) / path.relative_to(output), path) for path in demo_files(output, scales)], force, output)
    sys.stderr.write(f"demo written to {output}/ (metrics.json, comparison.png, x*/ volumes)\n")
    return 0


def _write_demo(folder: Path, scales: List[int], device: str, acquisition: str) -> None:
    hr_full = read_volume(str(icbm152_t1_path()))
    report: Dict[str, Any] = {
        "data": "ICBM152 2009a T1 template (nilearn), 1 mm",
        "acquisition": AcquisitionConfig(model=acquisition).to_dict(),
        "scales": {},
    }
    panels = []
    for scale in scales:
        entry, panel = _demo_scale(hr_full, scale, folder / f"x{scale}", device, acquisition)
        report["scales"][f"x{scale}"] = entry
        panels.append(panel)
        _print_summary(scale, entry)
    (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _save_figure(panels, folder / "comparison.png")


def _demo_scale(
    hr_full: sitk.Image, scale: int, folder: Path, device: str, acquisition: str
) -> "tuple[Dict[str, Any], Dict[str, Any]]":
    folder.mkdir(parents=True, exist_ok=True)
    axes = plane_axes(hr_full, "axial")
    hr = crop_to_multiple(hr_full, scale, axes)
    lr = degrade_volume(hr, scale, axes, AcquisitionConfig(model=acquisition))
    checkpoint = default_checkpoint(scale, acquisition)
    trained = checkpoint is not None
    label = "FA-GAN (default)" if trained else "FA-GAN (UNTRAINED, random weights)"
    network = {"checkpoint": checkpoint, "untrained": not trained, "device": device, "acquisition": acquisition}
    outputs = {
        "bicubic": super_resolve(lr, scale, plane=axes, method="bicubic"),
        "lanczos": super_resolve(lr, scale, plane=axes, method="lanczos"),
        "fagan_network_only": super_resolve(lr, scale, plane=axes, adapt_iterations=0, enforce_consistency=False, **network),
        "fagan": super_resolve(lr, scale, plane=axes, **network),
    }
    volumes = {"hr": hr, "lr": lr, **outputs}
    for name in VOLUMES:
        write_volume(volumes[name], str(folder / f"{name}.nii.gz"))
    layout = SliceLayout.for_axes(axes)
    hr_array = sitk.GetArrayFromImage(hr)
    held_out = _held_out_slices(checkpoint, hr_array.shape[layout.through_axis])
    entry: Dict[str, Any] = {
        "checkpoint": str(checkpoint) if trained else None,
        "trained": trained,
        "fagan_label": label,
        "evaluated_slices": held_out["description"],
        "methods": {},
    }
    for name, image in outputs.items():
        test = sitk.GetArrayFromImage(image)
        ref, out = (layout.to_slices(a)[held_out["slice"]] for a in (hr_array, test))
        entry["methods"][name] = volume_metrics(ref, out, in_plane_axes=(1, 2), crop=scale)
    middle = held_out["middle"]
    panel = {
        "scale": scale,
        "label": label,
        "metrics": entry["methods"],
        "images": {
            "HR": layout.to_slices(hr_array)[middle],
            f"LR (x{scale} {acquisition})": np.kron(layout.to_slices(sitk.GetArrayFromImage(lr))[middle], np.ones((scale, scale))),
            "bicubic": layout.to_slices(sitk.GetArrayFromImage(outputs["bicubic"]))[middle],
            "lanczos": layout.to_slices(sitk.GetArrayFromImage(outputs["lanczos"]))[middle],
            label: layout.to_slices(sitk.GetArrayFromImage(outputs["fagan"]))[middle],
        },
    }
    return entry, panel


def _held_out_slices(checkpoint: Optional[Path], n_slices: int) -> Dict[str, Any]:
    """Evaluate on the checkpoint's held-out validation slab when it records one, else everywhere."""
    if checkpoint is not None:
        slab = read_metadata(str(checkpoint)).training.get("validation_slab")
        if slab:
            start, stop = int(slab["start"]), int(slab["stop"])
            return {
                "slice": slice(start, stop),
                "middle": (start + stop) // 2,
                "description": f"held-out validation slab, slices {start}-{stop - 1} along the through-plane axis",
            }
    return {"slice": slice(0, n_slices), "middle": n_slices // 2, "description": "all slices"}


def _print_summary(scale: int, entry: Dict[str, Any]) -> None:
    for name, values in entry["methods"].items():
        shown = {"fagan": entry["fagan_label"], "fagan_network_only": "FA-GAN network only"}.get(name, name)
        sys.stderr.write(f"x{scale} {shown:<36} PSNR {values['psnr']:.2f} dB  SSIM {values['ssim']:.4f}\n")


def _save_figure(panels: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib  # lazy: optional dependency (matplotlib), only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: optional dependency (matplotlib), only for the figure

    fig, grid = plt.subplots(len(panels), 5, figsize=(16, 3.6 * len(panels)), squeeze=False)
    for row, panel in zip(grid, panels):
        reference = panel["images"]["HR"]
        height, width = reference.shape
        crop = (slice(height // 4, 3 * height // 4), slice(width // 4, 3 * width // 4))
        vmax = float(np.percentile(reference, 99.5))
        for axis, (title, image) in zip(row, panel["images"].items()):
            axis.imshow(image[crop], cmap="gray", vmin=0, vmax=vmax, origin="lower", interpolation="nearest")
            metric_key = "fagan" if title == panel["label"] else title
            if metric_key in panel["metrics"]:
                values = panel["metrics"][metric_key]
                title = f"{title}\nPSNR {values['psnr']:.2f} dB, SSIM {values['ssim']:.3f}"
            axis.set_title(f"x{panel['scale']} {title}", fontsize=9)
            axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
