"""Combine thick stacks (FAGANSuperResLib.stacks) on a real MRML scene: the stand-in engine for the flow, refusals and
failures, the real engine on tiny simulated stacks for the geometry."""
import numpy as np
import pytest
import slicer.util
from FAGANSuperResLib.logic import SuperResolutionError
from FAGANSuperResLib.memory import checkStacksFit, stacksResultBytes
from FAGANSuperResLib.options import runOptions
from FAGANSuperResLib.results import REFERENCE_INPUT, REFERENCE_MAP, REFERENCE_RESULT
from FAGANSuperResLib.stacks import StacksLogic, checkStackNodes, describeStack, stacksArguments, stacksResultName
from FAGANSuperResLib.volumes import physicalCornersRAS, updateVolumeNodeFromImage
from mrml_helpers import addVolumeNode, ijkToRas, pollUntilDone, rotation, smoothArray


def threeStacks(scene):
    """Axial-, coronal- and sagittal-like thick stacks (oblique, 3 mm slices across index axis k)."""
    base = rotation((1.0, 2.0, 0.5), 0.3)
    turns = (np.eye(3), rotation((1.0, 0.0, 0.0), np.pi / 2), rotation((0.0, 1.0, 0.0), np.pi / 2))
    return [addVolumeNode(scene, smoothArray((8, 16, 20), seed=i), spacing=(0.8, 0.8, 3.0), direction=base @ turn,
                          name=name) for i, (turn, name) in enumerate(zip(turns, ("T2ax", "T2cor", "T2sag")))]


def sceneNodes(scene):
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def test_arguments_name_the_stacks_reference_and_maps():
    options = runOptions(mode="through-plane", device="cpu", target_spacing=0.5, fit_iterations=0)
    args = stacksArguments(["a.nrrd", "b.nrrd"], "out.nrrd", 1, options, True, "r.json")
    assert args[:4] == ["--stacks", "a.nrrd", "b.nrrd", "out.nrrd"]
    joined = " ".join(args)
    for part in ("--reference 2", "--target-spacing 0.5", "--iterations 0", "--consistency-map", "--report r.json",
                 "--device cpu", "--progress json"):
        assert part in joined
    plain = " ".join(stacksArguments(["a", "b"], "o", 0, runOptions(mode="through-plane", device="cuda"), False, "r.json"))
    assert "--reference" not in plain and "--iterations" not in plain and "--consistency-map" not in plain
    assert "--device" not in plain  # no prior: the least squares run on the CPU, and the engine refuses --device cuda
    assert stacksResultName("T2ax", 0.8) == "T2ax_stacks_iso0.8mm"
    # every digit reaches the engine, and a long fit stays a whole number (``{:g}`` wrote 0.123457 and 1e+06)
    exact = runOptions(mode="through-plane", device="cpu", target_spacing=0.1234567, fit_iterations=1_000_000)
    joined = " ".join(stacksArguments(["a", "b"], "o", 0, exact, False, "r.json"))
    assert "--target-spacing 0.1234567" in joined and "--iterations 1000000" in joined


def test_combining_three_stacks_loads_the_result_maps_and_provenance(scene, fakeEngine):
    stacks = threeStacks(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    stacks[1].SetAndObserveTransformNodeID(transform.GetID())
    before = [slicer.util.arrayFromVolume(node).copy() for node in stacks]
    job = StacksLogic().process(stacks, None, reference=1, device="cpu", waitForCompletion=False)
    assert "--reference 2" in " ".join(job.process.command)
    pollUntilDone(job)
    assert job.state == "succeeded", job.error
    assert any(e.get("phase") == "register" for e in job.process.events)
    output = job.outputVolumeNode
    assert output.GetName() == "T2cor_stacks_iso0.8mm" and output.GetScene() is scene
    direction = ijkToRas(output)[:3, :3] / np.asarray(output.GetSpacing())
    np.testing.assert_allclose(direction, ijkToRas(stacks[1])[:3, :3] / np.asarray(stacks[1].GetSpacing()), atol=1e-9)
    np.testing.assert_allclose(output.GetSpacing(), (0.8, 0.8, 0.8), atol=1e-9)
    assert output.GetTransformNodeID() == transform.GetID()
    assert [output.GetNthNodeReference(REFERENCE_INPUT, i) for i in range(3)] == stacks
    assert output.GetAttribute("FAGAN.Mode") == "stacks" and output.GetAttribute("FAGAN.Reference") == "T2cor"
    assert output.GetAttribute("FAGAN.Notice") == "research use, not for diagnosis"
    assert "T2sag: moved 1.25 deg, 1.75 mm; intensity x0.900" in output.GetDescription()
    # the motion is a fact of the run, not a warning (every stacks result looked as if it had warnings)
    assert output.GetAttribute("FAGAN.Warnings") is None and output.GetAttribute("FAGAN.Stack3").startswith("T2sag: moved")
    maps = [output.GetNthNodeReference(REFERENCE_MAP, i) for i in range(output.GetNumberOfNodeReferences(REFERENCE_MAP))]
    assert maps == list(job.mapNodes.values()) and len(maps) == 3
    for mapNode, stack in zip(maps, stacks):  # each map on its own stack's grid, linked both ways
        np.testing.assert_allclose(ijkToRas(mapNode), ijkToRas(stack), atol=1e-6)
        assert mapNode.GetNodeReference(REFERENCE_INPUT) is stack and mapNode.GetNodeReference(REFERENCE_RESULT) is output
        assert mapNode.GetName() == f"{output.GetName()}_consistency_{stack.GetName()}"
        assert mapNode.GetTransformNodeID() == transform.GetID()  # the reference's frame, where the engine saw every stack
    assert job.summaryTableNode.GetNodeReference(REFERENCE_RESULT) is output
    assert job.status.startswith("Done: T2cor_stacks_iso0.8mm; stacks moved up to 3.1 mm")
    log = job.takeLogLines()
    assert "T2cor: moved 2.50 deg, 3.10 mm; intensity x1.200; residual 0.0120; slices 3 mm thick (assumed: the slice spacing)" in log
    assert "Stack: T2ax: moved 0.00 deg" in job.summaryText()
    assert "Target spacing:" in job.summaryText() and "targetSpacing" not in job.summaryText()  # labels, as a single run's
    for node, array in zip(stacks, before):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    assert not job.workDir.exists()


@pytest.mark.parametrize("fitIterations", [None, 2])
def test_the_bar_runs_once_over_the_whole_run_and_never_goes_back(scene, fakeEngine, fitIterations):
    """With the FA-GAN prior the stacks' fits and inferences came after the registration had filled the bar: it jumped
    back to 0 at every stack."""
    job = StacksLogic().process(threeStacks(scene)[:2], None, device="cpu", fitIterations=fitIterations,
                                waitForCompletion=False)
    fractions = []
    job.onProgress = lambda j: fractions.append(j.fraction)
    pollUntilDone(job)
    assert job.state == "succeeded", job.error
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    if fitIterations:  # the prior's phases moved it on from the registration's share
        priorEvents = sum(e.get("phase") in ("fit", "inference") for e in job.process.events)
        assert priorEvents == 10 and len(set(fractions)) > 12


def test_without_maps_into_an_existing_output_volume(scene, fakeEngine):
    stacks = threeStacks(scene)[:2]
    existing = addVolumeNode(scene, smoothArray(), name="previous")
    job = StacksLogic().process(stacks, existing, consistencyMaps=False, targetSpacing=0.4)
    assert job.outputVolumeNode is existing and job.mapNodes == {}
    assert existing.GetName() == "previous" and existing.GetNumberOfNodeReferences(REFERENCE_INPUT) == 2
    np.testing.assert_allclose(existing.GetSpacing(), (0.4, 0.4, 0.4), atol=1e-9)
    assert "--consistency-map" not in job.process.command


def test_bad_selections_are_refused_in_one_line_before_anything_starts(scene, fakeEngine):
    fakeEngine.setattr("FAGANSuperResLib.stacks.engineCommand", lambda *a: pytest.fail("the engine was started"))
    stacks = threeStacks(scene)
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((4, 8, 8, 3), np.uint8))
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((4, 8, 8), np.uint8))
    cases = [
        (stacks[:1], {}, "needs 2 or 3 volumes, got 1"),
        (stacks + [addVolumeNode(scene, smoothArray(), name="fourth")], {}, "needs 2 or 3 volumes, got 4"),
        ([stacks[0], stacks[1], stacks[0]], {}, "T2ax is selected twice"),
        ([stacks[0], vector], {}, "rgb has 3 components \\(a 4D or vector volume\\)"),
        ([stacks[0], label], {}, "labels is not a scalar"),
        ([stacks[0], None], {}, "stack 2 is not selected"),
        (stacks[:2], {"reference": 2}, "the reference must be stack 1 to 2, got 3"),
        (stacks[:2], {"outputVolumeNode": stacks[1]}, "not one of the stacks"),
        (stacks[:2], {"fitIterations": -1}, "fit iterations must be >= 0"),
    ]
    before = sceneNodes(scene)
    for nodes, kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            StacksLogic().process(nodes, **kwargs)
        assert "\n" not in str(error.value)
    assert sceneNodes(scene) == before
    # the panel's Apply check (checkStackNodes with its output) refuses what process would, before the button is pressed
    with pytest.raises(ValueError, match="not one of the stacks"):
        checkStackNodes(stacks, 0, stacks[2])
    checkStackNodes(stacks, 0, addVolumeNode(scene, smoothArray(), name="result"))


def test_an_output_volume_of_another_scene_or_kind_is_refused(scene, fakeEngine):
    """It was ignored (another scene: the result went to a new node) or took the scalar result (a vector volume)."""
    stacks = threeStacks(scene)[:2]
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "vec")
    otherScene = type(scene)()
    elsewhere = otherScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "elsewhere")
    for output, message in ((vector, "the output volume vec is not a scalar"),
                            (elsewhere, "the output volume elsewhere is not in the input volume's scene")):
        with pytest.raises(ValueError, match=message):
            checkStackNodes(stacks, 0, output)
        with pytest.raises(ValueError, match=message):
            StacksLogic().process(stacks, output)


def test_a_stack_deleted_during_the_run_is_named_in_a_warning(scene, fakeEngine):
    """Single and batch runs warned; combining stacks kept the result silently without the deleted stack's link."""
    stacks = threeStacks(scene)
    job = StacksLogic().process(stacks, None, device="cpu", waitForCompletion=False)
    scene.RemoveNode(stacks[1])
    pollUntilDone(job)
    assert job.state == "succeeded", job.error
    assert job.warnings == ["the input volume T2cor was deleted during the run; the result is kept without a link to it"]
    output = job.outputVolumeNode
    assert "T2cor was deleted" in output.GetAttribute("FAGAN.Warnings") and "T2cor was deleted" in job.summaryText()
    assert [output.GetNthNodeReference(REFERENCE_INPUT, i) for i in range(2)] == [stacks[0], stacks[2]]
    assert output.GetNumberOfNodeReferences(REFERENCE_INPUT) == 2
    assert job.mapNodes["consistency_stack2"].GetNodeReference(REFERENCE_INPUT) is None


def test_the_nan_policy_reaches_the_engine_and_the_result(scene, fakeEngine):
    """Treat NaN/Inf voxels as 0 (the engine's 'zero' NaN policy) applies to combining stacks too, and is recorded."""
    zero = runOptions(mode="through-plane", nan_policy="zero")
    assert "--nan-policy zero" in " ".join(stacksArguments(["a", "b"], "o", 0, zero, False, "r.json"))
    job = StacksLogic().process(threeStacks(scene)[:2], None, device="cpu", consistencyMaps=False, nanPolicy="zero")
    assert job.process.command[job.process.command.index("--nan-policy") + 1] == "zero"
    assert job.outputVolumeNode.GetAttribute("FAGAN.NonFiniteVoxels") == "set to 0"
    plain = StacksLogic().process(threeStacks(scene)[:2], None, device="cpu", consistencyMaps=False)
    assert "--nan-policy" not in plain.process.command and not plain.outputVolumeNode.GetAttribute("FAGAN.NonFiniteVoxels")
    fakeEngine.setattr("FAGANSuperResLib.stacks.engineSupports", lambda *flags: "--nan-policy" not in flags)
    with pytest.raises(ValueError, match="no --nan-policy option"):
        StacksLogic().process(threeStacks(scene)[:2], None, nanPolicy="zero")


def test_an_engine_refusal_is_one_line_and_the_scene_is_unchanged(scene, fakeEngine):
    stacks = threeStacks(scene)
    before = sceneNodes(scene)
    fakeEngine.setenv("FAKE_ENGINE_FAIL", "refuse")
    with pytest.raises(SuperResolutionError, match="^stack 2 does not match the reference stack 1"):
        StacksLogic().process(stacks)
    for fail in ("grid", "exit"):  # a map off its stack's grid; an engine that fails after writing
        fakeEngine.setenv("FAKE_ENGINE_FAIL", fail)
        job = StacksLogic().process(stacks, waitForCompletion=False)
        pollUntilDone(job)
        assert job.state == "failed" and "\n" not in job.error and not job.workDir.exists(), job.error
    assert sceneNodes(scene) == before


def test_cancel_stops_the_engine_and_leaves_the_scene(scene, fakeEngine):
    stacks = threeStacks(scene)
    before = sceneNodes(scene)
    fakeEngine.setenv("FAKE_ENGINE_FAIL", "slow")
    job = StacksLogic().process(stacks, waitForCompletion=False)
    while not job.process.events:
        job.poll()
        job.process.wait(timeout=0.05)
    job.poll()
    assert job.status.startswith("Combining 3 stacks on CPU") or job.phase == "register"
    job.cancel()
    assert job.state == "cancelled" and sceneNodes(scene) == before and not job.workDir.exists()


def test_the_memory_check_counts_the_result_and_every_map(scene):
    stacks = threeStacks(scene)
    box = 20 * 0.8 * 16 * 0.8 * 8 * 3.0
    assert stacksResultBytes(stacks, None, False) == 4 * int(np.ceil(box / 0.8**3))
    assert stacksResultBytes(stacks, 0.4, True) == 4 * (int(np.ceil(box / 0.4**3)) + 3 * 8 * 16 * 20)
    with pytest.raises(ValueError, match="^the combined volume and its maps need about .* GiB"):
        checkStacksFit(stacks, 0.4, True, available=1000)
    checkStacksFit(stacks, None, True, available=10**9)


def test_a_stack_under_its_own_registration_transform_is_combined_where_the_scene_shows_it(scene):
    """Parent transforms were dropped: a stack aligned in Slicer by a transform was combined where its voxels lay, a
    worse result with exit 0 (30 deg) or a refusal as 'different subjects' (45 deg)."""
    import SimpleITK as sitk
    import vtk

    from fagan_engine.through_plane.stack_simulation import orientation, phantom, simulate_stack

    volume = phantom(32, seed=0)
    stacks = [simulate_stack(volume, orientation(plane), 4.0, 4.0, sitk.Euler3DTransform()) for plane in ("axial", "coronal")]
    results = []
    for moved in (False, True):
        nodes = []
        for plane, stack in zip(("axial", "coronal"), stacks):
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", plane)
            if np.linalg.det(np.reshape(stack.GetDirection(), (3, 3))) < 0:
                stack = sitk.Flip(stack, [False, False, True])
            updateVolumeNodeFromImage(node, stack)
            nodes.append(node)
        if moved:  # the coronal voxels moved by 40 deg and 12 mm, and a transform in the scene that puts them back
            rotation = vtk.vtkTransform()
            rotation.Translate(12.0, 0.0, 0.0)
            rotation.RotateWXYZ(40.0, 0.3, 0.4, 0.866)
            undo = vtk.vtkMatrix4x4()
            undo.DeepCopy(rotation.GetMatrix())
            undo.Invert()
            toParent = vtk.vtkMatrix4x4()
            nodes[1].ApplyTransformMatrix(rotation.GetMatrix())
            transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
            toParent.DeepCopy(undo)
            transform.SetMatrixTransformToParent(toParent)
            nodes[1].SetAndObserveTransformNodeID(transform.GetID())
        job = StacksLogic().process(nodes, device="cpu", consistencyMaps=True)
        assert job.state == "succeeded", job.error
        results.append(slicer.util.arrayFromVolume(job.outputVolumeNode).copy())
        mapNode = job.mapNodes["consistency_stack2"]
        corners = [np.append(c, 1.0) for c in physicalCornersRAS(mapNode)]  # the map lies on its stack in the world
        world = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(mapNode.GetParentTransformNode(), None, world)
        stackWorld = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(nodes[1].GetParentTransformNode(), None, stackWorld)
        for mine, theirs in zip(corners, (np.append(c, 1.0) for c in physicalCornersRAS(nodes[1]))):
            np.testing.assert_allclose(world.TransformPoint(mine[:3]), stackWorld.TransformPoint(theirs[:3]), atol=1e-6)
    assert results[0].shape == results[1].shape
    assert np.corrcoef(results[0].ravel(), results[1].ravel())[0, 1] > 0.999
    bent = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    nodes[0].SetAndObserveTransformNodeID(bent.GetID())
    with pytest.raises(ValueError, match="non-linear transform"):
        StacksLogic().process(nodes, device="cpu")


def test_the_real_engine_combines_tiny_simulated_stacks_on_the_reference_grid(scene):
    """Two 4 mm stacks (axial, coronal tilted 15 deg) of a 32 mm phantom; the coronal stack is the reference."""
    import SimpleITK as sitk

    from fagan_engine.through_plane.stack_simulation import orientation, phantom, simulate_stack

    volume = phantom(32, seed=0)
    nodes = []
    for plane, tilt in (("axial", 0.0), ("coronal", 15.0)):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", plane)
        stack = simulate_stack(volume, orientation(plane, tilt), 4.0, 4.0, sitk.Euler3DTransform())
        if np.linalg.det(np.reshape(stack.GetDirection(), (3, 3))) < 0:  # right-handed, as Slicer's readers load it
            stack = sitk.Flip(stack, [False, False, True])
        updateVolumeNodeFromImage(node, stack)
        nodes.append(node)
    nodes[0].SetAttribute("DICOM.instanceUIDs", "1.2.3.4 1.2.3.5")  # loaded from DICOM: 3.5 mm slices, 0.5 mm gap

    def instanceValue(uid, tag):
        return "3.5" if (uid, tag) == ("1.2.3.4", "0018,0050") else ""

    job = StacksLogic().process(nodes, reference=1, device="cpu", waitForCompletion=False, instanceValue=instanceValue)
    pollUntilDone(job, timeout=300)
    assert job.state == "succeeded", job.error
    output = job.outputVolumeNode
    assert output.GetName() == "coronal_stacks_iso1.0mm"
    np.testing.assert_allclose(output.GetSpacing(), (1.0, 1.0, 1.0), atol=1e-9)
    direction = ijkToRas(output)[:3, :3]
    np.testing.assert_allclose(direction, ijkToRas(nodes[1])[:3, :3] / np.asarray(nodes[1].GetSpacing()), atol=1e-9)
    for stack in nodes:  # the result lies inside every stack
        toIjk = np.linalg.inv(ijkToRas(stack))
        local = np.array([(toIjk @ np.append(c, 1.0))[:3] for c in physicalCornersRAS(output)])
        dims = np.asarray(stack.GetImageData().GetDimensions())
        assert np.all(local >= -0.5 - 1e-6) and np.all(local <= dims - 0.5 + 1e-6)
    assert [m.GetImageData().GetDimensions() for m in job.mapNodes.values()] == [n.GetImageData().GetDimensions() for n in nodes]
    assert job.report["reference"] == 1 and len(job.motionLines) == 2 and job.motionLines[1].startswith("coronal: moved 0.00 deg")
    # each stack keeps its own thickness: the axial one its DICOM Slice Thickness, the other the engine's choice
    axial, coronal = job.report["stacks"]
    assert (axial["thickness"], axial["thickness_source"]) == (3.5, "dicom")
    assert coronal["thickness_source"] != "dicom" and "slices 3.5 mm thick (from the DICOM Slice Thickness)" in job.motionLines[0]


def test_a_stack_line_names_the_start_its_prior_began_from():
    entry = {"rotation_degrees": 1.0, "translation_mm": 2.0, "intensity_scale": 1.0, "residual_rms": 0.01, "thickness": 4.0,
             "thickness_source": "argument"}
    assert "prior" not in describeStack("T2ax", entry)  # no FA-GAN prior, no start
    entry["network_start"] = {"name": "fagan_through_plane.safetensors", "sha256": "ab" * 32}
    assert describeStack("T2ax", entry).endswith("slices 4 mm thick (as given); prior from fagan_through_plane.safetensors")


def test_the_frame_between_two_stacks(scene):
    """Stacks sharing one non-linear transform were refused; a rotation stored to five digits read as a shear."""
    import vtk
    from FAGANSuperResLib.volumes import rigidTransformBetween

    first, second = (addVolumeNode(scene, smoothArray(), name=name) for name in ("first", "second"))
    bent = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    for node in (first, second):
        node.SetAndObserveTransformNodeID(bent.GetID())
    np.testing.assert_array_equal(rigidTransformBetween(first, second), np.eye(4))  # one frame: nothing to apply
    second.SetAndObserveTransformNodeID(None)
    with pytest.raises(ValueError, match="first is under a non-linear transform"):
        rigidTransformBetween(first, second)
    rounded = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(np.round(rotation((0.2, 0.5, 0.84), 0.3), 5)):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, value)
    rounded.SetMatrixTransformToParent(matrix)
    first.SetAndObserveTransformNodeID(rounded.GetID())
    assert rigidTransformBetween(first, second)[0, 0] == pytest.approx(matrix.GetElement(0, 0))
    matrix.SetElement(0, 0, 1.2 * matrix.GetElement(0, 0))  # scaled: the grid cannot take it
    rounded.SetMatrixTransformToParent(matrix)
    with pytest.raises(ValueError, match="scales, shears or mirrors"):
        rigidTransformBetween(first, second)
