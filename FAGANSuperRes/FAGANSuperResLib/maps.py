"""Trust maps (issue 10) as volume nodes: the data-consistency map and the uncertainty map.

The engine writes them on the super-resolved grid (``--consistency-map``, ``--uncertainty-map``).
Before anything enters the scene, ``checkSameGrid`` verifies that a map's grid is the result's
(same size, outer corners within 1e-4 mm). Each map gets a colour table, a fixed display range and a
colour legend, so it can be shown as the foreground layer over the result (``overlayLayers``).

Slicer's ``vtkMRMLScalarVolumeDisplayNode`` makes a colour table's alpha all-or-nothing (its
``AlphaLogic`` ANDs the table's alpha with 255: any alpha above 0 is drawn opaque). The tables
therefore have a central band whose alpha is exactly 0: a residual within ``TRANSPARENT_BAND`` of the
display range's half-width (an uncertainty below that share of its range) is not drawn at all, and
the result shows through; outside the band the map is drawn at the layer's opacity.
"""
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import slicer.util

GEOMETRY_TOLERANCE_MM = 1e-4
MAP_TITLES = {"consistency": "Data consistency residual", "uncertainty": "Uncertainty (TTA std)"}
MAP_KINDS = tuple(MAP_TITLES)
"""The engine's map kinds (``fagan_engine.util.options.MAP_KINDS``) this module loads and shows."""
COLOR_NODE_NAMES = {"consistency": "FA-GAN residual (diverging)", "uncertainty": "FA-GAN uncertainty"}
COLOR_ATTRIBUTE = "FAGAN.ColorMap"
OVERLAY_OPACITY = 0.6
TRANSPARENT_BAND = 0.2
"""Share of the display range (half-range for the signed residual) drawn fully transparent."""
_COLORS = 256


def imageCornersLPS(image: Any) -> np.ndarray:
    """The 8 outer voxel corners (LPS, mm) of a SimpleITK image or of a file header read by
    ``sitk.ImageFileReader.ReadImageInformation`` (both have size, origin, spacing, direction)."""
    size = image.GetSize()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    scaled = direction * np.asarray(image.GetSpacing(), dtype=float)
    corners = [scaled @ np.array([i, j, k]) for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5)
               for k in (-0.5, size[2] - 0.5)]
    return np.asarray(image.GetOrigin(), dtype=float) + np.array(corners)


def _components(image: Any) -> int:
    getter = getattr(image, "GetNumberOfComponentsPerPixel", None) or image.GetNumberOfComponents
    return int(getter())


def checkSameGrid(mapImage: Any, resultImage: Any, what: str) -> None:
    """Raise ValueError unless ``mapImage`` lies on the grid of ``resultImage`` (1e-4 mm); both are
    SimpleITK images or file headers (see ``imageCornersLPS``)."""
    if mapImage.GetDimension() != 3 or _components(mapImage) != 1:
        raise ValueError(f"the {what} is not a 3D scalar volume")
    if tuple(mapImage.GetSize()) != tuple(resultImage.GetSize()):
        raise ValueError(f"the {what} has {mapImage.GetSize()} voxels, the result {resultImage.GetSize()}")
    error = np.abs(imageCornersLPS(mapImage) - imageCornersLPS(resultImage)).max()
    if error > GEOMETRY_TOLERANCE_MM:
        raise ValueError(f"the {what} is not on the result's grid (corners {error:.2g} mm apart)")


def _rampColors(kind: str, index: int) -> Tuple[float, float, float, float]:
    """RGBA of entry ``index``: consistency blue (negative) - transparent band (about 0) - red (positive);
    uncertainty transparent band (about 0) - yellow - red. Alpha is exactly 0 or 1 (see the module doc)."""
    t = index / (_COLORS - 1)
    if kind == "consistency":
        x = 2.0 * t - 1.0  # -1 .. 1
        alpha = 0.0 if abs(x) < TRANSPARENT_BAND else 1.0
        return (1.0, 1.0 - abs(x), 1.0 - abs(x), alpha) if x >= 0 else (1.0 - abs(x), 1.0 - abs(x), 1.0, alpha)
    return (1.0, 1.0 - 0.8 * t, 0.2 * (1.0 - t), 0.0 if t < TRANSPARENT_BAND else 1.0)


def colorNode(scene: Any, kind: str) -> Any:
    """The scene's colour table for ``kind`` (created once, saved with the scene; a table from a
    scene saved by an older version gets the current colours)."""
    node = None
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        candidate = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if candidate.GetAttribute(COLOR_ATTRIBUTE) == kind:
            node = candidate
            break
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_NODE_NAMES[kind])
        node.SetAttribute(COLOR_ATTRIBUTE, kind)
    node.SetTypeToUser()
    node.SetNumberOfColors(_COLORS)
    for index in range(_COLORS):
        node.SetColor(index, str(index), *_rampColors(kind, index))
    return node


NOISE_MULTIPLE = 3.0
"""With the input's noise level known, a residual within this many σ of zero is drawn transparent."""


def displayRange(kind: str, array: np.ndarray, noiseSigma: Optional[float] = None) -> Tuple[float, float]:
    """Colour range: symmetric about 0 for the signed residual, from 0 for the uncertainty. The residual's, when the
    input's noise σ is known (the engine's ``noise_sigma``), puts the transparent band at ±3σ: what noise alone
    explains is not coloured (with the data's own range even an interpolation coloured a third of the head). Otherwise the
    99th percentile of the magnitude, so a few outliers do not wash the map out."""
    if kind == "consistency" and isinstance(noiseSigma, (int, float)) and math.isfinite(noiseSigma) and noiseSigma > 0:
        top = NOISE_MULTIPLE * float(noiseSigma) / TRANSPARENT_BAND
        return -top, top
    finite = np.abs(array[np.isfinite(array)])
    top = float(np.percentile(finite, 99)) if finite.size else 0.0
    top = top if top > 0 else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    return (-top, top) if kind == "consistency" else (0.0, top)


GREY_COLOR_NODE_ID = "vtkMRMLColorTableNodeGrey"
"""Slicer's default colour table of a scalar volume (the Colors module's ID)."""


def showAsMap(mapNode: Any, kind: str, noiseSigma: Optional[float] = None) -> Optional[Any]:
    """Give ``mapNode`` its colour table, display range (``displayRange``; ``noiseSigma``: the input's, from the run's
    summary) and colour legend; return the legend display node (None where the Colors module's legend node is not
    registered in the scene)."""
    scene = mapNode.GetScene()
    if mapNode.GetDisplayNode() is None:
        mapNode.CreateDefaultDisplayNodes()
    display = mapNode.GetDisplayNode()
    low, high = displayRange(kind, slicer.util.arrayFromVolume(mapNode), noiseSigma)
    with slicer.util.NodeModify(display):
        display.SetAndObserveColorNodeID(colorNode(scene, kind).GetID())
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(low, high)
        display.SetInterpolate(False)
    return addColorLegend(mapNode, MAP_TITLES[kind])


def showAsImage(volumeNode: Any) -> None:
    """Give a node that showed a trust map the plain display of an image again: grey, automatic window, interpolated,
    no colour legend (a new result written into an earlier run's map node)."""
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()
    display = volumeNode.GetDisplayNode()
    with slicer.util.NodeModify(display):
        display.SetAndObserveColorNodeID(GREY_COLOR_NODE_ID)
        display.SetAutoWindowLevel(True)
        display.SetInterpolate(True)
    legend = colorLegend(volumeNode)
    if legend is not None:
        legend.SetVisibility(False)


def addColorLegend(volumeNode: Any, title: str) -> Optional[Any]:
    """A colour legend for ``volumeNode`` (Colors module logic, Slicer 5.x), titled ``title``."""
    logic = getattr(slicer, "vtkSlicerColorLogic", None)
    if logic is None:
        return None
    legend = logic.GetColorLegendDisplayNode(volumeNode) or logic.AddDefaultColorLegendDisplayNode(volumeNode)
    if legend is not None:
        legend.SetTitleText(title)
        legend.SetVisibility(True)
    return legend


def colorLegend(volumeNode: Any) -> Optional[Any]:
    logic = getattr(slicer, "vtkSlicerColorLogic", None)
    return logic.GetColorLegendDisplayNode(volumeNode) if logic is not None else None


def overlayLayers(resultNode: Any, mapNodes: Dict[str, Any]) -> Dict[str, Any]:
    """Slice-view layers that show a result with its trust map on top: the consistency map when
    there is one, else the uncertainty map (keyword arguments of ``slicer.util.setSliceViewerLayers``).
    The views are rotated to the result's planes, so an oblique scan is shown without resampling."""
    foreground = mapNodes.get("consistency") or mapNodes.get("uncertainty")
    layers: Dict[str, Any] = {"background": resultNode, "foreground": foreground}
    layers["foregroundOpacity"] = OVERLAY_OPACITY if foreground is not None else 0.0
    layers["rotateToVolumePlane"] = True
    return layers
