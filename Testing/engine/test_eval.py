"""fagan-eval: Markdown/JSON tables with a bicubic row per scale; FID only with Inception weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import save_untrained_checkpoint
from train_helpers import one_thread, write_crop  # noqa: F401

from fagan_engine.cli.evaluate import main
from fagan_engine.training.inception import InceptionV3Features, frechet_distance


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> "list[Path]":
    folder = tmp_path_factory.mktemp("eval")
    return [
        write_crop(folder / "a.nii.gz", index=(66, 88, 70), size=(48, 48, 4)),
        write_crop(folder / "b.nii.gz", index=(70, 96, 90), size=(40, 48, 4)),
    ]


def test_table_has_bicubic_and_lanczos_rows_and_no_fid_without_weights(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    x2 = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    x4 = save_untrained_checkpoint(tmp_path / "x4.safetensors", 4)
    out = tmp_path / "eval"
    code = main(["--checkpoint", str(x2), str(x4), "--data", *map(str, volumes), "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    markdown = (out / "evaluation.md").read_text()
    assert printed == markdown
    assert "| scale | bicubic PSNR | bicubic SSIM | lanczos PSNR | lanczos SSIM | FA-GAN PSNR | FA-GAN SSIM |" in markdown
    assert "×2" in markdown and "×4" in markdown and "2 test volumes" in markdown
    assert "FID" not in markdown
    report = json.loads((out / "evaluation.json").read_text())
    assert report["std_over"] == "volumes" and report["fid"].startswith("absent")
    rows = {(r["scale"], r["method"]): r for r in report["results"]}
    assert set(rows) == {(s, m) for s in (2, 4) for m in ("bicubic", "lanczos", "FA-GAN")}
    assert all("fid" not in r and r["n"] == 2 and r["psnr"]["std"] >= 0 for r in rows.values())
    assert rows[(2, "bicubic")]["psnr"]["mean"] > rows[(4, "bicubic")]["psnr"]["mean"]
    # a second run never replaces the tables without --force; an --output that is a file is one line, not a traceback
    before = (out / "evaluation.json").read_bytes()
    assert main(["--checkpoint", str(x2), "--data", str(volumes[0]), "--output", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err and (out / "evaluation.json").read_bytes() == before
    assert main(["--checkpoint", str(x2), "--data", str(volumes[0]), "--output", str(volumes[0])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert main(["--checkpoint", str(x2), "--data", str(volumes[0]), "--output", str(out), "--force"]) == 0
    assert (out / "evaluation.json").read_bytes() != before


def test_refused_evaluations_leave_no_folder(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--output's folders were made before the inputs were checked, and a checkpoint outside --scales left a table of the
    baselines alone."""
    x2 = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    out = tmp_path / "deep" / "a" / "b"
    for argv, fragment in ((["--checkpoint", str(tmp_path / "missing.safetensors"), "--data", str(volumes[0])], "missing"),
                           (["--checkpoint", str(x2), "--data", str(tmp_path / "nope.nii.gz")], "nope"),
                           (["--checkpoint", str(x2), "--data", str(volumes[0]), "--scales", "4"], "no checkpoint is for --scales 4"),
                           (["--checkpoint", str(x2), "--data", str(volumes[0]), str(volumes[0].parent / "." / volumes[0].name)],
                            "more than once")):
        assert main([*argv, "--output", str(out)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
        assert not (tmp_path / "deep").exists()


def test_the_lr_follows_the_acquisition_the_checkpoints_are_made_for(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """fagan-eval made k-space LR for every checkpoint, a bicubic-only model included (and warned about it)."""
    from fagan_engine.models.archs import build_generator, preset_config
    from fagan_engine.models.checkpoint import CheckpointMetadata, save_checkpoint
    from fagan_engine.util.config import NormalizationConfig

    cfg = preset_config("fagan", 2, n_feats=16, n_blocks=1)
    made = {}
    for acquisitions in (["bicubic"], ["kspace", "gaussian"]):
        made[acquisitions[0]] = save_checkpoint(str(tmp_path / f"{acquisitions[0]}.safetensors"), build_generator(cfg).state_dict(),
                                                CheckpointMetadata.create(cfg, NormalizationConfig(), acquisitions=acquisitions))
    for checkpoints, extra, expected in (([made["bicubic"]], [], "bicubic"), ([made["kspace"]], [], "kspace"),
                                         ([made["bicubic"], made["kspace"]], ["--acquisition", "gaussian"], "gaussian")):
        out = tmp_path / f"eval-{expected}"
        assert main(["--checkpoint", *map(str, checkpoints), "--data", str(volumes[0]), "--output", str(out), *extra]) == 0
        err = capsys.readouterr().err
        assert json.loads((out / "evaluation.json").read_text())["acquisition"]["model"] == expected
        assert ("was trained for" in err) == (expected == "gaussian" and len(checkpoints) == 2), err
    assert main(["--checkpoint", str(made["bicubic"]), str(made["kspace"]), "--data", str(volumes[0]), "--output", str(tmp_path / "mixed")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "different acquisitions" in err[0] and "--acquisition" in err[0] and not (tmp_path / "mixed").exists()


def test_a_volume_with_nothing_to_score_is_refused(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A blank test volume gave a table of NaN (and NaN literals in the JSON) with exit 0."""
    import SimpleITK as sitk

    blank = tmp_path / "blank.nii.gz"
    sitk.WriteImage(sitk.Image(48, 48, 4, sitk.sitkFloat32), str(blank))
    x2 = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    assert main(["--checkpoint", str(x2), "--data", str(blank), str(volumes[0]), "--output", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "blank.nii.gz has no foreground" in err[0]
    assert not (tmp_path / "eval").exists()


def test_single_volume_std_over_slices_and_fid_with_weights(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "inception.safetensors"
    save_file(InceptionV3Features().state_dict(), str(weights))
    x2 = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    out = tmp_path / "eval"
    code = main(["--checkpoint", str(x2), "--data", str(volumes[0]), "--output", str(out), "--inception-weights", str(weights)])
    capsys.readouterr()
    assert code == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["std_over"] == "slices" and report["fid"] == "computed"
    assert all(np.isfinite(r["fid"]) and r["n"] == 4 for r in report["results"])
    assert "| ×2 |" in (out / "evaluation.md").read_text() and "FID" in (out / "evaluation.md").read_text()


def test_fid_of_one_slice_is_refused_not_nan() -> None:
    from fagan_engine.util.errors import InputError

    with pytest.raises(InputError, match="FID needs at least 2 foreground slices; the test data has 1"):
        frechet_distance(np.ones((1, 4)), np.ones((3, 4)))


def test_frechet_distance_matches_the_sqrtm_formula() -> None:
    from scipy import linalg

    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 8))
    assert abs(frechet_distance(features, features)) < 1e-6
    assert frechet_distance(features, features + 1.0) == pytest.approx(8.0, rel=1e-6)
    few, other = rng.normal(size=(5, 16)), rng.normal(size=(6, 16)) * 1.5 + 0.3  # fewer samples than dimensions
    c1, c2 = np.cov(few, rowvar=False), np.cov(other, rowvar=False)
    expected = np.sum((few.mean(0) - other.mean(0)) ** 2) + np.trace(c1 + c2 - 2 * np.real(linalg.sqrtm(c1 @ c2)))
    assert frechet_distance(few, other) == pytest.approx(expected, rel=1e-6)


def test_demo_output_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It was a FileExistsError traceback from mkdir."""
    from fagan_engine.cli.demo import main as demo

    taken = tmp_path / "f"
    taken.write_text("mine")
    assert demo(["--output", str(taken), "--scales", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "is a file" in err[0] and taken.read_text() == "mine"


def _fake_demo(fail: bool):
    """A stand-in for the demo's computation that writes every file it would (or fails half-way)."""
    from fagan_engine.cli import demo

    def write(folder: Path, scales, device, acquisition) -> None:
        for path in demo.demo_files(folder, scales):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("new")
            if fail:
                raise RuntimeError("the network failed")

    return write


def test_demo_never_replaces_an_earlier_demo_without_force_and_publishes_all_or_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """It replaced the files of an earlier demo in --output without a word, and wrote them one by one."""
    from fagan_engine.cli import demo

    output = tmp_path / "new" / "out"
    monkeypatch.setattr(demo, "_write_demo", _fake_demo(fail=True))
    with pytest.raises(RuntimeError):
        demo.main(["--output", str(output), "--scales", "2"])
    assert not (tmp_path / "new").exists()  # the folders it made are gone again, nothing was published
    monkeypatch.setattr(demo, "_write_demo", _fake_demo(fail=False))
    assert demo.main(["--output", str(output), "--scales", "2", "4"]) == 0
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()) == sorted(
        p.relative_to(output).as_posix() for p in demo.demo_files(output, [2, 4]))
    (output / "metrics.json").write_text("my notes")
    assert demo.main(["--output", str(output), "--scales", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: ") and "--force" in err[-1] and (output / "metrics.json").read_text() == "my notes"
    assert demo.main(["--output", str(output), "--scales", "2", "--force"]) == 0
    assert (output / "metrics.json").read_text() == "new"
    capsys.readouterr()
    assert demo.main(["--output", str(output), "--scales", "3"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_every_method_acquisition_eval_compares_has_valid_options() -> None:
    """acquisition_eval gave the baselines a one-pass ensemble, which RunOptions refuses for interpolation: it crashed."""
    from fagan_engine.training.acquisition_eval import network_alone

    checkpoints = {"FA-GAN": "fagan_x4.safetensors"}
    for method in ("bicubic", "lanczos", "FA-GAN"):
        options = network_alone(4, "kspace", "cpu", method, checkpoints).validate()
        assert options.ensemble_members == 1 and options.adapt_steps == 0
    assert network_alone(4, "kspace", "cpu", "FA-GAN", checkpoints).checkpoint == "fagan_x4.safetensors"


def test_checkpoints_of_the_same_file_name_each_get_a_column(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """runs/*/checkpoints/latest.safetensors: both were labelled "FA-GAN (latest)" and the table kept one; the same file
    twice was accepted."""
    first = save_untrained_checkpoint((tmp_path / "a").mkdir() or tmp_path / "a" / "latest.safetensors", 2)
    torch.manual_seed(1)
    second = save_untrained_checkpoint((tmp_path / "b").mkdir() or tmp_path / "b" / "latest.safetensors", 2)
    assert main(["--checkpoint", str(first), str(second), "--data", str(volumes[0]), "--output", str(tmp_path / "eval")]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert f"FA-GAN (latest, {first}) PSNR" in header and f"FA-GAN (latest, {second}) PSNR" in header
    assert main(["--checkpoint", str(first), str(first.parent / "." / first.name), "--data", str(volumes[0]),
                 "--output", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--checkpoint lists" in err[0] and "more than once" in err[0]


def test_the_evaluation_tools_refuse_bad_arguments_in_one_line_and_touch_no_other_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """acquisition_eval --extra bad gave a traceback after nothing; through_plane_eval appended a results line to whatever
    --output named (a NIfTI), and its table suite gave tracebacks."""
    from fagan_engine.training import acquisition_eval, through_plane_eval

    victim = tmp_path / "scan.nii"
    victim.write_bytes(b"not results")
    for call, argv, fragment in (
        (acquisition_eval.main, ["--extra", "bad", "--output", str(tmp_path / "aq")], "--extra takes LABEL:SCALE=CHECKPOINT"),
        (through_plane_eval.main, ["realdev", "--realdev", str(tmp_path), "--output", str(victim)], "no real-scan development set"),
        (through_plane_eval.main, ["table"], "table needs the JSON-lines results file"),
        (through_plane_eval.main, ["table", str(victim)], "cannot render"),
    ):
        assert call(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert victim.read_bytes() == b"not results" and not (tmp_path / "aq").exists()
    with pytest.raises(Exception, match="not a results file of this tool"):
        through_plane_eval.check_results_file(victim)


def test_one_volume_reaching_the_top_of_the_head_scores_finite_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The mask is dilated in 3D: slices above the head held mask voxels and no foreground, the baselines scored an
    infinite PSNR there, and the table read 'inf ± nan' (its JSON then held Infinity and NaN). The mean is the volume's
    score, as with several volumes."""
    from fagan_engine.mri.forward_model import AcquisitionConfig
    from fagan_engine.training.evaluation import interpolated, make_case, volume_scores

    volume = write_crop(tmp_path / "top.nii.gz", index=(50, 70, 150), size=(96, 96, 10))
    out = tmp_path / "eval"
    x2 = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    assert main(["--checkpoint", str(x2), "--data", str(volume), "--output", str(out), "--scale", "2"]) == 0
    capsys.readouterr()

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in the report")

    report = json.loads((out / "evaluation.json").read_text(), parse_constant=refuse)
    assert report["std_over"] == "slices"
    for row in report["results"]:
        assert all(np.isfinite(row[key][part]) for key in ("psnr", "ssim") for part in ("mean", "std")), row
        assert row["n"] == 5  # the slices with foreground of their own
    import SimpleITK as sitk

    case = make_case("top", sitk.ReadImage(str(volume), sitk.sitkFloat32), 2, (0, 1), AcquisitionConfig(**report["acquisition"]))
    bicubic = next(row for row in report["results"] if row["method"] == "bicubic")
    assert bicubic["psnr"]["mean"] == pytest.approx(volume_scores(case, interpolated(case, "bicubic"))["psnr"], abs=1e-9)


def test_a_training_volume_is_named_from_any_folder_and_by_any_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """The checkpoint kept the training path as typed (relative): evaluated from another folder, or a copy of the volume,
    the 'was training data' note was silently lost. The checkpoint records its volumes' voxel digests."""
    import shutil

    from train_helpers import tiny_args

    from fagan_engine.cli.train import main as train

    (tmp_path / "a").mkdir()
    write_crop(tmp_path / "a" / "vol.nii.gz", index=(66, 88, 60), size=(48, 48, 12))
    monkeypatch.chdir(tmp_path / "a")
    assert train(tiny_args(Path("vol.nii.gz"), tmp_path / "run", "data.val_fraction=0")) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "latest.safetensors"
    shutil.copy(tmp_path / "a" / "vol.nii.gz", tmp_path / "copy.nii.gz")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    for data in ("../a/vol.nii.gz", "../copy.nii.gz"):
        assert main(["--checkpoint", str(checkpoint), "--data", data, "--output", f"ev{len(data)}"]) == 0
        assert f"note: {data} was training data of {checkpoint}" in capsys.readouterr().err


def test_a_checkpoint_and_its_sidecar_are_one_checkpoint(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    x2 = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    code = main(["--checkpoint", str(x2), str(x2.with_suffix(".json")), "--data", str(volumes[0]), "--output", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: --checkpoint lists {x2.with_suffix('.json')} more than once"]
    assert not (tmp_path / "e").exists()


def test_an_onnx_export_given_as_a_checkpoint_is_not_told_to_use_a_missing_option(tmp_path: Path, volumes: "list[Path]",
                                                                                  capsys: pytest.CaptureFixture) -> None:
    export = tmp_path / "m.onnx"
    export.write_bytes(b"onnx")
    assert main(["--checkpoint", str(export), "--data", str(volumes[0]), "--output", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give its .safetensors file" in err[0] and not err[0].startswith("error: m.onnx is an ONNX export: run")


def test_cuda_without_a_gpu_is_refused_before_the_baselines_run(volumes: "list[Path]", tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from fagan_engine.training import eval_table

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is usable here")
    monkeypatch.setattr(eval_table, "evaluate", lambda *a, **k: pytest.fail("the evaluation ran"))
    x2 = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    assert main(["--checkpoint", str(x2), "--data", str(volumes[0]), "--device", "cuda", "--output", str(tmp_path / "e")]) == 2
    assert "no CUDA GPU is usable" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_the_demo_without_matplotlib_is_refused_before_its_minutes_of_work(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Its figure is drawn last: without matplotlib the whole demo was computed and thrown away."""
    import importlib.util

    from fagan_engine.cli import demo

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    monkeypatch.setattr(demo, "_write_demo", lambda *a: pytest.fail("the demo ran"))
    assert demo.main(["--output", str(tmp_path / "d"), "--scales", "2"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: this needs the Python package matplotlib")
    assert not (tmp_path / "d").exists()
