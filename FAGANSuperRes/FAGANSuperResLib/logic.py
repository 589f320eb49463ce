"""Super-resolve a volume node with the FA-GAN engine in a background process (Qt-free).

Flow: input node -> temporary NRRD (exact geometry) -> ``python -m fagan_engine sr ...
--progress json`` -> output NRRD -> output node. The scene is modified only after the engine
succeeded and its result was read back; on failure or cancel nothing in the scene changes and
the temporary folder is removed in every case.

Example (Slicer Python console)::

    from FAGANSuperResLib import SuperResolutionLogic
    job = SuperResolutionLogic().process(getNode("MRHead"), None, scale=2, device="cpu")
    outputNode = job.outputVolumeNode
"""
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import SimpleITK as sitk

from .engine import engineCommand, engineEnvironment
from .process import EngineProcess
from .volumes import checkScalarVolumeNode, updateVolumeNodeFromImage, writeVolumeNode

SCALES = (2, 4, 8)
PLANES = ("auto", "axial", "coronal", "sagittal")
DEVICES = ("auto", "cuda", "cpu")
METHODS = ("fagan", "bicubic")


class SuperResolutionError(RuntimeError):
    """The engine failed or was cancelled; the message is one line for the user."""


def superResolutionArguments(
    inputPath: Any,
    outputPath: Any,
    scale: int,
    checkpointPath: Optional[Any] = None,
    plane: str = "auto",
    device: str = "auto",
    method: str = "fagan",
    batchSize: Optional[int] = None,
    tileSize: Optional[int] = None,
) -> List[str]:
    """Arguments of ``fagan_engine sr`` (after the subcommand) for one run."""
    checkChoice("scale", scale, SCALES)
    checkChoice("plane", plane, PLANES)
    checkChoice("device", device, DEVICES)
    checkChoice("method", method, METHODS)
    args = [str(inputPath), str(outputPath), "--scale", str(scale), "--plane", plane, "--method", method,
            "--device", device, "--backend", "auto", "--progress", "json"]
    if checkpointPath and method == "fagan":
        args += ["--checkpoint", str(checkpointPath)]
    if batchSize:
        args += ["--batch-size", str(int(batchSize))]
    if tileSize:
        args += ["--tile-size", str(int(tileSize))]
    return args


def oneLine(exc: BaseException) -> str:
    """The last non-empty line of an exception's message (its type name if it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def checkChoice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


class SuperResolutionJob:
    """One running super-resolution: poll it (non-blocking), wait for it, or cancel it.

    ``state`` is ``running``, ``succeeded``, ``failed`` or ``cancelled``; ``fraction`` and
    ``status`` describe progress; ``error`` holds the one-line reason of a failure.
    """

    def __init__(self, inputVolumeNode: Any, outputVolumeNode: Any, scale: int, command: List[str],
                 workDir: Path, outputPath: Path, env: Optional[Dict[str, str]] = None) -> None:
        self.inputVolumeNode = inputVolumeNode
        self.outputVolumeNode = outputVolumeNode
        self.scale = scale
        self.workDir = workDir
        self.outputPath = outputPath
        self.process = EngineProcess(command, env=env, cwd=str(workDir))
        self.state = "running"
        self.fraction = 0.0
        self.status = "Starting the engine..."
        self.error: Optional[str] = None
        self.onProgress: Optional[Callable[["SuperResolutionJob"], None]] = None

    @property
    def done(self) -> bool:
        return self.state != "running"

    def start(self) -> None:
        try:
            self.process.start()
        except OSError as exc:
            self._fail(f"cannot start the engine ({exc})")

    def poll(self) -> bool:
        """Handle the engine output available now; finish the job when the engine ended.

        Returns True when the job is done. Call this from a timer (it never blocks for long;
        at the end it reads the result file and updates the output node).
        """
        if self.done:
            self.process.poll()  # collects the exit code of a cancelled engine that was still exiting
            return True
        for event in self.process.poll():
            self._handleEvent(event)
        if self.process.finished:
            self._complete()
        return self.done

    def wait(self) -> "SuperResolutionJob":
        """Block until done; raise SuperResolutionError if the job failed or was cancelled."""
        while not self.done:
            self.process.wait(timeout=0.2)
            self.poll()
        if self.state != "succeeded":
            raise SuperResolutionError(self.error or self.state)
        return self

    def cancel(self) -> None:
        """Kill the engine's whole process tree (waiting at most a few hundred ms for it to exit;
        later ``poll()`` calls collect the rest); the scene stays unchanged."""
        if self.done:
            return
        self.process.kill()
        self.state = "cancelled"
        self.error = "cancelled by the user"
        self.status = "Cancelled."
        self._cleanup()

    def _handleEvent(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.status = f"Super-resolving x{self.scale} on {event.get('device', 'auto')}..."
        elif kind == "progress":
            total = event.get("total") or 0
            if "fraction" in event:
                self.fraction = float(event["fraction"])
            elif total:
                self.fraction = float(event.get("done", 0)) / total
            self.status = f"Slice {event.get('done', '?')} of {total or '?'}"
        elif kind == "finished":
            self.fraction = 1.0
            self.status = "Loading the result..."
        if self.onProgress:
            self.onProgress(self)

    def _complete(self) -> None:
        try:
            if self.process.returnCode != 0 or not self.outputPath.is_file():
                raise SuperResolutionError(self.process.errorMessage())
            self._storeResult(sitk.ReadImage(str(self.outputPath)))
        except Exception as exc:  # any failure becomes the job's one-line error
            self._fail(oneLine(exc))
            return
        finally:
            self._cleanup()
        self.state = "succeeded"
        self.fraction = 1.0
        self.status = f"Done: {self.outputVolumeNode.GetName()}"

    def _storeResult(self, image: Any) -> None:
        """Put the result into the output node, creating it only now (scene untouched before)."""
        scene = self.inputVolumeNode.GetScene()
        created = self.outputVolumeNode is None
        node = self.outputVolumeNode
        if created:
            name = scene.GenerateUniqueName(f"{self.inputVolumeNode.GetName()}_SRx{self.scale}")
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        try:
            updateVolumeNodeFromImage(node, image)
        except Exception:
            if created:
                scene.RemoveNode(node)
            raise
        node.SetAndObserveTransformNodeID(self.inputVolumeNode.GetTransformNodeID())
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        self.outputVolumeNode = node

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        self.status = f"Failed: {message}"
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)


class SuperResolutionLogic:
    """Qt-free entry point for scripts, tests and the FAGANSuperRes module."""

    def __init__(self, temporaryDirectory: Optional[str] = None) -> None:
        self.temporaryDirectory = temporaryDirectory

    def process(
        self,
        inputVolumeNode: Any,
        outputVolumeNode: Any,
        scale: int,
        checkpointPath: Optional[str] = None,
        plane: str = "auto",
        device: str = "auto",
        method: str = "fagan",
        waitForCompletion: bool = True,
        *,
        batchSize: Optional[int] = None,
        tileSize: Optional[int] = None,
    ) -> SuperResolutionJob:
        """Super-resolve ``inputVolumeNode`` in-plane by ``scale`` into ``outputVolumeNode``.

        ``outputVolumeNode=None`` creates a new node (named ``<input>_SRx<scale>``) on success.
        ``checkpointPath=None`` uses the bundled default checkpoint for ``scale``.
        With ``waitForCompletion`` the call blocks and raises SuperResolutionError on failure;
        otherwise it returns the running job at once: call ``job.poll()`` periodically.
        Invalid arguments raise ValueError before anything starts.
        """
        checkScalarVolumeNode(inputVolumeNode)
        if outputVolumeNode is not None and outputVolumeNode is inputVolumeNode:
            raise ValueError("the output volume must differ from the input volume")
        if outputVolumeNode is not None and outputVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError("the output volume cannot be a label map")
        if method == "fagan" and checkpointPath and not Path(checkpointPath).is_file():
            raise ValueError(f"checkpoint file not found: {checkpointPath}")
        workDir = Path(tempfile.mkdtemp(prefix="FAGANSuperRes-", dir=self.temporaryDirectory))
        try:
            inputPath = writeVolumeNode(inputVolumeNode, workDir / "input.nrrd")
            outputPath = workDir / "output.nrrd"
            arguments = superResolutionArguments(inputPath, outputPath, scale, checkpointPath, plane, device,
                                                 method, batchSize, tileSize)
            job = SuperResolutionJob(inputVolumeNode, outputVolumeNode, scale, engineCommand("sr", arguments),
                                     workDir, outputPath, env=engineEnvironment())
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        job.start()
        if waitForCompletion:
            job.wait()
        return job
