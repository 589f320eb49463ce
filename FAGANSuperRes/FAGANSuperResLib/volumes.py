"""Volume node <-> SimpleITK image conversion that keeps IJKToRAS exactly.

MRML stores geometry in RAS, ITK/SimpleITK (and NRRD files written by them) in LPS: the
first two world axes change sign both ways. Voxel arrays are shared in (k, j, i) order. Engine
results are read with Slicer's own volume storage node (``loadVolumeFile``), not through SimpleITK.
"""
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import slicer.util
import vtk
from vtk.util import numpy_support

_RAS_LPS = np.diag([-1.0, -1.0, 1.0])
SCALAR_VOLUME_CLASS = "vtkMRMLScalarVolumeNode"
"""The one node class inputs and outputs may have: its subclasses (label maps, vector, tensor and diffusion
volumes) hold other kinds of voxels."""
FILE_NAME_CHARACTERS = 64
"""The most characters of a node name in a file name: the engine adds suffixes (``_uncertainty``, its temporary
``.<name>.<random>.tmp``) and file systems take 255 bytes."""


def checkScalarVolumeNode(volumeNode: Any) -> None:
    """Raise ValueError unless ``volumeNode`` is a plain scalar volume node with 3D single-component voxels."""
    if volumeNode is None:
        raise ValueError("no input volume selected")
    if volumeNode.GetClassName() != SCALAR_VOLUME_CLASS:
        raise ValueError(f"{volumeNode.GetName()} is not a scalar (grayscale) volume ({volumeNode.GetClassName()})")
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetNumberOfPoints() == 0:
        raise ValueError(f"{volumeNode.GetName()} has no voxels")
    if imageData.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"{volumeNode.GetName()} has {imageData.GetNumberOfScalarComponents()} components; one is needed")


def checkOutputVolumeNode(outputVolumeNode: Any, scene: Any) -> None:
    """Raise ValueError (one line) unless ``outputVolumeNode`` is None (a new node) or a plain scalar volume node in
    ``scene`` (the input's), which can take the result."""
    if outputVolumeNode is None:
        return
    name, className = outputVolumeNode.GetName(), outputVolumeNode.GetClassName()
    if className != SCALAR_VOLUME_CLASS:
        raise ValueError(f"the output volume {name} is not a scalar (grayscale) volume ({className})")
    if outputVolumeNode.GetScene() is not scene or not scene.IsNodePresent(outputVolumeNode):
        raise ValueError(f"the output volume {name} is not in the input volume's scene")


def isUsableInput(volumeNode: Any) -> bool:
    """True for what the input selector offers and Apply accepts: a plain scalar volume node (no
    label map or other subclass) with one-component voxels."""
    try:
        checkScalarVolumeNode(volumeNode)
    except ValueError:
        return False
    return True


def defaultInputVolume(scene: Any) -> Any:
    """The first volume of ``scene`` that can be super-resolved (label maps skipped), or None."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if isUsableInput(node):
            return node
    return None


def imageFromVolumeNode(volumeNode: Any, toFrame: Optional[np.ndarray] = None) -> sitk.Image:
    """Copy a scalar volume node into a SimpleITK image with the same voxels and LPS geometry.

    The node's parent transform is not applied (the result lives in the node's local frame), unless ``toFrame`` (a
    rigid 4x4 RAS matrix, ``rigidTransformBetween``) moves the geometry into another frame.
    """
    checkScalarVolumeNode(volumeNode)
    image = sitk.GetImageFromArray(np.array(slicer.util.arrayFromVolume(volumeNode)))
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASDirectionMatrix(matrix)
    directionRAS = np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])
    originRAS = np.array(volumeNode.GetOrigin())
    if toFrame is not None:
        directionRAS, originRAS = toFrame[:3, :3] @ directionRAS, toFrame[:3, :3] @ originRAS + toFrame[:3, 3]
    image.SetDirection((_RAS_LPS @ directionRAS).ravel().tolist())
    image.SetOrigin((_RAS_LPS @ originRAS).tolist())
    image.SetSpacing(volumeNode.GetSpacing())
    return image


RIGID_TOLERANCE = 1e-4
"""Largest deviation of RᵀR from the identity still taken as a rotation (a matrix typed or stored to a few digits)."""


def rigidTransformBetween(node: Any, target: Any) -> np.ndarray:
    """The 4x4 RAS matrix from ``node``'s frame to ``target``'s (their parent transforms; identity when they share one,
    even a non-linear one).
    ValueError (one line) when either is under a non-linear transform, or when the two frames differ by more than a
    rotation and a shift (scaling, shear or a mirror, which a voxel grid's geometry cannot take): harden it first."""
    if node.GetParentTransformNode() is target.GetParentTransformNode():  # one frame (none, or one shared transform)
        return np.eye(4)
    for each in (node, target):
        parent = each.GetParentTransformNode()
        if parent is not None and not parent.IsTransformToWorldLinear():
            raise ValueError(f"{each.GetName()} is under a non-linear transform: harden it (Data module) or remove it first")
    matrix = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(node.GetParentTransformNode(), target.GetParentTransformNode(),
                                                               matrix)
    array = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    rotation = array[:3, :3]
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=RIGID_TOLERANCE) or np.linalg.det(rotation) < 0:
        raise ValueError(f"the transform between {node.GetName()} and {target.GetName()} scales, shears or mirrors: "
                         "harden it (Data module) first")
    return array


def updateVolumeNodeFromImage(volumeNode: Any, image: sitk.Image) -> None:
    """Replace the voxels and geometry of ``volumeNode`` by those of a 3D scalar ``image``.

    Everything that can fail happens before the node is touched.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("only 3D single-component images can be stored in a scalar volume node")
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image))
    if array.dtype == np.int64 or array.dtype == np.uint64:
        array = array.astype(np.float64)
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(*image.GetSize())
    imageData.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    directionRAS = _RAS_LPS @ np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, directionRAS[r, c])
    origin = (_RAS_LPS @ np.asarray(image.GetOrigin(), dtype=float)).tolist()
    with slicer.util.NodeModify(volumeNode):
        volumeNode.SetIJKToRASDirectionMatrix(matrix)
        volumeNode.SetOrigin(*origin)
        volumeNode.SetSpacing(*image.GetSpacing())
        volumeNode.SetAndObserveImageData(imageData)


def readVolumeHeader(path: Path) -> sitk.ImageFileReader:
    """The header of a volume file (size, origin, spacing, direction, components), voxels not read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ValueError(f"cannot read {Path(path).name}: {str(exc).strip().splitlines()[-1]}") from None
    return reader


def loadVolumeFile(volumeNode: Any, path: Path) -> None:
    """Read the volume file ``path`` into ``volumeNode`` (voxels and geometry) with Slicer's volume
    storage node, the reader of ``slicer.util.loadVolume``: the voxels go from the file into the
    node's image data without an intermediate copy. The file is read into a detached node first, so
    ``volumeNode`` is unchanged (and ValueError is raised) when the file cannot be read. The node gets
    no storage node: saving the scene writes it to a new file, not to ``path``."""
    loaded = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(loaded, True) or loaded.GetImageData() is None:  # True: a temporary file
        raise ValueError(f"Slicer could not read {Path(path).name}")
    matrix = vtk.vtkMatrix4x4()
    loaded.GetIJKToRASMatrix(matrix)
    with slicer.util.NodeModify(volumeNode):
        volumeNode.SetIJKToRASMatrix(matrix)
        volumeNode.SetAndObserveImageData(loaded.GetImageData())


def writeVolumeNode(volumeNode: Any, path: Path, metadata: Optional[Dict[str, str]] = None,
                    toFrame: Optional[np.ndarray] = None) -> Path:
    """Write a scalar volume node to ``path`` (.nrrd, .nii.gz, ...) with its exact geometry (moved by ``toFrame``, see
    ``imageFromVolumeNode``); ``metadata`` (key -> text, e.g. the DICOM Slice Thickness as ``0018|0050``) goes into the
    file's header (NRRD)."""
    image = imageFromVolumeNode(volumeNode, toFrame)
    for key, value in (metadata or {}).items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path), useCompression=str(path).endswith(".gz"))
    return Path(path)


def indexedFileName(index: int, name: str, suffix: str) -> str:
    """``NNN_<name><suffix>`` with the name reduced to file-safe characters and at most ``FILE_NAME_CHARACTERS`` of
    them; the index keeps names unique."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:FILE_NAME_CHARACTERS].rstrip("._") or "volume"
    return f"{index:03d}_{safe}{suffix}"


def ijkToRasArray(volumeNode: Any) -> np.ndarray:
    """The node's 4x4 IJKToRAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def physicalCornersRAS(volumeNode: Any) -> List[np.ndarray]:
    """RAS positions of the 8 outer voxel corners (the physical box covered by the volume)."""
    dims = volumeNode.GetImageData().GetDimensions()
    ijkToRas = ijkToRasArray(volumeNode)
    corners = []
    for i in (-0.5, dims[0] - 0.5):
        for j in (-0.5, dims[1] - 0.5):
            for k in (-0.5, dims[2] - 0.5):
                corners.append((ijkToRas @ np.array([i, j, k, 1.0]))[:3])
    return corners
