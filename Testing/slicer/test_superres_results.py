"""Issue 18 in FAGANSuperResLib, on a real MRML scene (slicer-core): the map overlay's displayed colours,
results read by Slicer's storage node and checked against the memory, new results linked by node
references, a deleted input, device reporting, the log, and the side-by-side display."""

import FAGANSuperResLib.logic as logicModule
import FAGANSuperResLib.memory as memoryModule
import FAGANSuperResLib.options as optionsModule
import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
from FAGANSuperResLib import engine
from FAGANSuperResLib.display import showSideBySide
from FAGANSuperResLib.logic import SuperResolutionError, SuperResolutionLogic, describeDevice
from FAGANSuperResLib.maps import TRANSPARENT_BAND, colorNode, showAsMap
from FAGANSuperResLib.memory import MARGIN, checkResultFits, outputVoxels, resultBytes
from FAGANSuperResLib.options import UNCOMPRESSED_FLAG, runOptions
from FAGANSuperResLib.results import REFERENCE_INPUT, REFERENCE_MAP, REFERENCE_RESULT, referencedMaps
from FAGANSuperResLib.volumes import imageFromVolumeNode, loadVolumeFile
from mrml_helpers import addVolumeNode, ijkToRas, smoothArray
from test_superres_trust import savedAndReloaded
from vtk.util import numpy_support

# ---------------------------------------------------------------- 1: what the display node draws


def displayedRGBA(volumeNode) -> np.ndarray:
    """The RGBA the volume's display node produces for its voxels (the pipeline the slice views draw)."""
    producer = volumeNode.GetDisplayNode().GetImageDataConnection().GetProducer()
    producer.Update()
    rgba = numpy_support.vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars())
    return rgba.reshape(-1, 4)


def mapNode(scene, values, kind: str):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", kind)
    slicer.util.updateVolumeFromArray(node, np.asarray(values, np.float32).reshape(1, 1, -1))
    showAsMap(node, kind)
    return node


def test_a_zero_residual_is_not_drawn_and_a_large_one_is(scene):
    """Slicer draws any alpha > 0 of a colour table opaque: near zero the table's alpha must be exactly 0."""
    residual = mapNode(scene, [-10.0, -0.5 * TRANSPARENT_BAND * 10, 0.0, 1e-3, 10.0] + [10.0] * 95, "consistency")
    rgba = displayedRGBA(residual)
    assert (rgba[1:4, 3] == 0).all(), rgba[:5]  # zero and small residuals: transparent, the result shows
    assert rgba[0, 3] == 255 and rgba[0, 2] > rgba[0, 0]  # strongly negative: opaque blue
    assert rgba[4, 3] == 255 and rgba[4, 0] > rgba[4, 2]  # strongly positive: opaque red
    uncertainty = mapNode(scene, [0.0] + [5.0] * 99, "uncertainty")
    assert displayedRGBA(uncertainty)[0, 3] == 0 and displayedRGBA(uncertainty)[1, 3] == 255


def test_with_the_inputs_noise_known_what_noise_explains_is_transparent(scene):
    """The band was a share of the map's own range, so noise coloured a third of the head even for an interpolation,
    which invents nothing. With the engine's noise σ the band is ±3σ."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "residual")
    sigma = 2.0
    slicer.util.updateVolumeFromArray(node, np.asarray([0.0, 2.9 * sigma, -2.9 * sigma, 3.2 * sigma, 40.0] + [1.0] * 95,
                                                       np.float32).reshape(1, 1, -1))
    showAsMap(node, "consistency", noiseSigma=sigma)
    rgba = displayedRGBA(node)
    assert (rgba[0:3, 3] == 0).all() and rgba[3, 3] == 255 and rgba[4, 3] == 255, rgba[:5]
    showAsMap(node, "consistency")  # no σ (a noise-free input): the map's own range, as before
    assert displayedRGBA(node)[1, 3] == 255


def test_a_colour_table_saved_by_an_older_version_gets_the_current_colours(scene):
    old = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "old residual table")
    old.SetTypeToUser()
    old.SetNumberOfColors(256)
    for index in range(256):
        old.SetColor(index, str(index), 1.0, 1.0, 1.0, 0.01)  # the old ramp: never exactly 0
    old.SetAttribute("FAGAN.ColorMap", "consistency")
    assert colorNode(scene, "consistency") is old
    rgba = [0.0] * 4
    old.GetColor(128, rgba)
    assert rgba[3] == 0.0


# ---------------------------------------------------------------- 3: reading results, memory


def test_a_result_file_is_read_by_the_storage_node_with_exact_geometry(scene, obliqueNode, tmp_path):
    path = tmp_path / "result.nrrd"
    sitk.WriteImage(imageFromVolumeNode(obliqueNode), str(path), False)
    target = addVolumeNode(scene, smoothArray((2, 3, 4)), name="target")
    loadVolumeFile(target, path)
    np.testing.assert_allclose(ijkToRas(target), ijkToRas(obliqueNode), atol=1e-9)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(target), slicer.util.arrayFromVolume(obliqueNode))
    assert target.GetStorageNode() is None  # saving the scene writes a new file, not the temporary one
    before = slicer.util.arrayFromVolume(target).copy()
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\nnot a volume\n")
    with pytest.raises(ValueError, match="could not read"):
        loadVolumeFile(target, tmp_path / "broken.nrrd")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(target), before)  # unchanged


def test_the_engine_is_asked_for_uncompressed_outputs_when_it_offers_them(scene, obliqueNode, fakeEngine, tmp_path):
    options = runOptions(scale=2, method="bicubic")
    fakeEngine.setattr(optionsModule, "engineSupports", lambda *flags: UNCOMPRESSED_FLAG not in flags)
    assert UNCOMPRESSED_FLAG not in optionsModule.engineArguments(options, True)  # an engine without it
    fakeEngine.setattr(optionsModule, "engineSupports", lambda *flags: True)
    assert UNCOMPRESSED_FLAG in optionsModule.engineArguments(options, True)
    fakeEngine.setattr(logicModule.SuperResolutionJob, "_cleanup", lambda self: None)  # keep the files to look at
    job = SuperResolutionLogic(temporaryDirectory=str(tmp_path)).process(obliqueNode, None, 2, consistencyMap=True)
    rawBytes = 4 * np.prod(job.outputVolumeNode.GetImageData().GetDimensions())
    for name in ("output.nrrd", "consistency_map.nrrd"):
        assert (job.workDir / name).stat().st_size >= rawBytes  # raw float32, not gzip


def test_a_result_that_will_not_fit_is_refused_before_anything_starts(scene, obliqueNode, monkeypatch):
    options = runOptions(scale=4, method="bicubic", uncertainty=False)
    dims = obliqueNode.GetImageData().GetDimensions()
    assert outputVoxels(obliqueNode, options) == dims[0] * dims[1] * dims[2] * 16
    needed = resultBytes([obliqueNode], options, consistencyMap=True)
    assert needed == outputVoxels(obliqueNode, options) * (4 + 4)
    checkResultFits([obliqueNode], options, True, available=int(MARGIN * needed) + 1)
    with pytest.raises(ValueError, match="GiB of memory in Slicer"):
        checkResultFits([obliqueNode], options, True, available=int(needed))
    monkeypatch.setattr(memoryModule, "availableBytes", lambda: 1000)
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="memory"):
        SuperResolutionLogic().process(obliqueNode, None, 4, device="cpu", method="bicubic")
    assert scene.GetNumberOfNodes() == nodes


def test_through_plane_output_voxels_follow_the_target_spacing(scene):
    node = addVolumeNode(scene, smoothArray((6, 10, 12)), spacing=(1.0, 1.0, 4.0), name="thick")
    options = runOptions(mode="through-plane", method="fagan", target_spacing=0.5)
    assert outputVoxels(node, options) == 6 * 10 * 12 * 8
    assert outputVoxels(node, runOptions(mode="through-plane", method="fagan")) == 6 * 10 * 12 * 4


def test_available_memory_is_read_here():
    assert memoryModule.availableBytes() > 0


# ---------------------------------------------------------------- 4: new results, node references


def test_each_run_makes_a_new_result_linked_to_its_input_and_maps(scene, fakeEngine, tmp_path):
    first = addVolumeNode(scene, smoothArray(seed=1), name="T1")
    second = addVolumeNode(scene, smoothArray(seed=2), name="T2")
    logic = SuperResolutionLogic()
    a = logic.process(first, None, 2, device="cpu", consistencyMap=True)
    b = logic.process(second, None, 4, device="cpu", consistencyMap=True)
    assert a.outputVolumeNode is not b.outputVolumeNode and a.outputVolumeNode.GetName() == "T1_SRx2"
    first.SetName("renamed T1")
    result = a.outputVolumeNode
    assert result.GetNodeReference(REFERENCE_INPUT) is first
    assert referencedMaps(result) == [a.mapNodes["consistency"]]
    assert a.mapNodes["consistency"].GetNodeReference(REFERENCE_RESULT) is result
    assert a.mapNodes["consistency"].GetNodeReference(REFERENCE_INPUT) is first
    assert a.summaryTableNode.GetNodeReference(REFERENCE_RESULT) is result
    assert not result.GetAttribute("FAGAN.InputVolume") and not a.mapNodes["consistency"].GetAttribute("FAGAN.ResultVolume")
    reloaded = savedAndReloaded(scene, tmp_path, "mrml")
    reloadedResult = reloaded.GetFirstNodeByName("T1_SRx2")
    assert reloadedResult.GetNodeReference(REFERENCE_INPUT).GetName() == "renamed T1"
    assert reloadedResult.GetNodeReference(REFERENCE_MAP).GetName() == "T1_SRx2_consistency"


def test_a_result_overwritten_by_another_run_drops_its_old_maps_and_table(scene, obliqueNode, fakeEngine):
    logic = SuperResolutionLogic()
    a = logic.process(obliqueNode, None, 2, device="cpu", consistencyMap=True)
    oldMap, oldTable = a.mapNodes["consistency"], a.summaryTableNode
    b = logic.process(obliqueNode, a.outputVolumeNode, 4, device="cpu", consistencyMap=True)
    assert b.outputVolumeNode is a.outputVolumeNode
    assert referencedMaps(b.outputVolumeNode) == [b.mapNodes["consistency"]]
    assert oldMap.GetNodeReference(REFERENCE_RESULT) is None
    assert oldTable.GetScene() is scene and oldTable.GetNodeReference(REFERENCE_RESULT) is None  # kept, unlinked
    assert b.summaryTableNode.GetNodeReference(REFERENCE_RESULT) is b.outputVolumeNode


def test_an_unreadable_map_leaves_an_existing_output_volume_unchanged(scene, obliqueNode, fakeEngine):
    output = addVolumeNode(scene, smoothArray((2, 3, 4)), name="keep me")
    before = slicer.util.arrayFromVolume(output).copy()
    nodes = scene.GetNumberOfNodes()
    fakeEngine.setenv("FAKE_ENGINE_FAIL", "truncate")
    job = SuperResolutionLogic().process(obliqueNode, output, 2, device="cpu", consistencyMap=True, waitForCompletion=False)
    with pytest.raises(SuperResolutionError, match="could not read"):
        job.wait()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), before)
    assert scene.GetNumberOfNodes() == nodes


# ---------------------------------------------------------------- 5: the input deleted during a run


def test_deleting_the_input_during_a_run_keeps_the_result(scene, obliqueNode):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu", method="bicubic", waitForCompletion=False)
    scene.RemoveNode(obliqueNode)
    job.wait()
    result = job.outputVolumeNode
    assert result.GetScene() is scene and result.GetName() == "Oblique_SRx2"
    assert result.GetImageData().GetDimensions()[:2] == (40, 32)
    assert any("was deleted during the run" in w for w in job.warnings)
    assert "was deleted during the run" in result.GetAttribute("FAGAN.Warnings")
    assert result.GetNodeReference(REFERENCE_INPUT) is None


def test_an_output_volume_used_again_links_only_the_new_input(scene, fakeEngine):
    """A result node used as the output of a run on another input kept its link to the first input: the input of the
    second run, deleted during it, left the result pointing at the first one while its description named the second."""
    first = addVolumeNode(scene, smoothArray(seed=1), name="A")
    second = addVolumeNode(scene, smoothArray(seed=2), name="B")
    logic = SuperResolutionLogic()
    result = logic.process(first, None, 2, device="cpu", consistencyMap=True).outputVolumeNode
    again = logic.process(second, result, 2, device="cpu", consistencyMap=True, waitForCompletion=False)
    scene.RemoveNode(second)
    again.wait()
    assert again.outputVolumeNode is result and "Input: B" in result.GetDescription()
    assert result.GetNumberOfNodeReferences(REFERENCE_INPUT) == 0
    assert any("the input volume B was deleted during the run" in w for w in again.warnings)
    for node in (again.mapNodes["consistency"], again.summaryTableNode):
        assert node.GetNodeReference(REFERENCE_INPUT) is None


# ---------------------------------------------------------------- 7, 8: device, log


def test_the_device_the_engine_reports_reaches_the_job_and_the_result(scene, obliqueNode, fakeEngine):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, consistencyMap=True)
    assert (job.device, job.threads) == ("cpu", 3)
    assert job.status.endswith("(on CPU (3 threads))")
    assert job.outputVolumeNode.GetAttribute("FAGAN.Device") == "cpu"
    assert job.outputVolumeNode.GetAttribute("FAGAN.Threads") == "3"
    assert describeDevice("cpu", 3, "auto") == "CPU (3 threads)" and describeDevice("cuda:0", None, "auto") == "GPU cuda:0"


def test_without_a_reported_device_the_status_says_so(scene, obliqueNode):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu", method="bicubic")
    if job.device:  # the engine reports its device: nothing to degrade
        assert job.outputVolumeNode.GetAttribute("FAGAN.Device") == job.device
    else:
        assert job.outputVolumeNode.GetAttribute("FAGAN.Device") is None
    assert "does not report" in describeDevice("", None, "auto") and describeDevice("", None, "cpu") == "cpu"


def test_a_long_fagan_run_on_the_cpu_asks_first():
    gpu = engine.DeviceInfo(torch="2.4.0", cuda=True, gpuName="H100")
    cpuOnly = engine.DeviceInfo(torch="2.4.0", cuda=False)
    big, small = 200_000_000, 100_000
    question = engine.longCpuRunWarning(big, "fagan", "in-plane", 2, "auto", cpuOnly, cpuCount=4)
    assert question and "min" in question and "Lanczos" in question
    assert engine.longCpuRunWarning(big, "fagan", "in-plane", 2, "cpu", gpu, cpuCount=4)
    assert engine.longCpuRunWarning(big, "fagan", "in-plane", 2, "auto", gpu, cpuCount=4) is None
    assert engine.longCpuRunWarning(big, "fagan", "in-plane", 2, "auto", None, cpuCount=4) is None  # probe not done
    assert engine.longCpuRunWarning(small, "fagan", "in-plane", 2, "cpu", cpuOnly, cpuCount=4) is None
    assert engine.longCpuRunWarning(big, "lanczos", "in-plane", 2, "cpu", cpuOnly, cpuCount=4) is None
    assert engine.longCpuRunWarning(small, "fagan", "through-plane", 2, "cpu", cpuOnly, cpuCount=4)
    assert engine.longCpuRunWarning(small, "fagan", "through-plane", 2, "cpu", cpuOnly, fitIterations=2) is None
    medium = 30_000_000  # about 11 s at x4 on 4 cores: no question; 8 self-ensemble passes make it 90 s
    assert engine.longCpuRunWarning(medium, "fagan", "in-plane", 4, "cpu", cpuOnly, cpuCount=4) is None
    eight = engine.longCpuRunWarning(medium, "fagan", "in-plane", 4, "cpu", cpuOnly, cpuCount=4, ensembleMembers=8)
    assert eight and "about 2 min" in eight
    # the default x2 run on 256x256x40 (10.5 M output voxels) takes 68-89 s on 2 cores: adaptation counts, the network alone does not ask
    default = 512 * 512 * 40
    assert engine.longCpuRunWarning(default, "fagan", "in-plane", 2, "cpu", cpuOnly, cpuCount=2) is None
    assert engine.longCpuRunWarning(default, "fagan", "in-plane", 2, "cpu", cpuOnly, cpuCount=2, adaptSteps=100)
    # a small volume on one core asks because of the adaptation alone: its size reads as it is, the core count in words
    tiny = engine.longCpuRunWarning(96 * 80 * 12, "fagan", "in-plane", 2, "cpu", cpuOnly, cpuCount=1, adaptSteps=100)
    assert tiny and "(0.092 M output voxels, 1 core)" in tiny
    huge = engine.longCpuRunWarning(1024 * 1024 * 400, "fagan", "in-plane", 2, "cpu", cpuOnly, cpuCount=8)
    assert huge and "(419 M output voxels, 8 cores)" in huge


def test_the_engine_log_is_handed_to_the_log_view(scene, obliqueNode, fakeEngine):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu")
    lines = job.takeLogLines()
    assert "fake engine: model loaded" in lines and not any(line.startswith("FAGAN {") for line in lines)
    assert job.takeLogLines() == []


# ---------------------------------------------------------------- 6: PyTorch version


def test_an_old_torch_counts_as_missing_and_is_upgraded(monkeypatch):
    from FAGANSuperResLib import dependencies

    monkeypatch.setattr(engine, "installedTorchVersion", lambda: "1.13.1+cu117")
    monkeypatch.setattr(engine, "moduleAvailable", lambda name: name not in ("onnxruntime",))
    monkeypatch.setattr(dependencies, "installedTorchVersion", engine.installedTorchVersion)
    assert "1.13.1+cu117 is older than the 2.1" in dependencies.missingDependencies("train")
    assert not engine.DeviceInfo(torch="1.13.1", cuda=True).gpuUsable
    assert "older" in engine.DeviceInfo(torch="1.13.1", cuda=True).gpuLabel()
    assert engine.DeviceInfo(torch="2.1.0", cuda=True, gpuName="A100").gpuLabel() == "GPU (A100)"
    installed = []
    assert dependencies.ensureDependencies("train", lambda q: True, lambda r: None, lambda: installed.append("torch") or "torch",
                                           onInstalled=lambda: installed.append("probe"))
    assert installed == ["torch", "probe"]  # the device probe runs again after the install


def test_an_install_triggers_a_new_device_check(monkeypatch):
    from FAGANSuperResLib import dependencies

    available = {"nilearn": False}
    monkeypatch.setattr(engine, "moduleAvailable", lambda name: available.get(name, True))
    monkeypatch.setattr(engine, "installedTorchVersion", lambda: "2.4.0")
    calls = []

    def pipInstall(requirements):
        calls.append(requirements)
        available["nilearn"] = True

    assert dependencies.ensureDependencies("train", lambda q: True, pipInstall, lambda: None,
                                           onInstalled=lambda: calls.append("probe"))
    assert calls == ["nilearn>=0.10", "probe"]


# ---------------------------------------------------------------- 9: display


def sliceViews(scene, names=("Red", "Yellow")):
    views = {}
    for name in names:
        sliceNode = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        sliceNode.SetLayoutName(name)
        sliceNode.SetOrientationToAxial()
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        views[name] = (sliceNode, composite)
    return views


def test_input_and_result_side_by_side_in_linked_views_on_the_volume_planes(scene, obliqueNode, fakeEngine):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu", consistencyMap=True)
    layers = job.overlayLayers()
    assert layers["rotateToVolumePlane"] is True
    views = sliceViews(scene)
    showSideBySide(scene, obliqueNode, job.outputVolumeNode, job.mapNodes)
    (leftSlice, left), (rightSlice, right) = views["Red"], views["Yellow"]
    assert left.GetBackgroundVolumeID() == obliqueNode.GetID() and left.GetForegroundVolumeID() is None
    assert right.GetBackgroundVolumeID() == job.outputVolumeNode.GetID()
    assert right.GetForegroundVolumeID() == job.mapNodes["consistency"].GetID() and right.GetForegroundOpacity() > 0
    assert left.GetLinkedControl() and right.GetLinkedControl()
    # Rotated to the oblique volume: the slice normal is one of the volume's axes, not the scanner's S axis.
    directions = ijkToRas(job.outputVolumeNode)[:3, :3] / np.array(job.outputVolumeNode.GetSpacing())
    for sliceNode in (leftSlice, rightSlice):
        normal = np.array([sliceNode.GetSliceToRAS().GetElement(r, 2) for r in range(3)])
        assert max(abs(normal @ directions[:, a]) for a in range(3)) == pytest.approx(1.0, abs=1e-6)
        assert abs(normal[2]) < 0.99


def test_side_by_side_needs_both_views(scene, obliqueNode):
    sliceViews(scene, names=("Red",))
    with pytest.raises(ValueError, match="Yellow"):
        showSideBySide(scene, obliqueNode, obliqueNode, {})
