"""``SuperResolver``: a loaded model (or interpolation baseline) for one ``RunOptions``, reused across volumes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

import SimpleITK as sitk

from fagan_engine.inference.adaptation import Adaptation, adapt_generator
from fagan_engine.inference.ensemble import self_ensemble
from fagan_engine.inference.memory_check import BYTES_PER_OUTPUT_VOXEL, check_output_fits
from fagan_engine.inference.runners import (
    Runner,
    acquisition_warnings,
    interpolation_runner,
    load_model,
    load_runner,
    model_device,
    resolve_checkpoint,
    torch_available,
    torch_runner,
)
from fagan_engine.inference.slices import Progress, SlabStream, gather, run_slices, stream_slices
from fagan_engine.io.geometry import Plane, explicit_axes, plane_axes
from fagan_engine.io.volume_io import validate_image
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.progress import accepts_phase

UNTRAINED_WARNING = "the FA-GAN network has random weights (--untrained): a test of the pipeline, not an image to read"

if TYPE_CHECKING:
    from fagan_engine.models.checkpoint import CheckpointMetadata



class SuperResolver:
    """A loaded model (or interpolation baseline) for one ``RunOptions``, reused across volumes.

    Batch mode builds one and calls it for every case, so the checkpoint is read and the backend
    session created once. ``warnings`` collects one-line notices (e.g. an acquisition the
    checkpoint was not made for) for the CLI, the JSON report and Slicer.
    """

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.warnings: List[str] = []
        self.image_notes: List[str] = []
        """One-line notes about the last image (adaptation skipped, ...), for the report."""
        self.checkpoint: Optional[Path] = None
        self.metadata: Optional["CheckpointMetadata"] = None
        if options.method != "fagan":
            self.use_runner(interpolation_runner(options.method, options.scale))
            self.normalization = NormalizationConfig()
            return
        self.checkpoint = resolve_checkpoint(options)
        onnx = options.backend == "onnx" or (self.checkpoint is not None and self.checkpoint.suffix == ".onnx") or not torch_available()
        if options.adapt_steps > 0 and onnx:
            if options.adapt_iterations is not None:
                raise InputError("per-scan adaptation (--adapt) needs the PyTorch backend and a .safetensors checkpoint, not ONNX")
            self.warnings.append(
                "per-scan adaptation is off: it needs PyTorch and a .safetensors checkpoint (the ONNX path runs the network as shipped)"
            )
        if options.adapt_steps > 0 and not onnx:
            self.base_model, self.normalization, self.metadata = load_model(
                options.scale, self.checkpoint, options.device, options.untrained
            )
            self.use_runner(torch_runner(self.base_model, model_device(self.base_model)))
        else:
            runner, self.normalization, self.metadata = load_runner(
                options.scale, self.checkpoint, options.device, options.backend, options.untrained
            )
            self.use_runner(runner)
        if options.untrained:
            self.warnings.append(UNTRAINED_WARNING)
        if self.checkpoint is not None and self.metadata is not None:
            self.warnings.extend(acquisition_warnings(self.checkpoint.name, self.metadata.acquisitions, options.acquisition))

    def use_runner(self, runner: Runner) -> Runner:
        """Run ``runner`` from now on: ``base_runner`` is the network alone, ``runner`` its self-ensemble
        (``RunOptions.ensemble_members`` flipped/rotated copies, averaged; ``inference.ensemble``)."""
        self.base_runner: Runner = runner
        self.runner: Runner = self_ensemble(runner, self.options.ensemble_members)
        return self.runner

    base_model: Any = None
    """The loaded generator when per-scan adaptation applies (never changed: each image adapts a copy)."""
    adaptation: Optional[Adaptation] = None
    """What adaptation did to the last image (None: it did not run)."""

    def adapt(
        self,
        image: sitk.Image,
        axes: Tuple[int, int],
        progress: Optional[Callable[..., None]] = None,
        stop: Optional[Callable[[], bool]] = None,
    ) -> Runner:
        """Adapt a fresh copy of the loaded model to ``image`` (``inference.adaptation``); sets and returns ``self.runner``.

        A scan whose slices are too small to hold out pairs is super-resolved with the loaded model and a
        note when adaptation was the default, and refused when it was asked for (``adapt_iterations`` set).
        """
        self.adaptation = None
        try:
            self.adaptation = adapt_generator(
                image, self.options, progress, model=self.base_model, normalization=self.normalization, axes=axes, stop=stop
            )
            model = self.adaptation.model
        except InputError as exc:
            if self.options.adapt_iterations is not None:
                raise
            self.image_notes.append(f"per-scan adaptation skipped: {exc}")
            model = self.base_model
        return self.use_runner(torch_runner(model, model_device(model)))

    def __call__(self, image: sitk.Image, progress: Optional[Progress] = None, plane: Optional[Plane] = None,
                 adapt_progress: Optional[Callable[..., None]] = None, stop: Optional[Callable[[], bool]] = None) -> sitk.Image:
        """Super-resolve one volume into memory (``stream``, in the output type); ``plane`` overrides the
        options' plane (a name or two sitk axes). Refused first when the result cannot fit in memory."""
        options = self.options
        image = validate_image(image, options.nan_policy)
        check_output_fits(image.GetNumberOfPixels(), options.scale, BYTES_PER_OUTPUT_VOXEL, options.uncertainty)
        return gather(self.stream(image, progress, plane, adapt_progress, stop), options.output_dtype)

    def stream(
        self,
        image: sitk.Image,
        progress: Optional[Progress] = None,
        plane: Optional[Plane] = None,
        adapt_progress: Optional[Callable[..., None]] = None,
        stop: Optional[Callable[[], bool]] = None,
    ) -> SlabStream:
        """The SR slices of one volume, slab by slab (``inference.slices.stream_slices``, float32); no memory check.

        When per-scan adaptation applies (``options.adapt_steps > 0``, PyTorch) the model is first adapted to this image (``adapt``);
        ``adapt_progress`` (default: ``progress`` when it accepts ``phase=``) reports that phase.
        """
        options = self.options
        image = validate_image(image, options.nan_policy)
        axes = plane_axes(image, plane or options.plane) if plane is None or isinstance(plane, str) else explicit_axes(plane)
        self.image_notes = []
        if self.base_model is not None:
            if adapt_progress is None and accepts_phase(progress):
                adapt_progress = progress
            self.adapt(image, axes, adapt_progress, stop)
        tile = options.tile_size if options.method == "fagan" else None
        return stream_slices(image, options.scale, axes, self.runner, self.normalization, options.batch_size, tile, progress)


def super_resolve_with_model(
    image: sitk.Image,
    model: Any,
    normalization: NormalizationConfig,
    plane: Plane = "auto",
    batch_size: int = 8,
    tile_size: Optional[int] = None,
) -> sitk.Image:
    """Same path as ``super_resolve`` for an in-memory generator (trainer validation)."""
    runner = torch_runner(model, model_device(model))
    return run_slices(validate_image(image), model.scale, plane, runner, normalization, batch_size, tile_size, None, "float32")
