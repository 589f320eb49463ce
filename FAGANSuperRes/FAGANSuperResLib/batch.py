"""Apply to all volumes (issue 13): one engine process for many volume nodes, the model loaded once.

The volumes are written to ``<work>/inputs/NNN_<name>.nrrd`` and the engine's batch mode runs
``fagan_engine sr IN1 IN2 ... --output-dir <work>/outputs --report <work>/batch-report.json
--progress json``. Its events (``batch_start``, ``case_start``, ``progress`` with ``case`` and
``overall``, ``warning`` with ``input``, ``case_end`` with ``status``, ``warnings`` and ``summary``,
``finished``) drive the progress and say which cases are complete. Each case becomes a result node
(and its maps), with the same provenance as a single run, as soon as it finishes (in thick-slice mode each volume's
DICOM Slice Thickness goes into its file's header, and the thickness the engine used is recorded on its result); at the
end one table node lists every case with its trust figures. A failed case does not stop the others. Cancel kills the
process; the cases finished before it stay (the engine publishes each output atomically) and the table lists them.
"""
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import vtk

from .engine import engineCommand, engineEnvironment, engineSupports
from .errors import oneLine
from .isotropic import InstanceValue, thicknessMetadata
from .jobs import EngineJob, workFolder
from .logic import resolvedDevice, runIdentity
from .memory import checkResultFits
from .options import checkRunOptions, engineArguments, mapKinds
from .provenance import NOTICE, figureLabel, formatFigure, identityFromReport, mergeWarnings, planSettings
from .results import addResultToScene, deletedInputWarning, inScene, removeNodes
from .volumes import indexedFileName, isUsableInput, writeVolumeNode

if TYPE_CHECKING:
    from fagan_engine.util.options import RunOptions

BATCH_TABLE_COLUMNS = ("Input", "Result", "Status", "Seconds", "Warnings", "Error")


def batchInputVolumes(scene: Any, folderItemID: Optional[int] = None) -> List[Any]:
    """The volumes "Apply to all" processes: every usable scalar volume of the scene (or, with
    ``folderItemID``, of that subject-hierarchy folder and its sub-folders), in scene order,
    leaving out label maps and this extension's own results and maps."""
    from .provenance import isFAGANResult

    allowed = None
    if folderItemID:
        import slicer

        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        children = vtk.vtkIdList()
        shNode.GetItemChildren(folderItemID, children, True)
        items = [folderItemID] + [children.GetId(i) for i in range(children.GetNumberOfIds())]
        allowed = {shNode.GetItemDataNode(item).GetID() for item in items if shNode.GetItemDataNode(item) is not None}
    volumes = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if isUsableInput(node) and not isFAGANResult(node) and (allowed is None or node.GetID() in allowed):
            volumes.append(node)
    return volumes


def caseFileName(index: int, node: Any) -> str:
    """``NNN_<sanitised node name>.nrrd``: unique per case, safe on every file system (``volumes.indexedFileName``)."""
    return indexedFileName(index, node.GetName(), ".nrrd")


class BatchCase:
    """One volume of a batch: its files, state and result."""

    def __init__(self, node: Any, inputPath: Path, outputPath: Path, mapPaths: Dict[str, Path]) -> None:
        self.node = node
        self.inputPath = inputPath
        self.outputPath = outputPath
        self.mapPaths = mapPaths
        self.status = "pending"  # pending, running, done, failed, loaded
        self.seconds: Optional[float] = None
        self.error = ""
        self.warnings: List[str] = []
        self.summary: Dict[str, Any] = {}
        self.identity: Dict[str, str] = {}
        """The checkpoint that made this case, from its ``case_end`` event (through-plane it depends on the case)."""
        self.decided: Dict[str, str] = {}
        """Through-plane: the slice thickness the engine used for this case and what its fit did (``planSettings``)."""
        self.outputVolumeNode: Any = None
        self.mapNodes: Dict[str, Any] = {}


class BatchJob(EngineJob):
    """A running batch: ``poll()`` from a timer, ``wait()``, or ``cancel()``.

    ``state`` is ``running``, ``succeeded`` (every case done), ``partial`` (some failed or the batch
    was cancelled after some finished), ``failed`` (none done) or ``cancelled`` (none done);
    ``fraction`` is the overall progress; ``cases`` the BatchCase list; ``tableNode`` the summary.
    """

    def __init__(self, cases: List[BatchCase], options: "RunOptions", command: List[str], workDir: Path,
                 env: Optional[Dict[str, str]] = None, identity: Optional[Dict[str, str]] = None) -> None:
        super().__init__(options, command, workDir, env, identity, f"Starting the engine for {len(cases)} volumes...")
        self.cases = cases
        self.scene = cases[0].node.GetScene()
        self.current: Optional[BatchCase] = None
        self.tableNode: Any = None
        self._byName = {case.inputPath.name: case for case in cases}

    @property
    def outputVolumeNodes(self) -> List[Any]:
        return [case.outputVolumeNode for case in self.cases if case.outputVolumeNode is not None]

    def _ended(self) -> None:
        """The engine exited. A failed case's own ``error:`` line is that case's (its ``case_end`` says it), so the batch's
        reason is how the process ended or a line that names no case."""
        if self.process.returnCode == 0:
            self._finish(None)
            return
        names = [f"{case.inputPath.name}: " for case in self.cases]  # the engine prints ``error: <input as resolved>: ...``
        self._finish(self.process.errorMessage(ignoring=lambda reason: any(name in reason for name in names)), stopped=True)

    def _fail(self, message: str) -> None:
        self._finish(message)

    def cancel(self, keepFinished: bool = True) -> None:
        """Kill the engine (bounded wait). The cases loaded so far stay; with ``keepFinished`` the
        ones whose end arrived just before the kill are loaded too, and the summary table is added. Without it (the
        scene is closing) nothing more is added to the scene."""
        if self.done:
            return
        self.process.kill()
        if keepFinished:
            for event in self.process.poll():  # case_end events that arrived before the kill
                self._handleEvent(event)
        self._finish("cancelled by the user", cancelled=True, addTable=keepFinished)

    def summaryText(self) -> str:
        """One line per volume (result or failure), then the notice and the warnings."""
        lines = [self.status]
        for case in self.cases:
            outcome = case.outputVolumeNode.GetName() if case.outputVolumeNode is not None else f"{case.status} {case.error}".strip()
            lines.append(f"{case.node.GetName()}: {outcome}")
        lines.append(f"Notice: {NOTICE}")
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def overlayLayers(self) -> Dict[str, Any]:
        """Slice-view layers showing the first result (with its trust map, if any)."""
        from .maps import overlayLayers

        first = next((case for case in self.cases if case.outputVolumeNode is not None), None)
        return overlayLayers(first.outputVolumeNode, first.mapNodes) if first else {}

    def _case(self, event: Dict[str, Any]) -> Optional[BatchCase]:
        return self._byName.get(Path(str(event.get("input") or "")).name)

    def _handleEvent(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        case = self._case(event)
        if kind in ("start", "batch_start") and event.get("device"):
            self.device, self.threads = resolvedDevice(event)
        if kind == "case_start" and case is not None:
            case.status = "running"
            self.current = case
            self.status = self._caseText(event, "starting")
        elif kind == "progress":
            if isinstance(event.get("overall"), (int, float)):
                self.fraction = float(event["overall"])
            step = {"fit": "fitting, iteration", "adapt": "adapting to this scan, step"}.get(str(event.get("phase")), "slice")
            self.status = self._caseText(event, f"{step} {event.get('done', '?')} of {event.get('total', '?')}")
        elif kind == "warning" and event.get("message"):
            message = str(event["message"])
            if case is not None:
                case.warnings = mergeWarnings(case.warnings, [message])
            label = f"{case.node.GetName()}: " if case is not None else ""
            self.warnings = mergeWarnings(self.warnings, [label + message])
        elif kind == "case_end" and case is not None:
            case.status = "done" if event.get("status") == "done" else "failed"
            case.seconds = event.get("seconds")
            case.error = str(event.get("error") or "")
            case.warnings = mergeWarnings(case.warnings, [str(w) for w in event.get("warnings") or []])
            case.summary = event.get("summary") if isinstance(event.get("summary"), dict) else {}
            case.identity = identityFromReport({"checkpoint": event.get("checkpoint")}) if isinstance(event.get("checkpoint"), dict) else {}
            case.decided = planSettings(event["through_plane"]) if isinstance(event.get("through_plane"), dict) else {}
            if isinstance(event.get("overall"), (int, float)):
                self.fraction = float(event["overall"])
            if case.status == "done":
                self._load(case)
        if self.onProgress:
            self.onProgress(self)

    def _caseText(self, event: Dict[str, Any], what: str) -> str:
        """``Volume k of n (name): what``; progress events name no input, so they are the running case's."""
        case = self._case(event) or self.current
        position = self.cases.index(case) + 1 if case is not None else "?"
        name = case.node.GetName() if case is not None else "?"
        return f"Volume {position} of {len(self.cases)} ({name}): {what}"

    def _finish(self, error: Optional[str], cancelled: bool = False, addTable: bool = True, stopped: bool = False) -> None:
        """Settle the cases still open, add the summary table (``addTable``), remove the work folder. ``stopped``: the
        engine ended abnormally, so ``error`` is the running case's and the cases it never began are ``not run``."""
        try:
            for case in self.cases:
                if cancelled and case.status in ("running", "pending", "done"):  # done: finished but not loaded (scene closing)
                    case.status = "cancelled"
                elif stopped and case.status == "pending":
                    case.status, case.error = "not run", "the engine stopped before this volume"
                elif case.status in ("running", "pending", "done"):
                    case.status, case.error = "failed", case.error or error or "not processed"
            try:
                if addTable:
                    self._addTable()
            except Exception as exc:  # the results stay; only the table is missing
                self.warnings = mergeWarnings(self.warnings, [f"no batch summary table: {oneLine(exc)}"])
        finally:
            self._cleanup()
        loaded = [case for case in self.cases if case.outputVolumeNode is not None]
        failed = [case for case in self.cases if case.status == "failed"]
        notRun = [case for case in self.cases if case.status == "not run"]
        if not loaded:
            self.state = "cancelled" if cancelled else "failed"
        elif failed or notRun or cancelled:
            self.state = "partial"
        else:
            self.state = "succeeded"
        if failed:
            self.error = "; ".join(f"{case.node.GetName()}: {case.error}" for case in failed)
        else:
            self.error = error if self.state in ("failed", "cancelled") else None
        self.fraction = 1.0 if self.state == "succeeded" else self.fraction
        self.status = f"{len(loaded)} of {len(self.cases)} volumes done" + (
            f", {len(failed)} failed" if failed else "") + (f", {len(notRun)} not run" if notRun else "") + (
            ", cancelled" if cancelled else "") + "."

    def _load(self, case: BatchCase) -> None:
        """Add a finished case to the scene at once (results appear one by one); a case whose files
        cannot be loaded fails alone, leaving nothing of it in the scene. A case whose input was
        deleted meanwhile still lands in the batch's scene, with a warning."""
        created: List[Any] = []
        if not inScene(self.scene, case.node):
            case.warnings = mergeWarnings(case.warnings, [deletedInputWarning(case.node.GetName())])
        runInfo = dict(case.decided, **({"device": self.device} if self.device else {}))
        if self.threads:
            runInfo["threads"] = str(self.threads)
        try:
            node, mapNodes, _ = addResultToScene(self.scene, case.node, None, case.outputPath, case.mapPaths, self.options,
                                                 {**self.identity, **case.identity}, case.warnings, case.summary, created, runInfo=runInfo,
                                                 summaryTable=False)
            node.SetAttribute("FAGAN.Batch", "yes")
        except Exception as exc:
            removeNodes(created)
            case.status, case.error = "failed", oneLine(exc)
            return
        case.outputVolumeNode, case.mapNodes = node, mapNodes
        case.status = "loaded"

    def _addTable(self) -> None:
        """The batch summary table node (one row per case); none if nothing was loaded, and none
        left half-built in the scene if making it fails."""
        scene = self.scene
        if not any(case.outputVolumeNode is not None for case in self.cases):
            return
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("FA-GAN batch summary"))
        try:
            self._fillTable(table)
        except Exception:
            removeNodes([table])
            raise
        self.tableNode = table

    def _fillTable(self, table: Any) -> None:
        """One row per case; after the fixed columns, one per trust figure of the engine's summary (as a single run's
        summary table has them), in order of first appearance."""
        figures: List[str] = []
        for case in self.cases:
            figures += [key for key in case.summary if key not in figures]
        data = vtk.vtkTable()
        columns = []
        for name in list(BATCH_TABLE_COLUMNS) + [figureLabel(key) for key in figures]:
            column = vtk.vtkStringArray()
            column.SetName(name)
            data.AddColumn(column)
            columns.append(column)
        for case in self.cases:
            values = [case.node.GetName(), case.outputVolumeNode.GetName() if case.outputVolumeNode else "",
                      "done" if case.status == "loaded" else case.status,
                      f"{case.seconds:.1f}" if isinstance(case.seconds, (int, float)) else "",
                      " | ".join(case.warnings), case.error] + [formatFigure(case.summary[key]) if key in case.summary else "" for key in figures]
            for column, value in zip(columns, values):
                column.InsertNextValue(value)
        table.SetAndObserveTable(data)
        table.SetAttribute("FAGAN.Notice", NOTICE)


class BatchLogic:
    """Qt-free entry point of "Apply to all volumes"."""

    def __init__(self, temporaryDirectory: Optional[str] = None) -> None:
        self.temporaryDirectory = temporaryDirectory

    def process(self, volumeNodes: List[Any], options: "RunOptions", waitForCompletion: bool = True,
                consistencyMap: bool = False, instanceValue: Optional[InstanceValue] = None) -> BatchJob:
        """Super-resolve ``volumeNodes`` with ``options`` (the engine's ``RunOptions``) in one engine
        process (new result nodes, named as single runs name them); ``consistencyMap`` adds that map
        to each; ``instanceValue`` (Slicer's ``dicomDatabase.instanceValue``) gives each volume's DICOM Slice Thickness to
        the engine in thick-slice mode. Raises ValueError before anything starts if there is nothing to do, an option is
        invalid, or the engine has no batch mode."""
        nodes = [node for node in volumeNodes if isUsableInput(node)]
        if not nodes:
            raise ValueError("no volume to process: the scene (or folder) has no grayscale volume")
        options = checkRunOptions(options, consistencyMap)
        if not engineSupports("--output-dir"):
            raise ValueError("this version of the FA-GAN engine has no batch mode (--output-dir)")
        checkResultFits(nodes, options, consistencyMap)
        identity = runIdentity(options)
        with workFolder("FAGANBatch-", self.temporaryDirectory) as workDir:
            inputs, outputs = workDir / "inputs", workDir / "outputs"
            inputs.mkdir()
            cases = []
            for index, node in enumerate(nodes):
                name = caseFileName(index, node)
                output = outputs / name
                stem = output.name[: -len(".nrrd")]
                mapPaths = {kind: outputs / f"{stem}_{kind}.nrrd" for kind in mapKinds(options, consistencyMap)}
                metadata = thicknessMetadata(node, instanceValue) if options.mode == "through-plane" else None
                cases.append(BatchCase(node, writeVolumeNode(node, inputs / name, metadata), output, mapPaths))
            arguments = [str(case.inputPath) for case in cases] + ["--output-dir", str(outputs)]
            arguments += engineArguments(options, consistencyMap)  # batch: maps beside each output
            arguments += ["--report", str(workDir / "batch-report.json")]
            job = BatchJob(cases, options, engineCommand("sr", arguments), workDir, env=engineEnvironment(),
                           identity=identity)
        return job.run(waitForCompletion)

