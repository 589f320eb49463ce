"""Combine thick stacks (issue 17): 2 or 3 thick-slice volumes of one subject -> one isotropic volume (Qt-free).

The same flow as the other modes: each stack -> temporary NRRD (exact geometry) -> ``python -m fagan_engine sr
--stacks A B [C] OUTPUT --reference N --report R.json --progress json [--consistency-map]`` in a background
process -> result, per-stack consistency maps and report -> nodes. Every refusal (stack count, the same node
twice, a 4D or vector volume, memory) is one line before the engine starts; the scene changes only after the
engine succeeded and every file was read back and checked. The result (``<reference>_stacks_iso<spacing>mm``)
references every stack (``results.REFERENCE_INPUT``, in the order given); each map references its stack and the
result. The engine's estimate of each stack's motion and intensity factor goes to the status, the log, the
summary table and the result's description. A stack loaded from DICOM keeps its own Slice Thickness (0018,0050):
given ``instanceValue`` (Slicer's ``dicomDatabase.instanceValue``), it is written into that stack's NRRD header,
where the engine reads it (report: ``thickness_source`` ``dicom``); ``sliceThickness`` overrides all stacks.

Example (Slicer Python console)::

    from FAGANSuperResLib.stacks import StacksLogic
    job = StacksLogic().process([getNode("T2ax"), getNode("T2cor"), getNode("T2sag")], device="cpu")
"""
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .engine import engineCommand, engineEnvironment, engineSupports, engineVersion
from .isotropic import InstanceValue, formatSpacing, thicknessMetadata
from .jobs import workFolder
from .logic import SuperResolutionJob, describeDevice
from .maps import checkSameGrid, showAsMap
from .memory import checkStacksFit
from .options import NON_FINITE_ZEROED, engineFlag, outputArguments, runOptions, validRunOptions, zeroesNonFinite
from .provenance import NOTICE, figureLabel, fillSummaryTable, mergeWarnings, stampResultNode, thicknessSourceWords
from .results import (
    REFERENCE_MAP,
    REFERENCE_RESULT,
    deletedInputWarning,
    detachOldRun,
    inScene,
    linkToInputs,
    placeBesideInput,
)
from .volumes import (
    checkOutputVolumeNode,
    checkScalarVolumeNode,
    loadVolumeFile,
    readVolumeHeader,
    rigidTransformBetween,
    writeVolumeNode,
)

if TYPE_CHECKING:
    from fagan_engine.util.options import RunOptions

STACKS_MODE = "stacks"
MIN_STACKS, MAX_STACKS = 2, 3
MAP_KIND = "consistency_stack"
"""The engine's map kind per stack: ``consistency_stack<k>`` (k = 1 for the first stack)."""
PHASES = {"register": "registering the stacks", "reconstruct": "reconstructing",
          "fit": "FA-GAN prior, fitting a stack's network", "inference": "FA-GAN prior, a stack's network"}
REGISTRATION_SHARE, PRIOR_SHARE = 0.3, 0.6
"""With the FA-GAN prior: the bar's share of the registration rounds and of the stacks' networks (the final
reconstruction has the rest); rough shares of the run's time, so the bar moves on and never goes back."""


def checkStackNodes(stackNodes: Sequence[Any], reference: int = 0, outputVolumeNode: Any = None) -> None:
    """Raise ValueError (one line) unless ``stackNodes`` are 2 or 3 different 3D scalar volumes of one scene,
    ``reference`` indexes one of them and ``outputVolumeNode`` (None: a new node) is another scalar volume of that scene."""
    if not MIN_STACKS <= len(stackNodes) <= MAX_STACKS:
        raise ValueError(f"combining stacks needs {MIN_STACKS} or {MAX_STACKS} volumes, got {len(stackNodes)}")
    for index, node in enumerate(stackNodes):
        if node is None:
            raise ValueError(f"stack {index + 1} is not selected")
        if node.GetImageData() is not None and node.GetImageData().GetNumberOfScalarComponents() > 1:
            components = node.GetImageData().GetNumberOfScalarComponents()
            raise ValueError(f"{node.GetName()} has {components} components (a 4D or vector volume); each stack must be a 3D scalar volume")
        checkScalarVolumeNode(node)
        if node in stackNodes[:index]:
            raise ValueError(f"{node.GetName()} is selected twice: each stack must be a different volume")
        if node.GetScene() is None or node.GetScene() is not stackNodes[0].GetScene():
            raise ValueError(f"{node.GetName()} is not in the scene of {stackNodes[0].GetName()}")
    if not 0 <= reference < len(stackNodes):
        raise ValueError(f"the reference must be stack 1 to {len(stackNodes)}, got {reference + 1}")
    if outputVolumeNode is not None and outputVolumeNode in stackNodes:
        raise ValueError("the output volume must be a new volume or another scalar volume, not one of the stacks")
    checkOutputVolumeNode(outputVolumeNode, stackNodes[0].GetScene())


def stacksArguments(inputPaths: Sequence[Any], outputPath: Any, reference: int, options: "RunOptions",
                    consistencyMaps: bool, reportPath: Any) -> List[str]:
    """Arguments of ``fagan_engine sr`` for combining ``inputPaths`` (``options``: target spacing, slice thickness, NaN
    policy; ``fit_iterations`` None: no FA-GAN prior, else its fit steps, on ``options.device``: the least squares
    alone run on the CPU, and the engine refuses a device for them)."""
    args = ["--stacks", *[str(p) for p in inputPaths], str(outputPath), "--report", str(reportPath)]
    args += [engineFlag("device"), options.device] if options.fit_iterations is not None else []
    args += ["--reference", str(reference + 1)] if reference else []
    for field in ("target_spacing", "slice_thickness", "fit_iterations"):
        value = getattr(options, field)
        args += [engineFlag(field), repr(float(value)) if isinstance(value, float) else str(value)] if value is not None else []
    args += [engineFlag("nan_policy"), options.nan_policy] if zeroesNonFinite(options) else []
    args += [engineFlag("consistency")] if consistencyMaps else []
    return args + outputArguments()

def stackMapPaths(outputPath: Path, count: int) -> List[Path]:
    """Where the engine writes each stack's consistency map (``<output stem>_consistency_stack<k><ext>``)."""
    suffix = "".join(outputPath.suffixes)
    stem = outputPath.name[: len(outputPath.name) - len(suffix)]
    return [outputPath.with_name(f"{stem}_{MAP_KIND}{k}{suffix}") for k in range(1, count + 1)]


def stacksResultName(referenceName: str, spacing: float) -> str:
    """``<reference>_stacks_iso<spacing>mm``, e.g. ``T2ax_stacks_iso0.5mm``."""
    return f"{referenceName}_stacks_iso{formatSpacing(spacing)}mm"


def readStacksReport(path: Path, count: int) -> Dict[str, Any]:
    """The engine's stacks report (``StackReport.to_dict``); ValueError (one line) if it is unreadable or
    does not describe ``count`` stacks."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"the engine's report {Path(path).name} is unreadable ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("stacks"), list) or len(report["stacks"]) != count:
        raise ValueError(f"the engine's report {Path(path).name} does not describe {count} stacks")
    return report


def describeStack(name: str, entry: Dict[str, Any]) -> str:
    """One line of a stack's estimated motion, intensity factor and fit, for the status and the log."""
    return (f"{name}: moved {entry.get('rotation_degrees', 0.0):.2f} deg, {entry.get('translation_mm', 0.0):.2f} mm; "
            f"intensity x{entry.get('intensity_scale', 1.0):.3f}; residual {entry.get('residual_rms', 0.0):.4f}; "
            f"slices {entry.get('thickness', 0.0):g} mm thick ({thicknessSourceWords(entry.get('thickness_source', '?'))})"
            + (f"; prior from {entry['network_start'].get('name', '?')}" if isinstance(entry.get("network_start"), dict) else ""))


def stacksSettings(names: Sequence[str], reference: int, options: "RunOptions", spacing: float) -> Dict[str, str]:
    """The run settings recorded on the result (attribute name -> text)."""
    thickness, prior = options.slice_thickness, options.fit_iterations
    settings = {"mode": STACKS_MODE, "stacks": ", ".join(names), "reference": names[reference],
                "targetSpacing": f"{spacing:g} mm",
                "sliceThickness": f"{thickness:g} mm" if thickness else "from the header or the scan",
                "faganPrior": "off" if prior is None else f"{prior} fit steps per stack"}
    if zeroesNonFinite(options):
        settings["nonFiniteVoxels"] = NON_FINITE_ZEROED
    return settings


class StacksJob(SuperResolutionJob):
    """One running combination of stacks (poll, wait, cancel as ``SuperResolutionJob``).

    ``stackNodes`` and ``reference`` (an index) are the inputs; ``inputVolumeNode`` is the reference stack.
    On success ``outputVolumeNode``, ``mapNodes`` (``consistency_stack<k>`` -> node), ``summaryTableNode`` and
    ``report`` (the engine's stacks report) describe the result; ``motionLines`` the estimated motion per stack.
    """

    def __init__(self, stackNodes: Sequence[Any], reference: int, outputVolumeNode: Any, options: "RunOptions",
                 command: List[str], workDir: Path, inputPaths: List[Path], outputPath: Path, reportPath: Path,
                 mapPaths: Sequence[Optional[Path]], env: Optional[Dict[str, str]] = None) -> None:
        prior = "none (reconstruction from the stacks)" if options.fit_iterations is None else "bundled through-plane weights"
        super().__init__(stackNodes[reference], outputVolumeNode, options, command, workDir, outputPath, env=env,
                         reportPath=reportPath, identity={"checkpoint": prior, "engine_version": engineVersion()})
        self.stackNodes = list(stackNodes)
        self.stackNames = [node.GetName() for node in stackNodes]
        self.reference = reference
        self.inputPaths = inputPaths
        self.stackMapPaths = list(mapPaths)
        self.report: Dict[str, Any] = {}
        self.motionLines: List[str] = []
        self._round = (0, 1)
        self._priorStack = 0

    def _handleEvent(self, event: Dict[str, Any]) -> None:
        if event.get("event") == "start":
            self.device, self.threads = str(event.get("device") or ""), None
            where = describeDevice(self.device, self.threads, self.options.device)
            self.status = f"Combining {len(self.stackNodes)} stacks on {where}..."
        elif event.get("event") == "progress":
            self._stacksProgress(event)
        else:
            super()._handleEvent(event)
            return
        if self.onProgress:
            self.onProgress(self)

    def _stacksProgress(self, event: Dict[str, Any]) -> None:
        """Status per phase; the bar runs once over the whole run and never goes back. Without the FA-GAN prior it
        runs over the registration rounds (each with its reconstruction); with it those fill ``REGISTRATION_SHARE``,
        each stack's fit and inference an equal part of ``PRIOR_SHARE`` (the fit 60 % of that part, as in the
        engine's ``run_fraction``) and the final reconstruction the rest."""
        done, total = event.get("done", 0), event.get("total") or 0
        previous, self.phase = self.phase, str(event.get("phase") or self.phase)
        part = min(max(done / total, 0.0), 1.0) if total else 0.0
        registration = REGISTRATION_SHARE if self.options.fit_iterations is not None else 1.0
        if self.phase == "register" and total:
            self._round = (int(done), int(total))
            self.status = f"Registering the stacks, round {int(done) + 1} of {total}..."
            fraction = registration * part
        elif self.phase == "fit" or self.phase == "inference":
            self._priorStack += int(self.phase == "fit" and previous != "fit")
            stackPart = 0.6 * part if self.phase == "fit" else 0.6 + 0.4 * part
            fraction = registration + PRIOR_SHARE * (max(self._priorStack - 1, 0) + stackPart) / len(self.stackNodes)
        elif self.phase == "reconstruct" and self._priorStack:  # the final reconstruction with the prior
            fraction = registration + PRIOR_SHARE + (1.0 - registration - PRIOR_SHARE) * part
        else:
            fraction = registration * min(1.0, (self._round[0] + part) / self._round[1])
        self.fraction = max(self.fraction, fraction)
        if self.phase != "register":
            phase = PHASES.get(self.phase, self.phase)
            self.status = f"{phase[:1].upper()}{phase[1:]}: {done} of {total or '?'}"  # not capitalize(): "FA-GAN" stays

    def _addResult(self, created: List[Any]) -> None:
        """The engine's report, then the result, its maps and its summary table into the scene (a warning for each
        stack deleted during the run)."""
        self.report = readStacksReport(self.reportPath, len(self.stackNodes))
        self.motionLines = [describeStack(name, entry) for name, entry in zip(self.stackNames, self.report["stacks"])]
        deleted = [name for node, name in zip(self.stackNodes, self.stackNames) if not inScene(self.scene, node)]
        self.warnings = mergeWarnings(self.warnings, [deletedInputWarning(name) for name in deleted])
        self._addToScene(created)
        self._logLines += self.motionLines

    def _doneStatus(self) -> str:
        moved = max(self.report["stacks"], key=lambda entry: entry.get("translation_mm", 0.0))
        return (f"Done: {self.outputVolumeNode.GetName()}; stacks moved up to {moved.get('translation_mm', 0.0):.1f} mm "
                f"(details in the log)")

    def _addToScene(self, created: List[Any]) -> None:
        """The result, its maps and its summary table into the scene (every new node appended to ``created``);
        an existing output volume changes only after every map was read."""
        spacing = float(readVolumeHeader(self.outputPath).GetSpacing()[0])
        mapped = [(k, path, stack) for k, (path, stack) in enumerate(zip(self.stackMapPaths, self.stackNodes)) if path]
        for index, path, _ in mapped:
            if not path.is_file():
                raise ValueError(f"the engine wrote no consistency map for {self.stackNames[index]}")
            checkSameGrid(readVolumeHeader(path), readVolumeHeader(self.inputPaths[index]), f"consistency map of {self.stackNames[index]}")

        def newNode(name: str, className: str = "vtkMRMLScalarVolumeNode") -> Any:
            node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
            created.append(node)
            return node

        referenceNode = self.stackNodes[self.reference]
        output = self.outputVolumeNode if inScene(self.scene, self.outputVolumeNode) else \
            newNode(stacksResultName(self.stackNames[self.reference], spacing))
        settings = dict(stacksSettings(self.stackNames, self.reference, self.options, spacing), **self.runInfo())
        maps = {}
        for index, path, _stack in mapped:
            name = self.stackNames[index]
            mapNode = maps[f"{MAP_KIND}{index + 1}"] = newNode(f"{output.GetName()}_consistency_{name}")
            loadVolumeFile(mapNode, path)  # on the stack's grid as the engine saw it: in the reference's frame
            mapNode.SetAndObserveTransformNodeID(_transformID(self.scene, referenceNode))
            stampResultNode(mapNode, name, dict(settings, map=f"consistency of {name}"), self.identity, self.warnings,
                            role="consistency map")
            legend = showAsMap(mapNode, "consistency")
            if legend is not None:
                created.append(legend)
        loadVolumeFile(output, self.outputPath)
        detachOldRun(output)
        output.SetAndObserveTransformNodeID(_transformID(self.scene, referenceNode))
        if output.GetDisplayNode() is None:
            output.CreateDefaultDisplayNodes()
        motion = {f"stack{k}": line for k, line in enumerate(self.motionLines, 1)}  # facts of the run, not warnings
        stampResultNode(output, ", ".join(self.stackNames), dict(settings, **motion), self.identity, self.warnings)
        table = newNode(f"{output.GetName()}_summary", "vtkMRMLTableNode")
        fillSummaryTable(table, self.summaryRows(settings))
        table.SetAttribute("FAGAN.Notice", NOTICE)
        table.SetNodeReferenceID(REFERENCE_RESULT, output.GetID())
        for (_, _, stack), mapNode in zip(mapped, maps.values()):
            mapNode.SetNodeReferenceID(REFERENCE_RESULT, output.GetID())
            output.AddNodeReferenceID(REFERENCE_MAP, mapNode.GetID())
            linkToInputs(self.scene, mapNode, [stack])
        for node in (output, table):
            linkToInputs(self.scene, node, self.stackNodes)
        if inScene(self.scene, referenceNode):
            placeBesideInput(self.scene, referenceNode, [output, table] + list(maps.values()))
        self.outputVolumeNode, self.mapNodes, self.summaryTableNode = output, maps, table

    def summaryRows(self, settings: Dict[str, str]) -> List[List[str]]:
        """(item, value) rows: notice, settings, identity, one row per stack, warnings."""
        rows = [["Notice", NOTICE]] + [[figureLabel(key), value] for key, value in settings.items()]
        rows += [["Engine version", self.identity.get("engine_version", "")], ["Prior", self.identity.get("checkpoint", "")]]
        rows += [["Stack", line] for line in self.motionLines] + [["Warning", w] for w in self.warnings]
        return [row for row in rows if row[1]]

    def summaryText(self) -> str:
        """The result's notice, settings, per-stack motion and warnings, one ``item: value`` per line."""
        spacing = self.outputVolumeNode.GetSpacing()[0] if self.outputVolumeNode is not None else 0.0
        rows = self.summaryRows(stacksSettings(self.stackNames, self.reference, self.options, spacing))
        return "\n".join(f"{item}: {value}" for item, value in rows)


def _transformID(scene: Any, node: Any) -> Optional[str]:
    """The parent transform of ``node`` if it still exists in ``scene``."""
    transformID = node.GetTransformNodeID() if node is not None else None
    return transformID if transformID and scene.GetNodeByID(transformID) is not None else None


class StacksLogic:
    """Qt-free entry point of Combine thick stacks, for scripts, tests and the FAGANSuperRes module."""

    def __init__(self, temporaryDirectory: Optional[str] = None) -> None:
        self.temporaryDirectory = temporaryDirectory

    def process(self, stackNodes: Sequence[Any], outputVolumeNode: Any = None, reference: int = 0, *,
                device: str = "auto", targetSpacing: Optional[float] = None, sliceThickness: Optional[float] = None,
                fitIterations: Optional[int] = None, consistencyMaps: bool = True, nanPolicy: str = "error",
                waitForCompletion: bool = True, instanceValue: Optional[InstanceValue] = None) -> StacksJob:
        """Combine ``stackNodes`` (2 or 3 volume nodes of one subject) into one isotropic volume.

        ``reference`` (index into ``stackNodes``): the stack whose orientation the result takes.
        ``outputVolumeNode=None`` makes a new node on success. ``targetSpacing`` (default: the finest in-plane
        spacing), ``sliceThickness`` (mm, all stacks; default: each stack's DICOM Slice Thickness when
        ``instanceValue`` (``slicer.dicomDatabase.instanceValue``) finds it, else the engine's estimate or the spacing).
        ``fitIterations`` None: no FA-GAN prior (least squares with a smoothness term); 0: the pretrained
        through-plane network as prior; N: fitted N steps per stack. ``consistencyMaps`` adds each stack's map.
        ``nanPolicy`` "zero" replaces non-finite (NaN or Inf) voxels with 0; "error" (default): the engine refuses them.
        With ``waitForCompletion`` the call blocks and raises SuperResolutionError on failure; otherwise poll the
        returned job. Invalid arguments raise ValueError (one line) before anything starts.
        """
        stackNodes = list(stackNodes)
        checkStackNodes(stackNodes, reference, outputVolumeNode)
        if not engineSupports("--stacks") or (reference and not engineSupports("--reference")):
            raise ValueError("this version of the FA-GAN engine cannot combine stacks" + (" with another reference" if reference else ""))
        options = validRunOptions(runOptions(mode="through-plane", device=device, target_spacing=targetSpacing,
                                             slice_thickness=sliceThickness, fit_iterations=fitIterations,
                                             nan_policy=nanPolicy))
        if zeroesNonFinite(options) and not engineSupports(engineFlag("nan_policy")):
            raise ValueError(f"this version of the FA-GAN engine has no {engineFlag('nan_policy')} option yet")
        checkStacksFit(stackNodes, targetSpacing, consistencyMaps)
        # each stack in the reference's frame: a stack moved by its own (registration) transform is combined where it is
        frames = [rigidTransformBetween(node, stackNodes[reference]) for node in stackNodes]
        with workFolder("FAGANStacks-", self.temporaryDirectory) as workDir:
            inputPaths = [writeVolumeNode(node, workDir / f"stack{index + 1}.nrrd", thicknessMetadata(node, instanceValue), frame)
                          for index, (node, frame) in enumerate(zip(stackNodes, frames))]
            outputPath, reportPath = workDir / "output.nrrd", workDir / "report.json"
            mapPaths = stackMapPaths(outputPath, len(stackNodes)) if consistencyMaps else [None] * len(stackNodes)
            arguments = stacksArguments(inputPaths, outputPath, reference, options, consistencyMaps, reportPath)
            job = StacksJob(stackNodes, reference, outputVolumeNode, options, engineCommand("sr", arguments), workDir,
                            inputPaths, outputPath, reportPath, mapPaths, env=engineEnvironment())
        return job.run(waitForCompletion)
