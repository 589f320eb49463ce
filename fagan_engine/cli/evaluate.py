"""``fagan-eval``: PSNR/SSIM (and optional FID) tables of checkpoints against bicubic on test volumes."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

from fagan_engine.cli import OneLineParser, entry_point
from fagan_engine.models.checkpoint import read_metadata, weights_path
from fagan_engine.util.atomic import atomic_write_bytes, prepared_output_folder
from fagan_engine.util.config import ACQUISITIONS, PLANES, SCALES
from fagan_engine.util.errors import InputError, OutputError
from fagan_engine.util.json_values import finite_json


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="fagan-eval", description="Evaluate FA-GAN checkpoints against bicubic (HR → LR → SR).")
    parser.add_argument("--checkpoint", nargs="+", required=True, help="checkpoints (.safetensors), each evaluated at its scale")
    parser.add_argument("--data", nargs="+", required=True, help="test volumes: files, folders or icbm152:t1")
    parser.add_argument("--scales", type=int, nargs="+", choices=SCALES, help="scales to evaluate (default: the checkpoints' scales)")
    parser.add_argument("--output", default="fagan_eval", help="folder for evaluation.md and evaluation.json")
    parser.add_argument("--inception-weights", help="torchvision inception_v3 state dict (.safetensors/.pth) to add FID")
    parser.add_argument(
        "--acquisition", choices=ACQUISITIONS,
        help="how the LR is made from each test volume (default: the acquisition the checkpoints are made for, the first "
        "their metadata lists)",
    )
    parser.add_argument("--plane", default="auto", choices=PLANES)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--force", action="store_true", help="replace evaluation.md and evaluation.json of an earlier run in --output")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    from fagan_engine.inference.runners import resolve_device  # lazy: keeps SimpleITK out of this module's import
    from fagan_engine.inference.slices import MIN_SLICE  # lazy: keeps SimpleITK/scipy out of this module's import
    from fagan_engine.io.geometry import plane_axes  # lazy: keeps SimpleITK out of this module's import
    from fagan_engine.io.volume_io import voxel_digest  # lazy: keeps SimpleITK out of this module's import
    from fagan_engine.mri.forward_model import AcquisitionConfig  # lazy: keeps scipy out of this module's import
    from fagan_engine.training.data import expand_entries, load_volume  # lazy: keeps torch out of this module's import
    from fagan_engine.training.eval_table import evaluate, to_markdown  # lazy: keeps SimpleITK/scipy out of this module's import
    from fagan_engine.training.evaluation import has_foreground  # lazy: keeps torch out of this module's import

    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.device == "cuda":  # before the baselines run, not after
        resolve_device(args.device)
    output = Path(args.output)
    targets = [output / "evaluation.md", output / "evaluation.json"]
    taken = [t for t in targets if t.exists()]
    if taken and not args.force:
        raise OutputError(f"{taken[0]} already exists; pass --force to replace it")
    files = [str(weights_path(path)) for path in args.checkpoint]  # a checkpoint and its .json sidecar are one
    repeated_checkpoint = next((p for i, p in enumerate(args.checkpoint) if _same_entry(files[i], files[:i])), None)
    if repeated_checkpoint is not None:
        raise InputError(f"--checkpoint lists {repeated_checkpoint} more than once")
    checkpoints = [(path, read_metadata(path)) for path in args.checkpoint]
    scales = sorted(set(args.scales or [md.scale for _, md in checkpoints]))
    skipped = [(path, md) for path, md in checkpoints if md.scale not in scales]
    checkpoints = [(path, md) for path, md in checkpoints if md.scale in scales]
    if not checkpoints:
        raise InputError(f"no checkpoint is for --scales {' '.join(map(str, scales))}: nothing to evaluate")
    acquisition = args.acquisition or _common_primary(checkpoints)
    for path, md in skipped:
        sys.stderr.write(f"note: {path} is x{md.scale}, not among --scales; skipped\n")
    volumes = []
    names = expand_entries(args.data)
    repeated = next((name for index, name in enumerate(names) if _same_entry(name, names[:index])), None)
    if repeated is not None:
        raise InputError(f"--data lists {repeated} more than once: it would count as several test volumes")
    for name in names:
        image = load_volume(name)
        axes = plane_axes(image, args.plane)
        if min(image.GetSize()[a] for a in axes) < MIN_SLICE * max(scales):
            raise InputError(f"{name} is too small in-plane for x{max(scales)} (needs {MIN_SLICE * max(scales)} voxels)")
        if not has_foreground(image, axes, max(scales)):
            raise InputError(f"{name} has no foreground to score (docs/metrics.md: the mask of the reference's robust [0, 1] "
                             "normalisation, inside the border crop)")
        volumes.append((name, image, axes))
        digest = voxel_digest(image)
        for path, md in checkpoints:
            if digest in (md.training.get("train_data_digests") or []) or any(
                    _same_entry(name, [trained]) or _same_entry(trained, [name]) for trained in md.training.get("train_data", [])):
                sys.stderr.write(f"note: {name} was training data of {path}; its scores are optimistic\n")
    inception = None
    if args.inception_weights:
        from fagan_engine.training.inception import load_inception  # lazy: keeps torch out of this module's import

        inception = load_inception(args.inception_weights)
    with prepared_output_folder(targets[0]):  # every input checked; before the evaluation: --output a file, or not writable
        report = evaluate(checkpoints, volumes, scales, args.device, args.batch_size, inception,
                          log=lambda m: sys.stderr.write(m + "\n"), acquisition=AcquisitionConfig(model=acquisition))
        markdown = to_markdown(report)
        atomic_write_bytes(targets[0], markdown.encode("utf-8"))
        atomic_write_bytes(targets[1], (json.dumps(finite_json(report), indent=2, allow_nan=False) + "\n").encode("utf-8"))
    sys.stdout.write(markdown)
    return 0


def _common_primary(checkpoints: list) -> str:
    """The acquisition every checkpoint is made for (the first its metadata lists); InputError when they differ."""
    primaries = {md.acquisitions[0] for _, md in checkpoints}
    if len(primaries) > 1:
        named = ", ".join(f"{Path(path).name}: {md.acquisitions[0]}" for path, md in checkpoints)
        raise InputError(f"the checkpoints are made for different acquisitions ({named}); pass --acquisition to compare them on one")
    return primaries.pop()


def _same_entry(name: str, earlier: List[str]) -> bool:
    """Whether ``name`` is one of ``earlier`` (the same file by its resolved path, or the same sample name)."""
    resolved = Path(name).resolve() if Path(name).exists() else None
    return any(name == other or (resolved is not None and Path(other).exists() and Path(other).resolve() == resolved) for other in earlier)


if __name__ == "__main__":
    sys.exit(main())
