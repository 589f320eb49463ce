"""Shared pieces: benchmark sizes, memory readings, synthetic volumes, model checkpoints."""
from __future__ import annotations

import dataclasses
import resource
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full run and the smoke run.

    The smoke run uses one torch thread: on a loaded CI machine OpenMP barriers between
    oversubscribed threads make tiny convolutions take seconds.
    """

    scales: Tuple[int, ...] = (4, 2)
    slices: int = 160
    output: int = 256
    batch: int = 8
    model_batches: int = 4
    attention_sides: Tuple[int, ...] = (64, 128, 256)
    attention_pools: Tuple[bool, ...] = (True, False)
    naive_limit_bytes: int = 2 * 2**30
    train_batch: int = 16
    train_patch: int = 64
    train_steps: int = 3
    train_vgg: Tuple[bool, ...] = (False, True)
    tiling_output: int = 512
    tiling_tile: int = 16
    memory_outputs: Tuple[int, ...] = (512, 1024)
    """×4 output sizes for the peak-RSS-versus-slice-size runs (8 slices, batch 8)."""
    repeats: int = 2
    variants: bool = True
    threads: Optional[int] = None
    """torch threads in the workers (None: torch's default, one per core)."""


FULL = Sizes()
SMOKE = Sizes(
    scales=(4,),
    slices=4,
    output=32,
    batch=2,
    model_batches=1,
    attention_sides=(8,),
    attention_pools=(True,),
    train_batch=2,
    train_patch=32,
    train_steps=1,
    train_vgg=(False,),
    tiling_output=64,
    tiling_tile=4,
    memory_outputs=(),
    repeats=1,
    variants=False,
    threads=1,
)


def checked_device(device: str) -> None:
    """``--device cuda`` where no CUDA GPU is usable: one ``error:`` line and exit 2, before anything runs or is written."""
    if device != "cuda":
        return
    import torch  # lazy: the suite's workers and the ONNX rows do not need it at import

    if not torch.cuda.is_available():
        sys.stderr.write("error: --device cuda: no CUDA GPU is usable here\n")
        raise SystemExit(2)


def checked_output(path: Optional[Any]) -> Optional[Path]:
    """``--output`` checked before the benchmark runs (its folder made and writable), so a long run's result is not lost to
    a bad path at the end; one ``error:`` line and exit 2 otherwise."""
    if path is None:
        return None
    from fagan_engine.util.atomic import prepare_output_folder
    from fagan_engine.util.errors import FAGANError

    try:
        prepare_output_folder(path)
    except FAGANError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    return Path(path)


def write_output(path: Path, text: str) -> None:
    """Write a result file whole (never a half-written one)."""
    from fagan_engine.util.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def worker_env(sizes: Sizes) -> Dict[str, str]:
    """Environment for worker processes: the torch thread count of ``sizes``."""
    return {"OMP_NUM_THREADS": str(sizes.threads)} if sizes.threads else {}


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory since it started.

    Linux: ``VmHWM``, which belongs to this program image. ``getrusage().ru_maxrss`` is not used
    there because Linux carries the parent's high-water mark across fork + exec, so every worker
    would report at least the parent's RSS.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float:
    """Resident memory now (Linux /proc; elsewhere the high-water mark, an upper bound)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return peak_rss_mib()
    return pages * resource.getpagesize() / 2**20


def synthetic_volume(slices: int, side: int, seed: int = 0) -> Any:
    """A (side, side, slices) float32 SimpleITK image with smooth content and noise."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / max(side, 1)
    base = 800 + 400 * np.sin(7 * x) * np.cos(5 * y)
    array = base[None] + 50 * rng.standard_normal((slices, side, side))
    return sitk.GetImageFromArray(array.astype(np.float32))


def active_generator(scale: int, seed: int = 0, **overrides: Any) -> Any:
    """Random-weight FA-GAN with every branch active: default-initialised tail and γ = 0.5.

    A fresh Generator outputs exactly bicubic (zero-initialised tail) and its self-attention is
    the identity (γ = 0); timings are the same, but accuracy comparisons would be empty.
    """
    import torch

    from fagan_engine.models.archs import build_generator, preset_config

    torch.manual_seed(seed)
    model = build_generator(preset_config("fagan", scale, **overrides))
    torch.nn.init.kaiming_uniform_(model.tail.weight, a=5**0.5)  # nn.Conv2d's default init
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(0.5)
    return model.eval()


def save_active_checkpoint(path: Path, scale: int, **overrides: Any) -> Path:
    """``active_generator`` saved as a checkpoint (default normalisation)."""
    from fagan_engine.models.archs import preset_config
    from fagan_engine.models.checkpoint import CheckpointMetadata, save_checkpoint
    from fagan_engine.util.config import NormalizationConfig

    cfg = preset_config("fagan", scale, **overrides)
    model = active_generator(scale, **overrides)
    return save_checkpoint(str(path), model.state_dict(), CheckpointMetadata.create(cfg, NormalizationConfig()))


def prepare_checkpoint(scale: int, folder: Path) -> Dict[str, Any]:
    """The bundled checkpoint for ``scale`` if one ships, else random weights (``active_generator``)."""
    from fagan_engine.models.checkpoint import default_checkpoint

    bundled = default_checkpoint(scale)
    if bundled is not None:
        return {"checkpoint": str(bundled), "weights": "bundled"}
    return {"checkpoint": str(save_active_checkpoint(folder / f"fagan_x{scale}.safetensors", scale)), "weights": "random"}


def export_to(checkpoint: str, folder: Path) -> str:
    """Export ``checkpoint`` with fagan-export's code into ``folder`` (once); return the path."""
    from fagan_engine.inference.onnx_backend import export_onnx

    target = folder / (Path(checkpoint).stem + ".onnx")
    if not target.is_file():
        export_onnx(checkpoint, str(target))
    return str(target)


def export_padded_onnx(checkpoint: str, path: Path) -> str:
    """The engine's export (with its sidecar, which the runner checks) without dropping SelfAttention's q/k zero padding
    (to measure it)."""
    from fagan_engine.inference.onnx_backend import export_onnx

    export_onnx(checkpoint, str(path), trim_key_padding=False)
    return str(path)

