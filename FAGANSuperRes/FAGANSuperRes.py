import logging
import os
import sys
from typing import Annotated, Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import qt
import slicer
import vtk
from FAGANSuperResLib import dependencies, engine
from FAGANSuperResLib.batch import BatchLogic, batchInputVolumes
from FAGANSuperResLib.checkpoints import (
    availableCheckpoints,
    readCheckpoint,
    userCheckpointRegistry,
)
from FAGANSuperResLib.display import showSideBySide
from FAGANSuperResLib.errors import OneLineErrors
from FAGANSuperResLib.isotropic import batchThroughPlaneValues, throughPlaneDefaults
from FAGANSuperResLib.logic import SuperResolutionJob, SuperResolutionLogic
from FAGANSuperResLib.memory import outputVoxels
from FAGANSuperResLib.options import (
    ACQUISITIONS,
    DEVICES,
    ENSEMBLES,
    METHODS,
    PLANES,
    SCALES,
    THROUGH_PLANE_ENSEMBLES,
    engineFlag,
)
from FAGANSuperResLib.options import runOptions as engineRunOptions
from FAGANSuperResLib.process import EngineProcess
from FAGANSuperResLib.stacks import STACKS_MODE, StacksJob, StacksLogic, checkStackNodes
from FAGANSuperResLib.volumes import defaultInputVolume
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

BROWSE = "browse"
POLL_INTERVAL_MS = 200
REPOSITORY_URL = "https://github.com/fagan-superres/SlicerFAGANSuperResolution"
CONTRIBUTORS = ["FA-GAN SuperRes team (fagan-superres)"]
# Parameter -> widget, connected with connectParametersToGui (which returns its tag on every
# Slicer version; connectGui returns None before 5.10, so its connection could not be removed).
PARAMETER_WIDGETS = {"inputVolume": "inputSelector", "mode": "modeComboBox", "scale": "scaleComboBox",
                     "method": "methodComboBox", "acquisition": "acquisitionComboBox", "plane": "planeComboBox",
                     "device": "deviceComboBox", "targetSpacing": "targetSpacingSpinBox",
                     "sliceThickness": "sliceThicknessSpinBox", "batchSize": "batchSizeSpinBox",
                     "tileSize": "tileSizeSpinBox", "fitIterations": "fitIterationsSpinBox", "ensemble": "ensembleComboBox",
                     "consistencyMap": "consistencyMapCheckBox",
                     "enforceConsistency": "enforceConsistencyCheckBox", "adapt": "adaptCheckBox", "nanToZero": "nanToZeroCheckBox",
                     "applyToAll": "applyToAllCheckBox",
                     "outputVolume": "outputSelector", "sideBySide": "sideBySideCheckBox",
                     "secondStack": "secondStackComboBox", "thirdStack": "thirdStackComboBox",
                     "stackReference": "stackReferenceComboBox"}
# The engine's run modes (options.MODES) and Combine thick stacks (stacks.STACKS_MODE, the engine's --stacks);
# a literal, as the parameter node needs it at import (Testing/slicer/test_contracts.py checks it).
PANEL_MODES = ("in-plane", "through-plane", "stacks")
# Widgets (with their labels) used by one mode only.
IN_PLANE_ROWS = ("scale", "method", "acquisition", "checkpoint", "plane")
THROUGH_PLANE_ROWS = ("targetSpacing", "sliceThickness")
# Combine thick stacks rows, built in code (name -> field class); their texts are stackRowTexts().
CODE_ROWS = {"secondStack": "qMRMLNodeComboBox", "thirdStack": "qMRMLNodeComboBox", "stackReference": "QComboBox"}
# Checkbox -> the map kind or RunOptions field it sets; disabled while the engine lacks its flag
# (options.engineFlag). The uncertainty map is not offered: on real scans it does not follow the error better
# than the image gradient does (docs/model-card.md, "Real scans"); the Lib and the engine keep it for research.
OPTION_CHECKBOXES = {"consistencyMapCheckBox": "consistency", "enforceConsistencyCheckBox": "enforce_consistency",
                     "nanToZeroCheckBox": "nan_policy"}


# The panel's texts kept in tables are translated when shown: each function returns literal _() calls,
# which Qt's lupdate can read (a _() of a variable cannot be extracted for translators).


def modeLabels() -> Dict[str, str]:
    """PANEL_MODES -> the mode selector's entry."""
    return {"in-plane": _("In-plane ×2/×4/×8"), "through-plane": _("Thick slices → isotropic"),
            "stacks": _("Combine thick stacks (2-3)")}


def stackLabels() -> Tuple[str, ...]:
    """The reference selector's entries, in stack order."""
    return (_("First stack (input volume)"), _("Second stack"), _("Third stack"))


def ensembleLabels() -> Dict[int, str]:
    """options.ENSEMBLES -> the self-ensemble selector's entry (0: the engine's default)."""
    return {0: _("Engine default"), 1: _("Off"), 2: _("2 copies"), 4: _("4 copies"), 8: _("8 copies")}


def fitTooltips() -> Dict[bool, str]:
    """The fit iterations' tooltip: Thick slices -> isotropic (False) or Combine thick stacks (True)."""
    return {False: _("Thick slices -> isotropic: iterations of the per-scan fit. 0: the engine's measured default."),
            True: _("Combine thick stacks: 0 reconstructs from the stacks alone (minutes); N adds the FA-GAN prior, "
                    "a through-plane network fitted N steps per stack (much longer on a CPU).")}


def stackRowTexts() -> Dict[str, Tuple[str, str]]:
    """CODE_ROWS name -> (label, tooltip)."""
    return {"secondStack": (_("Second stack:"), _("Another thick-slice volume of the same subject and contrast.")),
            "thirdStack": (_("Third stack:"), _("Optional: a third thick-slice volume.")),
            "stackReference": (_("Reference:"), _("The stack whose orientation the result takes."))}


#
# FAGANSuperRes
#


class FAGANSuperRes(ScriptedLoadableModule):
    """Module description; see ScriptedLoadableModule in Slicer's Base/Python/slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FA-GAN Super-Resolution")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = list(CONTRIBUTORS)
        self.parent.helpText = _("""
Increase the in-plane resolution of an MRI volume by 2, 4 or 8 with FA-GAN (fused attentive GAN), or
turn a thick-slice scan into an isotropic volume (FA-GAN fitted to the scan itself), or combine two or three
thick-slice stacks of the same subject (for example axial, coronal and sagittal) into one isotropic volume. The
result covers the same physical region as the input, with a data-consistency map shown
as a colour overlay. Results are for research use, not for diagnosis. Computation runs in a background
process; Slicer stays responsive and the run can be cancelled. "Apply to all volumes" processes every
volume of the scene (or of a folder) in one process.
See the <a href="{url}/blob/main/docs/user-guide.md">user guide</a>.
""").format(url=REPOSITORY_URL)
        self.parent.acknowledgementText = _("""
FA-GAN super-resolution extension by the FA-GAN SuperRes team. Module layout follows the Slicer
scripted module template by Jean-Christophe Fillion-Robin (Kitware), Andras Lasso (PerkLab) and Steve Pieper (Isomics).
""")


#
# FAGANSuperResParameterNode
#


@parameterNodeWrapper
class FAGANSuperResParameterNode:
    """Module state, saved with the scene.

    checkpointPath - selected checkpoint file; empty: the bundled default for the scale and acquisition.
    targetSpacing, sliceThickness - thick slices -> isotropic, in mm; prefilled from the input volume
      (0: let the engine take them from the volume).
    tileSize, fitIterations - 0: whole slices, the engine's default iteration count.
    ensemble - self-ensemble members (flipped/rotated copies averaged); 0: the engine's default.
    applyToAll - Apply processes every volume of the scene (or of the selected folder).
    outputVolume - None: a new result node per run (reset to None after every run that made a result).
    sideBySide - show input and result in two linked slice views after a run.
    secondStack, thirdStack, stackReference - Combine thick stacks: the input volume is the first stack;
      the third is optional; the reference (1-3) gives the result its orientation.
    enforceConsistency, adapt - FA-GAN in-plane: project onto the measured data, adapt the model to the scan
      (both on, the engine's defaults; unchecked turns them off).
    nanToZero - non-finite (NaN or Inf) input voxels become 0 (the engine's 'zero' NaN policy); unchecked (default)
      the engine refuses such an input.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    mode: Annotated[str, Choice(list(PANEL_MODES))] = "in-plane"
    scale: Annotated[int, Choice(list(SCALES))] = 4
    method: Annotated[str, Choice(list(METHODS))] = "fagan"
    acquisition: Annotated[str, Choice(list(ACQUISITIONS))] = "kspace"
    checkpointPath: str = ""
    plane: Annotated[str, Choice(list(PLANES))] = "auto"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    targetSpacing: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    sliceThickness: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    batchSize: Annotated[int, WithinRange(1, 256)] = 8
    tileSize: Annotated[int, WithinRange(0, 4096)] = 0
    fitIterations: Annotated[int, WithinRange(0, 100000)] = 0
    ensemble: Annotated[int, Choice(list(ENSEMBLES))] = 0
    consistencyMap: bool = True
    enforceConsistency: bool = True
    adapt: bool = True
    nanToZero: bool = False
    applyToAll: bool = False
    outputVolume: vtkMRMLScalarVolumeNode
    sideBySide: bool = False
    secondStack: vtkMRMLScalarVolumeNode
    thirdStack: vtkMRMLScalarVolumeNode
    stackReference: Annotated[int, Choice([1, 2, 3])] = 1


#
# FAGANSuperResWidget
#


class FAGANSuperResWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Module GUI; see ScriptedLoadableModuleWidget in Slicer's Base/Python/slicer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[FAGANSuperResLogic] = None
        self._parameterNode: Optional[FAGANSuperResParameterNode] = None
        self._parameterNodeGuiTag = None
        self._job: Optional[SuperResolutionJob] = None
        self.lastJob: Optional[Any] = None  # the last finished run (its result, maps, device)
        self._deviceProbe: Optional[EngineProcess] = None
        self._deviceInfo: Optional[engine.DeviceInfo] = None
        self._checkpointKey: Optional[Any] = None
        self._checkpoints: List[Any] = []
        self._exitingJobs: List[Any] = []  # cancelled, engine still exiting
        self._prefilledInputID: Optional[str] = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FAGANSuperRes.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._addStackRows()

        self.logic = FAGANSuperResLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.checkpointComboBox.connect("activated(int)", self.onCheckpointActivated)
        self.ui.batchFolderComboBox.connect("currentItemChanged(vtkIdType)", lambda item: self._updateApplyButton())
        for event in (slicer.mrmlScene.NodeAddedEvent, slicer.mrmlScene.NodeRemovedEvent):
            self.addObserver(slicer.mrmlScene, event, lambda caller, event: self._updateApplyButton())
        self.ui.progressBar.setVisible(False)

        self.initializeParameterNode()
        self.startDeviceProbe()

    def _addStackRows(self) -> None:
        """The CODE_ROWS (Combine thick stacks) as ``<name>Label`` and ``<name>ComboBox``, below the mode selector."""
        layout = self.ui.inputsCollapsibleButton.layout()
        texts = stackRowTexts()
        for row, (name, widgetClass) in enumerate(CODE_ROWS.items(), start=2):
            label, tip = texts[name]
            field = slicer.qMRMLNodeComboBox() if widgetClass == "qMRMLNodeComboBox" else qt.QComboBox()
            if widgetClass == "qMRMLNodeComboBox":
                field.showChildNodeTypes = False
                field.noneEnabled = True
                field.noneDisplay = _("(none)")
                field.addEnabled = False
                field.removeEnabled = False
                field.setMRMLScene(slicer.mrmlScene)
            field.toolTip = tip
            labelWidget = qt.QLabel(label)
            layout.insertRow(row, labelWidget, field)
            setattr(self.ui, name + "Label", labelWidget)
            setattr(self.ui, name + "ComboBox", field)

    def cleanup(self) -> None:
        """Called when the application closes: stop background processes."""
        if self._job:
            self._job.cancel(keepFinished=False)
        if self._deviceProbe:
            self._deviceProbe.kill()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        if self._job:
            self._job.cancel(keepFinished=False)
            self._onJobDone(sceneClosing=True)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the Lib package too, so code changes take effect (developer mode)."""
        for name in [m for m in sys.modules if m == "FAGANSuperResLib" or m.startswith("FAGANSuperResLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = defaultInputVolume(slicer.mrmlScene)
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[FAGANSuperResParameterNode]) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        self._checkpointKey = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(
                {name: getattr(self.ui, widget) for name, widget in PARAMETER_WIDGETS.items()})
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            # Values saved with the scene were prefilled (or edited) for this input already.
            input = self._parameterNode.inputVolume
            self._prefilledInputID = input.GetID() if input and self._parameterNode.targetSpacing > 0 else None
            self._updateDeviceLabels()
            self._updateModeLabels()
            self._updateGUI()

    def _disconnectParameterNode(self) -> None:
        """Remove the GUI connection (by its tag) and the observer of the current parameter node."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNodeGuiTag = None
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def isRunning(self) -> bool:
        return self._job is not None

    #
    # GUI state
    #

    def _updateGUI(self, caller=None, event=None) -> None:
        """Refresh what the connected widgets cannot show by themselves."""
        p = self._parameterNode
        if not p:
            return
        self._prefillThroughPlane()
        if self._checkpointKey != (p.scale, p.acquisition):
            self._refreshCheckpoints()
        else:
            self._showCheckpointSelection()
        throughPlane, stacks = p.mode == "through-plane", p.mode == STACKS_MODE
        for rows, visible in ((IN_PLANE_ROWS, p.mode == "in-plane"), (THROUGH_PLANE_ROWS, throughPlane), (CODE_ROWS, stacks)):
            for name in rows:
                self._showRow(name, visible)
        self.ui.inputVolumeLabel.text = _("First stack:") if stacks else _("Input volume:")
        self.ui.fitIterationsSpinBox.enabled = throughPlane or stacks
        self.ui.fitIterationsSpinBox.specialValueText = _("no FA-GAN prior") if stacks else _("engine default")
        self.ui.fitIterationsSpinBox.toolTip = fitTooltips()[stacks]
        usesCheckpoint = p.method == "fagan" and p.mode == "in-plane"
        self.ui.checkpointComboBox.enabled = usesCheckpoint and not self._job
        self.ui.checkpointInfoLabel.setVisible(usesCheckpoint)
        self.ui.acquisitionComboBox.enabled = p.method == "fagan"
        self.ui.ensembleComboBox.enabled = throughPlane or usesCheckpoint
        for widgetName, name in OPTION_CHECKBOXES.items():
            widget = getattr(self.ui, widgetName)
            widget.enabled = self._engineOffers(name)
            if not widget.enabled:
                widget.toolTip = _("Needs a newer FA-GAN engine")
        # what only FA-GAN in-plane (or the thick-slice fit) uses is greyed out where it would do nothing
        faganInPlane = p.mode == "in-plane" and p.method == "fagan"
        self.ui.enforceConsistencyCheckBox.enabled = self.ui.enforceConsistencyCheckBox.enabled and (faganInPlane or throughPlane)
        self.ui.adaptCheckBox.enabled = faganInPlane
        self.ui.tileSizeSpinBox.enabled = faganInPlane
        self.ui.batchFolderComboBox.enabled = p.applyToAll
        self.ui.outputSelector.enabled = not p.applyToAll
        self._updateApplyButton()

    def _updateApplyButton(self) -> None:
        """Apply is enabled when the settings can run (its tooltip says why not); Cancel while running."""
        if not self._parameterNode:
            return
        if self._job:
            self.ui.applyButton.enabled = True
            return
        problem = self._applyProblem()
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Super-resolve in the background")

    def _showRow(self, name: str, visible: bool) -> None:
        """Show or hide a form row: the ``<name>Label`` and its field."""
        for suffix in ("Label", "ComboBox", "SpinBox"):
            widget = getattr(self.ui, name + suffix, None)
            if widget is not None:
                widget.setVisible(visible)

    @staticmethod
    def _engineSupports(*flags: str) -> bool:
        try:
            return engine.engineSupports(*flags)
        except Exception:  # engine missing or broken: the run itself will say why
            return False

    @staticmethod
    def _engineOffers(name: str) -> bool:
        """Whether the engine has the flag of a RunOptions field or map kind (``options.engineFlag``)."""
        try:
            return engine.engineSupports(engineFlag(name))
        except Exception:  # engine missing or broken: the run itself will say why
            return False

    def _prefillThroughPlane(self) -> None:
        """Target spacing and slice thickness from a newly selected input (finest in-plane spacing;
        DICOM Slice Thickness when Slicer's DICOM database knows the series, else 0: the engine decides)."""
        p = self._parameterNode
        node = p.inputVolume
        if not node or node.GetID() == self._prefilledInputID or node.GetImageData() is None:
            return
        self._prefilledInputID = node.GetID()
        target, thickness, source = throughPlaneDefaults(node, dicomInstanceValue())
        with slicer.util.NodeModify(p):
            p.targetSpacing = round(target, 3)
            p.sliceThickness = round(thickness, 3)
        if source == "DICOM":
            self.ui.sliceThicknessSpinBox.toolTip = _("Acquired slice thickness (here from the DICOM Slice Thickness of the series).")
        else:
            self.ui.sliceThicknessSpinBox.toolTip = _(
                "Acquired slice thickness. 'from the volume': the engine estimates it from the scan (it reports the value it "
                "used), else takes the slice spacing. Set it when you know the slices are thinner than their spacing."
            )

    def _applyProblem(self) -> Optional[str]:
        p = self._parameterNode
        if p.applyToAll:
            if not self._engineSupports("--output-dir"):
                return _("This FA-GAN engine has no batch mode")
            if not batchInputVolumes(slicer.mrmlScene, self.ui.batchFolderComboBox.currentItem() or None):
                return _("No grayscale volume to process in the scene or folder")
        elif not p.inputVolume:
            return _("Select an input volume")
        elif p.outputVolume and p.outputVolume == p.inputVolume:
            return _("The output volume must differ from the input volume")
        if p.mode == STACKS_MODE:
            if p.applyToAll:
                return _("Apply to all does not combine stacks: uncheck it")
            if not self._engineSupports("--stacks"):
                return _("This FA-GAN engine cannot combine stacks yet")
            if p.stackReference > 1 and not self._engineSupports("--reference"):
                return _("This FA-GAN engine takes the first stack as the reference")
            try:
                checkStackNodes(self.stackNodes(), p.stackReference - 1, p.outputVolume)
            except ValueError as exc:
                return str(exc)
        elif p.mode == "through-plane":
            if not self._engineSupports("--through-plane"):
                return _("This FA-GAN engine has no thick-slice mode yet")
            if p.ensemble and p.ensemble not in THROUGH_PLANE_ENSEMBLES:
                return _("Thick slices average at most {members} flipped copies: choose fewer in Self-ensemble").format(
                    members=max(THROUGH_PLANE_ENSEMBLES))
        elif p.method == "fagan" and not p.checkpointPath:
            return _("No checkpoint for x{scale}: use Browse... or an interpolation method").format(scale=p.scale)
        return None

    def _refreshCheckpoints(self) -> None:
        """Fill the checkpoint selector with checkpoints made for the current scale, plus Browse...
        A new scale or acquisition selects its bundled default (the engine's choice for them)."""
        p = self._parameterNode
        acquisitionChanged = self._checkpointKey is not None and self._checkpointKey[1] != p.acquisition
        self._checkpointKey = (p.scale, p.acquisition)
        try:
            self._checkpoints = availableCheckpoints(p.scale, userCheckpointRegistry())
        except Exception as exc:  # engine missing or broken: show why instead of failing setup
            logging.error(f"Cannot list checkpoints: {exc}")
            self._checkpoints = []
        paths = [str(info.path) for info in self._checkpoints]
        selected = [info for info in self._checkpoints if str(info.path) == p.checkpointPath]
        if not selected or (acquisitionChanged and selected[0].bundled):
            with slicer.util.NodeModify(p):
                p.checkpointPath = self._defaultCheckpoint(p.scale, p.acquisition, paths)
        self._showCheckpointSelection()

    @staticmethod
    def _defaultCheckpoint(scale: int, acquisition: str, paths: List[str]) -> str:
        """The engine's bundled default for the scale and acquisition, if listed; else the first."""
        try:
            from fagan_engine.models.checkpoint import default_checkpoint

            default = default_checkpoint(scale, acquisition)
        except Exception:
            default = None
        if default is not None and str(default) in paths:
            return str(default)
        return paths[0] if paths else ""

    def _showCheckpointSelection(self) -> None:
        combo = self.ui.checkpointComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for info in self._checkpoints:
            combo.addItem(info.label, str(info.path))
        if not self._checkpoints:
            combo.addItem(_("(no checkpoint for x{scale})").format(scale=self._parameterNode.scale), "")
        combo.addItem(_("Browse..."), BROWSE)
        index = combo.findData(self._parameterNode.checkpointPath)
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(wasBlocked)
        selected = [info for info in self._checkpoints if str(info.path) == self._parameterNode.checkpointPath]
        self.ui.checkpointInfoLabel.text = selected[0].describe() if selected else ""

    def onCheckpointActivated(self, index: int) -> None:
        data = self.ui.checkpointComboBox.itemData(index)
        if data != BROWSE:
            self._parameterNode.checkpointPath = data or ""
            return
        path = qt.QFileDialog.getOpenFileName(
            self.parent, _("Select an FA-GAN checkpoint"), "", _("FA-GAN checkpoint (*.safetensors)"))
        if path:
            self.selectCheckpointFile(path)
        else:
            self._showCheckpointSelection()

    def selectCheckpointFile(self, path: str) -> None:
        """Validate a user checkpoint, remember it, and select it (switching the scale to the checkpoint's)."""
        try:
            info = readCheckpoint(path)
        except ValueError as exc:
            slicer.util.errorDisplay(_("This file cannot be used as a checkpoint:\n{reason}").format(reason=exc))
            self._showCheckpointSelection()
            return
        userCheckpointRegistry().add(info.path)
        with slicer.util.NodeModify(self._parameterNode) as p:
            p.scale = info.scale
            p.checkpointPath = str(info.path.resolve())
        self._refreshCheckpoints()

    #
    # Devices
    #

    def startDeviceProbe(self) -> None:
        """Find out in the background whether a GPU is usable (importing torch takes seconds). Runs at
        setup and again after an install, so a freshly installed PyTorch is seen without a restart."""
        if self._deviceProbe:
            self._deviceProbe.kill()
        self._deviceInfo = None
        self._updateDeviceLabels()
        try:
            self._deviceProbe = EngineProcess(engine.deviceProbeCommand(), env=engine.engineEnvironment())
            self._deviceProbe.start()
        except Exception as exc:
            logging.warning(f"Cannot check the available devices: {exc}")
            self._deviceProbe = None
            return
        self._timer.start()

    def _updateModeLabels(self) -> None:
        labels = modeLabels()
        for index, mode in enumerate(PANEL_MODES):
            self.ui.modeComboBox.setItemText(index, labels[mode])
        for index, label in enumerate(stackLabels()):
            self.ui.stackReferenceComboBox.setItemText(index, label)
        labels = ensembleLabels()
        for index, members in enumerate(ENSEMBLES):
            self.ui.ensembleComboBox.setItemText(index, labels[members])

    def stackNodes(self) -> List[Any]:
        """Combine thick stacks: the input volume, the second stack and the third (when selected)."""
        p = self._parameterNode
        return [p.inputVolume, p.secondStack] + ([p.thirdStack] if p.thirdStack else [])

    def _updateDeviceLabels(self) -> None:
        combo = self.ui.deviceComboBox
        gpu = self._deviceInfo.gpuLabel() if self._deviceInfo else _("GPU (checking...)")
        labels = {"auto": _("Auto (GPU if usable, else CPU)"), "cuda": gpu, "cpu": _("CPU")}
        for index, device in enumerate(DEVICES):
            combo.setItemText(index, labels[device])

    #
    # Run
    #

    def onApplyButton(self) -> None:
        """Apply starts a run; while running the same button cancels it."""
        if self._job:
            self._job.cancel()
            self._onJobDone()
            return
        p = self._parameterNode
        if p.device == "cuda" and self._deviceInfo and not self._deviceInfo.gpuUsable:
            slicer.util.errorDisplay(_("{gpu}. Select Auto or CPU.").format(gpu=self._deviceInfo.gpuLabel()))
            return
        with OneLineErrors(slicer.util.errorDisplay, _("FA-GAN cannot run yet.")) as errors:
            ready = self.logic.ensureDependencies(dependencyTask(p.mode, p.method), onInstalled=self.startDeviceProbe)
        if errors.failed or not ready:
            return
        volumes = batchInputVolumes(slicer.mrmlScene, self.ui.batchFolderComboBox.currentItem() or None) \
            if p.applyToAll else [p.inputVolume]
        question = self._longCpuRunQuestion(volumes)
        # a self-test answers no dialog (Slicer's testing mode makes confirmOkCancelDisplay return False): it goes on
        if question and not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(question):
            return
        self.ui.warningsLabel.text = ""
        self.ui.summaryLabel.text = ""
        with OneLineErrors(slicer.util.errorDisplay, _("Failed to start super-resolution.")), slicer.util.WaitCursor():
            if p.mode == STACKS_MODE:
                self._job = self.logic.combineStacks(
                    self.stackNodes(), p.outputVolume, p.stackReference - 1, device=p.device,
                    fitIterations=p.fitIterations or None, consistencyMaps=self.consistencyMapWanted(),
                    nanPolicy=self.nanPolicy(), waitForCompletion=False)
            elif p.applyToAll:
                options, consistencyMap = self.runOptions(), self.consistencyMapWanted()
                self._job = self.logic.processAll(volumes, options, waitForCompletion=False, consistencyMap=consistencyMap)
            else:
                options, consistencyMap = self.runOptions(), self.consistencyMapWanted()
                self._job = self.logic.processWithOptions(p.inputVolume, p.outputVolume, options,
                                                          waitForCompletion=False, consistencyMap=consistencyMap)
        if not self._job:
            return
        self.ui.logTextEdit.appendPlainText(" ".join(self._job.process.command))
        self._setRunning(True)
        self._timer.start()

    def _longCpuRunQuestion(self, volumes: List[Any]) -> Optional[str]:
        """The question to ask before a long FA-GAN run on the CPU (None: no need to ask)."""
        p = self._parameterNode
        if p.mode == STACKS_MODE:  # long only with the FA-GAN prior (a through-plane fit per stack)
            return engine.longCpuRunWarning(0, "fagan", "through-plane", 1, p.device, self._deviceInfo) if p.fitIterations else None
        try:
            options = self.runOptions()
            voxels = sum(outputVoxels(node, options) for node in volumes)
        except Exception:  # invalid settings: the run itself says why
            return None
        return engine.longCpuRunWarning(voxels, options.method, options.mode, options.scale, p.device, self._deviceInfo,
                                        fitIterations=options.fit_iterations,
                                        ensembleMembers=getattr(options, "ensemble_members", 1),  # an older engine: none
                                        adaptSteps=getattr(options, "adapt_steps", 0) or 0)

    def runOptions(self) -> Any:
        """The run's engine RunOptions from the panel; options whose flag the engine lacks are left out."""
        p = self._parameterNode
        usesNetwork = p.mode == "through-plane" or p.method == "fagan"  # the device is the network's (interpolation: CPU)
        fields = dict(mode=p.mode, device=p.device if usesNetwork else "auto", batch_size=p.batchSize, nan_policy=self.nanPolicy())
        if p.ensemble and (p.mode == "through-plane" or (p.mode == "in-plane" and p.method == "fagan")):  # 0: engine default
            fields.update(ensemble=p.ensemble)
        if self._engineOffers(OPTION_CHECKBOXES["enforceConsistencyCheckBox"]):
            fields.update(enforce_consistency=None if p.enforceConsistency else False)  # None: the engine's default (on for FA-GAN)
        if p.mode == "in-plane":
            fields.update(scale=p.scale, method=p.method, acquisition=p.acquisition, plane=p.plane,
                          adapt_iterations=None if p.adapt or p.method != "fagan" else 0,
                          checkpoint=(p.checkpointPath or None) if p.method == "fagan" else None,
                          tile_size=(p.tileSize or None) if p.method == "fagan" else None)
        else:
            target, thickness = p.targetSpacing, p.sliceThickness
            if p.applyToAll:  # the values prefilled from the selected volume describe it, not the others
                target, thickness = batchThroughPlaneValues(p.inputVolume, target, thickness, dicomInstanceValue())
            fields.update(target_spacing=target or None, slice_thickness=thickness or None, fit_iterations=p.fitIterations or None)
        return engineRunOptions(**fields)

    def consistencyMapWanted(self) -> bool:
        """Whether the run makes a consistency map (the checkbox, when the engine offers it)."""
        return self._parameterNode.consistencyMap and self._engineOffers(OPTION_CHECKBOXES["consistencyMapCheckBox"])

    def nanPolicy(self) -> str:
        """The engine's NaN policy: "zero" (non-finite voxels become 0) when the checkbox is checked and the engine
        offers it, else "error" (the engine's default: such an input is refused)."""
        offered = self._engineOffers(OPTION_CHECKBOXES["nanToZeroCheckBox"])
        return "zero" if self._parameterNode.nanToZero and offered else "error"

    def onPollTimer(self) -> None:
        """Non-blocking poll of the background processes (device probe, super-resolution run)."""
        if self._deviceProbe:
            self._deviceProbe.poll()
            if self._deviceProbe.finished:
                self._deviceInfo = engine.parseDeviceProbe(self._deviceProbe.logLines)
                self._deviceProbe = None
                self._updateDeviceLabels()
        if self._job:
            self._job.poll()
            for line in self._job.takeLogLines():
                self.ui.logTextEdit.appendPlainText(line)
            self.ui.progressBar.value = round(100 * self._job.fraction)
            self.ui.statusLabel.text = self._job.status
            self.ui.warningsLabel.text = "\n".join(_("Warning: {line}").format(line=w) for w in self._job.warnings)
            if self._job.done:
                self._onJobDone()
        for job in self._exitingJobs:
            job.poll()
        self._exitingJobs = [job for job in self._exitingJobs if job.process.exiting]
        if not self._job and not self._deviceProbe and not self._exitingJobs:
            self._timer.stop()

    def _onJobDone(self, sceneClosing: bool = False) -> None:
        job, self._job = self._job, None
        self.lastJob = job
        for line in job.takeLogLines():
            self.ui.logTextEdit.appendPlainText(line)
        if job.process.exiting:  # never for an engine that failed to start: it has nothing to wait for
            self._exitingJobs.append(job)
            self._timer.start()
        self._setRunning(False)
        self.ui.statusLabel.text = job.status
        if sceneClosing:
            return
        self.ui.warningsLabel.text = "\n".join(_("Warning: {line}").format(line=w) for w in job.warnings)
        if job.state in ("succeeded", "partial"):
            self._parameterNode.outputVolume = None  # the next Apply makes a new result, never overwrites this one
            self.ui.summaryLabel.text = job.summaryText()
            self.logic.showResult(job, sideBySide=self._parameterNode.sideBySide)
        if job.state in ("failed", "partial") and job.error:
            logging.error("FA-GAN engine output:\n" + "\n".join(job.process.logLines[-30:]))
            slicer.util.errorDisplay(_("Super-resolution failed: {reason}").format(reason=job.error))

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        for widget in (self.ui.inputsCollapsibleButton, self.ui.advancedCollapsibleButton, self.ui.trustCollapsibleButton,
                       self.ui.batchCollapsibleButton, self.ui.outputsCollapsibleButton):
            widget.enabled = not running
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self._updateGUI()


#
# FAGANSuperResLogic
#


class FAGANSuperResLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: parameter node, dependencies, showing results. The computation is
    FAGANSuperResLib.SuperResolutionLogic (Qt-free, usable from scripts)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> FAGANSuperResParameterNode:
        return FAGANSuperResParameterNode(super().getParameterNode())

    def process(self, inputVolumeNode, outputVolumeNode, scale: int, checkpoint: Optional[str] = None,
                plane: str = "auto", device: str = "auto", method: str = "fagan", waitForCompletion: bool = True,
                **kwargs: Any) -> SuperResolutionJob:
        """See FAGANSuperResLib.SuperResolutionLogic.process; temporary files go to Slicer's temporary folder."""
        return self._lib().process(inputVolumeNode, outputVolumeNode, scale, checkpoint, plane, device, method,
                                   waitForCompletion, **kwargs)

    def processWithOptions(self, inputVolumeNode, outputVolumeNode, options: Any,
                           waitForCompletion: bool = True, consistencyMap: bool = False) -> SuperResolutionJob:
        """``process`` with ``options``, a ``fagan_engine.util.options.RunOptions`` (see FAGANSuperResLib.SuperResolutionLogic.processWithOptions)."""
        return self._lib().processWithOptions(inputVolumeNode, outputVolumeNode, options, waitForCompletion, consistencyMap)

    @staticmethod
    def combineStacks(stackNodes, outputVolumeNode=None, reference: int = 0, **kwargs: Any) -> StacksJob:
        """Combine thick stacks (2-3 volume nodes) into one isotropic volume; see FAGANSuperResLib.stacks.StacksLogic.process."""
        kwargs.setdefault("instanceValue", dicomInstanceValue())
        return StacksLogic(temporaryDirectory=slicer.app.temporaryPath).process(stackNodes, outputVolumeNode, reference, **kwargs)

    @staticmethod
    def _lib() -> SuperResolutionLogic:
        return SuperResolutionLogic(temporaryDirectory=slicer.app.temporaryPath)

    @staticmethod
    def processAll(volumeNodes, options: Any, waitForCompletion: bool = True, consistencyMap: bool = False):
        """Apply to all volumes with ``options`` (a RunOptions): one background engine process for ``volumeNodes``
        (see BatchLogic); in thick-slice mode each volume's DICOM Slice Thickness comes from Slicer's DICOM database."""
        return BatchLogic(temporaryDirectory=slicer.app.temporaryPath).process(volumeNodes, options, waitForCompletion,
                                                                               consistencyMap, dicomInstanceValue())

    @staticmethod
    def showResult(job, sideBySide: bool = False) -> None:
        """Show a finished job's result in the slice views, rotated to its planes, with its trust map as
        a colour overlay (and its colour legend) when there is one. ``sideBySide``: the input on the left
        and the result on the right, in Slicer's side-by-side layout with linked views (a single run
        whose input still exists)."""
        inputNode = getattr(job, "inputVolumeNode", None)
        if sideBySide and inputNode is not None and inputNode.GetScene() is slicer.mrmlScene:
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
            showSideBySide(slicer.mrmlScene, inputNode, job.outputVolumeNode, job.mapNodes)
            slicer.util.resetSliceViews()
            return
        layers = job.overlayLayers()
        if layers:
            slicer.util.setSliceViewerLayers(**layers, fit=True)

    @staticmethod
    def ensureDependencies(task: str = "fagan", askConfirmation: bool = True,
                           onInstalled: Optional[Callable[[], None]] = None) -> bool:
        """Install what the engine needs for ``task`` (fagan, bicubic or train), after asking.

        torch (at least engine.TORCH_REQUIREMENT) comes from the PyTorch extension (PyTorchUtils);
        other packages from pip. ``onInstalled`` is called after anything was installed.
        Returns False if the user declined; raises DependencyError (one line) if an install
        failed or the PyTorch extension is missing. The scene is not touched.
        """

        def confirm(question: str) -> bool:
            return not askConfirmation or slicer.util.confirmOkCancelDisplay(question)

        def pipInstall(requirements: str) -> None:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(requirements)

        def installTorch() -> Any:
            import PyTorchUtils

            return PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=askConfirmation, torchVersionRequirement=engine.TORCH_REQUIREMENT)

        return dependencies.ensureDependencies(task, confirm, pipInstall, installTorch, onInstalled)


#
# FAGANSuperResTest
#


class FAGANSuperResTest(ScriptedLoadableModuleTest):
    """Module self-test on a synthetic oblique MR volume, offline and on CPU.

    Bicubic and the failure test always run: they need nothing beyond Slicer. The FA-GAN test runs
    when its dependencies are importable (torch, or ONNX Runtime, plus the engine's packages), or
    when the environment variable FAGAN_SELFTEST_INSTALL_DEPENDENCIES=1 allows installing them.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BicubicKeepsGeometry()
        self.setUp()
        self.test_LanczosCarriesProvenance()
        self.setUp()
        self.test_FailureLeavesSceneUnchanged()
        self.setUp()
        self.test_SuperResolveBundledCheckpoint()
        self.setUp()
        self.test_ThickSlicesToIsotropic()

    def test_BicubicKeepsGeometry(self):
        self.delayDisplay("Bicubic x2 of a synthetic MR volume (no PyTorch needed)")
        inputNode = createSyntheticMRVolume()
        self.assertTrue(FAGANSuperResLogic.ensureDependencies("bicubic"))
        superResolveX2(self, inputNode, method="bicubic")
        self.delayDisplay("Test passed")

    def test_LanczosCarriesProvenance(self):
        self.delayDisplay("Lanczos x2 (no PyTorch needed): the result carries the research-use notice")
        inputNode = createSyntheticMRVolume()
        job = superResolveX2(self, inputNode, method="lanczos")
        self.assertEqual(job.outputVolumeNode.GetAttribute("FAGAN.Notice"), "research use, not for diagnosis")
        self.assertTrue(job.outputVolumeNode.GetAttribute("FAGAN.EngineVersion"))
        self.assertIsNotNone(job.summaryTableNode)
        self.delayDisplay("Test passed")

    def test_ThickSlicesToIsotropic(self):
        if skipUnlessReady(self, "fit"):
            return
        if not engine.engineSupports("--through-plane"):
            self.delayDisplay("Skipped (through-plane): this engine has no --through-plane")
            return
        self.delayDisplay("Thick slices -> isotropic on a small synthetic volume (CPU, a few fit iterations)")
        inputNode = createSyntheticMRVolume("thick")
        job = FAGANSuperResLogic().process(inputNode, None, 2, device="cpu", mode="through-plane", fit_iterations=2)
        self.assertEqual(job.state, "succeeded")
        output = job.outputVolumeNode
        self.assertTrue(output.GetName().startswith("thick_iso") and output.GetName().endswith("mm"))
        np.testing.assert_allclose(physicalBox(output), physicalBox(inputNode), atol=1e-4)
        spacing = output.GetSpacing()
        self.assertLess(max(spacing) / min(spacing), 1.5, "nearly isotropic")
        self.assertTrue(any(event.get("phase") == "fit" for event in job.process.events))
        self.delayDisplay("Test passed")

    def test_SuperResolveBundledCheckpoint(self):
        if skipUnlessReady(self, "fagan"):
            return
        self.delayDisplay("Super-resolving a synthetic MR volume x2 with the bundled checkpoint on CPU")
        inputNode = createSyntheticMRVolume()
        superResolveX2(self, inputNode)
        self.delayDisplay("Test passed")

    def test_FailureLeavesSceneUnchanged(self):
        self.delayDisplay("A bad checkpoint fails cleanly")
        inputNode = createSyntheticMRVolume()
        before = slicer.mrmlScene.GetNumberOfNodes()
        badCheckpoint = slicer.app.temporaryPath + "/not-a-checkpoint.safetensors"
        with open(badCheckpoint, "wb") as stream:
            stream.write(b"not a checkpoint")
        with self.assertRaises(RuntimeError):
            FAGANSuperResLogic().process(inputNode, None, 2, checkpoint=badCheckpoint, device="cpu")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Test passed")


def dicomInstanceValue():
    """Slicer's DICOM database lookup ``instanceValue(sopInstanceUID, tag)``, or None when no database is open."""
    database = getattr(slicer, "dicomDatabase", None)
    return database.instanceValue if database is not None and database.isOpen else None


def dependencyTask(mode: str, method: str) -> str:
    """What a run needs installed: the thick-slice fit and combining stacks need torch (not the training data's nilearn),
    FA-GAN inference needs torch or ONNX Runtime, interpolation (bicubic, Lanczos) needs nothing beyond Slicer."""
    if mode in ("through-plane", STACKS_MODE):
        return "fit"
    return "fagan" if method == "fagan" else "bicubic"


def skipUnlessReady(test: ScriptedLoadableModuleTest, task: str) -> bool:
    """For heavy self-tests: True (after saying why) if ``task`` cannot run here; otherwise make
    sure its dependencies are there (installing them only when the opt-in variable is set)."""
    reason = dependencies.selfTestSkipReason(task)
    if reason:
        logging.warning(f"FA-GAN self-test of {task} skipped: {reason}")
        test.delayDisplay(f"Skipped ({task}): {reason}")
        return True
    if os.environ.get(dependencies.SELFTEST_INSTALL_VARIABLE) == "1":
        test.assertTrue(FAGANSuperResLogic.ensureDependencies(task, askConfirmation=False))
    return False


def superResolveX2(test: ScriptedLoadableModuleTest, inputNode, **options: Any) -> SuperResolutionJob:
    """Super-resolve ``inputNode`` x2 on the CPU (``options``: further ``process`` keywords) and check the result."""
    job = FAGANSuperResLogic().process(inputNode, None, 2, device="cpu", **options)
    test.assertEqual(job.state, "succeeded")
    checkSuperResolved(test, inputNode, job.outputVolumeNode, 2)
    return job


def checkSuperResolved(test: ScriptedLoadableModuleTest, inputNode, output, scale: int) -> None:
    """The result has ``scale`` times the in-plane voxels, the same physical box and similar content."""
    inDims = inputNode.GetImageData().GetDimensions()
    test.assertEqual(output.GetImageData().GetDimensions(), (inDims[0] * scale, inDims[1] * scale, inDims[2]))
    expectedSpacing = np.array(inputNode.GetSpacing()) / np.array([scale, scale, 1])
    np.testing.assert_allclose(output.GetSpacing(), expectedSpacing, atol=1e-6)
    np.testing.assert_allclose(physicalBox(output), physicalBox(inputNode), atol=1e-4)
    inArray = slicer.util.arrayFromVolume(inputNode).astype(float)
    outArray = slicer.util.arrayFromVolume(output).astype(float)
    test.assertTrue(np.isfinite(outArray).all())
    downsampled = outArray.reshape(inDims[2], inDims[1], scale, inDims[0], scale).mean(axis=(2, 4))
    test.assertGreater(np.corrcoef(downsampled.ravel(), inArray.ravel())[0, 1], 0.9)


def createSyntheticMRVolume(name: str = "SyntheticMR", shape: Tuple[int, int, int] = (12, 48, 40)):
    """A smooth head-like phantom (ellipsoids) with anisotropic spacing and an oblique orientation;
    ``shape`` (slices, rows, columns) resamples the same phantom on more or fewer voxels."""
    k, j, i = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(float)
    k, j, i = k * 12 / shape[0], j * 48 / shape[1], i * 40 / shape[2]
    shell = ((i - 20) / 17) ** 2 + ((j - 24) / 21) ** 2 + ((k - 6) / 7) ** 2
    core = ((i - 18) / 8) ** 2 + ((j - 26) / 10) ** 2 + ((k - 6) / 5) ** 2
    array = 400.0 * (shell < 1) + 300.0 * (core < 1) + 60.0 * np.sin(i / 3.0) * (shell < 1)
    a, b = 0.35, -0.2  # rotations about S and R (radians)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.array(
        [[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ijkToRas = np.eye(4)
    ijkToRas[:3, :3] = rotation @ np.diag([0.95, 1.15, 2.9])
    ijkToRas[:3, 3] = [10.5, -20.25, 35.125]
    return slicer.util.addVolumeFromArray(array.astype(np.float32), ijkToRAS=ijkToRas, name=name)


def createSyntheticStacks() -> List[Any]:
    """Two 4 mm thick-slice stacks of one 48 mm phantom (axial, and coronal tilted by 15 degrees; the engine's
    stack simulation), as right-handed volume nodes (as Slicer's readers load volumes)."""
    import SimpleITK as sitk
    from FAGANSuperResLib.engine import ensureEngineImportable
    from FAGANSuperResLib.volumes import updateVolumeNodeFromImage

    ensureEngineImportable()
    from fagan_engine.through_plane.stack_simulation import orientation, phantom, simulate_stack

    volume = phantom(48, seed=0)
    nodes = []
    for name, plane, tilt in (("Axial", "axial", 0.0), ("Coronal", "coronal", 15.0)):
        stack = simulate_stack(volume, orientation(plane, tilt), 4.0, 4.0, sitk.Euler3DTransform())
        if np.linalg.det(np.reshape(stack.GetDirection(), (3, 3))) < 0:
            stack = sitk.Flip(stack, [False, False, True])
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        updateVolumeNodeFromImage(node, stack)
        node.CreateDefaultDisplayNodes()
        nodes.append(node)
    return nodes


def physicalBox(volumeNode) -> List[List[float]]:
    """RAS positions of the 8 outer voxel corners."""
    from FAGANSuperResLib.volumes import physicalCornersRAS

    return [list(corner) for corner in physicalCornersRAS(volumeNode)]
