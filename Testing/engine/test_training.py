"""fagan-train in-process: end to end on a template crop, exact resume, VGG19 weights, bad configs."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from train_helpers import TINY_CONFIG, engine_command, events, one_thread, subprocess_env, tiny_args, write_crop  # noqa: F401

from fagan_engine.cli.train import main
from fagan_engine.models.checkpoint import load_generator, read_metadata
from fagan_engine.training.data import IterationBatchSampler, PatchDataset, build_loader, prepare_data
from fagan_engine.training.losses import CONTENT_PIXEL, CONTENT_VGG, VGG19Features, load_vgg19
from fagan_engine.training.state import decode, encode, load_state
from fagan_engine.util.config import load_config
from fagan_engine.util.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_crop(tmp_path_factory.mktemp("train") / "crop.nii.gz")


def train(argv: List[str], capsys: pytest.CaptureFixture) -> "tuple[int, list, str]":
    code = main(argv)
    captured = capsys.readouterr()
    return code, events(captured.out), captured.err


def test_end_to_end_run_folder_and_checkpoint_used_by_fagan_sr(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    code, evs, err = train(tiny_args(crop, run, "--progress", "json"), capsys)
    assert code == 0, err
    kinds = [e["event"] for e in evs]
    assert kinds[0] == "start" and kinds[-1] == "finished" and "validation" in kinds
    progress = [e for e in evs if e["event"] == "progress"]
    assert [e["iteration"] for e in progress] == list(range(1, 7))
    assert {e["phase"] for e in progress} == {"pretrain", "gan"}
    assert {"epoch", "total", "losses", "lr", "throughput", "eta_s"} <= set(progress[-1])
    assert {"adversarial", "content", "discriminator", "pixel"} <= set(progress[-1]["losses"])
    saved = {(e["kind"], e["iteration"]) for e in evs if e["event"] == "checkpoint"}
    assert {("latest", 6), ("periodic", 3), ("periodic", 6), ("best", 3)} <= saved
    assert "falls back to pixel MSE" in err
    for name in ("config.json", "split.json", "metrics.jsonl", "curves.png", "training_state.safetensors"):
        assert (run / name).is_file(), name
    split = json.loads((run / "split.json").read_text())
    assert split["mode"] == "slabs" and split["caveat"]
    best = Path(evs[-1]["best_checkpoint"])
    _, metadata = load_generator(str(best), expected_scale=2)
    assert metadata.training["content_loss"] == CONTENT_PIXEL
    assert metadata.training["weights"] == "ema" and metadata.plane == "axial"
    slab = metadata.training["validation_slab"]
    assert 0 < slab["start"] < slab["stop"] < 24
    out = tmp_path / "sr.nii.gz"
    proc = subprocess.run(
        engine_command("sr", str(crop), str(out), "--scale", "2", "--checkpoint", str(best), "--progress", "none"),
        capture_output=True, text=True, env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_resume_continues_exactly(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    assert train(tiny_args(crop, full), capsys)[0] == 0
    assert train(tiny_args(crop, split, "train.iterations=4"), capsys)[0] == 0
    code, evs, err = train(tiny_args(crop, split, "--resume", "--progress", "json"), capsys)
    assert code == 0, err
    assert evs[0]["event"] == "start" and evs[0]["iteration"] == 4
    assert [e["iteration"] for e in evs if e["event"] == "progress"] == [5, 6]
    (a_modules, a_state), (b_modules, b_state) = load_state(full / "training_state.safetensors"), load_state(split / "training_state.safetensors")
    assert a_state["iteration"] == b_state["iteration"] == 6
    for name in ("G", "EMA", "D"):
        assert a_modules[name].keys() == b_modules[name].keys()
        for key, tensor in a_modules[name].items():
            assert torch.equal(tensor, b_modules[name][key]), f"{name}/{key}"
    for name in ("G", "D"):
        for index, values in a_state["optimizers"][name]["state"].items():
            for key, tensor in values.items():
                assert torch.equal(tensor, b_state["optimizers"][name]["state"][index][key])
    records = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == list(range(1, 7))

    # damaged lines (no kind, a string iteration, bytes that are no UTF-8) are dropped as a line cut by a kill is:
    # they made the resume fail with a traceback (KeyError, TypeError, UnicodeDecodeError)
    with open(split / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"iteration": 2}\n{"iteration": "5", "kind": "train"}\n\xff\xfe\n')
    code, _, err = train(tiny_args(crop, split, "train.iterations=8", "--resume"), capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == list(range(1, 9))


def test_samples_depend_only_on_seed_and_index(crop: Path) -> None:
    degradations = [
        "data.degradation.bicubic_weight=1",
        "data.degradation.gaussian_weight=1",
        'data.degradation.windows=["none", "hamming", "fermi"]',
        "data.degradation.partial_fourier_probability=0.5",
        "data.degradation.noise_probability=0.5",
        "data.degradation.noise=[0.01, 0.05]",
    ]
    cfg = load_config(str(TINY_CONFIG)).with_overrides([f'data.train=["{crop}"]', *degradations])
    data = prepare_data(cfg)
    first = PatchDataset(data.train, cfg.data, 2, seed=3)
    second = PatchDataset(data.train, cfg.data, 2, seed=3)
    for index in (0, 17, 12345):
        hr_a, lr_a = first[index]
        hr_b, lr_b = second[index]
        assert torch.equal(hr_a, hr_b) and torch.equal(lr_a, lr_b)
        assert hr_a.shape == (1, 16, 16) and lr_a.shape == (1, 8, 8)
    assert not torch.equal(first[0][0], PatchDataset(data.train, cfg.data, 2, seed=4)[0][0])
    ranks = [list(IterationBatchSampler(5, 7, 4, rank, 2)) for rank in (0, 1)]
    assert ranks == [[[20, 21], [24, 25]], [[22, 23], [26, 27]]]
    in_process, workers = (list(build_loader(first, IterationBatchSampler(0, 2, 4), n, False)) for n in (0, 2))
    for (hr_a, lr_a), (hr_b, lr_b) in zip(in_process, workers):
        assert torch.equal(hr_a, hr_b) and torch.equal(lr_a, lr_b) and hr_a.shape == (4, 1, 16, 16)


def test_state_codec_round_trips_nested_structures() -> None:
    value = {"a": (1, 2.5, None), 3: [torch.arange(4)], "b": {"__x": True}}
    tensors: dict = {}
    encoded = encode(value, "~", tensors)
    json.dumps(encoded)
    decoded = decode(json.loads(json.dumps(encoded)), tensors)
    assert decoded["a"] == (1, 2.5, None) and decoded["b"] == {"__x": True}
    assert torch.equal(decoded[3][0], torch.arange(4))


class NotATensor:
    pass


def test_with_vgg19_weights_file(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import save_file

    weights = VGG19Features().state_dict()
    weights["classifier.6.bias"] = torch.zeros(1000)  # extra torchvision keys are ignored
    safetensors_file, pth_file = tmp_path / "vgg19.safetensors", tmp_path / "vgg19.pth"
    save_file(weights, str(safetensors_file))
    torch.save(weights, str(pth_file))  # a plain state dict, read back with weights_only=True
    from_pth = load_vgg19(str(pth_file)).state_dict()
    for key, tensor in load_vgg19(str(safetensors_file)).state_dict().items():
        assert torch.equal(tensor, from_pth[key])
    run = tmp_path / "run"
    code, _, err = train(tiny_args(crop, run, f"train.vgg_weights={safetensors_file}"), capsys)
    assert code == 0, err
    assert "falls back" not in err
    assert read_metadata(str(run / "checkpoints" / "latest.safetensors")).training["content_loss"] == CONTENT_VGG
    # a patch smaller than VGG's four max-pools take crashed the run at the first GAN iteration (every resume too)
    small = tmp_path / "small"
    code, _, err = train(tiny_args(crop, small, f"train.vgg_weights={safetensors_file}", "data.patch_size=12"), capsys)
    assert code == 2 and err.strip() == ("error: data.patch_size 12 is too small for the VGG content loss (train.vgg_weights): "
                                         "its features need patches of at least 16 pixels") and not small.exists()
    hostile = tmp_path / "hostile.pth"
    torch.save({"features.0.weight": NotATensor()}, str(hostile))
    with pytest.raises(ConfigError, match="is not a torchvision vgg19 state dict"):
        load_vgg19(str(hostile))


def test_bad_vgg19_weights_files_are_named_in_one_plain_line(tmp_path: Path) -> None:
    """Not torch's many-line text with terminal escapes that advises ``weights_only=False``."""
    module, garbage = tmp_path / "module.pth", tmp_path / "garbage.pth"
    torch.save(torch.nn.Linear(2, 2), str(module))
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    cases = {module: "is not a torchvision vgg19 state dict (.safetensors or a plain .pth of tensors)",
             garbage: "is not a torchvision vgg19 state dict (.safetensors or a plain .pth of tensors)",
             tmp_path: "is a folder, not a weights file"}
    for path, fragment in cases.items():
        with pytest.raises(ConfigError) as info:
            load_vgg19(str(path))
        assert str(info.value) == f"train.vgg_weights {path} {fragment}"


def _bad_configs(tmp: Path, crop: Path) -> dict:
    """name -> (extra arguments, expected message fragment); ``data.train`` is the crop unless they set it."""
    empty = tmp / "empty"
    empty.mkdir()
    garbage = tmp / "garbage.nii.gz"
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    thin = write_crop(tmp / "thin.nii.gz", size=(48, 48, 3))
    manifest = tmp / "manifest.json"
    manifest.write_text("{not json")
    return {
        "unknown key": (["train.colour=1"], "unknown config key"),
        "wrong type": (["train.iterations=ten"], "must be an integer"),
        "no data": (["data.train=[]"], "no training data"),
        "missing volume": ([f'data.train=["{tmp / "nope.nii.gz"}"]'], "not found"),
        "empty folder": ([f'data.train=["{empty}"]'], "empty"),
        "unreadable volume": ([f'data.train=["{garbage}"]'], "garbage.nii.gz"),
        "bad manifest": (["data.train=[]", f"data.manifest={manifest}"], "cannot parse manifest"),
        "patch not a multiple of the scale": (["model.scale=4", "data.patch_size=18"], "not a multiple"),
        "patch too small for the scale": (["model.scale=8", "data.patch_size=24"], "LR patches"),
        "slices smaller than the patch": (["data.patch_size=64"], "smaller than data.patch_size"),
        "volume too thin for a slab": ([f'data.train=["{thin}"]'], "too few"),
        "a key set twice": (["train.iterations=5", "train.iterations=7"], "--set gives train.iterations twice"),
        "vgg weights a folder": ([f"train.vgg_weights={empty}"], f"train.vgg_weights {empty} is a folder"),
    }


def _bad_config_args(crop: Path, run: Path, overrides: List[str]) -> List[str]:
    """tiny_args, but with the ``data.train`` of ``overrides`` where they set one (``--set`` takes each key once)."""
    if any(item.startswith("data.train=") for item in overrides):
        return ["--config", str(TINY_CONFIG), "--set", f"train.output_dir={run}", *overrides]
    return tiny_args(crop, run, *overrides)


def test_bad_configs_fail_before_training(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    for name, (overrides, fragment) in _bad_configs(tmp_path, crop).items():
        code, _, err = train(_bad_config_args(crop, run, overrides), capsys)
        lines = err.strip().splitlines()
        assert code == 2, name
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert fragment in lines[0], (name, lines[0])
        assert not run.exists(), f"{name}: training started"


def test_existing_run_needs_resume_and_same_recipe(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert train(tiny_args(crop, run, "train.iterations=3"), capsys)[0] == 0
    code, _, err = train(tiny_args(crop, run), capsys)
    assert code == 2 and "--resume" in err
    code, _, err = train(tiny_args(crop, run, "train.lr=0.01", "--resume"), capsys)
    assert code == 2 and "train.lr" in err
    # the state removed (to save space): the run's checkpoints are still never overwritten, with or without --resume
    state = run / "training_state.safetensors"
    state.unlink()
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    for extra in ([], ["--resume"]):
        code, _, err = train(tiny_args(crop, run, *extra), capsys)
        assert code == 2 and err.count("\n") == 1 and "holds checkpoints of an earlier run" in err, err
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    state.mkdir()  # a folder where the state belongs
    code, _, err = train(tiny_args(crop, run, "--resume"), capsys)
    assert code == 2 and "is not a file" in err


def test_resume_refuses_data_that_now_splits_differently(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A volume added to the data folder reshuffled the seeded split on --resume, silently: validation and the best
    checkpoint then compared different sets."""
    folder = tmp_path / "volumes"
    folder.mkdir()
    for i in range(3):
        write_crop(folder / f"v{i}.nii.gz", index=(60 + 4 * i, 88, 60), size=(40, 40, 8))
    run = tmp_path / "run"
    assert train(tiny_args(folder, run, "train.iterations=3", "data.val_fraction=0.34"), capsys)[0] == 0
    split = (run / "split.json").read_bytes()
    write_crop(folder / "v3.nii.gz", index=(76, 88, 60), size=(40, 40, 8))
    code, _, err = train(tiny_args(folder, run, "train.iterations=6", "data.val_fraction=0.34", "--resume"), capsys)
    assert code == 2 and err.count("\n") == 1 and "splits into training and validation differently" in err, err
    assert (run / "split.json").read_bytes() == split
    (folder / "v3.nii.gz").unlink()  # the same data again: the run resumes
    assert train(tiny_args(folder, run, "train.iterations=6", "data.val_fraction=0.34", "--resume"), capsys)[0] == 0


def test_a_refused_run_leaves_no_empty_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The run folder's lock creates ``runs/deep/x``; a config refused before training removes all three again."""
    config = tmp_path / "c.yaml"
    config.write_text(f'data:\n  train: ["{tmp_path / "missing.nii.gz"}"]\ntrain:\n  output_dir: {tmp_path / "runs" / "deep" / "x"}\n')
    code, _, err = train(["--config", str(config), "--progress", "none"], capsys)
    assert code == 2 and "not found" in err
    assert not (tmp_path / "runs").exists()


def test_split_is_by_volume_for_folders_and_manifests(tmp_path: Path) -> None:
    folder = tmp_path / "volumes"
    folder.mkdir()
    names = [write_crop(folder / f"v{i}.nii.gz", index=(60 + 4 * i, 88, 60), size=(40, 40, 8)) for i in range(3)]
    (folder / "notes.txt").write_text("not a volume")
    cfg = load_config(str(TINY_CONFIG)).with_overrides([f'data.train=["{folder}"]', "data.val_fraction=0.34"])
    data = prepare_data(cfg)
    assert data.split["mode"] == "volumes" and len(data.split["train"]) == 2 and len(data.split["val"]) == 1
    assert sorted(data.split["train"] + data.split["val"]) == sorted(map(str, names))
    assert [v.name for v in data.val] == data.split["val"] and data.val[0].hr.GetSize() == (40, 40, 8)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"train": ["volumes/v0.nii.gz", "volumes/v1.nii.gz"], "val": ["volumes/v2.nii.gz"]}))
    data = prepare_data(cfg.with_overrides(["data.train=[]", f"data.manifest={manifest}"]))
    assert data.split["mode"] == "manifest" and [Path(v.name).name for v in data.val] == ["v2.nii.gz"]
    manifest.write_text(json.dumps({"train": ["volumes/v0.nii.gz"], "val": ["volumes/v0.nii.gz"]}))
    with pytest.raises(ConfigError, match="both"):
        prepare_data(cfg.with_overrides(["data.train=[]", f"data.manifest={manifest}"]))
    # a blank or constant validation volume: its PSNR was NaN at the first validation, a traceback after training began
    import SimpleITK as sitk

    for name, value in (("zero", 0.0), ("constant", 7.0)):
        blank = sitk.Image(40, 40, 8, sitk.sitkFloat32) + value
        sitk.WriteImage(blank, str(folder / f"{name}.nii.gz"))
        manifest.write_text(json.dumps({"train": ["volumes/v0.nii.gz"], "val": [f"volumes/{name}.nii.gz"]}))
        with pytest.raises(ConfigError, match="has no foreground to score"):
            prepare_data(cfg.with_overrides(["data.train=[]", f"data.manifest={manifest}"]))


@pytest.mark.parametrize("spelling", ["token", "path"])
def test_synthesis_keeps_off_the_held_out_template_slab_however_the_template_is_named(spelling: str) -> None:
    """Given as the template file's path rather than ``icbm152:t1``, the synthesizer drew from the validation slab."""
    from fagan_engine.mri.sample_data import ICBM152_T1, icbm152_t1_path
    from fagan_engine.training.data import build_synthesizer

    entry = ICBM152_T1 if spelling == "token" else str(icbm152_t1_path())
    cfg = load_config(str(TINY_CONFIG)).with_overrides([f'data.train=["{entry}"]', "data.synthetic_fraction=0.5"])
    data = prepare_data(cfg)
    slab = data.split["validation_slab"]
    drawn = set(int(i) for i in build_synthesizer(cfg, data).slice_indices)
    assert drawn and not drawn & set(range(slab["start"], slab["stop"]))
    validating = load_config(str(TINY_CONFIG)).with_overrides(["data.synthetic_fraction=0.5"])
    with pytest.raises(ConfigError, match="validation volume"):
        build_synthesizer(validating, type(data)(data.train, data.val, {"mode": "manifest", "train": ["x"], "val": [entry]}))


def test_float32_training_slices_are_the_file_values(tmp_path: Path) -> None:
    """Training slices of a float32 volume are copies, not views of a freed SimpleITK buffer."""
    import SimpleITK as sitk

    from fagan_engine.mri.normalization import IntensityNormalizer
    from fagan_engine.util.config import NormalizationConfig

    values = np.random.default_rng(0).uniform(0.0, 100.0, (12, 64, 64)).astype(np.float32)
    for i in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(values + i), str(tmp_path / f"v{i}.nii"))
    cfg = load_config(str(TINY_CONFIG)).with_overrides([f'data.train=["{tmp_path}"]', "data.val_fraction=0.5", "data.plane=axial"])
    data = prepare_data(cfg)
    _ = [np.full(values.shape, -1.0, np.float32) for _ in range(20)]  # reuse any freed buffer
    offset = int(Path(data.train[0].name).stem[1])
    expected = IntensityNormalizer.fit(values + offset, NormalizationConfig()).forward(values + offset)
    np.testing.assert_allclose(data.train[0].slices, expected, rtol=1e-6)


def test_init_from_another_scale_takes_every_matching_tensor(crop: Path, tmp_path: Path) -> None:
    """``train.init_from_scale``: a x2 run starts a x4 model everywhere but its second upsampling stage."""
    from fagan_engine.models.archs import build_generator
    from fagan_engine.training.trainer import initial_weights
    from fagan_engine.util.errors import FAGANError

    run = tmp_path / "x2"
    assert main(tiny_args(crop, run, "train.iterations=1", "train.pretrain_iterations=1", "--progress", "none")) == 0
    source = str(run / "checkpoints" / "latest.safetensors")
    x2 = load_generator(source)[0].state_dict()
    cfg = load_config(str(TINY_CONFIG)).with_overrides(["model.scale=4", f"train.init_checkpoint={source}", "train.init_from_scale=true"])
    target = build_generator(cfg.model).state_dict()
    weights, note = initial_weights(source, cfg, target)
    fresh = sorted(k for k in target if k.startswith("upsample.1."))
    assert fresh and note.endswith("new: " + ", ".join(fresh))
    assert all(torch.equal(weights[k], target[k]) for k in fresh)
    assert all(torch.equal(weights[k], x2[k]) for k in target if k not in fresh)
    with pytest.raises(FAGANError, match="x2"):
        initial_weights(source, cfg.with_overrides(["train.init_from_scale=false"]), target)
    wider = cfg.with_overrides(["model.n_feats=16"])
    with pytest.raises(ConfigError, match="more than the scale"):
        initial_weights(source, wider, build_generator(wider.model).state_dict())
    with pytest.raises(ConfigError, match="needs train.init_checkpoint"):
        load_config(str(TINY_CONFIG)).with_overrides(["train.init_from_scale=true"])


def test_data_errors_name_the_volume_and_give_advice_for_training(crop: Path, tmp_path: Path) -> None:
    """Not "input is a 2D image" without the file, nor fagan-sr's NaN policy, --series-id and --dicom-gaps."""
    import SimpleITK as sitk
    from dicom_test_series import oblique_image, write_mr_series

    twod, nan = tmp_path / "twod.mha", tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((64, 64), np.float32)), str(twod))
    image = sitk.ReadImage(str(crop))
    values = sitk.GetArrayFromImage(image)
    values[3, 3, 3] = np.nan
    with_nan = sitk.GetImageFromArray(values)
    with_nan.CopyInformation(image)
    sitk.WriteImage(with_nan, str(nan))
    two_series, gap = tmp_path / "two_series", tmp_path / "gap"
    for uid, prefix in (("1.2.826.0.1.3680043.8.498.1", "a"), ("1.2.826.0.1.3680043.8.498.2", "b")):
        write_mr_series(oblique_image(), two_series, uid, prefix=prefix)
    write_mr_series(oblique_image(size=(16, 12, 5)), gap)
    (gap / "slice002.dcm").unlink()
    cases = {
        f'["{crop}", "{twod}"]': f"training volume {twod} is a 2D image",
        f'["{nan}"]': f"training volume {nan} has 1 non-finite (NaN or Inf) voxels",
        f'["{two_series}"]': f"training volume {two_series} holds 2 DICOM series: give each series its own folder",
        f'["{gap}"]': f"training volume {gap}: DICOM series has a gap",
    }
    base = load_config(str(TINY_CONFIG)).with_overrides(["data.val_fraction=0"])
    for entries, fragment in cases.items():
        with pytest.raises(InputError) as info:
            prepare_data(base.with_overrides([f"data.train={entries}"]))
        message = str(info.value)
        assert message.startswith(fragment) and "\n" not in message, message
        assert not re.search(r"fagan-sr|series.id|policy|--dicom-gaps", message), message


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_sent_to_the_process_group_stops_a_run_with_loader_workers(crop: Path, tmp_path: Path, signum: int) -> None:
    """The Slicer module's Stop (``killpg``), job schedulers and Ctrl-C signal the DataLoader worker too: the run
    still stops gracefully (a worker killed by SIGTERM made the main process fail with a traceback)."""
    argv = tiny_args(crop, tmp_path / "run", "data.num_workers=1", "train.iterations=100000", "train.val_every=100000", "--progress", "json")
    proc = subprocess.Popen(
        engine_command("train", *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
        start_new_session=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if any(e["event"] == "progress" for e in events(line)):
                os.killpg(proc.pid, signum)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    last = events("".join(lines) + out)[-1]
    assert last["event"] == "stopped" and Path(last["state"]).is_file(), last


def test_a_volume_listed_twice_or_an_output_folder_of_someone_elses_files_is_refused(tmp_path: Path, capsys) -> None:
    """["v.nii.gz", "./v.nii.gz"] put one volume in training and validation alike; a train.output_dir holding the user's
    own config.json and metrics.jsonl had them replaced."""
    folder = tmp_path / "volumes"
    folder.mkdir()
    volume = write_crop(folder / "v.nii.gz", index=(60, 88, 60), size=(40, 40, 8))
    cfg = load_config(str(TINY_CONFIG))
    for entries in ([str(volume), str(folder / "." / "v.nii.gz")], [str(folder), str(volume)]):
        with pytest.raises(ConfigError, match="lists the volume .* more than once"):
            prepare_data(cfg.with_overrides([f"data.train={json.dumps(entries)}"]))
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"my": "project settings"}')
    code = main(["--config", str(TINY_CONFIG), "--progress", "none", "--set", f"train.output_dir={project}",
                 f"data.train=[\"{volume}\"]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "already holds config.json" in err[0]
    assert (project / "config.json").read_text() == '{"my": "project settings"}' and sorted(p.name for p in project.iterdir()) == ["config.json"]
    own = tmp_path / "own"
    (own / "checkpoints").mkdir(parents=True)
    (own / "checkpoints" / "best.json").write_text('{"my": "notes"}')  # named like a checkpoint's sidecar: it was replaced
    code = main(["--config", str(TINY_CONFIG), "--progress", "none", "--set", f"train.output_dir={own}", f"data.train=[\"{volume}\"]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "already holds best.json" in err[0]
    assert (own / "checkpoints" / "best.json").read_text() == '{"my": "notes"}'
    (own / "checkpoints" / "best.json").rename(own / "checkpoints" / "my_notes.json")  # a name no run writes: kept, not refused
    code = main(["--config", str(TINY_CONFIG), "--progress", "none", "--set", f"train.output_dir={own}", f"data.train=[\"{volume}\"]"])
    assert code == 0 and (own / "checkpoints" / "my_notes.json").read_text() == '{"my": "notes"}'


def test_training_without_matplotlib_goes_on_without_its_curves(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Slicer bundles no matplotlib and the engine does not require it: training stopped at its first validation, before
    any checkpoint, with "this needs the Python package matplotlib"."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    run = tmp_path / "run"
    code, _, err = train(tiny_args(crop, run), capsys)
    assert code == 0, err
    assert err.count("note: no curves.png: matplotlib is not installed") == 1
    assert (run / "checkpoints" / "latest.safetensors").is_file() and not (run / "curves.png").exists()
