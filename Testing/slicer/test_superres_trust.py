"""Issues 8, 9, 10 in FAGANSuperResLib, on a real MRML scene (slicer-core): acquisition and Lanczos with
the real engine; trust maps, report, provenance and thick slices -> isotropic against the engine's
CLI contract (a stand-in engine process, fake_engine.py, until the real flags exist; the same tests
run against the real engine once it offers them)."""
import re
import time

import FAGANSuperResLib.options as optionsModule
import numpy as np
import pytest
import slicer
import slicer.util
from FAGANSuperResLib import engine
from FAGANSuperResLib.isotropic import batchThroughPlaneValues, formatSpacing, isotropicName, throughPlaneDefaults
from FAGANSuperResLib.logic import (
    SuperResolutionError,
    SuperResolutionLogic,
    superResolutionArguments,
)
from FAGANSuperResLib.maps import colorLegend
from FAGANSuperResLib.options import checkRunOptions, runOptions
from FAGANSuperResLib.provenance import NOTICE
from FAGANSuperResLib.volumes import physicalCornersRAS
from mrml_helpers import addVolumeNode, ijkToRas, pollUntilDone, smoothArray


def sceneNodes(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


# ---------------------------------------------------------------- command line


def test_command_line_for_acquisition_lanczos_and_through_plane():
    options = runOptions(scale=4, method="lanczos", acquisition="gaussian", uncertainty=True)
    args = superResolutionArguments("in.nrrd", "out.nrrd", options, mapPaths={"uncertainty": "u.nrrd"})
    joined = " ".join(args)
    assert "--method lanczos" in joined and "--acquisition gaussian" in joined and "--uncertainty-map u.nrrd" in joined
    tp = runOptions(mode="through-plane", target_spacing=1.0, slice_thickness=4.5, fit_iterations=50,
                    enforce_consistency=True)
    args = superResolutionArguments("in.nrrd", "out.nrrd", tp, mapPaths={"consistency": "c.nrrd"}, reportPath="r.json")
    assert args[:3] == ["in.nrrd", "out.nrrd", "--through-plane"]
    assert "--scale" not in args and "--plane" not in args and "--acquisition" not in args
    joined = " ".join(args)
    for part in ("--target-spacing 1.0", "--slice-thickness 4.5", "--iterations 50", "--consistency-map c.nrrd",
                 "--enforce-consistency", "--report r.json", "--progress json"):
        assert part in joined
    with pytest.raises(ValueError, match="acquisition"):
        checkRunOptions(runOptions(acquisition="radial"))
    with pytest.raises(ValueError, match="method fagan"):
        checkRunOptions(runOptions(mode="through-plane", method="bicubic"))
    with pytest.raises(ValueError, match="uncertainty map .*in-plane"):  # as the engine says
        checkRunOptions(runOptions(mode="through-plane", uncertainty=True))


def test_features_the_engine_lacks_are_refused_before_anything_starts(scene, obliqueNode, monkeypatch, tmp_path):
    monkeypatch.setattr(optionsModule, "engineSupports", lambda *flags: False)
    before = sceneNodes(scene)
    for option in ({"mode": "through-plane"}, {"consistencyMap": True}, {"uncertainty": True}, {"enforce_consistency": True}):
        with pytest.raises(ValueError, match="no --"):
            SuperResolutionLogic(temporaryDirectory=str(tmp_path)).process(obliqueNode, None, 2, **option)
    with pytest.raises(ValueError, match="unknown option"):
        SuperResolutionLogic().process(obliqueNode, None, 2, colour="red")
    assert sceneNodes(scene) == before and list(tmp_path.iterdir()) == []


def test_engine_flags_are_read_from_the_engine_parser():
    assert engine.engineSupports("--scale", "--acquisition", "--method")
    assert not engine.engineSupports("--no-such-flag")
    assert engine.engineVersion()


# ---------------------------------------------------------------- real engine: Lanczos, acquisition warning, provenance


def test_nan_voxels_are_refused_or_set_to_0_with_the_zero_nan_policy(scene):
    """The engine's refusal points at the 'zero' NaN policy (the panel's "Treat NaN/Inf voxels as 0"); with it the run
    succeeds and the result records that non-finite voxels were set to 0."""
    array = smoothArray((2, 8, 10))
    array[1, 3, 3], array[0, 0, 0] = np.nan, np.inf
    node = addVolumeNode(scene, array, name="holes")
    logic = SuperResolutionLogic()
    with pytest.raises(SuperResolutionError, match="2 non-finite .* use the 'zero' NaN policy"):
        logic.process(node, None, 2, method="bicubic", device="cpu")
    job = logic.processWithOptions(node, None, runOptions(scale=2, method="bicubic", device="cpu", nan_policy="zero"))
    assert "--nan-policy" in job.process.command and np.isfinite(slicer.util.arrayFromVolume(job.outputVolumeNode)).all()
    assert job.outputVolumeNode.GetAttribute("FAGAN.NonFiniteVoxels") == "set to 0"
    assert "Non finite voxels: set to 0" in job.summaryText()


def test_lanczos_with_the_real_engine_carries_the_notice(scene, obliqueNode):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, method="lanczos", device="cpu")
    node = job.outputVolumeNode
    assert node.GetName() == "Oblique_SRx2"
    np.testing.assert_allclose(physicalCornersRAS(node), physicalCornersRAS(obliqueNode), atol=1e-4)
    assert node.GetAttribute("FAGAN.Notice") == NOTICE and NOTICE in node.GetDescription()
    assert node.GetAttribute("FAGAN.Checkpoint") == "none (lanczos interpolation)"
    assert node.GetAttribute("FAGAN.EngineVersion") == engine.engineVersion()
    assert node.GetAttribute("FAGAN.Method") == "lanczos"


def test_acquisition_mismatch_warning_reaches_the_job_and_the_node(scene, obliqueNode, tinyCheckpoints):
    """The tiny checkpoint was made for bicubic acquisition; asking for k-space gives the engine's warning."""
    job = SuperResolutionLogic().process(obliqueNode, None, 2, checkpoint=str(tinyCheckpoints[2]), device="cpu",
                                         acquisition="kspace")
    assert job.state == "succeeded"
    assert any("kspace" in w for w in job.warnings), job.warnings
    node = job.outputVolumeNode
    assert node.GetAttribute("FAGAN.Checkpoint") == "tiny_x2.safetensors"
    assert len(node.GetAttribute("FAGAN.CheckpointSHA256")) == 64
    assert node.GetAttribute("FAGAN.Acquisition") == "kspace"
    assert "kspace" in node.GetAttribute("FAGAN.Warnings") and "Warning: " in node.GetDescription()
    rows = tableRows(job.summaryTableNode)
    assert ["Notice", NOTICE] in rows and any(r[0] == "Warning" and "kspace" in r[1] for r in rows)
    quiet = SuperResolutionLogic().process(obliqueNode, None, 2, checkpoint=str(tinyCheckpoints[2]), device="cpu",
                                           acquisition="bicubic")
    assert not [w for w in quiet.warnings if "acquisition" in w]


def tableRows(tableNode):
    table = tableNode.GetTable()
    return [[table.GetValue(r, c).ToString() for c in range(table.GetNumberOfColumns())] for r in range(table.GetNumberOfRows())]


def slowBatch(scene, tmp_path, first):
    """A ×8 Lanczos batch of ``first`` and two large volumes that take seconds each, started in the background."""
    from FAGANSuperResLib.batch import BatchLogic

    nodes = [first] + [addVolumeNode(scene, smoothArray((40, 128, 128), seed=i), name=f"large {i}") for i in range(2)]
    return BatchLogic(temporaryDirectory=str(tmp_path)).process(
        nodes, runOptions(scale=8, method="lanczos", device="cpu"), waitForCompletion=False)


def waitForCase(job, index, status, timeout=120):
    deadline = time.monotonic() + timeout
    while job.cases[index].status != status:
        assert not job.poll() and time.monotonic() < deadline, job.status
        time.sleep(0.02)


def tableHeader(tableNode):
    table = tableNode.GetTable()
    return [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]


# ---------------------------------------------------------------- trust maps (engine contract)


def test_trust_maps_become_overlay_nodes_on_the_exact_grid(scene, obliqueNode, fakeEngine):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu", consistencyMap=True, uncertainty=True)
    result = job.outputVolumeNode
    assert set(job.mapNodes) == {"consistency", "uncertainty"}
    for kind, mapNode in job.mapNodes.items():
        assert mapNode.GetName() == f"Oblique_SRx2_{kind}"
        assert mapNode.GetImageData().GetDimensions() == result.GetImageData().GetDimensions()
        np.testing.assert_allclose(physicalCornersRAS(mapNode), physicalCornersRAS(result), atol=1e-4)
        np.testing.assert_allclose(ijkToRas(mapNode), ijkToRas(result), atol=1e-9)
        display = mapNode.GetDisplayNode()
        assert display.GetColorNode().GetAttribute("FAGAN.ColorMap") == kind and not display.GetAutoWindowLevel()
        legend = colorLegend(mapNode)
        assert legend is not None and legend.GetVisibility() and legend.GetTitleText()
        assert mapNode.GetAttribute("FAGAN.Notice") == NOTICE and mapNode.GetAttribute("FAGAN.Role") == f"{kind} map"
    low, high = job.mapNodes["consistency"].GetDisplayNode().GetWindowLevelMin(), job.mapNodes["consistency"].GetDisplayNode().GetWindowLevelMax()
    assert low == pytest.approx(-high) and high > 0
    layers = job.overlayLayers()
    assert layers["background"] is result and layers["foreground"] is job.mapNodes["consistency"]
    assert 0 < layers["foregroundOpacity"] <= 1
    # Report: figures, warnings (event + report, without repeats), identity completed by the engine.
    assert job.summary == {"relative_rms_residual": 0.0123, "fraction_above_3sigma": 0.004}
    assert len(job.warnings) == 2 and len(set(job.warnings)) == 2
    assert result.GetAttribute("FAGAN.EngineVersion") == "9.9.9"
    assert result.GetAttribute("FAGAN.Checkpoint") == "fagan_x2.safetensors"
    assert result.GetAttribute("FAGAN.CheckpointSHA256") == "ab" * 32
    assert result.GetAttribute("FAGAN.TrainingData") == "ICBM152 2009a template"
    rows = tableRows(job.summaryTableNode)
    assert ["Relative rms residual", "0.0123"] in rows and sum(r[0] == "Warning" for r in rows) == 2
    # Colour tables are shared by later runs, not duplicated.
    colors = scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")
    SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu", consistencyMap=True)
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == colors


def savedAndReloaded(scene, tmp_path, form):
    """The scene written by MRML's own storage, as a ``.mrb`` file or a ``.mrml`` with data files,
    and read back into a new scene (with the node classes Slicer's Colors module registers)."""
    reloaded = slicer.vtkMRMLScene()
    reloaded.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    if form == "mrb":
        path = tmp_path / "scene.mrb"
        assert scene.WriteToMRB(str(path)) and path.stat().st_size > 0
        cache = slicer.vtkCacheManager()  # the application sets these up; ReadFromMRB unpacks into the cache
        cache.SetRemoteCacheDirectory(str(tmp_path / "cache"))
        dataIO = slicer.vtkDataIOManager()
        dataIO.SetCacheManager(cache)
        reloaded.SetDataIOManager(dataIO)
        assert reloaded.ReadFromMRB(str(path))
    else:
        bundle = tmp_path / "scene"
        bundle.mkdir()
        applicationLogic = slicer.vtkMRMLApplicationLogic()
        applicationLogic.SetMRMLScene(scene)
        assert applicationLogic.SaveSceneToSlicerDataBundleDirectory(str(bundle), None)
        reloaded.SetURL(str(bundle / "scene.mrml"))
        assert reloaded.Connect()
    return reloaded


@pytest.mark.parametrize("form", ["mrb", "mrml"])
def test_provenance_survives_saving_and_reloading_the_scene(scene, obliqueNode, fakeEngine, tmp_path, form):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu", consistencyMap=True)
    expected = {node.GetName(): (dict((n, node.GetAttribute(n)) for n in node.GetAttributeNames()), node.GetDescription())
                for node in (job.outputVolumeNode, job.mapNodes["consistency"])}
    reloaded = savedAndReloaded(scene, tmp_path, form)
    for name, (attributes, description) in expected.items():
        node = reloaded.GetFirstNodeByName(name)
        assert node is not None and node.GetImageData() is not None, name
        assert {n: node.GetAttribute(n) for n in attributes} == attributes
        assert node.GetAttribute("FAGAN.Notice") == NOTICE and node.GetAttribute("FAGAN.EngineVersion")
        assert node.GetDescription() == description and "research use, not for diagnosis" in description
    original = job.mapNodes["consistency"]
    reloadedMap = reloaded.GetFirstNodeByName(original.GetName())
    np.testing.assert_allclose(physicalCornersRAS(reloadedMap), physicalCornersRAS(original), atol=1e-4)
    assert reloadedMap.GetDisplayNode().GetColorNode().GetAttribute("FAGAN.ColorMap") == "consistency"
    assert reloaded.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 1
    table = reloaded.GetFirstNodeByName(job.summaryTableNode.GetName())
    assert table.GetAttribute("FAGAN.Notice") == NOTICE and table.GetNumberOfRows() == job.summaryTableNode.GetNumberOfRows()


@pytest.mark.parametrize("failure", ["exit", "grid"])
def test_a_failed_run_creates_nothing(scene, obliqueNode, fakeEngine, failure, tmp_path):
    fakeEngine.setenv("FAKE_ENGINE_FAIL", failure)
    existing = addVolumeNode(scene, np.ones((2, 3, 4), np.float32), name="Existing")
    matrix, array = ijkToRas(existing), slicer.util.arrayFromVolume(existing).copy()
    before = sceneNodes(scene)
    for output in (None, existing):
        with pytest.raises(SuperResolutionError, match="simulated failure" if failure == "exit" else "not on the result's grid"):
            SuperResolutionLogic(temporaryDirectory=str(tmp_path)).process(
                obliqueNode, output, 2, device="cpu", consistencyMap=True, uncertainty=True)
    assert sceneNodes(scene) == before
    np.testing.assert_array_equal(ijkToRas(existing), matrix)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(existing), array)
    assert existing.GetAttribute("FAGAN.Notice") is None
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- thick slices -> isotropic


def test_apply_to_all_leaves_the_selected_volumes_prefilled_values_to_the_engine(scene):
    """Every volume of the batch was reconstructed with the selected volume's target spacing and DICOM thickness."""
    node = addVolumeNode(scene, smoothArray(), spacing=(0.9, 1.3, 3.5))
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.1")
    dicom = lambda uid, tag: "4.0"  # noqa: E731
    assert batchThroughPlaneValues(node, 0.9, 4.0, dicom) == (0.0, 0.0)  # prefilled: each volume its own
    assert batchThroughPlaneValues(node, 0.5, 4.0, dicom) == (0.5, 0.0)  # typed: for all
    assert batchThroughPlaneValues(node, 0.9, 3.0, dicom) == (0.0, 3.0)
    assert batchThroughPlaneValues(None, 0.9, 3.0) == (0.9, 3.0)


def test_through_plane_defaults_come_from_the_node(scene):
    node = addVolumeNode(scene, smoothArray(), spacing=(0.9, 1.3, 3.5))
    # no DICOM value: 0, so the engine decides (header, its own estimate, the spacing) rather than being told the spacing
    assert throughPlaneDefaults(node) == (0.9, 0.0, "engine")
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")
    asked = []

    def instanceValue(uid, tag):
        asked.append((uid, tag))
        return "4.0"

    assert throughPlaneDefaults(node, instanceValue) == (0.9, 4.0, "DICOM")
    assert asked == [("1.2.3.1", "0018,0050")]
    assert throughPlaneDefaults(node, lambda uid, tag: "")[1:] == (0.0, "engine")  # tag missing
    sagittal = addVolumeNode(scene, smoothArray(), spacing=(5.0, 0.5, 0.6))
    assert throughPlaneDefaults(sagittal)[:2] == (0.5, 0.0)
    # a near-tie goes where the engine sends it (the last axis), so the name's spacing is the result's
    from FAGANSuperResLib.isotropic import throughPlaneAxis

    assert throughPlaneAxis(addVolumeNode(scene, smoothArray(), spacing=(3.0, 1.0, 2.99999))) == 2


def test_isotropic_result_names():
    assert [formatSpacing(s) for s in (1, 0.5, 0.9968, 1.25, 0.75, 2.0004, 0.3333)] == [
        "1.0", "0.5", "1.0", "1.25", "0.75", "2.0", "0.33"]
    assert isotropicName("t2", 1.0) == "t2_iso1.0mm"


def test_in_plane_run_shows_the_adaptation_phase_and_the_switches_reach_the_engine(scene, fakeEngine):
    node = addVolumeNode(scene, smoothArray((6, 16, 20)), spacing=(1.0, 1.0, 4.0), name="t1")
    job = SuperResolutionLogic().process(node, None, 2, device="cpu", waitForCompletion=False)
    statuses, fractions = [], []
    job.onProgress = lambda j: (statuses.append(j.status), fractions.append(j.fraction))
    pollUntilDone(job)
    assert job.state == "succeeded", job.error
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, "the bar restarted at inference"
    assert "Step 1/2, adapting the model to this scan: step 3 of at most 3" in statuses
    assert any(status.startswith("Step 2/2, super-resolving") for status in statuses)
    assert "--adapt" not in job.process.command and "--no-enforce-consistency" not in job.process.command
    off = SuperResolutionLogic().process(node, None, 2, device="cpu", adapt_iterations=0, enforce_consistency=False)
    assert off.state == "succeeded", off.error
    assert {"--no-enforce-consistency", "--adapt"} <= set(off.process.command)


def test_through_plane_run_reports_both_phases_and_names_the_result(scene, fakeEngine):
    node = addVolumeNode(scene, smoothArray((6, 16, 20)), spacing=(1.0, 1.0, 4.0), name="t2")
    job = SuperResolutionLogic().process(node, None, 2, device="cpu", mode="through-plane", target_spacing=1.0,
                                         slice_thickness=4.0, fit_iterations=3, waitForCompletion=False)
    statuses = []
    job.onProgress = lambda j: statuses.append((j.phase, j.status))
    pollUntilDone(job)
    assert job.state == "succeeded", job.error
    assert "--through-plane" in job.process.command and "--scale" not in job.process.command
    assert ("fit", "Step 1/2, fitting to this scan: iteration 3 of 3, loss 0.3333") in statuses
    assert any(phase == "inference" and status.startswith("Step 2/2") for phase, status in statuses)
    result = job.outputVolumeNode
    assert result.GetName() == "t2_iso1.0mm"
    assert result.GetImageData().GetDimensions() == (20, 16, 24)
    np.testing.assert_allclose(result.GetSpacing(), (1.0, 1.0, 1.0), atol=1e-9)
    np.testing.assert_allclose(physicalCornersRAS(result), physicalCornersRAS(node), atol=1e-4)
    assert result.GetAttribute("FAGAN.Mode") == "through-plane" and result.GetAttribute("FAGAN.TargetSpacing") == "1 mm"


def startedFit(node, tmp_path, iterations, timeout):
    """A through-plane run of ``node``, polled until it reports the fit phase (a failure before it fails the test)."""
    job = SuperResolutionLogic(temporaryDirectory=str(tmp_path)).process(
        node, None, 2, device="cpu", mode="through-plane", fit_iterations=iterations, waitForCompletion=False)
    deadline = time.monotonic() + timeout
    while job.phase != "fit":
        assert not job.poll() and time.monotonic() < deadline, job.status
        time.sleep(0.05)
    return job


def waitForExit(job):
    while not job.process.finished:
        job.poll()
        time.sleep(0.05)


def test_cancel_during_the_fit_leaves_the_scene_unchanged(scene, fakeEngine, tmp_path):
    fakeEngine.setenv("FAKE_ENGINE_FAIL", "slow")
    node = addVolumeNode(scene, smoothArray((6, 16, 20)), spacing=(1.0, 1.0, 4.0), name="t2")
    before = sceneNodes(scene)
    job = startedFit(node, tmp_path, iterations=50, timeout=30)
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 1.0 and job.state == "cancelled"
    waitForExit(job)
    assert sceneNodes(scene) == before and list(tmp_path.iterdir()) == []


def throughPlaneReady() -> bool:
    """The engine offers --through-plane and ships its pretrained through-plane weights."""
    checkpoints = engine.engineParentDir() / "fagan_engine" / "checkpoints"
    return engine.engineSupports("--through-plane") and any(checkpoints.glob("*through_plane*.safetensors"))


@pytest.mark.skipif(not throughPlaneReady(), reason="the engine has no --through-plane (or its weights) yet")
def test_through_plane_with_the_real_engine(scene):
    node = addVolumeNode(scene, smoothArray((8, 32, 32)), spacing=(1.0, 1.0, 3.0), name="thick")
    job = SuperResolutionLogic().process(node, None, 2, device="cpu", mode="through-plane", fit_iterations=2)
    result = job.outputVolumeNode
    assert result.GetName().startswith("thick_iso") and result.GetName().endswith("mm")
    np.testing.assert_allclose(physicalCornersRAS(result), physicalCornersRAS(node), atol=1e-4)
    assert any(e.get("phase") == "fit" for e in job.process.events)
    assert result.GetAttribute("FAGAN.Checkpoint") == "fagan_through_plane_low.safetensors"  # 3 mm to 1 mm: the low-ratio start
    assert len(result.GetAttribute("FAGAN.CheckpointSHA256")) == 64 and result.GetAttribute("FAGAN.Mode") == "through-plane"
    # the thickness the engine used and where it came from (it said "from the header" whatever the engine did)
    assert re.fullmatch(r"[0-9.]+ mm \((estimated from the scan|assumed: the slice spacing)\)", result.GetAttribute("FAGAN.SliceThickness"))
    assert result.GetAttribute("FAGAN.TrainingData").startswith("icbm152:t1")  # in words, not the pretraining record


@pytest.mark.skipif(not engine.engineSupports("--consistency-map", "--uncertainty-map"), reason="the engine has no trust maps yet")
def test_trust_maps_with_the_real_engine(scene, obliqueNode, tinyCheckpoints):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, checkpoint=str(tinyCheckpoints[2]), device="cpu",
                                         consistencyMap=True, uncertainty=True)
    assert set(job.mapNodes) == {"consistency", "uncertainty"}
    for mapNode in job.mapNodes.values():
        np.testing.assert_allclose(physicalCornersRAS(mapNode), physicalCornersRAS(job.outputVolumeNode), atol=1e-4)
        np.testing.assert_allclose(ijkToRas(mapNode), ijkToRas(job.outputVolumeNode), atol=1e-6)
    result = job.outputVolumeNode
    assert result.GetAttribute("FAGAN.Notice") == NOTICE
    assert result.GetAttribute("FAGAN.Checkpoint") == "tiny_x2.safetensors"  # identity from the engine's report
    assert len(result.GetAttribute("FAGAN.CheckpointSHA256")) == 64 and result.GetAttribute("FAGAN.CheckpointAcquisition") == "bicubic"
    assert "relative_rms_residual" in job.summary and job.warnings  # figures and warnings from the report
    assert job.overlayLayers()["foreground"] is job.mapNodes["consistency"]


# ---------------------------------------------------------------- apply to all volumes (batch)


@pytest.mark.skipif(not throughPlaneReady(), reason="the engine has no --through-plane (or its weights) yet")
def test_a_through_plane_batch_names_the_start_each_case_used(scene, tmp_path):
    """The engine picks the through-plane start by each volume's slice ratio, so one batch can use both."""
    from FAGANSuperResLib.batch import BatchLogic

    nodes = [addVolumeNode(scene, smoothArray((8, 32, 32), seed=i), spacing=(1.0, 1.0, thick), name=f"{thick:g} mm")
             for i, thick in enumerate((2.0, 4.0))]
    # The second was loaded from DICOM with 3 mm slices every 4 mm: a single run hands that thickness to the engine, and so
    # must the batch (it used the 4 mm spacing, and its result recorded no thickness).
    nodes[1].SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")
    job = BatchLogic(temporaryDirectory=str(tmp_path)).process(
        nodes, runOptions(mode="through-plane", fit_iterations=0, device="cpu"), waitForCompletion=False,
        instanceValue=lambda uid, tag: "3" if tag == "0018,0050" else "")
    pollUntilDone(job, 120)
    assert job.state == "succeeded", job.error
    results = [case.outputVolumeNode for case in job.cases]
    names = [result.GetAttribute("FAGAN.Checkpoint") for result in results]
    assert names == ["fagan_through_plane_low.safetensors", "fagan_through_plane.safetensors"]
    assert len({result.GetAttribute("FAGAN.CheckpointSHA256") for result in results}) == 2
    thickness = [result.GetAttribute("FAGAN.SliceThickness") for result in results]
    assert thickness[0].startswith("2 mm (") and "spacing" in thickness[0]
    assert thickness[1].startswith("3 mm (") and "DICOM" in thickness[1]
    assert all(result.GetAttribute("FAGAN.Fit") for result in results)
    assert all(result.GetAttribute("FAGAN.Threads") == str(job.threads) for result in results) and job.threads


def test_batch_input_volumes_skip_results_label_maps_and_other_folders(scene):
    from FAGANSuperResLib.batch import batchInputVolumes

    a = addVolumeNode(scene, smoothArray(seed=1), name="a")
    b = addVolumeNode(scene, smoothArray(seed=2), name="b")
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((2, 8, 8), np.uint8))
    result = addVolumeNode(scene, smoothArray(seed=3), name="a_SRx2")
    result.SetAttribute("FAGAN.Notice", NOTICE)
    assert batchInputVolumes(scene) == [a, b]
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = shNode.CreateFolderItem(shNode.GetSceneItemID(), "Study 2")
    sub = shNode.CreateFolderItem(folder, "Series")
    item = shNode.GetItemByDataNode(b) or shNode.CreateItem(shNode.GetSceneItemID(), b)
    shNode.SetItemParent(item, sub)
    assert batchInputVolumes(scene, folder) == [b]


def test_batch_runs_every_volume_in_one_process_and_keeps_going_after_a_failure(scene, tmp_path):
    from FAGANSuperResLib.batch import BatchLogic, batchInputVolumes

    if not engine.engineSupports("--output-dir"):
        pytest.skip("the engine has no batch mode yet")
    nodes = [addVolumeNode(scene, smoothArray(seed=i), name=f"case {i}") for i in range(3)]
    broken = slicer.util.arrayFromVolume(nodes[1])
    broken[0, 0, 0] = np.nan  # the engine refuses non-finite voxels: this case fails, the others go on
    slicer.util.arrayFromVolumeModified(nodes[1])
    consistencyMap = engine.engineSupports("--consistency-map")
    job = BatchLogic(temporaryDirectory=str(tmp_path)).process(
        batchInputVolumes(scene), runOptions(scale=2, method="lanczos", device="cpu"), waitForCompletion=False,
        consistencyMap=consistencyMap)
    fractions, statuses = [], []
    job.onProgress = lambda j: (fractions.append(j.fraction), statuses.append(j.status))
    pollUntilDone(job, 120)
    # progress events name no input: the status line named "Volume ? of 3 (?)" while each volume ran
    progress = [status for status in statuses if ": slice " in status]
    assert progress and all(status.startswith(("Volume 1 of 3 (case 0)", "Volume 2 of 3 (case 1)", "Volume 3 of 3 (case 2)"))
                            for status in progress), progress
    assert sum(1 for part in job.process.command if part.endswith(".nrrd")) == 3  # one process for all
    assert job.state == "partial" and "case 1" in job.error
    assert [case.status for case in job.cases] == ["loaded", "failed", "loaded"]
    for case in (job.cases[0], job.cases[2]):
        node = case.outputVolumeNode
        assert node.GetName() == f"{case.node.GetName()}_SRx2" and node.GetAttribute("FAGAN.Notice") == NOTICE
        np.testing.assert_allclose(physicalCornersRAS(node), physicalCornersRAS(case.node), atol=1e-4)
        for mapNode in case.mapNodes.values():
            np.testing.assert_allclose(physicalCornersRAS(mapNode), physicalCornersRAS(node), atol=1e-4)
            assert mapNode.GetAttribute("FAGAN.Role") == "consistency map"
        assert len(case.mapNodes) == int(consistencyMap)
    assert fractions and max(fractions) <= 1.0
    rows = tableRows(job.tableNode)
    assert [row[2] for row in rows] == ["done", "failed", "done"] and rows[1][5]
    if consistencyMap:  # the trust figures of a single run's summary table, one column each (they were dropped)
        header = tableHeader(job.tableNode)
        column = header.index("Relative rms residual")
        assert [bool(row[column]) for row in rows] == [True, False, True]
        assert float(rows[0][column]) == pytest.approx(job.cases[0].summary["relative_rms_residual"], rel=1e-3)
    assert list(tmp_path.iterdir()) == []


def test_a_batch_whose_engine_is_killed_names_the_kill_on_the_running_volume_only(scene, tmp_path):
    """The engine killed (the out-of-memory killer) while the second volume ran, after the first had failed: every open
    volume was given the first one's error line, and the kill was not mentioned."""
    import os
    import signal


    if not engine.engineSupports("--output-dir"):
        pytest.skip("the engine has no batch mode yet")
    first = addVolumeNode(scene, smoothArray((4, 16, 20)), name="has NaN")
    broken = slicer.util.arrayFromVolume(first)
    broken[0, 0, 0] = np.nan
    slicer.util.arrayFromVolumeModified(first)
    job = slowBatch(scene, tmp_path, first)
    waitForCase(job, 1, "running")
    os.kill(job.process._popen.pid, signal.SIGKILL)  # only the engine, as the out-of-memory killer would
    pollUntilDone(job, 60)
    assert [case.status for case in job.cases] == ["failed", "failed", "not run"]
    assert "non-finite" in job.cases[0].error
    assert job.cases[1].error == "the engine process was killed by SIGKILL (out of memory?)"
    assert job.cases[2].error == "the engine stopped before this volume"
    assert job.state == "failed" and "non-finite" not in job.cases[1].error
    assert job.status == "0 of 3 volumes done, 2 failed, 1 not run."
    assert list(tmp_path.iterdir()) == []


def test_batch_file_names_of_long_node_names_are_short_and_unique(scene, tmp_path):
    """A node name of 246+ characters made a case file name the file system refused: the whole batch failed."""
    from FAGANSuperResLib.batch import BatchLogic, caseFileName
    from FAGANSuperResLib.volumes import FILE_NAME_CHARACTERS

    if not engine.engineSupports("--output-dir"):
        pytest.skip("the engine has no batch mode yet")
    stem = "T2 " + "axial fat-sat " * 18
    nodes = [addVolumeNode(scene, smoothArray((2, 8, 10), seed=i), name=f"{stem}{i}") for i in range(2)]
    names = [caseFileName(index, node) for index, node in enumerate(nodes)]
    assert names[0].startswith("000_T2_axial_fat-sat_axial") and names[1].startswith("001_T2_axial_fat-sat_axial")
    assert all(name.endswith("_axial.nrrd") and len(name) <= len("000_.nrrd") + FILE_NAME_CHARACTERS for name in names)
    job = BatchLogic(temporaryDirectory=str(tmp_path)).process(
        nodes, runOptions(scale=2, method="lanczos", device="cpu"), consistencyMap=engine.engineSupports("--consistency-map"))
    assert job.state == "succeeded", job.error
    assert [case.outputVolumeNode.GetName() for case in job.cases] == [f"{node.GetName()}_SRx2" for node in nodes]


def test_batch_cancel_leaves_the_scene_unchanged_when_nothing_finished(scene, tmp_path):
    from FAGANSuperResLib.batch import BatchLogic

    if not engine.engineSupports("--output-dir"):
        pytest.skip("the engine has no batch mode yet")
    nodes = [addVolumeNode(scene, smoothArray((8, 64, 64), seed=i), name=f"big {i}") for i in range(2)]
    before = sceneNodes(scene)
    job = BatchLogic(temporaryDirectory=str(tmp_path)).process(
        nodes, runOptions(scale=8, method="bicubic", device="cpu"), waitForCompletion=False)
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 1.0
    assert job.state == "cancelled" and sceneNodes(scene) == before
    waitForExit(job)
    assert list(tmp_path.iterdir()) == []


def test_results_join_the_input_study_in_the_subject_hierarchy(scene, obliqueNode, fakeEngine):
    """So that Slicer's DICOM export finds the patient and study of a result and its maps."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), "Patient")
    study = shNode.CreateStudyItem(patient, "Study")
    item = shNode.GetItemByDataNode(obliqueNode) or shNode.CreateItem(study, obliqueNode)
    shNode.SetItemParent(item, study)
    job = SuperResolutionLogic().process(obliqueNode, None, 2, device="cpu", consistencyMap=True)
    for node in (job.outputVolumeNode, job.mapNodes["consistency"], job.summaryTableNode):
        assert shNode.GetItemParent(shNode.GetItemByDataNode(node)) == study, node.GetName()


def test_report_identity_forms():
    from FAGANSuperResLib.provenance import figureLabel, identityFromReport

    nested = {"engine_version": "1.2", "acquisition": "kspace",
              "checkpoint": {"name": "x.safetensors", "sha256": "f" * 64, "training_data": ["icbm152:t1"], "acquisitions": ["bicubic", "kspace"]}}
    assert identityFromReport(nested) == {"checkpoint": "x.safetensors", "sha256": "f" * 64, "training_data": "icbm152:t1",
                                          "acquisition": "bicubic, kspace", "engine_version": "1.2"}
    # No checkpoint block (interpolation; the through-plane weights are not reported yet): the run's
    # acquisition is not taken for the checkpoint's.
    assert identityFromReport({"engine_version": "1.2", "acquisition": "kspace", "checkpoint": None}) == {"engine_version": "1.2"}
    assert identityFromReport({"checkpoint": None}, "0.9") == {"engine_version": "0.9"}
    assert identityFromReport("garbage") == {}
    assert [figureLabel(k) for k in ("relative_rms_residual", "targetSpacing", "mode")] == ["Relative rms residual", "Target spacing", "Mode"]


@pytest.mark.parametrize("sceneClosing", [False, True])
def test_batch_results_appear_one_by_one_and_cancel_keeps_them(scene, tmp_path, sceneClosing):
    """A cancel keeps the loaded results and adds the summary table; while the scene closes (the module cancels with
    ``keepFinished=False``) it adds nothing more to the scene."""

    if not engine.engineSupports("--output-dir"):
        pytest.skip("the engine has no batch mode yet")
    job = slowBatch(scene, tmp_path, addVolumeNode(scene, smoothArray((4, 16, 20)), name="small"))
    waitForCase(job, 0, "loaded")
    first = job.cases[0].outputVolumeNode
    assert first.GetScene() is scene and first.GetName() == "small_SRx8"  # in the scene while the batch runs
    if sceneClosing:
        before = sceneNodes(scene)
        job.cancel(keepFinished=False)
        assert job.tableNode is None and sceneNodes(scene) == before
    else:
        job.cancel()
        assert [row[2] for row in tableRows(job.tableNode)] == ["done", "cancelled", "cancelled"]
    assert job.state == "partial" and job.cases[0].status == "loaded"
    assert [case.status for case in job.cases[1:]] == ["cancelled", "cancelled"]
    assert first.GetScene() is scene
    waitForExit(job)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not throughPlaneReady(), reason="the engine has no --through-plane (or its weights) yet")
def test_cancel_during_the_real_fit(scene, tmp_path):
    node = addVolumeNode(scene, smoothArray((8, 48, 48)), spacing=(1.0, 1.0, 4.0), name="thick")
    before = sceneNodes(scene)
    job = startedFit(node, tmp_path, iterations=5000, timeout=120)
    assert job.status.startswith("Step 1/2")
    job.cancel()
    assert job.state == "cancelled"
    waitForExit(job)
    assert job.process.returnCode != 0 and sceneNodes(scene) == before and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not engine.engineSupports("--enforce-consistency", "--consistency-map"), reason="the engine has no trust features yet")
def test_enforced_consistency_with_the_real_engine(scene, obliqueNode):
    plain = SuperResolutionLogic().process(obliqueNode, None, 2, method="lanczos", device="cpu", consistencyMap=True)
    job = SuperResolutionLogic().process(obliqueNode, None, 2, method="lanczos", device="cpu", enforce_consistency=True,
                                         consistencyMap=True)
    # The projection changed the result; the map and its figures show what it removed (the residual before it).
    assert not np.allclose(slicer.util.arrayFromVolume(job.outputVolumeNode), slicer.util.arrayFromVolume(plain.outputVolumeNode))
    assert job.summary["relative_rms_residual"] == pytest.approx(plain.summary["relative_rms_residual"])
    assert job.outputVolumeNode.GetAttribute("FAGAN.EnforceConsistency") == "yes"
    assert ["Enforce consistency", "yes"] in tableRows(job.summaryTableNode)


def test_a_result_written_into_an_earlier_runs_map_leaves_that_run_and_shows_as_an_image(scene):
    """The old result still listed the node as its consistency map (its overlay showed the new x4 image), the node still
    pointed back to it, and the new result kept the residual colours with a fixed window: a flat colour."""
    from FAGANSuperResLib.results import REFERENCE_MAP, REFERENCE_RESULT

    node = addVolumeNode(scene, smoothArray(), name="In")
    first = SuperResolutionLogic().process(node, None, 2, device="cpu", method="bicubic", consistencyMap=True)
    mapNode = first.mapNodes["consistency"]
    second = SuperResolutionLogic().process(node, mapNode, 4, device="cpu", method="lanczos")
    assert second.outputVolumeNode is mapNode and mapNode.GetAttribute("FAGAN.Role") == "result"
    assert first.outputVolumeNode.GetNumberOfNodeReferences(REFERENCE_MAP) == 0 and mapNode.GetNodeReference(REFERENCE_RESULT) is None
    display = mapNode.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeGrey" and display.GetAutoWindowLevel()


def test_a_thick_slice_result_records_what_the_per_scan_fit_did(scene):
    """With 0 fit steps (the pretrained network) or 3, the result's attributes were the same: nothing named the fit."""
    node = addVolumeNode(scene, smoothArray((6, 24, 24)), spacing=(1.0, 1.0, 3.0), name="TP")
    pretrained = SuperResolutionLogic().process(node, None, 2, device="cpu", mode="through-plane", fit_iterations=0)
    assert pretrained.outputVolumeNode.GetAttribute("FAGAN.Fit") == "off (the pretrained network)"
    fitted = SuperResolutionLogic().process(node, None, 2, device="cpu", mode="through-plane", fit_iterations=3)
    assert re.fullmatch(r"\d+ steps, kept step \d+ \(.+\)", fitted.outputVolumeNode.GetAttribute("FAGAN.Fit"))


def test_a_map_node_reused_after_its_result_was_deleted_shows_as_an_image(scene):
    """With the old result gone, the back-reference did not resolve and the map's colours stayed."""
    node = addVolumeNode(scene, smoothArray(), name="In")
    first = SuperResolutionLogic().process(node, None, 2, device="cpu", method="bicubic", consistencyMap=True)
    mapNode = first.mapNodes["consistency"]
    scene.RemoveNode(first.outputVolumeNode)
    SuperResolutionLogic().process(node, mapNode, 2, device="cpu", method="lanczos")
    display = mapNode.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeGrey" and display.GetAutoWindowLevel()
