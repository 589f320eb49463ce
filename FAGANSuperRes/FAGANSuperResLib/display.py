"""Input and result side by side in two linked slice views (Qt-free: MRML slice and composite nodes).

The module switches Slicer to its side-by-side layout (``vtkMRMLLayoutNode.SlicerLayoutSideBySideView``:
slice views ``Red`` and ``Yellow``) and calls ``showSideBySide``: the input on the left, the result
(with its trust map as overlay) on the right, both views rotated to the result's planes and linked, so
scrolling, panning and zooming one moves the other. Linked composite nodes copy a volume choice only
when the user picks it in a view's controller (Slicer's ``vtkMRMLSliceLinkLogic`` broadcasts on
interaction flags), so each view keeps its own volumes.
"""
from typing import Any, Dict, Sequence

from .maps import overlayLayers

SIDE_BY_SIDE_VIEWS = ("Red", "Yellow")


def viewNodes(scene: Any, className: str) -> Dict[str, Any]:
    """Layout name -> node, for the scene's slice (or slice composite) nodes."""
    nodes = {}
    for index in range(scene.GetNumberOfNodesByClass(className)):
        node = scene.GetNthNodeByClass(index, className)
        nodes[node.GetLayoutName()] = node
    return nodes


def showSideBySide(scene: Any, inputNode: Any, resultNode: Any, mapNodes: Dict[str, Any],
                   views: Sequence[str] = SIDE_BY_SIDE_VIEWS) -> None:
    """Show ``inputNode`` in the first of ``views`` and ``resultNode`` (with its map overlay) in the
    second, linked and rotated to the result's planes. Raise ValueError if a view is missing."""
    composites = viewNodes(scene, "vtkMRMLSliceCompositeNode")
    slices = viewNodes(scene, "vtkMRMLSliceNode")
    missing = [view for view in views if view not in composites or view not in slices]
    if missing:
        raise ValueError(f"the scene has no slice view {', '.join(missing)}")
    layers = overlayLayers(resultNode, mapNodes)
    left, right = (composites[view] for view in views[:2])
    left.SetBackgroundVolumeID(inputNode.GetID())
    left.SetForegroundVolumeID(None)
    right.SetBackgroundVolumeID(resultNode.GetID())
    right.SetForegroundVolumeID(layers["foreground"].GetID() if layers["foreground"] is not None else None)
    right.SetForegroundOpacity(layers["foregroundOpacity"])
    for view in views[:2]:
        composites[view].SetLinkedControl(True)
        slices[view].RotateToVolumePlane(resultNode)
