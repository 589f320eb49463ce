"""Thick slices -> isotropic (issue 9): defaults taken from the input node, and result naming.

The through-plane axis is the coarsest-spaced voxel axis (as in the engine). The target spacing
defaults to the finest in-plane spacing. The slice thickness comes from the DICOM Slice Thickness
(0018,0050) of the series the node was loaded from, when Slicer's DICOM database knows it (the
caller passes ``slicer.dicomDatabase.instanceValue``), else the engine chooses it (``throughPlaneDefaults``).
"""
import math
from typing import Any, Callable, Dict, Optional, Tuple

from .engine import ensureEngineImportable

SLICE_THICKNESS_TAG = "0018,0050"
DICOM_SLICE_THICKNESS_KEY = "0018|0050"
"""The same tag as a SimpleITK/ITK metadata key: in a file header the engine reads it as the DICOM thickness."""
InstanceValue = Callable[[str, str], str]


def throughPlaneAxis(volumeNode: Any) -> int:
    """Index axis (0, 1, 2 = i, j, k) with the coarsest spacing, by the engine's own rule (near-ties, within a relative
    1e-5, go to the last: ``fagan_engine.io.geometry.coarsest_axis``), so the result's name gives the spacing it has."""
    ensureEngineImportable()
    from fagan_engine.io.geometry import coarsest_axis

    return coarsest_axis(tuple(volumeNode.GetSpacing()))


def finestInPlaneSpacing(volumeNode: Any) -> float:
    through = throughPlaneAxis(volumeNode)
    return float(min(s for axis, s in enumerate(volumeNode.GetSpacing()) if axis != through))


def dicomSliceThickness(volumeNode: Any, instanceValue: Optional[InstanceValue]) -> Optional[float]:
    """Slice Thickness of the node's first DICOM instance (attribute ``DICOM.instanceUIDs``, set by
    Slicer's DICOM scalar volume plugin), or None when unknown."""
    uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or instanceValue is None:
        return None
    try:
        value = float(str(instanceValue(uids[0], SLICE_THICKNESS_TAG)).split("\\")[0])
    except (ValueError, TypeError, RuntimeError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def thicknessMetadata(volumeNode: Any, instanceValue: Optional[InstanceValue]) -> Dict[str, str]:
    """Header entries for a volume's temporary file (a stack, a volume of Apply to all): its DICOM Slice Thickness, when
    the DICOM database knows it, so that the engine uses it as it would reading the series itself."""
    thickness = dicomSliceThickness(volumeNode, instanceValue)
    return {} if thickness is None else {DICOM_SLICE_THICKNESS_KEY: f"{thickness:g}"}


def throughPlaneDefaults(volumeNode: Any, instanceValue: Optional[InstanceValue] = None) -> Tuple[float, float, str]:
    """(target spacing, slice thickness, where the thickness comes from): ``DICOM`` with the series' Slice Thickness, else
    ``engine`` with 0, which lets the engine decide (the file's header, else its estimate from the scan, else the slice
    spacing): filling in the slice spacing here would pass it as ``--slice-thickness`` and defeat the estimate."""
    thickness = dicomSliceThickness(volumeNode, instanceValue)
    if thickness is None:
        return finestInPlaneSpacing(volumeNode), 0.0, "engine"
    return finestInPlaneSpacing(volumeNode), thickness, "DICOM"


def batchThroughPlaneValues(selected: Any, targetSpacing: float, sliceThickness: float,
                            instanceValue: Optional[InstanceValue] = None) -> Tuple[float, float]:
    """Target spacing and slice thickness for Apply to all volumes (0: each volume's own, decided by the engine): a panel
    value equal to what ``throughPlaneDefaults`` prefills from the ``selected`` volume describes that volume, not the
    others, so it is left to the engine; a value the user typed applies to all."""
    if selected is None or selected.GetImageData() is None:
        return targetSpacing, sliceThickness
    target, thickness, _source = throughPlaneDefaults(selected, instanceValue)
    return (0.0 if targetSpacing == round(target, 3) else targetSpacing,
            0.0 if sliceThickness == round(thickness, 3) else sliceThickness)


def formatSpacing(spacing: float) -> str:
    """Spacing for a node name: rounded to 0.01 mm, trailing zeros dropped, one decimal kept
    (1 -> ``1.0``, 0.5 -> ``0.5``, 0.9968 -> ``1.0``, 0.625 -> ``0.62``, 1.25 -> ``1.25``)."""
    text = f"{round(float(spacing), 2):.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def isotropicName(inputName: str, spacing: float) -> str:
    """``<input>_iso<spacing>mm``, e.g. ``t2_iso1.0mm``."""
    return f"{inputName}_iso{formatSpacing(spacing)}mm"
