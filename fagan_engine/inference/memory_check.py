"""Refuse, in one line, a result that cannot fit in memory, instead of being killed by the kernel.

The in-plane path holds the SR volume several times over (the float32 slices, the SimpleITK image,
its geometry copy, the writer's and the optional maps' copies): measured peak about 0.5 GiB plus
48 bytes per output voxel (docs/performance.md, "Memory"). Without a reading of the available
memory (no /proc/meminfo) nothing is checked.
"""
from __future__ import annotations

from typing import Tuple

from fagan_engine.util.errors import InputError
from fagan_engine.util.memory import available_bytes

BASE_BYTES = 2**29
BYTES_PER_OUTPUT_VOXEL = 48
UNCERTAINTY_BYTES_PER_OUTPUT_VOXEL = 24
"""The test-time-augmentation map adds a float64 running mean and sum of squares and a float32 pass."""
def check_output_fits(output_voxels: int, scale: int, uncertainty: bool = False) -> None:
    """InputError (one line) if an SR result of ``output_voxels`` voxels (with its uncertainty map when
    ``uncertainty``) needs more than the available memory. Called once per volume, before any work."""
    per_voxel = BYTES_PER_OUTPUT_VOXEL + (UNCERTAINTY_BYTES_PER_OUTPUT_VOXEL if uncertainty else 0)
    _refuse_beyond_memory(output_voxels, per_voxel, f"the x{scale} result", "crop the input, choose a lower scale")


def check_through_plane_fits(n_out: int, in_plane_size: Tuple[int, int], output_spacing: float) -> None:
    """InputError (one line) if a through-plane result of ``n_out`` slices of ``in_plane_size`` voxels
    needs more than the available memory (two orientations' results, their fusion, the maps, the writer:
    as many copies as the in-plane path). Called once per volume, before the fit."""
    voxels = n_out * in_plane_size[0] * in_plane_size[1]
    _refuse_beyond_memory(voxels, BYTES_PER_OUTPUT_VOXEL, f"the through-plane result ({n_out} slices at {output_spacing:.3g} mm)",
                          "choose a larger --target-spacing, crop the input")


def _refuse_beyond_memory(voxels: int, per_voxel: int, what: str, advice: str) -> None:
    available = available_bytes()
    needed = BASE_BYTES + per_voxel * voxels
    if available is not None and needed > available:
        raise InputError(
            f"{what} has {voxels / 1e6:.0f} M voxels and needs about {needed / 2**30:.1f} GiB of memory, "
            f"but {available / 2**30:.1f} GiB is available; {advice} or use a machine with more memory"
        )


def out_of_memory_advice(mode: str) -> str:
    """The one line for a run that ran out of memory anyway, with the advice that applies to ``mode``."""
    if mode == "through-plane":
        return "out of memory: the through-plane result does not fit; choose a larger --target-spacing or crop the input"
    return "out of memory: use a smaller --batch-size or --tile-size"
