import logging
import sys
import tempfile
from typing import Annotated, Optional

import qt
import slicer
import vtk
from FAGANSuperResLib.checkpoints import userCheckpointRegistry
from FAGANSuperResLib.errors import OneLineErrors
from FAGANTrainingLib import (
    ACQUISITIONS,
    BUNDLED,
    PRESETS,
    RunState,
    TrainingPlots,
    TrainingRun,
    TrainingSettings,
    formatEta,
    nodesInScene,
    plotsInScene,
    prepareTraining,
)
from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

POLL_INTERVAL_MS = 500
REPOSITORY_URL = "https://github.com/fagan-superres/SlicerFAGANSuperResolution"
CONTRIBUTORS = ["FA-GAN SuperRes team (fagan-superres)"]
# Parameter -> widget, connected with connectParametersToGui (which returns its tag on every
# Slicer version; connectGui returns None before 5.10, so its connection could not be removed).
PARAMETER_WIDGETS = {"validationShare": "validationShareSpinBox", "scale": "scaleComboBox",
                     "preset": "presetComboBox", "iterations": "iterationsSpinBox", "patchSize": "patchSizeSpinBox",
                     "batchSize": "batchSizeSpinBox", "device": "deviceComboBox",
                     "acquisition": "acquisitionComboBox", "kspaceWeight": "kspaceWeightSpinBox",
                     "bicubicWeight": "bicubicWeightSpinBox", "gaussianWeight": "gaussianWeightSpinBox",
                     "partialFourierProbability": "partialFourierProbabilitySpinBox",
                     "noiseProbability": "noiseProbabilitySpinBox", "noiseMin": "noiseMinSpinBox",
                     "noiseMax": "noiseMaxSpinBox", "syntheticFraction": "syntheticFractionSpinBox",
                     "templateWeight": "templateWeightSpinBox", "brainWeight": "brainWeightSpinBox",
                     "shapesWeight": "shapesWeightSpinBox", "fineTune": "fineTuneCheckBox"}
# Parameter -> ctkPathLineEdit synced by hand: the Path connector would show "." for an empty path.
PATH_WIDGETS = {"dataFolder": "dataFolderPathLineEdit", "vggWeights": "vggWeightsPathLineEdit",
                "outputFolder": "outputFolderPathLineEdit", "initCheckpoint": "initCheckpointPathLineEdit"}


#
# FAGANTraining
#


class FAGANTraining(ScriptedLoadableModule):
    """Module description; see ScriptedLoadableModule in Slicer's Base/Python/slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FA-GAN Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = ["FAGANSuperRes"]
        self.parent.contributors = list(CONTRIBUTORS)
        self.parent.helpText = _("""
Train or fine-tune an FA-GAN super-resolution model on your own high-resolution MRI volumes and on
synthetic slices degraded by a chosen acquisition model (k-space, bicubic, Gaussian), in a background
process. Watch losses and validation PSNR, stop and resume. The best checkpoint of a finished run
appears in the checkpoint list of the FA-GAN Super-Resolution module.
See the <a href="{url}/blob/main/docs/user-guide.md">user guide</a>.
""").format(url=REPOSITORY_URL)
        self.parent.acknowledgementText = _("""
FA-GAN super-resolution extension by the FA-GAN SuperRes team. Module layout follows the Slicer
scripted module template by Jean-Christophe Fillion-Robin (Kitware), Andras Lasso (PerkLab) and Steve Pieper (Isomics).
""")


#
# FAGANTrainingParameterNode
#


@parameterNodeWrapper
class FAGANTrainingParameterNode:
    """Module state, saved with the scene.

    dataFolder, vggWeights, outputFolder, initCheckpoint - paths; empty when unset.
    fineTune - start from initCheckpoint (empty: the bundled checkpoint for scale and acquisition).
    trainingVolumes - scene volumes exported for training.
    configPath - config of the last started run (Resume after a scene reload).
    lossTable ... psnrChart - the run's MRML table and chart nodes.
    """

    dataFolder: str = ""
    trainingVolumes: list[vtkMRMLScalarVolumeNode]
    validationShare: Annotated[float, WithinRange(0.0, 0.9)] = 0.2
    scale: Annotated[int, Choice([2, 4, 8])] = 4
    preset: Annotated[str, Choice(list(PRESETS))] = "fagan"
    iterations: Annotated[int, WithinRange(1, 1000000)] = 2000
    patchSize: Annotated[int, WithinRange(8, 512)] = 64
    batchSize: Annotated[int, WithinRange(1, 512)] = 16
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    vggWeights: str = ""
    # Acquisition model and synthetic data: the defaults are the bundled recipe
    # (configs/fagan_x2_acquisition.yaml; a test keeps them equal).
    acquisition: Annotated[str, Choice(list(ACQUISITIONS))] = "kspace"
    kspaceWeight: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    bicubicWeight: Annotated[float, WithinRange(0.0, 1.0)] = 0.25
    gaussianWeight: Annotated[float, WithinRange(0.0, 1.0)] = 0.15
    partialFourierProbability: Annotated[float, WithinRange(0.0, 1.0)] = 0.25
    noiseProbability: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    noiseMin: Annotated[float, WithinRange(0.0, 0.5)] = 0.005
    noiseMax: Annotated[float, WithinRange(0.0, 0.5)] = 0.04
    syntheticFraction: Annotated[float, WithinRange(0.0, 1.0)] = 1.0
    templateWeight: Annotated[float, WithinRange(0.0, 1.0)] = 0.25
    brainWeight: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    shapesWeight: Annotated[float, WithinRange(0.0, 1.0)] = 0.25
    fineTune: bool = True
    initCheckpoint: str = ""
    outputFolder: str = ""
    configPath: str = ""
    lossTable: vtkMRMLTableNode
    validationTable: vtkMRMLTableNode
    lossChart: vtkMRMLPlotChartNode
    psnrChart: vtkMRMLPlotChartNode


#
# FAGANTrainingWidget
#


class FAGANTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Module GUI; see ScriptedLoadableModuleWidget in Slicer's Base/Python/slicer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[FAGANTrainingLogic] = None
        self._parameterNode: Optional[FAGANTrainingParameterNode] = None
        self._parameterNodeGuiTag = None
        self._run: Optional[TrainingRun] = None
        self._plots: Optional[TrainingPlots] = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FAGANTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = FAGANTrainingLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)
        self.ui.startButton.connect("clicked(bool)", self.onStartButton)
        self.ui.stopButton.connect("clicked(bool)", self.onStopButton)
        self.ui.resumeButton.connect("clicked(bool)", self.onResumeButton)
        for parameterName, widgetName in PATH_WIDGETS.items():
            getattr(self.ui, widgetName).connect(
                "currentPathChanged(QString)", lambda path, name=parameterName: self._setParameter(name, path))
        self.ui.trainingVolumesComboBox.connect("checkedNodesChanged()", self.onTrainingVolumesChanged)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Application exit: the trainer cannot outlive Slicer unnoticed, so kill it."""
        if self._run and self._run.active:
            self._run.kill()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        """A run goes on (it uses files, not the scene); its charts come back in the next scene."""
        self._plots = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onNodeRemoved(self, caller, event) -> None:
        """checkedNodesChanged does not fire when a checked node is deleted: drop it here."""
        p = self._parameterNode
        if p and len(nodesInScene(p.trainingVolumes)) != len(p.trainingVolumes):
            p.trainingVolumes = nodesInScene(p.trainingVolumes)

    def onReload(self) -> None:
        """Reload the Lib packages too, so code changes take effect (developer mode)."""
        for name in [m for m in sys.modules if m.split(".")[0] in ("FAGANTrainingLib", "FAGANSuperResLib")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not self._plots and p.lossTable and p.validationTable and p.lossChart and p.psnrChart:
            # Charts of a run saved with the scene.
            self._plots = TrainingPlots(slicer.mrmlScene, p.lossTable, p.validationTable, p.lossChart, p.psnrChart)
            self._showCharts()

    def setParameterNode(self, inputParameterNode: Optional[FAGANTrainingParameterNode]) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(
                {name: getattr(self.ui, widget) for name, widget in PARAMETER_WIDGETS.items()})
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._updateGUI()

    def _disconnectParameterNode(self) -> None:
        """Remove the GUI connection (by its tag) and the observer of the current parameter node."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNodeGuiTag = None
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def _setParameter(self, name: str, value) -> None:
        if self._parameterNode and getattr(self._parameterNode, name) != value:
            setattr(self._parameterNode, name, value)

    def onTrainingVolumesChanged(self) -> None:
        if self._parameterNode:
            self._parameterNode.trainingVolumes = list(self.ui.trainingVolumesComboBox.checkedNodes())

    #
    # GUI state
    #

    def _updateGUI(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if not p:
            return
        for parameterName, widgetName in PATH_WIDGETS.items():
            widget = getattr(self.ui, widgetName)
            if widget.currentPath != getattr(p, parameterName):
                wasBlocked = widget.blockSignals(True)
                widget.currentPath = getattr(p, parameterName)
                widget.blockSignals(wasBlocked)
        combo = self.ui.trainingVolumesComboBox
        wasBlocked = combo.blockSignals(True)
        for index in range(combo.nodeCount()):
            node = combo.nodeFromIndex(index)
            combo.setCheckState(node, qt.Qt.Checked if node in p.trainingVolumes else qt.Qt.Unchecked)
        combo.blockSignals(wasBlocked)

        state = self._run.state if self._run else RunState.IDLE
        active = self._run is not None and self._run.active
        for widget in (self.ui.dataCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.acquisitionCollapsibleButton, self.ui.outputCollapsibleButton):
            widget.enabled = not active
        self.ui.initCheckpointPathLineEdit.enabled = p.fineTune
        self.ui.startButton.enabled = not active and bool(p.outputFolder) and bool(p.dataFolder or p.trainingVolumes)
        self.ui.stopButton.enabled = state in (RunState.STARTING, RunState.RUNNING)
        canResume = (self._run.canResume if self._run else bool(p.configPath)) and not active
        self.ui.resumeButton.enabled = canResume

    #
    # Run
    #

    def onStartButton(self) -> None:
        p = self._parameterNode
        with OneLineErrors(slicer.util.errorDisplay, _("Training cannot run yet.")) as errors:
            ready = self.logic.ensureDependencies()
        if errors.failed or not ready:
            return
        settings = TrainingSettings(
            outputDir=p.outputFolder, dataFolder=p.dataFolder, valFraction=p.validationShare, scale=p.scale,
            preset=p.preset, iterations=p.iterations, patchSize=p.patchSize, batchSize=p.batchSize,
            device=p.device, vggWeights=p.vggWeights, acquisition=p.acquisition, kspaceWeight=p.kspaceWeight,
            bicubicWeight=p.bicubicWeight, gaussianWeight=p.gaussianWeight,
            partialFourierProbability=p.partialFourierProbability, noiseProbability=p.noiseProbability,
            noiseMin=p.noiseMin, noiseMax=p.noiseMax, syntheticFraction=p.syntheticFraction,
            templateWeight=p.templateWeight, brainWeight=p.brainWeight, shapesWeight=p.shapesWeight,
            initCheckpoint=(p.initCheckpoint or BUNDLED) if p.fineTune else "")
        with OneLineErrors(slicer.util.errorDisplay, _("Cannot start training.")), slicer.util.WaitCursor():
            configPath = prepareTraining(settings, nodesInScene(p.trainingVolumes))
            p.configPath = str(configPath)
            self._startRun(TrainingRun(configPath), resume=False)

    def onResumeButton(self) -> None:
        with OneLineErrors(slicer.util.errorDisplay, _("Training cannot run yet.")) as errors:
            ready = self.logic.ensureDependencies()
        if errors.failed or not ready:
            return
        with OneLineErrors(slicer.util.errorDisplay, _("Cannot resume training.")), slicer.util.WaitCursor():
            run = self._run or TrainingRun.stoppedEarlier(self._parameterNode.configPath)
            self._startRun(run, resume=True)

    def onStopButton(self) -> None:
        if self._run:
            self._run.stop()
            self.ui.statusLabel.text = _("Stopping: the trainer saves its state...")
            self._updateGUI()

    def _startRun(self, run: TrainingRun, resume: bool) -> None:
        p = self._parameterNode
        self._plots = TrainingPlots(slicer.mrmlScene, p.lossTable, p.validationTable, p.lossChart, p.psnrChart)
        self._attachPlots()
        self._run = run
        if resume:
            run.resume()
        else:
            run.start()
        self.ui.logTextEdit.appendPlainText(" ".join(run.process.command))
        self._timer.start()
        self._updateGUI()

    def _attachPlots(self) -> None:
        """Record the charts in the parameter node and show them."""
        p = self._parameterNode
        with slicer.util.NodeModify(p):
            p.lossTable, p.validationTable = self._plots.lossTable, self._plots.validationTable
            p.lossChart, p.psnrChart = self._plots.lossChart, self._plots.psnrChart
        self._showCharts()

    def _showCharts(self) -> None:
        for widget, chart, tag in ((self.ui.lossPlotWidget, self._plots.lossChart, "FAGANTrainingLoss"),
                                   (self.ui.psnrPlotWidget, self._plots.psnrChart, "FAGANTrainingPSNR")):
            viewNode = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
            if viewNode is None:
                viewNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLPlotViewNode")
                viewNode.UnRegister(None)
                viewNode.SetSingletonTag(tag)
                viewNode.SetSaveWithScene(False)
                viewNode = slicer.mrmlScene.AddNode(viewNode)
            viewNode.SetPlotChartNodeID(chart.GetID())
            widget.setMRMLPlotViewNode(viewNode)

    def onPollTimer(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        if self._parameterNode and (self._plots is None or not self._plots.inScene(slicer.mrmlScene)):
            self._plots = plotsInScene(slicer.mrmlScene, self._plots, run.history)  # the scene was closed
            self._attachPlots()
        if run.poll() and self._plots:
            self._plots.update(run.history)
        for line in run.process.takeNewLogLines():
            self.ui.logTextEdit.appendPlainText(line)
        self.ui.progressBar.value = round(100 * run.fraction)
        self.ui.statusLabel.text = self._statusText(run)
        if not run.active:
            self._timer.stop()
            self._onRunEnded(run)
        self._updateGUI()

    def _statusText(self, run: TrainingRun) -> str:
        text = _("{state}: iteration {iteration}/{total}").format(state=run.state.value, iteration=run.iteration, total=run.total or "?")
        if run.phase:
            text += f" ({run.phase})"
        if run.active and run.etaSeconds:
            text += _(", ETA {eta}").format(eta=formatEta(run.etaSeconds))
        if run.history.lossRows:
            losses = run.history.lossRows[-1]
            text += "\n" + ", ".join(f"{k}: {v:.4g}" for k, v in losses.items() if k != "iteration")
        if run.history.validationRows:
            last = run.history.validationRows[-1]
            text += "\n" + _("validation PSNR {psnr:.2f} dB (bicubic {bicubic:.2f} dB)").format(
                psnr=last.get("psnr", float("nan")), bicubic=last.get("bicubic_psnr", float("nan")))
        return text

    def _onRunEnded(self, run: TrainingRun) -> None:
        checkpoint = self.logic.registerBestCheckpoint(run)
        if run.state == RunState.FAILED:
            slicer.util.errorDisplay(_("Training failed: {reason}").format(reason=run.error))
        elif checkpoint:
            self.ui.statusLabel.text += "\n" + _("Best checkpoint added to FA-GAN Super-Resolution: {path}").format(path=checkpoint)


#
# FAGANTrainingLogic
#


class FAGANTrainingLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: parameter node, dependencies, checkpoint registration. Config writing,
    command line, progress and the run state machine are in FAGANTrainingLib (Qt-free)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> FAGANTrainingParameterNode:
        return FAGANTrainingParameterNode(super().getParameterNode())

    @staticmethod
    def ensureDependencies(askConfirmation: bool = True) -> bool:
        """Training needs torch (from the PyTorch extension), the engine's other packages and what the
        default recipe's synthetic share reads (nilearn's ICBM152 template; ``engine.TRAINING_REQUIREMENTS``).
        Raises DependencyError (one line) if an install failed."""
        import FAGANSuperRes

        return FAGANSuperRes.FAGANSuperResLogic.ensureDependencies("train", askConfirmation)

    @staticmethod
    def registerBestCheckpoint(run: TrainingRun) -> Optional[str]:
        """Offer the run's best checkpoint in FAGANSuperRes (user checkpoint registry)."""
        checkpoint = run.bestCheckpoint or run.latestCheckpoint
        if not checkpoint or run.state == RunState.FAILED:
            return None
        try:
            userCheckpointRegistry().add(checkpoint)
        except OSError as exc:
            logging.warning(f"Cannot register checkpoint {checkpoint}: {exc}")
            return None
        return checkpoint


#
# FAGANTrainingTest
#


class FAGANTrainingTest(ScriptedLoadableModuleTest):
    """Module self-test on synthetic volumes (CPU). Preparing a run always runs; training (start,
    stop, resume, finish) runs when PyTorch and the engine's packages are importable, or when
    FAGAN_SELFTEST_INSTALL_DEPENDENCIES=1 allows installing them."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DeletedVolumeIsNotExported()
        self.setUp()
        self.test_TrainStopResume()
        self.setUp()
        self.test_DefaultSettingsTrain()

    def test_DeletedVolumeIsNotExported(self):
        import FAGANSuperRes

        self.delayDisplay("A volume deleted after it was checked is not exported for training")
        volumes = [FAGANSuperRes.createSyntheticMRVolume(f"Train{i}") for i in range(2)]
        slicer.mrmlScene.RemoveNode(volumes[1])
        runFolder = tempfile.mkdtemp(prefix="FAGANTrainingTest-", dir=slicer.app.temporaryPath)
        configPath = prepareTraining(TrainingSettings(outputDir=runFolder, scale=2, iterations=10), volumes)
        exported = sorted(path.name for path in (configPath.parent / "scene_volumes").iterdir())
        self.assertEqual(exported, ["000_Train0.nii.gz"])
        self.delayDisplay("Test passed")

    def test_TrainStopResume(self):
        import FAGANSuperRes

        if FAGANSuperRes.skipUnlessReady(self, "train"):
            return
        self.delayDisplay("Training a tiny model on synthetic volumes (CPU): start, stop, resume")
        volumes = [FAGANSuperRes.createSyntheticMRVolume(f"Train{i}") for i in range(3)]
        run, stoppedState = trainTinyModel(volumes)
        self.assertEqual(stoppedState, RunState.STOPPED)
        self.assertEqual(run.state, RunState.FINISHED, run.error)
        self.assertEqual(run.iteration, run.total)
        self.assertTrue(run.bestCheckpoint or run.latestCheckpoint)
        plots = TrainingPlots(slicer.mrmlScene)
        plots.update(run.history)
        self.assertGreater(plots.lossTable.GetNumberOfRows(), 0)
        self.delayDisplay("Test passed")


    def test_DefaultSettingsTrain(self):
        """The panel's defaults (the bundled recipe, with its synthetic share from nilearn's ICBM152
        template, fine-tuning the bundled checkpoint) start and finish a run; only the length, the
        folder and the device are set."""
        import FAGANSuperRes

        if FAGANSuperRes.skipUnlessReady(self, "train"):
            return
        self.delayDisplay("Training with the default settings (synthetic share included) for 2 iterations (CPU)")
        # Slices of at least the default patch size (64), as real training volumes have.
        volumes = [FAGANSuperRes.createSyntheticMRVolume(f"Train{i}", shape=(12, 72, 72)) for i in range(3)]
        runFolder = tempfile.mkdtemp(prefix="FAGANTrainingTest-", dir=slicer.app.temporaryPath)
        settings = TrainingSettings(outputDir=runFolder, iterations=2, device="cpu", initCheckpoint=BUNDLED)  # panel: fine-tune
        self.assertGreater(settings.syntheticFraction, 0)
        run = TrainingRun(prepareTraining(settings, volumes))
        run.start()
        self.assertEqual(run.wait(1200), RunState.FINISHED, run.error)
        self.delayDisplay("Test passed")


def trainTinyModel(volumeNodes, iterations: int = 30, stopAt: int = 2):
    """Train a tiny x2 model on CPU: start, stop at ``stopAt``, resume to the end.

    Returns the run and its state right after the stop. Used by the self-tests.
    """
    runFolder = tempfile.mkdtemp(prefix="FAGANTrainingTest-", dir=slicer.app.temporaryPath)
    settings = TrainingSettings(outputDir=runFolder, scale=2, iterations=iterations, patchSize=16, batchSize=2,
                                device="cpu", valFraction=0.34, syntheticFraction=0.0,
                                overrides=["model.n_feats=8", "model.n_blocks=1", "train.log_every=1",
                                           "train.val_every=5", "train.checkpoint_every=2",
                                           "train.perceptual_weight=0.0"])
    run = TrainingRun(prepareTraining(settings, volumeNodes))
    run.start()
    while run.iteration < stopAt and run.active:
        run.wait(0.2)
    run.stop()
    stoppedState = run.wait(120)
    if run.canResume:
        run.resume()
        run.wait(600)
    return run, stoppedState
