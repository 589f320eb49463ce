"""A finished run's files into the scene: the result node, its trust maps, the summary table, provenance.

The files are checked from their headers first (each map on the result's grid, 1e-4 mm), then read one
at a time with Slicer's volume storage node (``volumes.loadVolumeFile``), so the Slicer side holds each
voxel once. The nodes are linked with MRML node references, which the scene saves and which survive
renaming: result, maps and table -> input (``REFERENCE_INPUT``); maps and table -> result
(``REFERENCE_RESULT``); result -> each map (``REFERENCE_MAP``). Results go into the scene captured when
the run started, so a run whose input was deleted meanwhile still lands (the caller adds a warning).
"""
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .isotropic import isotropicName, throughPlaneAxis
from .maps import checkSameGrid, showAsImage, showAsMap
from .options import isThroughPlane, runSettings
from .provenance import NOTICE, fillSummaryTable, stampResultNode, summaryRows
from .volumes import loadVolumeFile, readVolumeHeader

if TYPE_CHECKING:
    from fagan_engine.util.options import RunOptions

REFERENCE_INPUT = "FAGANInput"
REFERENCE_RESULT = "FAGANResult"
REFERENCE_MAP = "FAGANMap"


class ResultError(RuntimeError):
    """A result file is missing or does not fit; one line for the user."""


def checkResultFiles(outputPath: Path, mapPaths: Dict[str, Path]) -> Any:
    """The result file's header, after checking that every map exists and lies on its grid."""
    if not Path(outputPath).is_file():
        raise ResultError("the engine wrote no result")
    header = readVolumeHeader(outputPath)
    for kind, path in mapPaths.items():
        if not Path(path).is_file():
            raise ResultError(f"the engine wrote no {kind} map")
        checkSameGrid(readVolumeHeader(path), header, f"{kind} map")
    return header


def inScene(scene: Any, node: Any) -> bool:
    """True while ``node`` is a node of ``scene`` (False once it was deleted)."""
    return node is not None and node.GetScene() is scene and bool(scene.IsNodePresent(node))


def resultName(inputVolumeNode: Any, options: "RunOptions", header: Any) -> str:
    """``<input>_SRx<scale>``, or ``<input>_iso<spacing>mm`` for thick slices -> isotropic (the
    result's spacing along the input's slice axis, see ``isotropic.formatSpacing``)."""
    inputName = inputVolumeNode.GetName()
    if isThroughPlane(options):
        return isotropicName(inputName, header.GetSpacing()[throughPlaneAxis(inputVolumeNode)])
    return f"{inputName}_SRx{options.scale}"


def referencedNode(node: Any, role: str) -> Any:
    """The node ``node`` references in ``role`` (the input, the result), or None."""
    return node.GetNodeReference(role) if node is not None else None


def referencedMaps(resultNode: Any) -> List[Any]:
    """The trust-map nodes a result references, in order."""
    return [resultNode.GetNthNodeReference(REFERENCE_MAP, i) for i in range(resultNode.GetNumberOfNodeReferences(REFERENCE_MAP))]


def detachOldRun(resultNode: Any) -> None:
    """A result node being overwritten keeps no link to the maps and summary tables of its earlier run (they no
    longer match it; they stay in the scene, unlinked). A node that was an earlier run's trust map leaves that run
    (the old result no longer lists it) and shows as an image again."""
    oldResult = resultNode.GetNodeReference(REFERENCE_RESULT)
    if oldResult is not None:
        for index in reversed(range(oldResult.GetNumberOfNodeReferences(REFERENCE_MAP))):
            if oldResult.GetNthNodeReferenceID(REFERENCE_MAP, index) == resultNode.GetID():
                oldResult.RemoveNthNodeReferenceID(REFERENCE_MAP, index)
    resultNode.RemoveNodeReferenceIDs(REFERENCE_RESULT)
    if (resultNode.GetAttribute("FAGAN.Role") or "").endswith("map"):  # read before the new run stamps it: its old result may be gone
        showAsImage(resultNode)
    for mapNode in referencedMaps(resultNode):
        if mapNode is not None:
            mapNode.RemoveNodeReferenceIDs(REFERENCE_RESULT)
    resultNode.RemoveNodeReferenceIDs(REFERENCE_MAP)
    scene = resultNode.GetScene()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode") if scene is not None else 0):
        table = scene.GetNthNodeByClass(index, "vtkMRMLTableNode")
        if table.GetNodeReferenceID(REFERENCE_RESULT) == resultNode.GetID():
            table.RemoveNodeReferenceIDs(REFERENCE_RESULT)


def addResultToScene(scene: Any, inputVolumeNode: Any, outputVolumeNode: Any, outputPath: Path,
                     mapPaths: Dict[str, Path], options: "RunOptions", identity: Dict[str, str], warnings: List[str],
                     summary: Dict[str, Any], created: List[Any], runInfo: Optional[Dict[str, str]] = None,
                     summaryTable: bool = True) -> Tuple[Any, Dict[str, Any], Any]:
    """Put a result (its maps, summary table and provenance) into ``scene``, creating nodes only now.

    Every new node is appended to ``created`` so that the caller can remove them again if anything
    fails. ``outputVolumeNode`` None (or deleted meanwhile) makes a new node. ``runInfo`` (for example
    the device that ran) is recorded with the run settings. Returns (result, kind -> map, table or None).
    """
    header = checkResultFiles(outputPath, mapPaths)

    def newNode(name: str, className: str = "vtkMRMLScalarVolumeNode") -> Any:
        node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
        created.append(node)
        return node

    inputPresent = inScene(scene, inputVolumeNode)
    node = outputVolumeNode if inScene(scene, outputVolumeNode) else newNode(resultName(inputVolumeNode, options, header))
    mapNodes = {}
    for kind, path in mapPaths.items():  # the maps first: an existing output volume changes only at the end
        mapNodes[kind] = newNode(f"{node.GetName()}_{kind}")
        loadVolumeFile(mapNodes[kind], path)
    loadVolumeFile(node, outputPath)
    detachOldRun(node)
    transformID = inputVolumeNode.GetTransformNodeID()
    transformID = transformID if transformID and scene.GetNodeByID(transformID) is not None else None
    node.SetAndObserveTransformNodeID(transformID)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    inputName = inputVolumeNode.GetName()
    settings = dict(runSettings(options), **(runInfo or {}))
    stampResultNode(node, inputName, settings, identity, warnings)
    for kind, mapNode in mapNodes.items():
        mapNode.SetAndObserveTransformNodeID(transformID)
        stampResultNode(mapNode, inputName, dict(settings, map=kind), identity, warnings, role=f"{kind} map")
        legend = showAsMap(mapNode, kind, summary.get("noise_sigma") if isinstance(summary, dict) else None)
        if legend is not None:
            created.append(legend)
        mapNode.SetNodeReferenceID(REFERENCE_RESULT, node.GetID())
        node.AddNodeReferenceID(REFERENCE_MAP, mapNode.GetID())
    table = None
    if summaryTable:
        table = newNode(f"{node.GetName()}_summary", "vtkMRMLTableNode")
        fillSummaryTable(table, summaryRows(inputName, settings, identity, summary, warnings))
        table.SetAttribute("FAGAN.Notice", NOTICE)
        table.SetNodeReferenceID(REFERENCE_RESULT, node.GetID())
    nodes = [node] + list(mapNodes.values()) + ([table] if table is not None else [])
    for each in nodes:
        linkToInputs(scene, each, [inputVolumeNode])
    if inputPresent:
        placeBesideInput(scene, inputVolumeNode, nodes)
    return node, mapNodes, table


def linkToInputs(scene: Any, node: Any, inputNodes: Sequence[Any]) -> None:
    """``node`` references (``REFERENCE_INPUT``, in order) each of ``inputNodes`` still in ``scene``, and no input of
    an earlier run (an output volume used again would otherwise keep its link to the earlier run's input)."""
    node.RemoveNodeReferenceIDs(REFERENCE_INPUT)
    for inputNode in inputNodes:
        if inScene(scene, inputNode):
            node.AddNodeReferenceID(REFERENCE_INPUT, inputNode.GetID())


def placeBesideInput(scene: Any, inputVolumeNode: Any, nodes: List[Any]) -> None:
    """Put ``nodes`` in the input's subject-hierarchy folder (its DICOM study, when it came from
    DICOM), so that DICOM export finds their patient and study. Scenes without a subject
    hierarchy (plain MRML) are left as they are."""
    shNode = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    if shNode is None:
        return
    inputItem = shNode.GetItemByDataNode(inputVolumeNode)
    if not inputItem:
        return
    parent = shNode.GetItemParent(inputItem)
    for node in nodes:
        item = shNode.GetItemByDataNode(node) or shNode.CreateItem(parent, node)
        shNode.SetItemParent(item, parent)


def removeNodes(nodes: List[Any]) -> None:
    for node in reversed(nodes):
        if node.GetScene() is not None:
            node.GetScene().RemoveNode(node)


def deletedInputWarning(inputName: str) -> str:
    return f"the input volume {inputName} was deleted during the run; the result is kept without a link to it"
