import tempfile
import time
from pathlib import Path

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import *

RUN_TIMEOUT_S = 600


#
# FAGANSelfTest
#


class FAGANSelfTest(ScriptedLoadableModule):
    """End-to-end test of the FAGANSuperResolution extension through its GUI (clinical scenario)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "FAGANSelfTest"
        self.parent.categories = ["Testing.TestCases"]
        self.parent.dependencies = ["FAGANSuperRes", "FAGANTraining"]
        self.parent.contributors = ["FA-GAN SuperRes team (fagan-superres)"]
        self.parent.helpText = """
Runs the clinical scenario of the FAGANSuperResolution extension through the module GUI: load an MR
volume, pick scale and checkpoint, Apply, check the result, its geometry, its research-use notice and its
consistency-map overlay; apply again (a second result, side by side); delete the input during a run;
cancel a run; reject a bad checkpoint; apply to all volumes of the scene; turn a
thick-slice volume isotropic; combine two thick stacks into one isotropic volume; train a tiny model, stop, resume, and find its checkpoint in the
super-resolution module.
Works offline (synthetic volume, bundled checkpoint, CPU). Without PyTorch (or ONNX Runtime) the scenario
uses the bicubic method and skips training, unless FAGAN_SELFTEST_INSTALL_DEPENDENCIES=1 allows installing them.
"""
        self.parent.acknowledgementText = "FA-GAN SuperRes team (fagan-superres)."


class FAGANSelfTestWidget(ScriptedLoadableModuleWidget):
    """Only the Reload and Test buttons of the base class."""


class FAGANSelfTestLogic(ScriptedLoadableModuleLogic):
    """No logic: the test drives the FAGANSuperRes and FAGANTraining modules."""


class FAGANSelfTestTest(ScriptedLoadableModuleTest):
    """The clinical scenario, step by step, through the module widgets. Steps that need PyTorch are
    skipped (FA-GAN replaced by bicubic) when it is not importable, as FAGANSuperRes.skipUnlessReady says."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ApplyProducesExactGeometry()
        self.setUp()
        self.test_DeletedInputKeepsTheResult()
        self.setUp()
        self.test_CancelLeavesSceneUnchanged()
        self.setUp()
        self.test_BadCheckpointIsRejected()
        self.setUp()
        self.test_ApplyToAllVolumes()
        self.setUp()
        self.test_ThickSlicesToIsotropic()
        self.setUp()
        self.test_CombineThickStacks()
        self.setUp()
        self.test_TrainedCheckpointIsOffered()

    def superResWidget(self):
        slicer.util.selectModule("FAGANSuperRes")
        return slicer.util.getModuleWidget("FAGANSuperRes")

    def waitUntilIdle(self, widget) -> None:
        start = time.monotonic()
        while widget.isRunning():
            self.assertLess(time.monotonic() - start, RUN_TIMEOUT_S, "super-resolution did not finish in time")
            slicer.app.processEvents()
            time.sleep(0.05)

    def test_ApplyProducesExactGeometry(self):
        import FAGANSuperRes

        method = "bicubic" if FAGANSuperRes.skipUnlessReady(self, "fagan") else "fagan"
        self.delayDisplay(f"Clinician: select a volume, x2, {method}, CPU, Apply")
        labels = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "Labels")
        slicer.util.updateVolumeFromArray(labels, np.zeros((12, 48, 40), np.uint8))
        inputNode = FAGANSuperRes.createSyntheticMRVolume()
        widget = self.superResWidget()
        widget.initializeParameterNode()
        p = widget._parameterNode
        self.assertEqual(p.inputVolume, inputNode, "the default input skips the label map")
        p.scale = 2
        p.method = method
        p.device = "cpu"
        p.outputVolume = None
        if method == "fagan":
            self.assertTrue(p.checkpointPath, "a bundled x2 checkpoint is expected")
        self.assertTrue(widget.ui.applyButton.enabled)
        for box in (widget.ui.adaptCheckBox, widget.ui.tileSizeSpinBox):  # FA-GAN in-plane only: greyed out for bicubic
            self.assertEqual(box.enabled, method == "fagan")
        if widget._engineOffers("enforce_consistency"):
            self.assertEqual(widget.ui.enforceConsistencyCheckBox.enabled, method == "fagan")

        widget.ui.applyButton.click()
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        self.waitUntilIdle(widget)
        self.assertEqual(widget.ui.applyButton.text, "Apply")

        output = widget.lastJob.outputVolumeNode
        self.assertIsNotNone(output, widget.ui.statusLabel.text)
        self.assertIsNone(p.outputVolume, "the output selector is back at 'Create new volume'")
        self.assertIn("fagan_engine sr", widget.ui.logTextEdit.toPlainText())
        inDims = inputNode.GetImageData().GetDimensions()
        self.assertEqual(output.GetImageData().GetDimensions(), (2 * inDims[0], 2 * inDims[1], inDims[2]))
        np.testing.assert_allclose(FAGANSuperRes.physicalBox(output), FAGANSuperRes.physicalBox(inputNode), atol=1e-4)
        composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(composite.GetBackgroundVolumeID(), output.GetID())
        self.assertEqual(output.GetAttribute("FAGAN.Notice"), "research use, not for diagnosis")
        self.assertIn("research use, not for diagnosis", output.GetDescription())
        self.assertIn("research use", widget.ui.summaryLabel.text)
        if widget.ui.consistencyMapCheckBox.enabled and p.consistencyMap:
            self.delayDisplay("The consistency map is the colour overlay, with a colour legend")
            consistency = slicer.mrmlScene.GetFirstNodeByName(output.GetName() + "_consistency")
            self.assertIsNotNone(consistency)
            self.assertEqual(composite.GetForegroundVolumeID(), consistency.GetID())
            self.assertIsNotNone(slicer.modules.colors.logic().GetColorLegendDisplayNode(consistency))
            np.testing.assert_allclose(FAGANSuperRes.physicalBox(consistency), FAGANSuperRes.physicalBox(output), atol=1e-4)
        self.delayDisplay("Result shown with exact geometry")

        self.delayDisplay("Clinician: Apply again at x4, side by side: a second result, the first one untouched")
        firstDims = output.GetImageData().GetDimensions()
        p.scale, p.sideBySide, p.ensemble = 4, True, 2  # Advanced -> Self-ensemble: 2 copies instead of the default 8
        self.assertEqual(widget.ui.ensembleComboBox.enabled, method == "fagan")
        widget.ui.applyButton.click()
        self.waitUntilIdle(widget)
        p.sideBySide, p.ensemble = False, 0
        second = widget.lastJob.outputVolumeNode
        self.assertIsNotNone(second, widget.ui.statusLabel.text)
        if method == "fagan":
            self.assertEqual(second.GetAttribute("FAGAN.SelfEnsemble"), "2 flipped/rotated copies")
            self.assertIn("--ensemble 2", widget.ui.logTextEdit.toPlainText())
        self.assertIsNot(second, output)
        self.assertEqual(output.GetImageData().GetDimensions(), firstDims)
        self.assertEqual(second.GetNodeReference("FAGANInput"), inputNode)
        layoutManager = slicer.app.layoutManager()
        self.assertEqual(layoutManager.layout, slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        left = layoutManager.sliceWidget("Red").mrmlSliceCompositeNode()
        right = layoutManager.sliceWidget("Yellow").mrmlSliceCompositeNode()
        self.assertEqual((left.GetBackgroundVolumeID(), right.GetBackgroundVolumeID()), (inputNode.GetID(), second.GetID()))
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)

    def test_DeletedInputKeepsTheResult(self):
        import FAGANSuperRes

        self.delayDisplay("Clinician: Apply, then delete the input volume while it runs")
        inputNode = FAGANSuperRes.createSyntheticMRVolume()
        widget = self.superResWidget()
        p = widget._parameterNode
        p.inputVolume, p.scale, p.method, p.device, p.outputVolume, p.applyToAll = inputNode, 2, "bicubic", "cpu", None, False
        widget.ui.applyButton.click()
        slicer.mrmlScene.RemoveNode(inputNode)
        self.waitUntilIdle(widget)
        result = widget.lastJob.outputVolumeNode
        self.assertIsNotNone(result, widget.ui.statusLabel.text)
        self.assertIs(result.GetScene(), slicer.mrmlScene)
        self.assertIn("was deleted during the run", widget.ui.warningsLabel.text)

    def test_CancelLeavesSceneUnchanged(self):
        import FAGANSuperRes

        self.delayDisplay("Clinician: Apply, then Cancel")
        inputNode = FAGANSuperRes.createSyntheticMRVolume()
        widget = self.superResWidget()
        p = widget._parameterNode
        p.inputVolume, p.scale, p.method, p.device, p.outputVolume = inputNode, 2, "bicubic", "cpu", None
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.applyButton.click()
        self.assertTrue(widget.isRunning())
        widget.ui.applyButton.click()
        self.assertFalse(widget.isRunning())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.assertIsNone(p.outputVolume)

    def test_ApplyToAllVolumes(self):
        import FAGANSuperRes

        self.delayDisplay("Clinician: Apply to all volumes in the scene (one engine process)")
        inputs = [FAGANSuperRes.createSyntheticMRVolume(f"Case{i}") for i in range(2)]
        widget = self.superResWidget()
        p = widget._parameterNode
        p.mode, p.scale, p.method, p.device, p.applyToAll = "in-plane", 2, "bicubic", "cpu", True
        if not widget.ui.applyButton.enabled:
            self.delayDisplay(f"Skipped: {widget.ui.applyButton.toolTip}")
            p.applyToAll = False
            return
        widget.ui.applyButton.click()
        self.waitUntilIdle(widget)
        p.applyToAll = False
        for node in inputs:
            result = slicer.mrmlScene.GetFirstNodeByName(node.GetName() + "_SRx2")
            self.assertIsNotNone(result, widget.ui.statusLabel.text)
            np.testing.assert_allclose(FAGANSuperRes.physicalBox(result), FAGANSuperRes.physicalBox(node), atol=1e-4)
            self.assertEqual(result.GetAttribute("FAGAN.Batch"), "yes")
        self.delayDisplay("Every volume super-resolved")

    def test_ThickSlicesToIsotropic(self):
        import FAGANSuperRes

        if FAGANSuperRes.skipUnlessReady(self, "fit"):  # torch and the engine's packages, not training's nilearn
            return
        self.delayDisplay("Clinician: thick slices -> isotropic; spacing and thickness prefilled from the volume")
        inputNode = FAGANSuperRes.createSyntheticMRVolume("Thick")
        widget = self.superResWidget()
        p = widget._parameterNode
        p.inputVolume, p.outputVolume, p.device, p.mode, p.applyToAll = inputNode, None, "cpu", "through-plane", False
        self.assertAlmostEqual(p.targetSpacing, 0.95, places=3)  # finest in-plane spacing
        self.assertAlmostEqual(p.sliceThickness, 2.9, places=3)  # no DICOM: the slice spacing
        p.ensemble = 8  # thick slices take at most 4 flipped copies: Apply says so instead of running
        self.assertFalse(widget.ui.applyButton.enabled)
        self.assertIn("Self-ensemble", widget.ui.applyButton.toolTip)
        p.ensemble = 0
        p.fitIterations = 2

        def reset():
            p.mode, p.fitIterations = "in-plane", 0

        output = self.applyAndWait(widget, reset)
        if output is None:
            return
        self.assertRegex(output.GetName(), r"^Thick_iso\d+\.\d+mm$")  # 34.8 mm / 37 slices: Thick_iso0.94mm
        np.testing.assert_allclose(FAGANSuperRes.physicalBox(output), FAGANSuperRes.physicalBox(inputNode), atol=1e-4)
        self.delayDisplay("Isotropic result with exact geometry")

    def applyAndWait(self, widget, reset):
        """Click Apply and wait for the run, then ``reset()`` the panel; the result node, or None when Apply is
        disabled (skipped, with its tooltip shown)."""
        if not widget.ui.applyButton.enabled:
            self.delayDisplay(f"Skipped: {widget.ui.applyButton.toolTip}")
            reset()
            return None
        widget.ui.applyButton.click()
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        self.waitUntilIdle(widget)
        reset()
        output = widget.lastJob.outputVolumeNode
        self.assertIsNotNone(output, widget.ui.statusLabel.text)
        return output

    def test_CombineThickStacks(self):
        import FAGANSuperRes

        if FAGANSuperRes.skipUnlessReady(self, "fit"):  # torch and the engine's packages, not training's nilearn
            return
        self.delayDisplay("Clinician: combine an axial and a coronal thick stack, the coronal one as the reference")
        axial, coronal = FAGANSuperRes.createSyntheticStacks()
        widget = self.superResWidget()
        p = widget._parameterNode
        p.inputVolume, p.secondStack, p.thirdStack, p.stackReference = axial, coronal, None, 2
        p.outputVolume, p.device, p.mode, p.applyToAll, p.fitIterations = None, "cpu", "stacks", False, 0

        def reset():
            p.mode, p.stackReference = "in-plane", 1

        output = self.applyAndWait(widget, reset)
        if output is None:
            return
        self.assertRegex(output.GetName(), r"^Coronal_stacks_iso1\.0mm$")
        np.testing.assert_allclose(output.GetSpacing(), (1.0, 1.0, 1.0), atol=1e-6)
        np.testing.assert_allclose(directions(output), directions(coronal), atol=1e-6)  # the reference's orientation
        self.assertEqual([output.GetNthNodeReference("FAGANInput", i) for i in range(2)], [axial, coronal])
        self.assertEqual(len(widget.lastJob.mapNodes), 2)
        self.assertIn("Coronal: moved", widget.ui.logTextEdit.toPlainText())
        self.delayDisplay("One isotropic volume on the reference's grid, linked to both stacks")

    def test_BadCheckpointIsRejected(self):
        import FAGANSuperRes

        self.delayDisplay("Clinician: Browse... to a file that is not a checkpoint")
        FAGANSuperRes.createSyntheticMRVolume()
        widget = self.superResWidget()
        before = widget._parameterNode.checkpointPath
        badFile = Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath)) / "bad.safetensors"
        badFile.write_bytes(b"not a checkpoint")
        widget.selectCheckpointFile(str(badFile))
        self.assertEqual(widget._parameterNode.checkpointPath, before)

    def test_TrainedCheckpointIsOffered(self):
        from FAGANSuperResLib.checkpoints import (
            availableCheckpoints,
            userCheckpointRegistry,
        )

        import FAGANSuperRes
        import FAGANTraining

        if FAGANSuperRes.skipUnlessReady(self, "train"):
            return
        self.delayDisplay("Researcher: train, stop, resume; clinician: the new checkpoint is offered")
        volumes = [FAGANSuperRes.createSyntheticMRVolume(f"Train{i}") for i in range(3)]
        run, stoppedState = FAGANTraining.trainTinyModel(volumes)
        self.assertEqual(stoppedState.value, "stopped")
        self.assertEqual(run.state.value, "finished", run.error)
        registered = FAGANTraining.FAGANTrainingLogic.registerBestCheckpoint(run)
        self.assertIsNotNone(registered)
        offered = [info.path.resolve() for info in availableCheckpoints(2, userCheckpointRegistry())]
        self.assertIn(Path(registered).resolve(), offered)
        userCheckpointRegistry().remove(registered)
        self.delayDisplay("Test passed")


def directions(volumeNode) -> np.ndarray:
    """The 3x3 IJK-to-RAS directions of a volume node."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASDirectionMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])
