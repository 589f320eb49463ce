"""Super-resolve a volume node with the FA-GAN engine in a background process (Qt-free).

Flow: input node -> temporary NRRD (exact geometry) -> ``python -m fagan_engine sr ...
--progress json`` (plus the flags of the engine's ``RunOptions``: acquisition, thick slices ->
isotropic, enforce consistency; and the trust maps and report) -> output NRRD (and maps, report)
-> output node, map nodes, summary table, provenance attributes. The scene is modified only after the engine succeeded and
every result file was read back and checked; on failure or cancel nothing in the scene changes and
the temporary folder is removed in every case. Options whose flag the shipped engine lacks are
refused before anything starts (``engine.engineSupports``).

Example (Slicer Python console)::

    from FAGANSuperResLib import SuperResolutionLogic
    job = SuperResolutionLogic().process(getNode("MRHead"), None, scale=2, device="cpu", consistencyMap=True)
    outputNode = job.outputVolumeNode
"""
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .engine import engineCommand, engineEnvironment, engineSupports, engineVersion, ensureEngineImportable
from .errors import oneLine
from .jobs import EngineJob, workFolder
from .maps import overlayLayers
from .memory import checkResultFits
from .options import checkRunOptions, engineArguments, engineFlag, isThroughPlane, mapKinds, runOptions, runSettings
from .provenance import RunReport, localIdentity, mergeWarnings, summaryRows, throughPlaneIdentity
from .results import addResultToScene, deletedInputWarning, inScene, removeNodes
from .volumes import checkOutputVolumeNode, checkScalarVolumeNode, writeVolumeNode

if TYPE_CHECKING:
    from fagan_engine.util.options import RunOptions


class SuperResolutionError(RuntimeError):
    """The engine failed or was cancelled; the message is one line for the user."""


def superResolutionArguments(inputPath: Any, outputPath: Any, options: "RunOptions", mapPaths: Optional[Dict[str, Any]] = None,
                             reportPath: Optional[Any] = None) -> List[str]:
    """Arguments of ``fagan_engine sr`` (after the subcommand) for one run; ``mapPaths`` (kind -> file)
    and ``reportPath`` name the extra outputs."""
    mapPaths = dict(mapPaths or {})
    args = [str(inputPath), str(outputPath)] + engineArguments(options, "consistency" in mapPaths, mapPaths)
    return args + (["--report", str(reportPath)] if reportPath is not None else [])


def resolvedDevice(event: Dict[str, Any]) -> Tuple[str, Optional[int]]:
    """The device (``cpu``, ``cuda:0``, ...) and CPU thread count a ``start`` event reports ("" and None
    when the engine does not report them; ``options.device`` is the request, such as ``auto``)."""
    device = event.get("device")
    threads = event.get("threads")
    return (str(device) if device else "",
            threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None)


def describeDevice(device: str, threads: Optional[int], requested: str) -> str:
    """``CPU (8 threads)``, ``GPU cuda:0``, or the requested device when the engine did not say."""
    if not device:
        return f"{requested} (the engine does not report the device it chose)" if requested == "auto" else requested
    if device.startswith("cuda"):
        return f"GPU {device}"
    if device == "cpu":
        return f"CPU ({threads} threads)" if threads else "CPU"
    return device


class SuperResolutionJob(EngineJob):
    """One running super-resolution: poll it (non-blocking), wait for it, or cancel it.

    ``state`` is ``running``, ``succeeded``, ``failed`` or ``cancelled``; ``fraction``, ``phase``
    (``fit``/``inference`` in through-plane mode) and ``status`` describe progress; ``error`` holds
    the one-line reason of a failure; ``warnings`` the engine's one-line warnings so far. On success
    ``outputVolumeNode``, ``mapNodes`` (kind -> volume node), ``summaryTableNode``, ``summary`` and
    ``identity`` describe the result; nothing is added to the scene before that. ``device`` and
    ``threads`` are what the engine reports it runs on (its ``start`` event; empty/None if it does not
    say). The result lands in the scene the input was in at the start, even if the input was deleted.
    """

    def __init__(self, inputVolumeNode: Any, outputVolumeNode: Any, options: "RunOptions", command: List[str],
                 workDir: Path, outputPath: Path, env: Optional[Dict[str, str]] = None,
                 mapPaths: Optional[Dict[str, Path]] = None, reportPath: Optional[Path] = None,
                 identity: Optional[Dict[str, str]] = None) -> None:
        super().__init__(options, command, workDir, env, identity, "Starting the engine...")
        self.inputVolumeNode = inputVolumeNode
        self.outputVolumeNode = outputVolumeNode
        self.scene = inputVolumeNode.GetScene()
        self.scale = options.scale
        self.outputPath = outputPath
        self.mapPaths = dict(mapPaths or {})
        self.reportPath = reportPath
        self.phase = ""
        self.summary: Dict[str, Any] = {}
        self.reportSettings: Dict[str, str] = {}
        """Settings the engine decided, from its report (``provenance.planSettings``)."""
        self.mapNodes: Dict[str, Any] = {}
        self.summaryTableNode: Any = None

    def wait(self) -> "SuperResolutionJob":
        """Block until done; raise SuperResolutionError if the job failed or was cancelled."""
        super().wait()
        if self.state != "succeeded":
            raise SuperResolutionError(self.error or self.state)
        return self

    def cancel(self, keepFinished: bool = True) -> None:
        """Kill the engine's whole process tree (waiting at most a few hundred ms for it to exit;
        later ``poll()`` calls collect the rest); the scene stays unchanged. (``keepFinished`` is
        for the batch job's interface: a single run has nothing finished to keep.)"""
        if self.done:
            return
        self.process.kill()
        self.state = "cancelled"
        self.error = "cancelled by the user"
        self.status = "Cancelled."
        self._cleanup()

    def _readLog(self) -> List[str]:
        """``warning: ...`` lines (Python warnings the engine prints at the end) count as warnings."""
        lines = super()._readLog()
        for line in lines:
            if line.startswith("warning: "):
                self.warnings = mergeWarnings(self.warnings, [line[len("warning: "):]])
        return lines

    def _handleEvent(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.device, self.threads = resolvedDevice(event)
            what = "thick slices -> isotropic" if isThroughPlane(self.options) else f"x{self.scale}"
            self.status = f"Super-resolving {what} on {describeDevice(self.device, self.threads, self.options.device)}..."
        elif kind == "progress":
            self._progress(event)
        elif kind == "warning" and event.get("message"):
            self.warnings = mergeWarnings(self.warnings, [str(event["message"])])
        elif kind == "finished":
            self.fraction = 1.0
            self.status = "Loading the result..."
        if self.onProgress:
            self.onProgress(self)

    def _progress(self, event: Dict[str, Any]) -> None:
        total = event.get("total") or 0
        if isinstance(event.get("run_fraction"), (int, float)):  # the whole run's: adaptation or fit, then inference
            self.fraction = float(event["run_fraction"])
        elif isinstance(event.get("fraction"), (int, float)):
            self.fraction = float(event["fraction"])
        elif total:
            self.fraction = float(event.get("done", 0)) / total
        self.phase = str(event.get("phase") or self.phase)
        done = event.get("done", event.get("iteration", "?"))
        if self.phase == "adapt":
            self.status = f"Step 1/2, adapting the model to this scan: step {done} of at most {total or '?'}"
        elif self.phase == "fit":
            loss = event.get("loss")
            lossText = f", loss {loss:.4g}" if isinstance(loss, (int, float)) else ""
            self.status = f"Step 1/2, fitting to this scan: iteration {done} of {total or '?'}{lossText}"
        elif self.phase == "inference" and isThroughPlane(self.options):
            self.status = f"Step 2/2, super-resolving: slice {done} of {total or '?'}"
        elif self.options.adapt_steps > 0 and not isThroughPlane(self.options):
            self.status = f"Step 2/2, super-resolving: slice {done} of {total or '?'}"
        else:
            self.status = f"Slice {done} of {total or '?'}"

    def _ended(self) -> None:
        """The engine exited: its result into the scene, or the job's one-line error with the scene restored."""
        created: List[Any] = []
        try:
            if self.process.returnCode != 0 or not self.outputPath.is_file():
                raise SuperResolutionError(self.process.errorMessage())
            self._addResult(created)
        except Exception as exc:  # any failure becomes the job's one-line error; the scene is restored
            removeNodes(created)
            self._fail(oneLine(exc))
            return
        finally:
            self._cleanup()
        self.state = "succeeded"
        self.fraction = 1.0
        self.status = self._doneStatus()

    def _addResult(self, created: List[Any]) -> None:
        """Read the engine's files and add the result to the scene (every new node appended to ``created``)."""
        report = RunReport.read(self.reportPath) if self.reportPath is not None else RunReport()
        self.summary = report.summary
        self.warnings = mergeWarnings(self.warnings, report.warnings)
        self.identity.update(report.identity)
        self.reportSettings = report.settings
        if not inScene(self.scene, self.inputVolumeNode):
            self.warnings = mergeWarnings(self.warnings, [deletedInputWarning(self.inputVolumeNode.GetName())])
        self.outputVolumeNode, self.mapNodes, self.summaryTableNode = addResultToScene(
            self.scene, self.inputVolumeNode, self.outputVolumeNode, self.outputPath, self.mapPaths, self.options,
            self.identity, self.warnings, self.summary, created, runInfo=self.runInfo())

    def _doneStatus(self) -> str:
        ranOn = f" (on {describeDevice(self.device, self.threads, self.options.device)})" if self.device else ""
        return f"Done: {self.outputVolumeNode.GetName()}{ranOn}"

    def runInfo(self) -> Dict[str, str]:
        """What the engine reported about the run, recorded with the result (device, threads, the settings it decided)."""
        info = dict(self.reportSettings, **({"device": self.device} if self.device else {}))
        if self.threads:
            info["threads"] = str(self.threads)
        return info

    def summaryText(self) -> str:
        """The result's notice, identity, summary figures and warnings, one ``item: value`` per line."""
        rows = summaryRows(self.inputVolumeNode.GetName(), dict(runSettings(self.options), **self.reportSettings), self.identity,
                           self.summary, self.warnings)
        return "\n".join(f"{item}: {value}" for item, value in rows)

    def overlayLayers(self) -> Dict[str, Any]:
        """Keyword arguments for ``slicer.util.setSliceViewerLayers``: the result with its trust map
        as a colour overlay."""
        return overlayLayers(self.outputVolumeNode, self.mapNodes)

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        self.status = f"Failed: {message}"
        self._cleanup()


class SuperResolutionLogic:
    """Qt-free entry point for scripts, tests and the FAGANSuperRes module."""

    def __init__(self, temporaryDirectory: Optional[str] = None) -> None:
        self.temporaryDirectory = temporaryDirectory

    def process(
        self,
        inputVolumeNode: Any,
        outputVolumeNode: Any,
        scale: int,
        checkpoint: Optional[str] = None,
        plane: str = "auto",
        device: str = "auto",
        method: str = "fagan",
        waitForCompletion: bool = True,
        *,
        consistencyMap: bool = False,
        **options: Any,
    ) -> SuperResolutionJob:
        """Super-resolve ``inputVolumeNode`` in-plane by ``scale`` into ``outputVolumeNode``.

        ``outputVolumeNode=None`` creates a new node (named ``<input>_SRx<scale>``, or
        ``<input>_iso<spacing>mm`` for ``mode="through-plane"``) on success.
        ``checkpoint=None`` uses the bundled default checkpoint for ``scale`` and ``acquisition``.
        Further keywords are fields of the engine's ``fagan_engine.util.options.RunOptions`` (``acquisition``,
        ``mode``, ``batch_size``, ``tile_size``, ``target_spacing``, ``slice_thickness``,
        ``fit_iterations``, ``uncertainty`` (the uncertainty map), ``enforce_consistency``, ...);
        ``consistencyMap`` adds the consistency map. See ``processWithOptions``.
        """
        settings = runOptions(scale=scale, checkpoint=checkpoint, plane=plane, device=device, method=method, **options)
        return self.processWithOptions(inputVolumeNode, outputVolumeNode, settings, waitForCompletion, consistencyMap)

    def processWithOptions(self, inputVolumeNode: Any, outputVolumeNode: Any, options: "RunOptions",
                           waitForCompletion: bool = True, consistencyMap: bool = False) -> SuperResolutionJob:
        """Run ``options`` (a ``RunOptions``) on ``inputVolumeNode``; ``consistencyMap`` adds that map.
        With ``waitForCompletion`` the call blocks and raises SuperResolutionError on failure;
        otherwise it returns the running job at once: call ``job.poll()`` periodically.
        Invalid arguments raise ValueError before anything starts.
        """
        options = checkRunOptions(options, consistencyMap)
        checkScalarVolumeNode(inputVolumeNode)
        if inputVolumeNode.GetScene() is None:
            raise ValueError(f"{inputVolumeNode.GetName()} is not in a scene")
        checkResultFits([inputVolumeNode], options, consistencyMap)
        if outputVolumeNode is not None and outputVolumeNode is inputVolumeNode:
            raise ValueError("the output volume must differ from the input volume")
        checkOutputVolumeNode(outputVolumeNode, inputVolumeNode.GetScene())
        if options.method == "fagan" and options.checkpoint and not Path(options.checkpoint).is_file():
            raise ValueError(f"checkpoint file not found: {options.checkpoint}")
        identity = runIdentity(options, inputVolumeNode)
        with workFolder("FAGANSuperRes-", self.temporaryDirectory) as workDir:
            inputPath = writeVolumeNode(inputVolumeNode, workDir / "input.nrrd")
            outputPath = workDir / "output.nrrd"
            mapPaths = {kind: workDir / f"{kind}_map.nrrd" for kind in mapKinds(options, consistencyMap)}
            # One volume's JSON report is part of the engine's trust features (with the maps).
            reportPath = workDir / "report.json" if engineSupports("--report", engineFlag("consistency")) else None
            arguments = superResolutionArguments(inputPath, outputPath, options, mapPaths, reportPath)
            job = SuperResolutionJob(inputVolumeNode, outputVolumeNode, options, engineCommand("sr", arguments),
                                     workDir, outputPath, env=engineEnvironment(), mapPaths=mapPaths,
                                     reportPath=reportPath, identity=identity)
        return job.run(waitForCompletion)


def runIdentity(options: "RunOptions", inputVolumeNode: Any = None) -> Dict[str, str]:
    """Checkpoint identity and engine version known before the run (the engine's report, when it
    writes one, completes it). A checkpoint that cannot be read is left to the engine to refuse.
    Through-plane, ``inputVolumeNode``'s geometry picks the bundled start as the engine will (without it: the general
    start; a batch names each case's from the engine's events)."""
    from .checkpoints import readCheckpoint

    ensureEngineImportable()
    info = None
    if options.method == "fagan" and not isThroughPlane(options):
        path = options.checkpoint
        if not path:
            from fagan_engine.models.checkpoint import default_checkpoint

            path = default_checkpoint(options.scale, options.acquisition)
        try:
            info = readCheckpoint(path) if path else None
        except ValueError:
            info = None
    identity = localIdentity(info, options.method, options.acquisition, engineVersion(), isThroughPlane(options))
    if isThroughPlane(options):
        identity.update(throughPlaneIdentity(volumeSliceRatio(inputVolumeNode, options.target_spacing)))
    return identity


def volumeSliceRatio(volumeNode: Any, targetSpacing: Optional[float]) -> Optional[float]:
    """The engine's through-plane slice ratio for ``volumeNode``'s grid (``plan.slice_ratio``); None without a node or
    image, or when the geometry is not one the engine would plan (it refuses it itself)."""
    imageData = volumeNode.GetImageData() if volumeNode is not None else None
    if imageData is None:
        return None
    ensureEngineImportable()
    from fagan_engine.through_plane.plan import slice_ratio

    try:
        return slice_ratio(imageData.GetDimensions(), volumeNode.GetSpacing(), targetSpacing)
    except (ValueError, ZeroDivisionError, IndexError):
        return None

