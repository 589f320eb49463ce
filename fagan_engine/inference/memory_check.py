"""Refuse, in one line, a result that cannot fit in memory, instead of being killed by the kernel.

Peak memory is modelled as ``BASE_BYTES`` (interpreter, torch, the model) plus bytes per input voxel
(the input and its working copies: normalisation, adaptation, the input-grid residual and its summary)
plus bytes per output voxel, which depend on where the result goes (docs/performance.md, "Memory"):

- in memory (``super_resolve``, DICOM output, the uncertainty map, through-plane): the SR volume is
  held several times over (gathered slices, the SimpleITK image, the projection, the maps):
  ``BYTES_PER_OUTPUT_VOXEL``;
- streamed into a volume file slab by slab (``fagan-sr`` and batch, NIfTI/NRRD/MetaImage): nothing of
  the volume is held, except when its slices do not run along the file's slowest axis; then the
  output is gathered in its output type (``streamed_bytes_per_output_voxel``), and so is the SR-grid
  consistency map (float32) when it is written.

Without a reading of the available memory (no /proc/meminfo) nothing is checked.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, Tuple

import numpy as np

from fagan_engine.util.errors import InputError
from fagan_engine.util.failures import is_out_of_memory
from fagan_engine.util.memory import available_bytes

BASE_BYTES = 2**29
"""Interpreter, torch and the model (measured nearer 0.8 GiB on the 2-core CPU with the default path; kept)."""
BYTES_PER_INPUT_VOXEL = 48
"""The float32 input and its input-sized working copies (normalisation percentiles, residual, foreground summary)."""
BYTES_PER_OUTPUT_VOXEL = 48
"""The in-memory result (measured: about 0.5 GiB + 48 bytes per output voxel before streaming)."""
STREAMED_BYTES_PER_OUTPUT_VOXEL = 4
"""A streamed result: slab-sized buffers only; with the input's share the measured slope is 14–15 bytes per output
voxel at ×2 (docs/performance.md, "Streaming output")."""
UNCERTAINTY_BYTES_PER_OUTPUT_VOXEL = 24
"""The test-time-augmentation map adds a float64 running mean and sum of squares and a float32 pass."""


def streamed_bytes_per_output_voxel(gathered_dtypes: Sequence[str]) -> int:
    """Bytes per output voxel of a streamed result whose ``gathered_dtypes`` volumes (written files whose slices do not
    run along their slowest axis) are held whole until written."""
    return STREAMED_BYTES_PER_OUTPUT_VOXEL + sum(np.dtype(dtype).itemsize for dtype in gathered_dtypes)


def check_output_fits(input_voxels: int, scale: int, per_output_voxel: int = BYTES_PER_OUTPUT_VOXEL, uncertainty: bool = False) -> None:
    """InputError (one line) if an in-plane ×``scale`` result of an ``input_voxels`` input needs more than the available
    memory, at ``per_output_voxel`` bytes (plus the uncertainty map when ``uncertainty``). Called once per volume, before any work."""
    per_voxel = per_output_voxel + (UNCERTAINTY_BYTES_PER_OUTPUT_VOXEL if uncertainty else 0)
    _refuse_beyond_memory(input_voxels, input_voxels * scale**2, per_voxel, f"the x{scale} result", "crop the input, choose a lower scale")


def check_through_plane_fits(n_out: int, in_plane_size: Tuple[int, int], output_spacing: float) -> None:
    """InputError (one line) if a through-plane result of ``n_out`` slices of ``in_plane_size`` voxels
    needs more than the available memory (two orientations' results, their fusion, the maps, the writer:
    as many copies as the in-plane path). Called once per volume, before the fit."""
    voxels = n_out * in_plane_size[0] * in_plane_size[1]
    _refuse_beyond_memory(0, voxels, BYTES_PER_OUTPUT_VOXEL, f"the through-plane result ({n_out} slices at {output_spacing:.3g} mm)",
                          "choose a larger --target-spacing, crop the input")


def _refuse_beyond_memory(input_voxels: int, voxels: int, per_voxel: int, what: str, advice: str) -> None:
    available = available_bytes()
    needed = BASE_BYTES + BYTES_PER_INPUT_VOXEL * input_voxels + per_voxel * voxels
    if available is not None and needed > available:
        raise InputError(
            f"{what} has {_figure(voxels / 1e6)} M voxels and needs about {_figure(needed / 2**30)} GiB of memory, "
            f"but {_figure(available / 2**30)} GiB is available; {advice} or use a machine with more memory"
        )


def _figure(value: float) -> str:
    """A size as people write it: 0.524, 2.96, 25.7, 3000."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def out_of_memory_advice(mode: str) -> str:
    """The one line for a run that ran out of memory anyway, with the advice that applies to ``mode``."""
    if mode == "through-plane":
        return "out of memory: the through-plane result does not fit; choose a larger --target-spacing or crop the input"
    if mode == "stacks":
        return "out of memory: the combined volume does not fit; choose a larger --target-spacing or crop the stacks"
    return "out of memory: use a smaller --batch-size or --tile-size"


@contextlib.contextmanager
def out_of_memory_as_advice(mode: str) -> Iterator[None]:
    """Running out of memory anywhere inside (reading, computing, writing) becomes the one line of advice for ``mode``
    (``out_of_memory_advice``)."""
    try:
        yield
    except BaseException as exc:
        if is_out_of_memory(exc):
            raise InputError(out_of_memory_advice(mode)) from None
        raise
