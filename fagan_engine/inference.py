"""Slice-wise super-resolution of 3D volumes with exact geometry and bounded memory.

The volume is cut into 2D slices along the through-plane axis, normalised with the
checkpoint's robust percentile convention, pushed through a *runner* (a callable mapping a
(B, 1, h, w) float32 batch in [0, 1] units to (B, 1, h·s, w·s)) in batches, optionally in
overlapping tiles, mapped back to the input's intensity units and written into an output
volume whose geometry comes from ``geometry.super_resolved_reference``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .config import NormalizationConfig
from .errors import CheckpointError, InputError
from .geometry import plane_axes, super_resolved_geometry
from .interpolation import bicubic_matrix, lanczos_matrix
from .normalization import IntensityNormalizer
from .memory_check import check_output_fits
from .options import RunOptions

if TYPE_CHECKING:
    from .checkpoint import CheckpointMetadata
from .volume_io import validate_image

Runner = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]
Plane = Union[str, Tuple[int, int]]
"""A plane name (auto/axial/coronal/sagittal) or the two in-plane SimpleITK index axes."""

MIN_SLICE = 4
"""Smallest in-plane LR size (pixels) the networks accept (2×2 attention pooling, 3×3 convs)."""
DEFAULT_TILE_OVERLAP = 16
MAX_OUTPUT_PIXELS = 1 << 19
"""Most output pixels per network call (8 slices of 256²): torch and ONNX Runtime need roughly 1 KiB of
working memory per output pixel and their speed does not depend on batch size, so larger batches are
split, bounding memory whatever the slice size (docs/performance.md)."""


@dataclasses.dataclass
class SliceLayout:
    """How a volume array (z, y, x) maps to a stack of 2D slices (n, rows, cols) and back."""

    through_axis: int
    in_plane_axes: Tuple[int, int]

    @classmethod
    def for_axes(cls, sitk_axes: Sequence[int]) -> "SliceLayout":
        np_axes = tuple(sorted(2 - a for a in sitk_axes))
        through = ({0, 1, 2} - set(np_axes)).pop()
        return cls(through, (np_axes[0], np_axes[1]))

    def to_slices(self, array: np.ndarray) -> np.ndarray:
        return np.moveaxis(array, self.through_axis, 0)

    def from_slices(self, slices: np.ndarray) -> np.ndarray:
        return np.moveaxis(slices, 0, self.through_axis)


class SuperResolver:
    """A loaded model (or interpolation baseline) for one ``RunOptions``, reused across volumes.

    Batch mode builds one and calls it for every case, so the checkpoint is read and the backend
    session created once. ``warnings`` collects one-line notices (e.g. an acquisition the
    checkpoint was not made for) for the CLI, the JSON report and Slicer.
    """

    def __init__(self, options: RunOptions) -> None:
        self.options = options.validate()
        self.warnings: List[str] = []
        self.checkpoint: Optional[Path] = None
        self.metadata: Optional["CheckpointMetadata"] = None
        if options.method != "fagan":
            self.runner: Runner = interpolation_runner(options.method, options.scale)
            self.normalization = NormalizationConfig()
            return
        self.checkpoint = resolve_checkpoint(options)
        if options.adapt_iterations > 0:
            if options.backend == "onnx" or (self.checkpoint is not None and self.checkpoint.suffix == ".onnx"):
                raise InputError("per-scan adaptation (--adapt) needs the PyTorch backend and a .safetensors checkpoint, not ONNX")
            self.base_model, self.normalization, self.metadata = load_model(
                options.scale, self.checkpoint, options.device, options.untrained
            )
            self.runner = torch_runner(self.base_model, _model_device(self.base_model))
        else:
            self.runner, self.normalization, self.metadata = load_runner(
                options.scale, self.checkpoint, options.device, options.backend, options.untrained
            )
        if self.checkpoint is not None and self.metadata is not None:
            self.warnings.extend(acquisition_warnings(self.checkpoint.name, self.metadata.acquisitions, options.acquisition))

    base_model: Any = None
    """The loaded generator when ``adapt_iterations > 0`` (never changed: each image adapts a copy)."""
    adapted_model: Any = None
    """The generator adapted to the last image (``adapt``), or None."""

    def adapt(
        self,
        image: sitk.Image,
        progress: Optional[Callable[..., None]] = None,
        stop: Optional[Callable[[], bool]] = None,
        plane: Optional[Plane] = None,
    ) -> Runner:
        """Fine-tune a fresh copy of the loaded model on ``image`` (``options.adapt_iterations`` steps).

        Sets and returns ``self.runner`` (the adapted runner, which ``__call__`` then uses and the
        trust maps can reuse for the same image); ``progress(done, total, phase="adapt", loss=...)``.
        """
        from .adaptation import adapt_generator

        if self.base_model is None:
            raise InputError("per-scan adaptation needs method fagan with adapt_iterations > 0 and the PyTorch backend")
        self.adapted_model = adapt_generator(
            image, self.options, progress, model=self.base_model, normalization=self.normalization, stop=stop, plane=plane
        )
        self.runner = torch_runner(self.adapted_model, _model_device(self.adapted_model))
        return self.runner

    def __call__(
        self,
        image: sitk.Image,
        progress: Optional[Progress] = None,
        plane: Optional[Plane] = None,
        adapt_progress: Optional[Callable[..., None]] = None,
        stop: Optional[Callable[[], bool]] = None,
    ) -> sitk.Image:
        """Super-resolve one volume; ``plane`` overrides the options' plane (a name or two sitk axes).

        With ``options.adapt_iterations > 0`` the model is first adapted to this image (``adapt``);
        ``adapt_progress`` (default: ``progress`` when it accepts ``phase=``) reports that phase.
        """
        options = self.options
        image = validate_image(image, options.nan_policy)
        check_output_fits(image.GetNumberOfPixels() * options.scale**2, options.scale, options.uncertainty)
        if self.base_model is not None:
            from .adaptation import accepts_phase

            if adapt_progress is None and accepts_phase(progress):
                adapt_progress = progress
            self.adapt(image, adapt_progress, stop, plane)
        tile = options.tile_size if options.method == "fagan" else None
        return run_slices(
            image, options.scale, plane or options.plane, self.runner, self.normalization,
            options.batch_size, tile, progress, options.output_dtype,
        )


def super_resolve(
    image: sitk.Image,
    scale: Optional[int] = None,
    *,
    options: Optional[RunOptions] = None,
    progress: Optional[Progress] = None,
    **overrides: Any,
) -> sitk.Image:
    """Super-resolve a 3D scalar image in-plane by ``scale`` (2, 4 or 8); returns the SR image.

    Options come from ``options`` (a ``RunOptions``) and/or keyword overrides of its fields
    (``checkpoint=``, ``method="lanczos"``, ``acquisition="bicubic"``, ...). ``plane`` may also
    be two SimpleITK in-plane axes. With ``method="fagan"`` and no checkpoint, the bundled model
    for ``scale`` and ``acquisition`` is used; ``untrained=True`` allows random weights (tests).
    """
    plane = overrides.pop("plane", None)
    fields = dict(options.to_dict() if options is not None else {}, **overrides)
    if scale is not None:
        fields["scale"] = scale
    if isinstance(plane, str):
        fields["plane"] = plane
    if "checkpoint" in fields and fields["checkpoint"] is not None:
        fields["checkpoint"] = str(fields["checkpoint"])
    resolver = SuperResolver(RunOptions.from_dict(fields))
    return resolver(image, progress, plane if plane is not None and not isinstance(plane, str) else None)


def super_resolve_with_model(
    image: sitk.Image,
    model: Any,
    normalization: NormalizationConfig,
    plane: Plane = "auto",
    batch_size: int = 8,
    tile_size: Optional[int] = None,
) -> sitk.Image:
    """Same path as ``super_resolve`` for an in-memory generator (trainer validation)."""
    runner = torch_runner(model, _model_device(model))
    return run_slices(validate_image(image), model.scale, plane, runner, normalization, batch_size, tile_size, None, "float32")


def resolve_checkpoint(options: RunOptions) -> Optional[Path]:
    """The checkpoint to load: the user's, or the bundled one for the scale and acquisition."""
    from .checkpoint import default_checkpoint

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
    from .checkpoint import parse_metadata, read_metadata

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
    if backend == "onnx" or (backend == "auto" and not _torch_available()):
        if checkpoint is None:
            raise InputError("the ONNX backend needs a checkpoint; random weights (--untrained) need PyTorch")
        from .onnx_backend import onnx_runner

        runner, normalization = onnx_runner(str(checkpoint), scale)
        return runner, normalization, checkpoint_metadata(Path(checkpoint))
    import torch

    model, normalization, metadata = load_model(scale, checkpoint, device, untrained)
    # channels_last: oneDNN/cuDNN's fast layout for these 32-channel convs (docs/performance.md)
    return torch_runner(model.to(memory_format=torch.channels_last), _model_device(model)), normalization, metadata


def load_model(
    scale: int, checkpoint: Union[str, Path, None], device: str, untrained: bool
) -> Tuple[Any, NormalizationConfig, Optional["CheckpointMetadata"]]:
    """The PyTorch generator of a checkpoint (None: random weights, tests only), its normalisation and metadata."""
    if checkpoint is None and not untrained:
        raise CheckpointError("no checkpoint given")
    torch_device = resolve_device(device)
    if checkpoint is None:
        from .archs import build_generator, preset_config

        return build_generator(preset_config("fagan", scale)).to(torch_device).eval(), NormalizationConfig(), None
    from .checkpoint import load_generator

    model, metadata = load_generator(str(checkpoint), expected_scale=scale, device=torch_device)
    return model, metadata.normalization_config(), metadata


def resolve_device(device: str) -> str:
    """Map auto/cpu/cuda to a torch device string; asking for cuda without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is usable; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


def capped(call: Runner, scale: int) -> Runner:
    """Split a batch so no call produces more than MAX_OUTPUT_PIXELS (one slice at least)."""

    def run(batch: np.ndarray) -> np.ndarray:
        step = max(1, MAX_OUTPUT_PIXELS // (batch.shape[2] * batch.shape[3] * scale * scale))
        if step >= len(batch):
            return call(batch)
        return np.concatenate([call(np.ascontiguousarray(batch[i : i + step])) for i in range(0, len(batch), step)])

    return run


def torch_runner(model: Any, device: str) -> Runner:
    """Wrap a generator as a numpy → numpy runner without autograd, memory-capped per call."""
    import torch

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


def run_slices(
    image: sitk.Image,
    scale: int,
    plane: Plane,
    runner: Runner,
    normalization: NormalizationConfig,
    batch_size: int,
    tile_size: Optional[int],
    progress: Optional[Progress],
    output_dtype: str,
) -> sitk.Image:
    """Run ``runner`` over the volume's in-plane slices (normalised, batched, optionally tiled) and
    return the SR volume on the exact SR grid, in the input's intensity units."""
    axes = plane_axes(image, plane) if isinstance(plane, str) else _explicit_axes(plane)
    size = image.GetSize()
    if min(size[a] for a in axes) < MIN_SLICE:
        raise InputError(
            f"in-plane slice is {size[axes[0]]}x{size[axes[1]]} voxels; the network needs at least {MIN_SLICE}x{MIN_SLICE}"
        )
    if tile_size is not None:
        if tile_size < MIN_SLICE:
            raise InputError(f"tile size must be >= {MIN_SLICE}, got {tile_size}")
        runner = tiled(runner, scale, tile_size)
    layout = SliceLayout.for_axes(axes)
    volume = sitk.GetArrayViewFromImage(image)
    normalizer = IntensityNormalizer.fit(volume, normalization)
    slices = layout.to_slices(volume)
    result = np.empty((slices.shape[0], slices.shape[1] * scale, slices.shape[2] * scale), dtype=np.float32)
    total = slices.shape[0]
    for start in range(0, total, batch_size):
        batch = normalizer.forward(np.ascontiguousarray(slices[start : start + batch_size], dtype=np.float32))
        result[start : start + batch_size] = normalizer.inverse(runner(batch[:, None])[:, 0])
        if progress is not None:
            progress(min(start + batch_size, total), total)
    out = sitk.GetImageFromArray(_cast(layout.from_slices(result), output_dtype), isVector=False)
    return super_resolved_geometry(image, scale, axes).apply(out)


def _explicit_axes(axes: Sequence[int]) -> Tuple[int, int]:
    pair = tuple(sorted(int(a) for a in axes))
    if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= {0, 1, 2}:
        raise InputError(f"in-plane axes must be two different axes among 0, 1, 2; got {tuple(axes)}")
    return pair[0], pair[1]


def _cast(array: np.ndarray, output_dtype: str) -> np.ndarray:
    """Cast the float32 result, rounding and clipping for integer outputs."""
    dtype = np.dtype(output_dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(array, dtype=dtype)


def _model_device(model: Any) -> str:
    return str(next(model.parameters()).device)


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
