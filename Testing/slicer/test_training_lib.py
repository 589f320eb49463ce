"""FAGANTrainingLib: config writing, command line, NIfTI export, run state machine, MRML plots."""
import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer.util
from FAGANSuperResLib.volumes import imageFromVolumeNode
from FAGANTrainingLib import (
    BUNDLED,
    RunState,
    TrainingHistory,
    TrainingPlots,
    TrainingRun,
    TrainingSettings,
    buildTrainingConfig,
    formatEta,
    nodesInScene,
    prepareTraining,
    trainingArguments,
    trainingCommand,
    trainingVolumeFiles,
)
from mrml_helpers import addVolumeNode, smoothArray

# A stand-in trainer speaking the protocol, so the state machine is tested against a real
# process, real SIGTERM delivery to the process group and a real resume, in a fraction of a second.
FAKE_TRAINER = textwrap.dedent('''
    import json, signal, sys, time
    from pathlib import Path
    from fagan_engine.util.protocol import emit
    config = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
    run = Path(config["train"]["output_dir"]); total = config["train"]["iterations"]
    state = run / "state.json"
    start = json.loads(state.read_text())["iteration"] if "--resume" in sys.argv else 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    emit("start", run_dir=str(run), iteration=start, total=total, config={})
    for it in range(start + 1, total + 1):
        time.sleep(0.05)
        emit("progress", epoch=0, iteration=it, total=total, losses={"pixel": 1.0 / it, "adv": 0.1}, lr=1e-4,
             throughput=10.0, eta_s=0.05 * (total - it), phase="gan")
        if it % 5 == 0:
            emit("validation", iteration=it, psnr=30.0 + it / 10, ssim=0.9, bicubic_psnr=29.0, bicubic_ssim=0.88)
            (run / "best.safetensors").write_bytes(b"x")
            emit("checkpoint", iteration=it, path=str(run / "best.safetensors"), kind="best")
        if stop:
            state.write_text(json.dumps({"iteration": it}))
            emit("stopped", iteration=it, state=str(state))
            sys.exit(0)
        if it == config["train"].get("fail_at", -1):
            emit("error", message="out of memory", kind="MemoryError")
            sys.exit(2)
    emit("finished", iteration=total, best_checkpoint=str(run / "best.safetensors"),
         latest_checkpoint=str(run / "latest.safetensors"), seconds=1.0)
''')


@pytest.fixture
def dataFolder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("b.nii.gz", "a.nrrd", "notes.txt", "c.mha"):
        (folder / name).write_bytes(b"")
    return folder


def waitForIteration(run: TrainingRun, iteration: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while run.iteration < iteration:
        assert run.active, run.error
        assert time.monotonic() < deadline, "no progress from the trainer"
        run.wait(0.05)


def settingsFor(tmp_path, **changes) -> TrainingSettings:
    values = dict(outputDir=str(tmp_path / "run"), dataFolder="", valFraction=0.25, scale=2, preset="srgan",
                  iterations=40, patchSize=32, batchSize=4, device="cpu")
    values.update(changes)
    return TrainingSettings(**values)


# ---------------------------------------------------------------- config and command line


def test_data_folder_lists_volume_files(dataFolder):
    assert [p.name for p in trainingVolumeFiles(dataFolder)] == ["a.nrrd", "b.nii.gz", "c.mha"]
    with pytest.raises(ValueError, match="not found"):
        trainingVolumeFiles(dataFolder / "missing")


def test_config_follows_the_settings(tmp_path, dataFolder):
    files = trainingVolumeFiles(dataFolder)
    cfg = buildTrainingConfig(settingsFor(tmp_path, overrides=["train.log_every=1"]), files)
    assert cfg.model.preset == "srgan" and cfg.model.scale == 2
    assert not (cfg.model.use_lffb or cfg.model.use_ca or cfg.model.use_sa)  # the preset's switches
    assert cfg.data.train == [str(p.resolve()) for p in files]
    assert (cfg.data.val_fraction, cfg.data.patch_size) == (0.25, 32)
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.device) == (40, 4, "cpu")
    assert cfg.train.pretrain_iterations == 10 and cfg.train.val_every == 2 and cfg.train.checkpoint_every == 8
    assert cfg.train.vgg_weights is None and cfg.train.log_every == 1
    for bad, reason in (({"preset": "unet"}, "preset"), ({"patchSize": 4}, "patch_size"),
                        ({"overrides": ["train.nope=1"]}, "nope")):
        with pytest.raises(ValueError, match=reason):
            buildTrainingConfig(settingsFor(tmp_path, **bad), files)
    with pytest.raises(ValueError, match="no training volumes"):
        buildTrainingConfig(settingsFor(tmp_path), [])


def test_prepare_exports_scene_volumes_with_geometry(tmp_path, scene, dataFolder):
    from fagan_engine.util.config import load_config

    nodes = [addVolumeNode(scene, smoothArray(seed=i), name=f"T1 scan/{i}") for i in range(2)]
    configPath = prepareTraining(settingsFor(tmp_path, dataFolder=str(dataFolder)), nodes)
    cfg = load_config(str(configPath))
    exported = [p for p in cfg.data.train if "scene_volumes" in p]
    assert len(cfg.data.train) == 5 and [p.split("/")[-1] for p in exported] == ["000_T1_scan_0.nii.gz", "001_T1_scan_1.nii.gz"]
    image, expected = sitk.ReadImage(exported[1]), imageFromVolumeNode(nodes[1])
    np.testing.assert_allclose(image.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), expected.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), slicer.util.arrayFromVolume(nodes[1]), rtol=1e-6)


def test_deleted_scene_volume_is_not_exported(tmp_path, scene, dataFolder):
    """A checked volume deleted from the scene (checkedNodesChanged does not fire) is left out."""
    from fagan_engine.util.config import load_config

    nodes = [addVolumeNode(scene, smoothArray(seed=i), name=f"scan{i}") for i in range(3)]
    scene.RemoveNode(nodes[1])
    assert nodesInScene(nodes + [None]) == [nodes[0], nodes[2]]
    configPath = prepareTraining(settingsFor(tmp_path, dataFolder=str(dataFolder)), nodes)
    exported = [p.split("/")[-1] for p in load_config(str(configPath)).data.train if "scene_volumes" in p]
    assert exported == ["000_scan0.nii.gz", "001_scan2.nii.gz"]
    assert sorted(p.name for p in (configPath.parent / "scene_volumes").iterdir()) == exported
    other = type(scene)()  # a node of another scene that was deleted there
    moved = addVolumeNode(other, smoothArray(), name="elsewhere")
    other.RemoveNode(moved)
    assert nodesInScene([moved]) == []


def test_prepare_refuses_incomplete_settings(tmp_path):
    with pytest.raises(ValueError, match="run folder"):
        prepareTraining(settingsFor(tmp_path, outputDir=""))
    with pytest.raises(ValueError, match="VGG19"):
        prepareTraining(settingsFor(tmp_path, vggWeights=str(tmp_path / "vgg.pth")))
    with pytest.raises(ValueError, match="no training volumes"):
        prepareTraining(settingsFor(tmp_path))
    assert not (tmp_path / "run").exists()


def test_prepare_refuses_what_the_trainer_would_and_writes_nothing(tmp_path, scene, monkeypatch):
    """Patch sizes the panel offers (8 at x8, 10 at x4, 512 on small slices...) were refused only by the trainer, after
    the config and the volumes were written; an empty node left the volumes exported before it; a relative run folder
    wrote a config the trainer, running in that folder, could not find."""
    good = addVolumeNode(scene, smoothArray(seed=1), name="T1")
    for changes, message in ((dict(patchSize=8, scale=8), "LR patches"), (dict(patchSize=10, scale=4), "not a multiple")):
        with pytest.raises(ValueError, match=message):
            prepareTraining(settingsFor(tmp_path, **changes), [good])
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Empty")
    with pytest.raises(ValueError, match="Empty"):
        prepareTraining(settingsFor(tmp_path), [good, empty])
    assert not (tmp_path / "run").exists()
    monkeypatch.chdir(tmp_path)
    configPath = prepareTraining(settingsFor(tmp_path, outputDir="relative"), [good])
    assert configPath.is_absolute() and configPath == (tmp_path / "relative" / "slicer_training_config.json").resolve()


def test_resume_refuses_a_run_folder_that_was_moved(tmp_path, scene):
    """The config names its run folder: resuming a moved one began a new run from iteration 1 in the old place."""
    node = addVolumeNode(scene, smoothArray(seed=1), name="T1")
    configPath = prepareTraining(settingsFor(tmp_path), [node])
    moved = tmp_path / "moved"
    configPath.parent.rename(moved)
    run = TrainingRun.stoppedEarlier(moved / configPath.name)
    with pytest.raises(ValueError, match="this run was moved: its config names the run folder"):
        run.resume()
    assert not (tmp_path / "run").exists()


def test_start_refuses_a_folder_holding_an_earlier_run_before_writing_anything(tmp_path, scene):
    """Start on a folder with a training state overwrote the run's config and exported volumes before the trainer refused
    it; a later Resume then continued the old run on the replaced data."""
    from fagan_engine.util.locking import RunFolderLock

    first = addVolumeNode(scene, smoothArray(seed=1), name="T1")
    configPath = prepareTraining(settingsFor(tmp_path), [first])
    runDir, exported = configPath.parent, configPath.parent / "scene_volumes" / "000_T1.nii.gz"
    (runDir / "training_state.safetensors").write_bytes(b"state")
    before = (configPath.read_bytes(), exported.read_bytes())
    other = addVolumeNode(scene, smoothArray(seed=9) * 5, name="T1")
    with pytest.raises(ValueError, match="already holds a training state; use Resume") as error:
        prepareTraining(settingsFor(tmp_path, iterations=80), [other])
    assert "\n" not in str(error.value) and (configPath.read_bytes(), exported.read_bytes()) == before
    (runDir / "training_state.safetensors").unlink()
    (runDir / "checkpoints").mkdir()
    (runDir / "checkpoints" / "best.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(best.safetensors, ...\)"):
        prepareTraining(settingsFor(tmp_path, iterations=80), [other])
    assert (configPath.read_bytes(), exported.read_bytes()) == before
    (runDir / "checkpoints" / "best.safetensors").unlink()
    with RunFolderLock(runDir, "train.output_dir"):  # a trainer running in the folder
        with pytest.raises(ValueError, match="is in use by process"):
            prepareTraining(settingsFor(tmp_path, iterations=80), [other])
    assert (configPath.read_bytes(), exported.read_bytes()) == before
    prepareTraining(settingsFor(tmp_path, iterations=80), [other])  # a run that never saved a state starts again
    assert json.loads(configPath.read_text())["train"]["iterations"] == 80 and exported.read_bytes() != before[1]


@pytest.mark.parametrize("earlier", ["", "training_state.safetensors", "checkpoints/latest.safetensors"])
def test_start_refuses_the_folders_the_trainer_refuses(tmp_path, dataFolder, earlier):
    """Start and the trainer without --resume (``trainer.preflight``) refuse the same run folders: both ask
    ``fagan_engine.util.run_folder``."""
    from fagan_engine.training.trainer import preflight
    from fagan_engine.util.errors import ConfigError

    settings = settingsFor(tmp_path, dataFolder=str(dataFolder))
    runDir = Path(settings.outputDir)
    (runDir / "checkpoints").mkdir(parents=True)
    if earlier:
        (runDir / earlier).write_bytes(b"x")
    refusals = []
    cfg = buildTrainingConfig(settings, trainingVolumeFiles(dataFolder))
    for check, error in ((lambda: prepareTraining(settings), ValueError), (lambda: preflight(cfg, False), ConfigError)):
        try:
            check()
            refusals.append(False)
        except error:
            refusals.append(True)
    assert refusals == [bool(earlier)] * 2


def test_long_node_names_are_exported_under_short_unique_names(tmp_path, scene):
    """A node name of 246+ characters failed the NIfTI export and left an empty scene_volumes folder."""
    from FAGANSuperResLib.volumes import FILE_NAME_CHARACTERS

    from fagan_engine.util.config import load_config

    stem = "T2 " + "axial fat-sat " * 18
    nodes = [addVolumeNode(scene, smoothArray(seed=i), name=f"{stem}{i}") for i in range(2)]
    exported = [Path(p) for p in load_config(str(prepareTraining(settingsFor(tmp_path), nodes))).data.train]
    assert [p.name[:4] for p in exported] == ["000_", "001_"] and all(p.is_file() for p in exported)
    assert all(len(p.name) <= len("000_.nii.gz") + FILE_NAME_CHARACTERS for p in exported)


def test_training_command_line():
    assert trainingArguments("c.json") == ["--config", "c.json", "--progress", "json"]
    assert trainingArguments("c.json", resume=True)[-1] == "--resume"
    assert trainingCommand("c.json")[:4] == [sys.executable, "-m", "fagan_engine", "train"]


# ---------------------------------------------------------------- run state machine


@pytest.fixture
def fakeRun(tmp_path, scene):
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    node = addVolumeNode(scene, smoothArray())

    def make(**changes):
        configPath = prepareTraining(settingsFor(tmp_path, **changes), [node])
        return TrainingRun(configPath, lambda config, resume: [sys.executable, str(script), "--config", str(config)]
                           + (["--resume"] if resume else []))
    return make


def test_run_stops_on_sigterm_and_resumes_to_the_end(fakeRun):
    run = fakeRun(iterations=30)
    assert run.state == RunState.IDLE and not run.canResume
    run.start()
    assert run.state == RunState.STARTING
    with pytest.raises(RuntimeError):
        run.start()
    waitForIteration(run, 7)
    assert run.state == RunState.RUNNING and run.etaSeconds is not None and run.phase == "gan"
    run.stop()
    assert run.state == RunState.STOPPING
    assert run.wait(20) == RunState.STOPPED and run.canResume
    stoppedAt = run.iteration
    assert 7 <= stoppedAt < 30 and run.bestCheckpoint
    run.resume()
    assert run.wait(20) == RunState.FINISHED and run.iteration == 30 and run.fraction == 1.0
    assert run.bestCheckpoint.endswith("best.safetensors")
    iterations = [row["iteration"] for row in run.history.lossRows]
    assert iterations == sorted(iterations) and iterations[-1] == 30 and len(iterations) == 30
    with pytest.raises(RuntimeError):
        run.resume()


def test_run_reports_engine_errors(fakeRun):
    run = fakeRun(iterations=30, overrides=[])
    cfg = json.loads(run.configPath.read_text())
    cfg["train"]["fail_at"] = 3
    run.configPath.write_text(json.dumps(cfg))
    run.start()
    assert run.wait(20) == RunState.FAILED
    assert run.error == "out of memory" and run.canResume


def test_run_killed_without_final_event_fails(fakeRun):
    run = fakeRun(iterations=200)
    run.start()
    waitForIteration(run, 1)
    run.kill()
    assert run.state == RunState.FAILED and run.error


def test_resume_a_run_stopped_in_an_earlier_session(fakeRun):
    first = fakeRun(iterations=20)
    first.start()
    waitForIteration(first, 3)
    first.stop()
    assert first.wait(20) == RunState.STOPPED
    later = TrainingRun.stoppedEarlier(first.configPath)
    later.commandFactory = first.commandFactory
    later.resume()
    assert later.wait(20) == RunState.FINISHED and later.history.lossRows[0]["iteration"] > 3


def test_a_run_stopped_in_an_earlier_session_keeps_the_history_that_session_showed(tmp_path, scene):
    """After a scene reload the charts restarted at the resumed iteration: the rows before the stop were rewritten away."""
    import json

    records = [{"kind": "train", "iteration": it, "phase": "gan", "losses": {"pixel": 1.0 / it}, "lr": 1e-4, "throughput": 5.0}
               for it in (5, 10, 15)]
    records.insert(2, {"kind": "validation", "iteration": 10, "psnr": 30.5, "bicubic_psnr": 29.0, "ssim": 0.9, "bicubic_ssim": 0.8})
    lines = [json.dumps(r) for r in records] + ['{"iteration": 2}', "cut by a ki", '{"kind": "train", "iteration": "x", "losses": {}}',
                                                 '{"kind": "validation", "iteration": null, "psnr": 30}']
    (tmp_path / "metrics.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\n")
    run = TrainingRun.stoppedEarlier(tmp_path / "slicer_training_config.json")
    assert run.canResume and [r["iteration"] for r in run.history.lossRows] == [5, 10, 15]
    assert [r["psnr"] for r in run.history.validationRows] == [30.5]
    plots = TrainingPlots(scene)
    plots.update(run.history)
    assert plots.lossTable.GetNumberOfRows() == 3 and plots.validationTable.GetNumberOfRows() == 1
    assert run.history.add({"event": "start", "iteration": 10}) and [r["iteration"] for r in run.history.lossRows] == [5, 10]
    assert TrainingRun.stoppedEarlier(tmp_path / "elsewhere" / "c.json").history.lossRows == []  # no metrics: empty


# ---------------------------------------------------------------- history and MRML plots


def test_history_truncates_on_resume_and_plots_follow(scene):
    history = TrainingHistory()
    for it in (10, 20, 30):
        history.add({"event": "progress", "iteration": it, "losses": {"pixel": 1.0 / it, "adv": 0.5}})
    history.add({"event": "validation", "iteration": 20, "psnr": 31.5, "ssim": 0.9, "bicubic_psnr": 30.0, "bicubic_ssim": 0.88})
    history.add({"event": "validation", "iteration": 30, "psnr": 32.0, "ssim": 0.91, "bicubic_psnr": 30.0, "bicubic_ssim": 0.88})
    assert history.add({"event": "start", "iteration": 20}) is True  # resumed from the iteration-20 state
    assert [r["iteration"] for r in history.lossRows] == [10, 20]
    assert history.add({"event": "checkpoint", "iteration": 20, "path": "x", "kind": "best"}) is False

    plots = TrainingPlots(scene)
    plots.update(history)
    plots.update(history)
    assert plots.lossTable.GetNumberOfRows() == 2 and plots.validationTable.GetNumberOfRows() == 1
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(plots.lossTable, "pixel"), [0.1, 0.05])
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(plots.validationTable, "psnr"), [31.5])
    assert plots.lossChart.GetNumberOfPlotSeriesNodes() == 2 and plots.psnrChart.GetNumberOfPlotSeriesNodes() == 2
    series = plots.psnrChart.GetNthPlotSeriesNode(0)
    assert series.GetTableNode() is plots.validationTable and series.GetXColumnName() == "iteration"
    # Nodes from a saved scene are reused, not duplicated.
    count = scene.GetNumberOfNodes()
    again = TrainingPlots(scene, *plots.nodes())
    again.update(history)
    assert scene.GetNumberOfNodes() == count


def test_format_eta():
    assert [formatEta(s) for s in (None, -1, 12, 245, 3720)] == ["", "", "12s", "4m 05s", "1h 02m"]


def test_real_trainer_accepts_the_config_and_reports_progress(tmp_path, scene):
    """One short run of the engine's trainer on exported scene volumes (stop/resume of the real
    trainer is covered by the module self-test in Slicer)."""
    nodes = [addVolumeNode(scene, smoothArray((6, 40, 48), seed=i), name=f"HR{i}") for i in range(3)]
    settings = settingsFor(tmp_path, preset="fagan", iterations=2, patchSize=16, batchSize=2, valFraction=0.34,
                           syntheticFraction=0.5,
                           overrides=["model.n_feats=8", "model.n_blocks=1", "model.d_feats=8", "train.log_every=1",
                                      "train.val_every=2", "train.checkpoint_every=2"])
    run = TrainingRun(prepareTraining(settings, nodes))
    run.start()
    assert run.wait(240) == RunState.FINISHED, run.error
    assert run.iteration == run.total == 2 and run.runDir == settings.outputDir
    assert run.history.lossColumns and run.history.validationRows
    from FAGANSuperResLib.checkpoints import readCheckpoint

    assert readCheckpoint(run.bestCheckpoint, expectedScale=2).metadata.model["n_feats"] == 8


# ---------------------------------------------------------------- acquisition model, synthetic data, fine-tuning (issue 8)


def recipe(scale=2):
    import yaml
    from FAGANTrainingLib.training import ROOT_CONFIGS

    return yaml.safe_load((ROOT_CONFIGS / f"fagan_x{scale}_acquisition.yaml").read_text())


def test_defaults_are_the_bundled_recipe(tmp_path, dataFolder):
    """TrainingSettings (and so the panel, see test_contracts) default to the bundled recipe."""
    cfg = buildTrainingConfig(settingsFor(tmp_path), trainingVolumeFiles(dataFolder))
    for scale in (2, 4):
        data = recipe(scale)["data"]
        degradation = cfg.to_dict()["data"]["degradation"]  # keys the recipe leaves out keep the engine's defaults
        assert {k: degradation[k] for k in data["degradation"]} == data["degradation"]
        assert cfg.to_dict()["data"]["synthesis"] == data["synthesis"]
        assert cfg.data.synthetic_fraction == data["synthetic_fraction"]
    assert cfg.train.init_checkpoint is None


def test_acquisition_mix_and_synthesis_reach_the_config(tmp_path, dataFolder):
    settings = settingsFor(tmp_path, acquisition="gaussian", kspaceWeight=0.0, bicubicWeight=0.3, gaussianWeight=0.7,
                           partialFourierProbability=0.0, noiseProbability=1.0, noiseMin=0.01, noiseMax=0.02,
                           syntheticFraction=0.4, templateWeight=0.0, brainWeight=1.0, shapesWeight=0.0)
    cfg = buildTrainingConfig(settings, trainingVolumeFiles(dataFolder))
    d = cfg.data.degradation
    assert (d.primary, d.kspace_weight, d.bicubic_weight, d.gaussian_weight) == ("gaussian", 0.0, 0.3, 0.7)
    assert (d.partial_fourier_probability, d.noise_probability, d.noise) == (0.0, 1.0, [0.01, 0.02])
    assert d.acquisitions() == ["gaussian", "bicubic"]
    assert cfg.data.synthetic_fraction == 0.4 and cfg.data.synthesis.brain_weight == 1.0
    for bad, reason in (({"acquisition": "radial"}, "acquisition"), ({"gaussianWeight": 0.0, "acquisition": "gaussian"}, "weight 0"),
                        ({"syntheticFraction": 1.5}, "synthetic_fraction"), ({"noiseMin": 0.3, "noiseMax": 0.1}, "noise")):
        with pytest.raises(ValueError, match=reason):
            buildTrainingConfig(settingsFor(tmp_path, **bad), trainingVolumeFiles(dataFolder))


def test_fine_tuning_takes_the_checkpoint_architecture(tmp_path, dataFolder, tinyCheckpoints, monkeypatch):
    from FAGANTrainingLib import BUNDLED

    from fagan_engine.models.checkpoint import default_checkpoint

    files = trainingVolumeFiles(dataFolder)
    cfg = buildTrainingConfig(settingsFor(tmp_path, preset="fagan", initCheckpoint=str(tinyCheckpoints[2])), files)
    assert cfg.train.init_checkpoint == str(tinyCheckpoints[2].resolve()) and cfg.model.n_feats == 8
    bundled = buildTrainingConfig(settingsFor(tmp_path, preset="fagan", initCheckpoint=BUNDLED), files)
    assert bundled.train.init_checkpoint == str(default_checkpoint(2, "kspace"))
    with pytest.raises(ValueError, match="choose that preset"):
        buildTrainingConfig(settingsFor(tmp_path, preset="srgan", initCheckpoint=str(tinyCheckpoints[2])), files)
    with pytest.raises(ValueError, match="set the scale to 4"):
        buildTrainingConfig(settingsFor(tmp_path, preset="fagan", initCheckpoint=str(tinyCheckpoints[4])), files)
    bundled8 = buildTrainingConfig(settingsFor(tmp_path, preset="fagan", scale=8, initCheckpoint=BUNDLED), files)
    assert bundled8.train.init_checkpoint == str(default_checkpoint(8, "kspace")) and bundled8.model.scale == 8
    monkeypatch.setattr("fagan_engine.models.checkpoint.default_checkpoint", lambda scale, acquisition=None: None)
    with pytest.raises(ValueError, match="no bundled checkpoint for x8"):
        buildTrainingConfig(settingsFor(tmp_path, preset="fagan", scale=8, initCheckpoint=BUNDLED), files)
    with pytest.raises(ValueError, match="not found"):
        buildTrainingConfig(settingsFor(tmp_path, preset="fagan", initCheckpoint=str(tmp_path / "none.safetensors")), files)


# ---------------------------------------------------------------- issue 18: the default recipe, panel text, scene close


def test_training_installs_what_the_default_synthetic_share_needs(monkeypatch):
    """The default recipe draws synthetic slices from nilearn's ICBM152 template: training lists nilearn."""
    from FAGANSuperResLib import dependencies, engine

    assert TrainingSettings(outputDir="x").syntheticFraction > 0
    monkeypatch.setattr(engine, "moduleAvailable", lambda name: name != "nilearn")
    monkeypatch.setattr(engine, "installedTorchVersion", lambda: "2.4.0")
    assert engine.missingRequirements("train") == ["nilearn>=0.10"]
    assert engine.missingRequirements("fit") == []  # the thick-slice fit and stacks need torch, not the training data's nilearn
    assert engine.missingRequirements("fagan") == []
    assert "nilearn" in dependencies.selfTestSkipReason("train")


def test_default_settings_train_with_the_real_trainer(tmp_path, scene):
    """The panel's defaults (synthetic share, fine-tuning the bundled checkpoint), only length, folder and
    device set, run to the end."""
    nodes = [addVolumeNode(scene, smoothArray((12, 72, 72), seed=i), name=f"HR{i}") for i in range(3)]  # >= patch 64
    settings = TrainingSettings(outputDir=str(tmp_path / "run"), iterations=1, device="cpu", initCheckpoint=BUNDLED)
    run = TrainingRun(prepareTraining(settings, nodes))
    run.start()
    assert run.wait(600) == RunState.FINISHED, run.error
    assert run.iteration == 1


def test_panel_text_says_what_happens_without_vgg_weights():
    """The engine downloads nothing: without VGG weights the content loss is the pixel loss."""
    from pathlib import Path

    ui = (Path(__file__).resolve().parents[2] / "FAGANTraining" / "Resources" / "UI" / "FAGANTraining.ui").read_text()
    vggText = ui[ui.index('name="vggWeightsPathLineEdit"'):][:600]
    assert "download" not in vggText.replace("Nothing is downloaded", "") and "pixel" in vggText


def test_charts_come_back_in_a_new_scene_while_the_run_goes_on(scene):
    from FAGANTrainingLib import plotsInScene

    history = TrainingHistory()
    for it in (1, 2, 3):
        history.add({"event": "progress", "iteration": it, "losses": {"pixel": 1.0 / it}})
    history.add({"event": "validation", "iteration": 3, "psnr": 30.0, "bicubic_psnr": 29.0})
    plots = plotsInScene(scene, None, history)
    assert plotsInScene(scene, plots, history) is plots
    scene.Clear(0)  # the user closes the scene
    assert not plots.inScene(scene)
    again = plotsInScene(scene, plots, history)
    assert again is not plots and again.inScene(scene)
    assert again.lossTable.GetNumberOfRows() == 3 and again.validationTable.GetNumberOfRows() == 1
    assert again.lossChart.GetNumberOfPlotSeriesNodes() == 1


def test_panel_choices_are_the_engines():
    """The training panel's presets are engine presets; its acquisitions are the super-resolution panel's
    (one Slicer-side list, checked against the engine in test_contracts)."""
    from FAGANSuperResLib import options
    from FAGANTrainingLib import training

    from fagan_engine.util.config import PRESETS

    assert set(training.PRESETS) <= set(PRESETS) and training.PRESETS[0] == "fagan"
    assert training.ACQUISITIONS is options.ACQUISITIONS
