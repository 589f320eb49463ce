"""FAGANSuperResLib against a real MRML scene (slicer-core) and the real engine process."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer.util
import vtk
from FAGANSuperResLib import dependencies, engine
from FAGANSuperResLib.checkpoints import (
    CheckpointRegistry,
    availableCheckpoints,
    readCheckpoint,
)
from FAGANSuperResLib.errors import OneLineErrors
from FAGANSuperResLib.logic import (
    SuperResolutionError,
    SuperResolutionLogic,
    superResolutionArguments,
)
from FAGANSuperResLib.options import checkRunOptions, runOptions, runSettings
from FAGANSuperResLib.process import EngineProcess
from FAGANSuperResLib.volumes import (
    defaultInputVolume,
    imageFromVolumeNode,
    isUsableInput,
    physicalCornersRAS,
    updateVolumeNodeFromImage,
)
from mrml_helpers import addVolumeNode, ijkToRas, pollUntilDone, smoothArray
from slicer import vtkMRMLScene

# ---------------------------------------------------------------- node <-> image


def test_node_image_round_trip_keeps_ijk_to_ras_exactly(scene, obliqueNode):
    image = imageFromVolumeNode(obliqueNode)
    # RAS -> LPS: a voxel's physical point in ITK is the node's RAS point with x, y negated.
    ras = ijkToRas(obliqueNode) @ np.array([3.0, 7.0, 2.0, 1.0])
    lps = image.TransformContinuousIndexToPhysicalPoint((3.0, 7.0, 2.0))
    np.testing.assert_allclose(lps, ras[:3] * [-1, -1, 1], atol=1e-12)

    copy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "copy")
    modified = []
    copy.AddObserver("ModifiedEvent", lambda caller, event: modified.append(event))
    updateVolumeNodeFromImage(copy, image)
    assert copy.GetDisableModifiedEvent() == 0 and len(modified) == 1  # one NodeModify block, closed
    np.testing.assert_allclose(ijkToRas(copy), ijkToRas(obliqueNode), atol=1e-12)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(copy), slicer.util.arrayFromVolume(obliqueNode))


def test_non_scalar_inputs_are_refused(scene, obliqueNode):
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((2, 3, 4), np.uint8))
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    logic = SuperResolutionLogic()
    for node, reason in ((None, "no input"), (label, "not a scalar"), (empty, "no voxels")):
        with pytest.raises(ValueError, match=reason):
            logic.process(node, None, 2, method="bicubic")
    with pytest.raises(ValueError, match="differ"):
        logic.process(obliqueNode, obliqueNode, 2, method="bicubic")


def test_volume_kinds_and_scenes_that_cannot_take_part_are_refused_in_one_line(scene, obliqueNode, fakeEngine):
    """An output node of another scene was ignored (the result went to a new node), a vector output node took a scalar
    result, and a tensor input passed the checks and failed in SimpleITK with a multi-line error."""
    fakeEngine.setattr("FAGANSuperResLib.logic.engineCommand", lambda *a: pytest.fail("the engine was started"))
    otherScene = vtkMRMLScene()
    elsewhere = otherScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "elsewhere")
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "vec")
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    tensor = scene.AddNewNodeByClass("vtkMRMLDiffusionTensorVolumeNode", "dti")
    image = vtk.vtkImageData()
    image.SetDimensions(12, 12, 4)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    tensor.SetAndObserveImageData(image)
    cases = [(obliqueNode, elsewhere, "the output volume elsewhere is not in the input volume's scene"),
             (obliqueNode, vector, r"the output volume vec is not a scalar \(grayscale\) volume \(vtkMRMLVectorVolumeNode\)"),
             (obliqueNode, label, "the output volume labels is not a scalar"),
             (tensor, None, r"dti is not a scalar \(grayscale\) volume \(vtkMRMLDiffusionTensorVolumeNode\)")]
    nodes = scene.GetNumberOfNodes()
    for inputNode, outputNode, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            SuperResolutionLogic().process(inputNode, outputNode, 2, method="bicubic")
        assert "\n" not in str(error.value)
    assert scene.GetNumberOfNodes() == nodes and not isUsableInput(tensor)


def test_default_input_skips_label_maps_and_other_volume_kinds(scene):
    assert defaultInputVolume(scene) is None
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((2, 8, 8), np.uint8))
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((2, 8, 8, 3), np.uint8))
    scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    assert defaultInputVolume(scene) is None
    usable = addVolumeNode(scene, smoothArray(), name="T1")
    assert defaultInputVolume(scene) is usable
    assert [isUsableInput(n) for n in (label, vector, usable, None)] == [False, False, True, False]


# ---------------------------------------------------------------- command line


def test_command_line(tmp_path):
    options = runOptions(scale=4, checkpoint="/c/x4.safetensors", plane="coronal", device="cpu", batch_size=2, tile_size=64,
                         ensemble=2)
    args = superResolutionArguments("in.nrrd", "out.nrrd", options)
    assert args[:2] == ["in.nrrd", "out.nrrd"]
    joined = " ".join(args)
    for part in ("--scale 4", "--plane coronal", "--device cpu", "--progress json", "--checkpoint /c/x4.safetensors",
                 "--batch-size 2", "--tile-size 64", "--ensemble 2"):
        assert part in joined
    assert runSettings(options)["selfEnsemble"] == "2 flipped/rotated copies"
    assert runSettings(runOptions(scale=4))["selfEnsemble"] == "8 flipped/rotated copies"  # the engine's default at x4
    assert runSettings(runOptions(scale=2))["selfEnsemble"] == "off" and "selfEnsemble" not in runSettings(runOptions(method="lanczos"))
    assert runSettings(runOptions(mode="through-plane"))["selfEnsemble"] == "2 flipped copies"
    for bad in ({"scale": 3}, {"plane": "oblique"}, {"device": "gpu"}, {"method": "nearest"},
                {"method": "bicubic", "checkpoint": "/c.safetensors"}, {"batch_size": 0}, {"ensemble": 3},
                {"method": "lanczos", "ensemble": 2}, {"mode": "through-plane", "method": "fagan", "ensemble": 8}):
        with pytest.raises(ValueError):
            checkRunOptions(runOptions(**{"scale": 2, **bad}))
    command = engine.engineCommand("sr", ["a"])
    assert command[:4] == [sys.executable, "-m", "fagan_engine", "sr"]  # outside Slicer: this Python


def test_run_options_are_validated_once_per_entry_point(scene, obliqueNode, monkeypatch, tmp_path):
    """The panel and scripts build RunOptions with ``runOptions`` (not validated); each run validates them once."""
    from FAGANSuperResLib.batch import BatchLogic
    from FAGANSuperResLib.jobs import EngineJob
    from FAGANSuperResLib.stacks import StacksLogic

    from fagan_engine.util.options import RunOptions

    calls = []
    validate = RunOptions.validate
    monkeypatch.setattr(RunOptions, "validate", lambda self: calls.append(self) or validate(self))
    monkeypatch.setattr(EngineJob, "run", lambda self, waitForCompletion: self)  # no engine process
    logic, folder = SuperResolutionLogic(temporaryDirectory=str(tmp_path)), str(tmp_path)
    secondStack = addVolumeNode(scene, smoothArray(seed=1), name="Second")
    entries = {
        "runOptions": lambda: runOptions(scale=2, method="bicubic"),
        "process": lambda: logic.process(obliqueNode, None, 2, method="bicubic", waitForCompletion=False),
        "processWithOptions": lambda: logic.processWithOptions(obliqueNode, None, runOptions(method="bicubic"), False),
        "script RunOptions": lambda: logic.processWithOptions(obliqueNode, None, RunOptions(method="bicubic"), False),
        "batch": lambda: BatchLogic(folder).process([obliqueNode], runOptions(method="bicubic"), False),
        "stacks": lambda: StacksLogic(folder).process([obliqueNode, secondStack], device="cpu", waitForCompletion=False),
    }
    counts = {}
    for name, entry in entries.items():
        calls.clear()
        entry()
        counts[name] = len(calls)
    assert counts == {"runOptions": 0, **{name: 1 for name in list(entries)[1:]}}


def test_engine_environment_puts_the_engine_first():
    env = engine.engineEnvironment()
    first = env["PYTHONPATH"].split(os.pathsep)[0]
    assert (Path(first) / "fagan_engine" / "__init__.py").is_file()
    assert engine.missingRequirements() == []
    assert engine.backendAvailable("fagan") and engine.backendAvailable("train")


# ---------------------------------------------------------------- node -> SR -> node


def assertSuperResolvedGeometry(inputNode, outputNode, scale, inPlane=(0, 1)):
    inDims = inputNode.GetImageData().GetDimensions()
    expectedDims = tuple(d * scale if a in inPlane else d for a, d in enumerate(inDims))
    assert outputNode.GetImageData().GetDimensions() == expectedDims
    expectedSpacing = [s / scale if a in inPlane else s for a, s in enumerate(inputNode.GetSpacing())]
    np.testing.assert_allclose(outputNode.GetSpacing(), expectedSpacing, atol=1e-9)
    np.testing.assert_allclose(ijkToRas(outputNode)[:3, :3] / expectedSpacing, ijkToRas(inputNode)[:3, :3] / inputNode.GetSpacing(), atol=1e-9)
    # Same physical box (outer voxel corners), to 1e-4 mm.
    np.testing.assert_allclose(physicalCornersRAS(outputNode), physicalCornersRAS(inputNode), atol=1e-4)


def test_bicubic_node_to_node_keeps_oblique_anisotropic_geometry(scene, obliqueNode):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    obliqueNode.SetAndObserveTransformNodeID(transform.GetID())
    before = ijkToRas(obliqueNode)
    inputArray = slicer.util.arrayFromVolume(obliqueNode).copy()
    logic = SuperResolutionLogic(temporaryDirectory=None)
    job = logic.process(obliqueNode, None, 2, method="bicubic", device="cpu")
    assert job.state == "succeeded" and job.fraction == 1.0
    output = job.outputVolumeNode
    assert output.GetName() == "Oblique_SRx2" and output.GetScene() is scene
    assert output.GetDisplayNode() is not None
    assert output.GetTransformNodeID() == transform.GetID()
    assertSuperResolvedGeometry(obliqueNode, output, 2)
    np.testing.assert_array_equal(ijkToRas(obliqueNode), before)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(obliqueNode), inputArray)
    # Intensities: 2x2 block means of the bicubic result are close to the input.
    out = slicer.util.arrayFromVolume(output).astype(float)
    blocks = out.reshape(out.shape[0], out.shape[1] // 2, 2, out.shape[2] // 2, 2).mean(axis=(2, 4))
    assert np.abs(blocks - inputArray).mean() < 2.0
    assert job.process.events[0]["event"] == "start"
    assert job.process.events[-1]["event"] == "finished"
    assert not job.workDir.exists()


def test_fagan_into_existing_node_with_explicit_plane(scene, obliqueNode, tinyCheckpoints):
    from fagan_engine.io.geometry import through_plane_axis

    # A named plane whose slices cut across index axis 0 or 1, so the in-plane axes are not (i, j).
    image = imageFromVolumeNode(obliqueNode)
    plane = next(p for p in ("axial", "coronal", "sagittal") if through_plane_axis(image, p) != 2)
    inPlane = tuple(a for a in range(3) if a != through_plane_axis(image, plane))
    existing = addVolumeNode(scene, np.zeros((2, 2, 2), np.float32), name="Existing")
    nodeCount = scene.GetNumberOfNodes()
    job = SuperResolutionLogic().process(obliqueNode, existing, 4, checkpoint=str(tinyCheckpoints[4]),
                                         plane=plane, device="cpu")
    assert job.outputVolumeNode is existing and scene.GetNumberOfNodes() == nodeCount + 1  # + the summary table
    assert job.summaryTableNode.GetScene() is scene and job.mapNodes == {}
    assertSuperResolvedGeometry(obliqueNode, existing, 4, inPlane)
    assert np.isfinite(slicer.util.arrayFromVolume(existing)).all()


def test_a_checkpoint_named_relative_to_slicers_folder_is_run(scene, obliqueNode, tinyCheckpoints, monkeypatch):
    """The Lib found it, but the engine, which runs in its own work folder, answered 'checkpoint not found'."""
    monkeypatch.chdir(tinyCheckpoints[2].parent)
    job = SuperResolutionLogic().process(obliqueNode, None, 2, checkpoint=tinyCheckpoints[2].name, device="cpu", adapt_iterations=0)
    assert job.state == "succeeded", job.error
    given = job.process.command[job.process.command.index("--checkpoint") + 1]
    assert Path(given) == tinyCheckpoints[2].resolve()


def test_bad_checkpoint_leaves_scene_unchanged(scene, obliqueNode, tmp_path):
    existing = addVolumeNode(scene, np.ones((2, 3, 4), np.float32), name="Existing")
    existingMatrix, existingArray = ijkToRas(existing), slicer.util.arrayFromVolume(existing).copy()
    nodeCount = scene.GetNumberOfNodes()
    logic = SuperResolutionLogic(temporaryDirectory=str(tmp_path))
    with pytest.raises(ValueError, match="not found"):
        logic.process(obliqueNode, None, 2, checkpoint=str(tmp_path / "missing.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    for output in (None, existing):
        with pytest.raises(SuperResolutionError) as info:
            logic.process(obliqueNode, output, 2, checkpoint=str(corrupt), device="cpu")
        assert "\n" not in str(info.value) and str(info.value)
    assert scene.GetNumberOfNodes() == nodeCount
    np.testing.assert_array_equal(ijkToRas(existing), existingMatrix)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(existing), existingArray)
    assert list(tmp_path.iterdir()) == [corrupt]  # temporary folders removed


def test_cancel_kills_the_run_and_leaves_scene_unchanged(scene, tmp_path):
    node = addVolumeNode(scene, smoothArray((8, 64, 64)))
    nodeCount = scene.GetNumberOfNodes()
    job = SuperResolutionLogic(temporaryDirectory=str(tmp_path)).process(
        node, None, 8, method="bicubic", device="cpu", waitForCompletion=False)
    started = time.monotonic()
    assert job.poll() is False  # non-blocking while the engine starts
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 1.0  # bounded: the GUI thread waits a few hundred ms at most
    assert job.state == "cancelled"
    deadline = time.monotonic() + 10
    while not job.process.finished:  # later polls (the module's timer) collect the exit code
        assert job.poll() is True and time.monotonic() < deadline
        time.sleep(0.05)
    assert job.process.returnCode != 0 and job.outputVolumeNode is None
    assert scene.GetNumberOfNodes() == nodeCount
    assert list(tmp_path.iterdir()) == []


def test_polled_job_reports_progress(scene, obliqueNode):
    job = SuperResolutionLogic().process(obliqueNode, None, 2, method="bicubic", device="cpu", waitForCompletion=False)
    seen = []
    job.onProgress = lambda j: seen.append(j.fraction)
    pollUntilDone(job)
    assert job.state == "succeeded" and seen and seen[-1] == 1.0
    assert job.outputVolumeNode.GetImageData().GetDimensions()[:2] == (40, 32)


# ---------------------------------------------------------------- process tree


def test_kill_reaches_the_whole_process_tree():
    """PythonSlicer is a launcher whose child is the real Python: cancel must kill both."""
    launcher = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import os, time; print(os.getpid(), flush=True); time.sleep(60)'])\n"
        "child.wait()\n"
    )
    process = EngineProcess([sys.executable, "-c", launcher])
    process.start()
    deadline = time.monotonic() + 20
    while not process.logLines:
        assert time.monotonic() < deadline
        process.wait(0.1)
    childPid = int(process.logLines[0])
    started = time.monotonic()
    process.kill()
    assert time.monotonic() - started < 1.0
    assert process.wait(10) is not None and process.finished and process.returnCode != 0
    deadline = time.monotonic() + 5
    while processAlive(childPid):
        assert time.monotonic() < deadline, "the launcher's child survived the cancel"
        time.sleep(0.05)


def processAlive(pid: int) -> bool:
    """True if ``pid`` runs (a killed orphan may stay a zombie until init reaps it: not alive)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_error_message_prefers_the_protocol_event():
    script = ("import sys; print('FAGAN {\"event\": \"error\", \"message\": \"bad input\", \"kind\": \"InputError\"}');"
              "sys.stderr.write('error: bad input\\n'); sys.exit(2)")
    process = EngineProcess([sys.executable, "-c", script])
    process.start()
    assert process.wait(30) == 2
    assert process.errorMessage() == "bad input"
    assert process.takeNewLogLines() == ["error: bad input"] and process.takeNewLogLines() == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_killed_or_crashed_engine_is_named_so_not_by_its_last_log_line():
    """A trainer killed by the out-of-memory killer failed with "validation it 10: PSNR 41.62 dB ..." as its reason."""
    import signal as signals

    killed = EngineProcess([sys.executable, "-c", "import os, signal, sys; print('validation it 10: PSNR 41.62 dB', "
                                                  "file=sys.stderr, flush=True); os.kill(os.getpid(), signal.SIGKILL)"])
    killed.start()
    assert killed.wait(30) == -signals.SIGKILL
    assert killed.errorMessage() == "the engine process was killed by SIGKILL (out of memory?)"
    crashed = EngineProcess([sys.executable, "-c", "raise RuntimeError('CUDA error: device-side assert')"])
    crashed.start()
    assert crashed.wait(30) == 1
    assert crashed.errorMessage() == "RuntimeError: CUDA error: device-side assert"  # a traceback's own last line
    wordy = EngineProcess([sys.executable, "-c", "raise RuntimeError('CUDA error: device-side assert\\nCompile with TORCH_USE_CUDA_DSA')"])
    wordy.start()
    assert wordy.wait(30) == 1 and wordy.errorMessage() == "RuntimeError: CUDA error: device-side assert"  # message on two lines
    quiet = EngineProcess([sys.executable, "-c", "import sys; print('step 3', file=sys.stderr); sys.exit(3)"])
    quiet.start()
    assert quiet.wait(30) == 3 and quiet.errorMessage() == "the engine process exited with code 3"


def test_button_errors_are_one_line_without_traceback_and_stop_the_handler():
    """What the modules' buttons show: the reason in one line (no traceback under "Show Details..."); the caller
    learns from ``failed`` to stop; KeyboardInterrupt and SystemExit are not swallowed."""
    shown = []
    with OneLineErrors(shown.append, "Cannot start training.") as errors:
        raise ValueError("first line\n\nTraceback (most recent call last):\n  ...\nthe output folder is not writable")
    assert errors.failed and shown == ["Cannot start training. the output folder is not writable"]
    with OneLineErrors(shown.append, "unused") as errors:
        pass
    assert not errors.failed and len(shown) == 1
    with pytest.raises(KeyboardInterrupt), OneLineErrors(shown.append, "unused"):
        raise KeyboardInterrupt
    assert len(shown) == 1


def test_only_a_started_unfinished_engine_is_exiting(tmp_path):
    """The module keeps polling a cancelled job while ``process.exiting``: never for an engine that failed to start
    (it used to wait on ``not finished``, which such a process never becomes, and the poll timer ran for the session)."""
    missing = EngineProcess([str(tmp_path / "no-such-engine")])
    with pytest.raises(OSError):
        missing.start()
    assert not missing.exiting and not missing.finished
    process = EngineProcess([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert not process.exiting
    process.start()
    assert process.exiting
    assert process.wait(30) == 0 and not process.exiting


# ---------------------------------------------------------------- checkpoints and devices


def test_checkpoint_registry_and_listing(tmp_path, tinyCheckpoints):
    registry = CheckpointRegistry(tmp_path / "settings" / "user-checkpoints.json")
    assert registry.paths() == []
    registry.add(tinyCheckpoints[2])
    registry.add(tinyCheckpoints[4])
    registry.add(tinyCheckpoints[2])  # no duplicates
    assert registry.paths() == [tinyCheckpoints[4].resolve(), tinyCheckpoints[2].resolve()]
    x2 = [info for info in availableCheckpoints(2, registry) if not info.bundled]
    assert [info.path for info in x2] == [tinyCheckpoints[2].resolve()]
    assert "x2" in x2[0].label and "user" in x2[0].label and "bicubic" in x2[0].label
    assert x2[0].acquisition == "bicubic" and "Acquisition: bicubic" in x2[0].describe()
    assert "note: test" in x2[0].describe()
    assert all(info.scale == 8 for info in availableCheckpoints(8, registry))
    registry.remove(tinyCheckpoints[4])
    assert registry.paths() == [tinyCheckpoints[2].resolve()]
    import shutil

    for run in ("runA", "runB"):  # two training runs' best checkpoints both read "best (x2, ...)" in the list
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        registry.add(shutil.copy(tinyCheckpoints[2], tmp_path / run / "checkpoints" / "best.safetensors"))
    labels = [info.label for info in availableCheckpoints(2, registry) if not info.bundled]
    assert sum(label.startswith("runA/best (x2") for label in labels) == sum(label.startswith("runB/best (x2") for label in labels) == 1
    (tmp_path / "settings" / "user-checkpoints.json").write_text("{not json")
    assert registry.paths() == []


def test_checkpoint_metadata_is_cached_by_path_size_and_mtime(tmp_path, tinyCheckpoints, monkeypatch):
    """Module entry lists every checkpoint: unchanged files are not read and hashed again."""
    import shutil

    import fagan_engine.models.checkpoint

    reads = []
    original = fagan_engine.models.checkpoint.read_metadata
    monkeypatch.setattr(fagan_engine.models.checkpoint, "read_metadata", lambda path: reads.append(path) or original(path))
    target = tmp_path / "copy.safetensors"
    shutil.copy(tinyCheckpoints[2], target)
    first = readCheckpoint(target)
    assert readCheckpoint(target, expectedScale=2).metadata is first.metadata and len(reads) == 1
    with pytest.raises(ValueError, match="not x4"):
        readCheckpoint(target, expectedScale=4)
    assert len(reads) == 1
    stamp = target.stat()
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # same size, newer
    readCheckpoint(target)
    assert len(reads) == 2
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")  # damaged: the failure is cached too
    for _ in range(2):
        with pytest.raises(ValueError, match="checksum"):
            readCheckpoint(target)
    assert len(reads) == 3


def test_read_checkpoint_validates(tmp_path, tinyCheckpoints):
    info = readCheckpoint(tinyCheckpoints[4].with_suffix(".json"))  # the sidecar selects its weights
    assert info.scale == 4 and info.metadata.model["preset"] == "fagan"
    with pytest.raises(ValueError, match="not x2"):
        readCheckpoint(tinyCheckpoints[4], expectedScale=2)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(ValueError) as excinfo:
        readCheckpoint(corrupt)
    assert "\n" not in str(excinfo.value)


def test_device_probe_reports_cpu_only_here():
    probe = EngineProcess(engine.deviceProbeCommand(), env=engine.engineEnvironment())
    probe.start()
    assert probe.wait(60) == 0
    info = engine.parseDeviceProbe(probe.logLines)
    assert info.torch and not info.cuda and not info.gpuUsable
    assert "not usable" in info.gpuLabel()
    assert engine.parseDeviceProbe(["garbage"]) == engine.DeviceInfo()


def test_engine_result_file_geometry_matches_node(scene, obliqueNode, tmp_path):
    """The temporary NRRD carries the node geometry exactly (what the engine reads)."""
    from FAGANSuperResLib.volumes import writeVolumeNode

    path = writeVolumeNode(obliqueNode, tmp_path / "input.nrrd")
    image = sitk.ReadImage(str(path))
    expected = imageFromVolumeNode(obliqueNode)
    np.testing.assert_allclose(image.GetDirection(), expected.GetDirection(), atol=1e-15)
    np.testing.assert_allclose(image.GetOrigin(), expected.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(image.GetSpacing(), expected.GetSpacing(), atol=1e-15)


# ---------------------------------------------------------------- dependencies


class Installers:
    """Stand-ins for Slicer's confirmation dialog, pip_install and PyTorchUtils."""

    def __init__(self, answer=True, pipError=None, torchResult="torch", torchError=None):
        self.answer, self.pipError, self.torchResult, self.torchError = answer, pipError, torchResult, torchError
        self.questions, self.pip, self.torchCalls = [], [], 0

    def confirm(self, question):
        self.questions.append(question)
        return self.answer

    def pipInstall(self, requirements):
        self.pip.append(requirements)
        if self.pipError:
            raise self.pipError

    def installTorch(self):
        self.torchCalls += 1
        if self.torchError:
            raise self.torchError
        return self.torchResult

    def ensure(self, task):
        return dependencies.ensureDependencies(task, self.confirm, self.pipInstall, self.installTorch)


def test_bicubic_needs_nothing_to_install(monkeypatch):
    monkeypatch.setattr(engine, "moduleAvailable", lambda name: False)  # no torch, no packages
    installers = Installers()
    assert installers.ensure("bicubic") is True
    assert installers.questions == [] and installers.pip == [] and installers.torchCalls == 0
    assert dependencies.missingDependencies("bicubic") is None
    assert dependencies.missingDependencies("train").startswith("missing Python packages: scipy")


def test_dependency_install_failures_become_one_line_errors(monkeypatch):
    missing = {"nibabel", "torch"}
    monkeypatch.setattr(engine, "moduleAvailable", lambda name: name not in missing)
    declined = Installers(answer=False)
    assert declined.ensure("fagan") is False and declined.pip == [] and "nibabel>=4.0" in declined.questions[0]

    offline = subprocess.CalledProcessError(1, ["pip", "install"], output="ERROR: network unreachable")
    with pytest.raises(dependencies.DependencyError) as info:
        Installers(pipError=offline).ensure("train")
    assert "nibabel>=4.0" in str(info.value) and "\n" not in str(info.value)

    missing.discard("nibabel")
    noExtension = Installers(torchError=ImportError("No module named 'PyTorchUtils'"))
    with pytest.raises(dependencies.DependencyError, match='"PyTorch" extension'):
        noExtension.ensure("train")
    with pytest.raises(dependencies.DependencyError, match="installing PyTorch failed") as info:
        Installers(torchError=subprocess.CalledProcessError(1, ["ltt"])).ensure("train")
    assert "\n" not in str(info.value)
    assert Installers(torchResult=None).ensure("train") is False  # declined in PyTorchUtils' dialog
    installed = Installers()
    assert installed.ensure("train") is True and installed.torchCalls == 1 and installed.pip == []


def test_onnx_runtime_is_enough_for_fagan_but_not_for_training(monkeypatch):
    """With the bundled checkpoints exported (only PyTorch makes exports: see the next test without them)."""
    import fagan_engine.inference.onnx_backend as onnx_backend

    monkeypatch.setattr(engine, "moduleAvailable", lambda name: name != "torch")
    monkeypatch.setattr(onnx_backend, "export_present", lambda checkpoint: True)
    installers = Installers()
    assert installers.ensure("fagan") is True and installers.torchCalls == 0
    assert dependencies.missingDependencies("train") == "PyTorch is not installed"


def test_self_test_skip_reason(monkeypatch):
    monkeypatch.delenv(dependencies.SELFTEST_INSTALL_VARIABLE, raising=False)
    assert dependencies.selfTestSkipReason("fagan") is None  # everything is importable here
    monkeypatch.setattr(engine, "moduleAvailable", lambda name: name not in ("torch", "onnxruntime"))
    reason = dependencies.selfTestSkipReason("fagan")
    assert "PyTorch is not installed" in reason and dependencies.SELFTEST_INSTALL_VARIABLE in reason
    assert dependencies.selfTestSkipReason("bicubic") is None
    monkeypatch.setenv(dependencies.SELFTEST_INSTALL_VARIABLE, "1")
    assert dependencies.selfTestSkipReason("train") is None


def test_onnx_runtime_alone_counts_only_when_the_exports_are_there(monkeypatch, tmp_path):
    """With ONNX Runtime and no PyTorch, Apply never offered PyTorch and the first FA-GAN run failed: no exports ship."""
    from FAGANSuperResLib import engine

    monkeypatch.setattr(engine, "moduleAvailable", lambda name: name != "torch")
    monkeypatch.setattr(engine, "installedTorchVersion", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty export cache
    assert not engine.backendAvailable("fagan") and engine.backendAvailable("bicubic")
    import fagan_engine.inference.onnx_backend as onnx_backend

    monkeypatch.setattr(onnx_backend, "export_present", lambda checkpoint: True)
    assert engine.backendAvailable("fagan")
