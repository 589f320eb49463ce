"""MRML helpers shared by the Slicer-side tests: oblique, anisotropic volume nodes in a real scene."""
import time
from typing import Any, Tuple

import numpy as np
import slicer.util
import vtk


def rotation(axis: Tuple[float, float, float], angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def addVolumeNode(scene: Any, array: np.ndarray, spacing=(0.9, 1.3, 3.5), origin=(12.5, -40.25, 7.125),
                  direction=None, name: str = "Oblique") -> Any:
    """A scalar volume node with an oblique, anisotropic IJKToRAS (k, j, i array order)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array)
    direction = rotation((1.0, 2.0, 0.5), 0.6) if direction is None else direction
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, direction[r, c])
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    node.CreateDefaultDisplayNodes()
    return node


def smoothArray(shape=(5, 16, 20), seed: int = 0) -> np.ndarray:
    """Smooth positive content (k, j, i), so interpolation and SR stay close to the input."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    rng = np.random.default_rng(seed)
    return (100 + 40 * np.sin(i / 3.0 + rng.random()) * np.cos(j / 4.0) + 5 * k).astype(np.float32)


def ijkToRas(node: Any) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def pollUntilDone(job: Any, timeout: float = 60.0) -> None:
    """Poll a non-blocking job until it finishes; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not job.poll():
        assert time.monotonic() < deadline, "the job did not finish in time"
        time.sleep(0.05)
