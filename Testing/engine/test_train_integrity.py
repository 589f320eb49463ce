"""Issue #12: run-folder lock, tampered training states, resume of moved folders, bad output folders."""
from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Callable, List

import pytest
import torch
from train_helpers import events, one_thread, tiny_args, write_crop  # noqa: F401

from fagan_engine.cli.train import main
from fagan_engine.training.state import load_state, save_state
from fagan_engine.util.locking import LOCK_FILE, RunFolderLock

STATE = "training_state.safetensors"


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_crop(tmp_path_factory.mktemp("integrity") / "crop.nii.gz")


@pytest.fixture(scope="module")
def finished_run(crop: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-iteration run of the tiny recipe (stopped before its 6 iterations)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(tiny_args(crop, run, "train.iterations=3", "--progress", "none")) == 0
    return run


def train(argv: List[str], capsys: pytest.CaptureFixture) -> "tuple[int, list, str]":
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, events(captured.out), captured.err


def assert_one_error(code: int, err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]


def rewrite_header(path: Path, change: Callable[[dict], None]) -> None:
    """Edit a safetensors header in place, keeping the data section."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    change(header)
    text = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + length :])


def swap_same_shape_offsets(header: dict) -> None:
    first = next(k for k in header if k.endswith(".weight") and k != "__metadata__")
    twin = next(k for k in header if k != first and k != "__metadata__" and header[k]["shape"] == header[first]["shape"])
    header[first]["data_offsets"], header[twin]["data_offsets"] = header[twin]["data_offsets"], header[first]["data_offsets"]


def edit_structure(key: str, value: object) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        structure = json.loads(header["__metadata__"]["fagan_train_state"])
        structure[key] = value
        header["__metadata__"]["fagan_train_state"] = json.dumps(structure)

    return change


TAMPERING = {
    "swapped tensor offsets": (lambda p: rewrite_header(p, swap_same_shape_offsets), "checksum mismatch"),
    "edited iteration": (lambda p: rewrite_header(p, edit_structure("iteration", 10**6)), "checksum mismatch"),
    "structure not JSON": (lambda p: rewrite_header(p, lambda h: h["__metadata__"].update(fagan_train_state="{")), "checksum"),
    "metadata a list": (lambda p: rewrite_header(p, lambda h: h.update(__metadata__=["x"])), "damaged"),
    "offsets past the end": (
        lambda p: rewrite_header(p, lambda h: h[next(k for k in h if k != "__metadata__")].update(data_offsets=[0, 10**9])), "damaged"
    ),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-100]), "damaged"),
    "not safetensors": (lambda p: p.write_bytes(b"\x00" * 64), "damaged"),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_tampered_state_is_refused_in_one_line(crop: Path, finished_run: Path, tmp_path: Path, name: str, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    tamper, fragment = TAMPERING[name]
    tamper(run / STATE)
    code, _, err = train(tiny_args(crop, run, "--resume"), capsys)
    assert_one_error(code, err, fragment)


def resave(run: Path, change: Callable[[dict, dict], None]) -> None:
    """Rewrite the state with a valid checksum after ``change(modules, structure)``: type checks must hold."""
    modules, structure = load_state(run / STATE)
    change(modules, structure)
    save_state(run / STATE, modules, structure)


CONSISTENT_BUT_WRONG = {
    "iteration a string": (lambda m, s: s.update(iteration="3"), "invalid iteration"),
    "iteration beyond the total": (lambda m, s: s.update(iteration=99), "beyond train.iterations"),
    "no optimizers": (lambda m, s: s.pop("optimizers"), "does not fit"),
    "rng a list": (lambda m, s: s.update(rng=[1, 2]), "does not fit"),
    "config not a dict": (lambda m, s: s.update(config="x"), "no valid config"),
    "missing generator": (lambda m, s: m.pop("G"), "does not fit"),
    "wrong tensor shape": (lambda m, s: m["G"].update({k: torch.zeros(*m["G"][k].shape, 2) for k in sorted(m["G"])[:1]}), "does not fit"),
}


@pytest.mark.parametrize("name", sorted(CONSISTENT_BUT_WRONG))
def test_checksummed_state_with_wrong_types_is_refused_in_one_line(crop, finished_run, tmp_path, name, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    change, fragment = CONSISTENT_BUT_WRONG[name]
    resave(run, change)
    code, _, err = train(tiny_args(crop, run, "--resume"), capsys)
    assert_one_error(code, err, fragment)


def test_moved_run_resumes_under_a_relative_path(crop, finished_run, tmp_path, capsys, monkeypatch) -> None:
    shutil.copytree(finished_run, tmp_path / "moved" / "here")
    monkeypatch.chdir(tmp_path)
    code, evs, err = train(tiny_args(crop, Path("moved/here"), "--resume", "--progress", "json"), capsys)
    assert code == 0, err
    assert evs[0]["iteration"] == 3 and evs[-1]["event"] == "finished" and evs[-1]["iteration"] == 6


def test_a_held_lock_refuses_a_second_run_naming_the_holder(crop, finished_run, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with RunFolderLock(run):
        code, _, err = train(tiny_args(crop, run, "--resume"), capsys)
    assert_one_error(code, err, f"is in use by process {os.getpid()}")
    code, _, err = train(tiny_args(crop, run, "--resume", "--progress", "none"), capsys)
    assert code == 0, err


def test_stale_temporaries_are_removed_and_fresh_folders_are_not_left_behind(crop, finished_run, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    stale = [run / ".metrics.jsonl.k3j2.tmp", run / "checkpoints" / ".latest.safetensors.x8a1.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - 60, time.time() - 60))
    kept = run / "notes.tmp.txt"
    kept.write_text("mine")
    assert train(tiny_args(crop, run, "--resume", "--progress", "none"), capsys)[0] == 0
    assert not any(p.exists() for p in stale) and kept.exists()
    assert (run / LOCK_FILE).exists()


def test_output_dir_that_is_a_file_fails_before_reading_data(crop, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = train(tiny_args(Path("/nonexistent.nii"), blocker), capsys)
    assert_one_error(code, err, "is not a folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_dir_fails_before_reading_data(crop, tmp_path, capsys) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        code, _, err = train(tiny_args(Path("/nonexistent.nii"), parent / "run"), capsys)
    finally:
        parent.chmod(0o755)
    assert_one_error(code, err, "is not writable")


def test_read_only_file_system_is_one_line(tmp_path, monkeypatch) -> None:
    """Portable stand-in for a read-only mount (root ignores permissions): EROFS on creating the lock."""
    import errno

    from fagan_engine.util.errors import ConfigError

    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(LOCK_FILE):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ConfigError, match="is not writable"):
        RunFolderLock(tmp_path / "run", "train.output_dir").acquire()


@pytest.mark.parametrize("override", ["train.lr=NaN", "train.lr=Infinity", "model.fusion_eps=-Infinity"])
def test_non_finite_config_numbers_are_refused(crop, tmp_path, capsys, override) -> None:
    code, _, err = train(tiny_args(crop, tmp_path / "run", override), capsys)
    assert_one_error(code, err, "must be a finite number")
    assert not (tmp_path / "run").exists()


def test_config_that_is_not_utf8_is_one_line(tmp_path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"train:\n  lr: 0.001 # \xff\xfe\n")
    code, _, err = train(["--config", config], capsys)
    assert_one_error(code, err, "is not UTF-8")


@pytest.mark.parametrize("override, fragment", [
    ("train.beta2=-0.5", "train.beta2 must be in [0, 1)"),
    ("train.beta1=2", "train.beta1 must be in [0, 1)"),
    ("train.lr=1e300", "train.lr must be in"),
    ("train.lr_gamma=0", "train.lr_gamma must be in (0, 1]"),
    ("train.pixel_weight=-5", "train.pixel_weight must be in [0, "),
])
def test_impossible_optimiser_settings_are_refused_before_the_run_folder(crop, tmp_path, capsys, override, fragment) -> None:
    """Were Adam's tracebacks (betas, an lr float32 overflows, leaving the run folder behind) or a run (weights)."""
    code, _, err = train(tiny_args(crop, tmp_path / "run", override, "train.iterations=1", "train.pretrain_iterations=1"), capsys)
    assert_one_error(code, err, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env, variable", [
    ({"RANK": "abc"}, "RANK"),
    ({"WORLD_SIZE": "x"}, "WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "zz"}, "LOCAL_RANK"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "MASTER_ADDR"),
])
def test_a_bad_launch_environment_is_one_line_naming_the_variable(crop, tmp_path, capsys, monkeypatch, env, variable) -> None:
    """Were ``int()`` and torch.distributed tracebacks; nothing is left behind."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = train(tiny_args(crop, tmp_path / "run", "train.iterations=1", "train.pretrain_iterations=1"), capsys)
    assert_one_error(code, err, f"environment variable {variable}")
    assert list(tmp_path.iterdir()) == []
