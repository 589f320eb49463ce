"""Runners: a model or interpolation baseline as a numpy → numpy callable on (B, 1, h, w) batches in [0, 1] units.

Also where checkpoints are resolved and loaded for inference and where the device is chosen.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from fagan_engine.inference.batching import Runner, capped
from fagan_engine.inference.onnx_backend import onnx_runner
from fagan_engine.models.checkpoint import CheckpointMetadata, default_checkpoint, load_generator, parse_metadata, read_metadata
from fagan_engine.mri.interpolation import bicubic_matrix, lanczos_matrix
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import CheckpointError, InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.presets import preset_config

DEFAULT_TILE_OVERLAP = 16


def resolve_checkpoint(options: RunOptions) -> Optional[Path]:
    """The checkpoint to load: the user's, or the bundled one for the scale and acquisition."""
    if options.checkpoint is not None:
        return Path(options.checkpoint)
    if options.untrained:
        return None
    found = default_checkpoint(options.scale, options.acquisition)
    if found is None:
        raise CheckpointError(
            f"no bundled FA-GAN checkpoint for x{options.scale}; pass --checkpoint PATH or use --method lanczos"
        )
    return found


def checkpoint_metadata(path: Path) -> "CheckpointMetadata":
    """The metadata of a ``.safetensors`` checkpoint or of an exported ``.onnx`` model (its sidecar)."""
    if path.suffix != ".onnx":
        return read_metadata(str(path))
    sidecar = path.with_name(path.name + ".json")
    try:
        return parse_metadata(sidecar.read_text(encoding="utf-8"), sidecar)
    except (OSError, UnicodeDecodeError):
        raise CheckpointError(f"cannot read {sidecar.name}, the metadata of {path.name}") from None


def acquisition_warnings(name: str, trained: List[str], acquisition: str) -> List[str]:
    """One line when the checkpoint was not trained for the selected acquisition model."""
    if acquisition in trained:
        return []
    return [
        f"checkpoint {name} was trained for {'/'.join(trained)} acquisition, not {acquisition}: "
        "the result may show artefacts; see docs/model-card.md"
    ]


def load_runner(
    scale: int, checkpoint: Union[str, Path, None], device: str, backend: str, untrained: bool
) -> Tuple[Runner, NormalizationConfig, Optional["CheckpointMetadata"]]:
    """A runner for a checkpoint (None: random weights, tests only) on a backend, its normalisation and
    the checkpoint's metadata (None for random weights); the checkpoint is read and verified once."""
    if checkpoint is None and not untrained:
        raise CheckpointError("no checkpoint given")
    if backend == "onnx" or (backend == "auto" and not torch_available()):
        if device == "cuda":  # --backend onnx with it is refused by RunOptions; auto falls back to ONNX without PyTorch
            raise InputError("device 'cuda' needs PyTorch, which is not installed: ONNX Runtime runs on the CPU; use --device cpu")
        if checkpoint is None:
            raise InputError("the ONNX backend needs a checkpoint; random weights (--untrained) need PyTorch")
        runner, normalization = onnx_runner(str(checkpoint), scale)
        return runner, normalization, checkpoint_metadata(Path(checkpoint))
    import torch  # lazy: keeps torch out of this module's import (the ONNX backend runs without it)

    model, normalization, metadata = load_model(scale, checkpoint, device, untrained)
    # channels_last: oneDNN/cuDNN's fast layout for these 32-channel convs (docs/performance.md)
    return torch_runner(model.to(memory_format=torch.channels_last), model_device(model)), normalization, metadata


def load_model(
    scale: int, checkpoint: Union[str, Path, None], device: str, untrained: bool
) -> Tuple[Any, NormalizationConfig, Optional["CheckpointMetadata"]]:
    """The PyTorch generator of a checkpoint (None: random weights, tests only), its normalisation and metadata."""
    if checkpoint is None and not untrained:
        raise CheckpointError("no checkpoint given")
    torch_device = resolve_device(device)
    if checkpoint is None:
        from fagan_engine.models.archs import build_generator  # lazy: keeps torch out of this module's import

        return build_generator(preset_config("fagan", scale)).to(torch_device).eval(), NormalizationConfig(), None
    model, metadata = load_generator(str(checkpoint), expected_scale=scale, device=torch_device)
    return model, metadata.normalization_config(), metadata


def compute_description(options: RunOptions) -> Dict[str, Any]:
    """``{"device": resolved device, "threads": CPU threads}`` of a run, for the protocol's start event.

    Interpolation baselines and ONNX Runtime run on the CPU; everything else on the resolved torch device.
    """
    if options.method != "fagan" or options.backend == "onnx" or not torch_available():
        return {"device": "cpu", "threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    import torch  # lazy: keeps torch out of this module's import (the ONNX backend runs without it)

    device = resolve_device(options.device)
    return {"device": "cuda:0" if device == "cuda" else device, "threads": torch.get_num_threads()}


def resolve_device(device: str) -> str:
    """Map auto/cpu/cuda to a torch device string; asking for cuda without one is an error."""
    import torch  # lazy: keeps torch out of this module's import (the ONNX backend runs without it)

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is usable; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


def torch_runner(model: Any, device: str) -> Runner:
    """Wrap a generator as a numpy → numpy runner without autograd, memory-capped per call."""
    import torch  # lazy: keeps torch out of this module's import (the ONNX backend runs without it)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(batch).to(device))
            return out.float().cpu().numpy()

    return capped(run, model.scale)


def interpolation_runner(method: str, scale: int) -> Runner:
    """Bicubic or Lanczos-3 upsampling with the network's grid convention, as two matrix products per slice.

    The matrices depend only on the slice size, so they are built once per size, not per batch.
    """
    matrices: Dict[int, np.ndarray] = {}

    def matrix(size: int) -> np.ndarray:
        if size not in matrices:
            matrices[size] = bicubic_matrix(size, scale) if method == "bicubic" else lanczos_matrix(size, size * scale)
        return matrices[size]

    def run(batch: np.ndarray) -> np.ndarray:
        rows, cols = matrix(batch.shape[2]), matrix(batch.shape[3])
        return np.einsum("ij,bcjk,lk->bcil", rows, batch, cols, optimize=True).astype(np.float32)

    return run


def bicubic_runner(scale: int) -> Runner:
    """The bicubic baseline runner (see ``interpolation_runner``)."""
    return interpolation_runner("bicubic", scale)


def tiled(runner: Runner, scale: int, tile: int, overlap: int = DEFAULT_TILE_OVERLAP) -> Runner:
    """Run ``runner`` on overlapping LR tiles of ``tile``² and keep each tile's centre.

    Exact for the convolutional parts when ``overlap`` covers their receptive field; the global
    operations (channel attention pooling, self-attention) see one tile at a time.
    """

    def run(batch: np.ndarray) -> np.ndarray:
        n, c, height, width = batch.shape
        if height <= tile and width <= tile:
            return runner(batch)
        out = np.empty((n, c, height * scale, width * scale), dtype=np.float32)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                y0, x0 = max(0, top - overlap), max(0, left - overlap)
                y1, x1 = min(height, top + tile + overlap), min(width, left + tile + overlap)
                piece = runner(np.ascontiguousarray(batch[:, :, y0:y1, x0:x1]))
                bottom, right = min(height, top + tile), min(width, left + tile)
                out[:, :, top * scale : bottom * scale, left * scale : right * scale] = piece[
                    :, :, (top - y0) * scale : (bottom - y0) * scale, (left - x0) * scale : (right - x0) * scale
                ]
        return out

    return run


def model_device(model: Any) -> str:
    """The device a torch model's parameters are on."""
    return str(next(model.parameters()).device)


def torch_available() -> bool:
    """Whether torch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None
