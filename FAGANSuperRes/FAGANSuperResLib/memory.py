"""Will a result fit in Slicer's memory? Checked before a run starts, refused in one line if not.

A finished result (and each trust map) stays in the scene as one voxel buffer: the files are read with
Slicer's volume storage node, one at a time, without intermediate copies (``volumes.loadVolumeFile``).
The need is therefore the voxels of the result and its maps, plus ``MARGIN`` for the reader's
bookkeeping and the rest of the session (measured: benchmarks/slicer_load_bench.py). The available
memory is read from the operating system (Linux ``/proc/meminfo``, Windows ``GlobalMemoryStatusEx``);
where it cannot be read (macOS), nothing is refused.
"""
import math
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .isotropic import finestInPlaneSpacing, throughPlaneAxis
from .options import isThroughPlane, mapKinds

if TYPE_CHECKING:
    from fagan_engine.util.options import RunOptions

MARGIN = 1.2
"""Needed memory = MARGIN x the voxel bytes of the results and maps (the bar of issue 18's load peak)."""
BYTES_PER_VOXEL = {"float32": 4, "int16": 2, "uint16": 2}
MAP_BYTES_PER_VOXEL = 4


def availableBytes() -> Optional[int]:
    """Memory the system can still give (bytes), or None where it cannot be read (the engine's reading)."""
    from fagan_engine.util.memory import available_bytes

    return available_bytes()


def outputVoxels(volumeNode: Any, options: "RunOptions") -> int:
    """Voxels of the result of ``options`` on ``volumeNode``: in-plane, the two in-plane axes times the
    scale (at most; the plane the engine picks is one of them); thick slices, the slice axis refined to
    the target spacing (default: the finest in-plane spacing)."""
    dims = volumeNode.GetImageData().GetDimensions()
    voxels = dims[0] * dims[1] * dims[2]
    if isThroughPlane(options):
        axis = throughPlaneAxis(volumeNode)
        target = options.target_spacing or finestInPlaneSpacing(volumeNode)
        return voxels * max(1, math.ceil(volumeNode.GetSpacing()[axis] / target))
    return voxels * options.scale * options.scale


def resultBytes(volumeNodes: Sequence[Any], options: "RunOptions", consistencyMap: bool) -> int:
    """Bytes the results of ``volumeNodes`` and their trust maps will hold in the scene."""
    perVoxel = BYTES_PER_VOXEL.get(options.output_dtype, 4) + MAP_BYTES_PER_VOXEL * len(mapKinds(options, consistencyMap))
    return sum(outputVoxels(node, options) for node in volumeNodes) * perVoxel


def stacksResultBytes(stackNodes: Sequence[Any], targetSpacing: Optional[float], consistencyMaps: bool) -> int:
    """Bytes of a combination of stacks in the scene: the float32 result (at most the smallest stack's box at the
    target spacing, default the finest in-plane spacing of all stacks) and each stack's float32 consistency map."""
    spacing = targetSpacing or min(finestInPlaneSpacing(node) for node in stackNodes)
    boxes = [math.prod(d * s for d, s in zip(node.GetImageData().GetDimensions(), node.GetSpacing())) for node in stackNodes]
    voxels = math.ceil(min(boxes) / spacing**3)
    if consistencyMaps:
        voxels += sum(math.prod(node.GetImageData().GetDimensions()) for node in stackNodes)
    return voxels * MAP_BYTES_PER_VOXEL


def checkStacksFit(stackNodes: Sequence[Any], targetSpacing: Optional[float], consistencyMaps: bool,
                   available: Optional[int] = None) -> None:
    """Raise ValueError (one line) if a combination of stacks will not fit in the available memory."""
    available = availableBytes() if available is None else available
    needed = MARGIN * stacksResultBytes(stackNodes, targetSpacing, consistencyMaps)
    if available is not None and needed > available:
        raise ValueError(f"the combined volume and its maps need about {needed / 2**30:.1f} GiB of memory in Slicer, but "
                         f"{available / 2**30:.1f} GiB is available; choose a coarser target spacing, or close other data")


def checkResultFits(volumeNodes: Sequence[Any], options: "RunOptions", consistencyMap: bool,
                    available: Optional[int] = None) -> None:
    """Raise ValueError (one line) if the results will not fit in the available memory."""
    available = availableBytes() if available is None else available
    needed = MARGIN * resultBytes(volumeNodes, options, consistencyMap)
    if available is not None and needed > available:
        what = "the result and its maps" if len(volumeNodes) == 1 else f"the {len(volumeNodes)} results and their maps"
        raise ValueError(f"{what} need about {needed / 2**30:.1f} GiB of memory in Slicer, but "
                         f"{available / 2**30:.1f} GiB is available; crop the input, choose a lower scale, "
                         "or close other data")
