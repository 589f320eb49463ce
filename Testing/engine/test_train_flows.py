"""fagan-train user flows found by the third audit: a kill -9 between a state and its checkpoints, divergence, an
obstacle in the run folder, refusals that came after the run folder was written, a STOP file written during start-up,
and a resume whose init checkpoint is gone."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from train_helpers import events, one_thread, subprocess_env, tiny_args, write_crop  # noqa: F401

from fagan_engine.cli.train import main
from fagan_engine.models.checkpoint import read_metadata

KILL_AT_FIRST_CHECKPOINT = """
import os, sys
import fagan_engine.training.trainer as trainer
def killed(*args, **kwargs):
    os._exit(137)  # as kill -9 right after the state was written, before its checkpoints
trainer.save_checkpoint = killed
from fagan_engine.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_crop(tmp_path_factory.mktemp("flows") / "crop.nii.gz")


def train(argv: List[str], capsys: pytest.CaptureFixture) -> "tuple[int, list, str]":
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, events(captured.out), captured.err


def test_a_kill_between_the_state_and_its_checkpoints_resumes_and_rewrites_them(crop: Path, tmp_path: Path, capsys) -> None:
    """The checkpoints were written before the state: a kill -9 at the first save left checkpoints without a state, a
    folder that neither a new run nor --resume would take."""
    run = tmp_path / "run"
    argv = tiny_args(crop, run, "train.iterations=4", "train.checkpoint_every=2", "train.val_every=2", "--progress", "none")
    proc = subprocess.run([sys.executable, "-c", KILL_AT_FIRST_CHECKPOINT, *argv], env=subprocess_env(), capture_output=True, timeout=300)
    assert proc.returncode == 137 and (run / "training_state.safetensors").is_file()
    assert not list((run / "checkpoints").glob("*.safetensors"))
    code, _, err = train([*argv, "--resume"], capsys)
    assert code == 0, err
    assert read_metadata(str(run / "checkpoints" / "latest.safetensors")).training["iterations"] == 4


def test_divergence_is_one_line_and_saves_nothing(crop: Path, tmp_path: Path, capsys) -> None:
    """A loss that turned NaN between two log steps reached the validation (a JSON traceback) and a NaN best checkpoint."""
    run = tmp_path / "run"
    code, found, err = train(tiny_args(crop, run, "train.lr=1e20", "train.log_every=6", "--progress", "json"), capsys)
    lines = err.splitlines()
    assert code == 2 and lines[-1].startswith("error: training diverged") and "Traceback" not in err, err
    assert found[-1]["event"] == "error" and not list((run / "checkpoints").glob("*.safetensors"))


def test_a_file_where_the_checkpoints_go_is_refused_before_any_work(crop: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("mine")
    code, _, err = train(tiny_args(crop, run, "--progress", "none"), capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "is not a folder" in err, err
    assert sorted(p.name for p in run.iterdir() if p.name != ".fagan.lock") == ["checkpoints"]
    assert (run / "checkpoints").read_text() == "mine"


def test_a_synthesis_refusal_comes_before_the_run_folder_is_written(crop: Path, tmp_path: Path, capsys) -> None:
    """data.synthetic_fraction with only a validation template was refused after the start event, leaving the folder."""
    manifest = tmp_path / "split.json"
    manifest.write_text('{"train": ["%s"], "val": ["icbm152:t1"]}' % crop)
    run = tmp_path / "deep" / "a" / "b"
    argv = ["--config", str(tiny_args(crop, run)[1]), "--set", "data.train=[]", f"data.manifest={manifest}",
            "data.synthetic_fraction=0.5", f"train.output_dir={run}", "--progress", "json"]
    code, found, err = train(argv, capsys)
    assert code == 2 and "start" not in [e["event"] for e in found], (found, err)
    assert not (tmp_path / "deep").exists()


def test_a_stop_file_written_during_start_up_stops_the_run(crop: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """STOP written while the data loaded was removed as an earlier run's, and the run trained to its end."""
    import fagan_engine.training.data as data

    run = tmp_path / "run"
    loading = data.prepare_data

    def user_stops_while_loading(cfg):
        (run / "STOP").write_text("")
        return loading(cfg)

    monkeypatch.setattr(data, "prepare_data", user_stops_while_loading)
    code, found, err = train(tiny_args(crop, run, "--progress", "json"), capsys)
    assert code == 0 and found[-1]["event"] == "stopped", (found[-3:], err)


def test_resume_needs_no_init_checkpoint(crop: Path, tmp_path: Path, capsys) -> None:
    """The state holds the weights; the init checkpoint, gone since, was read again and its absence refused the resume."""
    assert train(tiny_args(crop, tmp_path / "first", "train.iterations=4", "--progress", "none"), capsys)[0] == 0
    init = tmp_path / "init.safetensors"
    shutil.copy(tmp_path / "first" / "checkpoints" / "latest.safetensors", init)
    run = tmp_path / "run"
    argv = tiny_args(crop, run, f"train.init_checkpoint={init}", "train.iterations=4", "--progress", "none")
    code, _, err = train(argv, capsys)
    assert code == 0, err
    init.unlink()
    shutil.rmtree(run / "checkpoints")  # not needed either: the resume rewrites latest from the state
    code, _, err = train(argv + ["--resume"], capsys)
    assert code == 0, err


def test_an_init_checkpoint_of_another_architecture_names_the_key(crop: Path, tmp_path: Path, capsys) -> None:
    """The refusal printed the checkpoint's whole model dict."""
    assert train(tiny_args(crop, tmp_path / "first", "train.iterations=4", "--progress", "none"), capsys)[0] == 0
    init = tmp_path / "first" / "checkpoints" / "latest.safetensors"
    code, _, err = train(tiny_args(crop, tmp_path / "run", f"train.init_checkpoint={init}", "model.n_blocks=2", "--progress", "none"),
                         capsys)
    assert code == 2 and err.splitlines()[-1].endswith("has another architecture than model: model.n_blocks is 1 in the checkpoint, 2 here")
