"""fagan-train as a process: SIGTERM, kill -9 during checkpoint writes, DDP with 2 gloo processes."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
from train_helpers import engine_command, events, one_thread, subprocess_env, tiny_args, write_crop  # noqa: F401

from fagan_engine.cli.train import main
from fagan_engine.models.checkpoint import load_generator
from fagan_engine.training.state import load_state
from fagan_engine.util.protocol import parse_line

WRITER = """
import sys, torch
from pathlib import Path
from fagan_engine.models.archs import build_generator, preset_config
from fagan_engine.models.checkpoint import CheckpointMetadata
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.training.state import save_state
from fagan_engine.models.checkpoint import save_checkpoint

folder = Path(sys.argv[1])
cfg = preset_config("fagan", 2)
model = build_generator(cfg)
step = 0
while True:
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    metadata = CheckpointMetadata.create(cfg, NormalizationConfig(), training={"iterations": step})
    save_checkpoint(folder / "latest.safetensors", model.state_dict(), metadata)
    save_state(folder / "state.safetensors", {"G": model.state_dict()}, {"iteration": step})
    if step == 0:
        print("ready", flush=True)
    step += 1
"""


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_crop(tmp_path_factory.mktemp("proc") / "crop.nii.gz")


def train_until_first_progress(argv: list, stop: "Callable[[subprocess.Popen], object]") -> tuple:
    """Start a training process, call ``stop(process)`` at its first progress event, and wait for it."""
    proc = subprocess.Popen(engine_command("train", *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    lines = []
    for line in proc.stdout:
        lines.append(line)
        event = parse_line(line)
        if event is not None and event["event"] == "progress":
            stop(proc)
            break
    out, err = proc.communicate(timeout=120)
    return proc, lines, out, err


def test_sigterm_saves_a_resumable_state_and_exits_0(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    argv = tiny_args(crop, run, "train.iterations=100000", "train.val_every=100000", "--progress", "json")
    proc, lines, out, err = train_until_first_progress(argv, lambda p: p.send_signal(signal.SIGTERM))
    assert proc.returncode == 0, err
    last = events("".join(lines) + out)[-1]
    assert last["event"] == "stopped" and last["iteration"] >= 1
    _, state = load_state(Path(last["state"]))
    assert state["iteration"] == last["iteration"]
    load_generator(str(run / "checkpoints" / "latest.safetensors"))
    target = last["iteration"] + 2
    code = main(tiny_args(crop, run, f"train.iterations={target}", "train.val_every=100000", "--resume", "--progress", "json"))
    resumed = events(capsys.readouterr().out)
    assert code == 0
    assert [e["iteration"] for e in resumed if e["event"] == "progress"] == [target - 1, target]
    assert resumed[-1]["event"] == "finished" and resumed[-1]["iteration"] == target


def test_a_stop_file_stops_like_sigterm_and_a_stale_one_is_ignored(crop: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "STOP").touch()  # left over from an earlier run: must not stop the new one at once
    argv = tiny_args(crop, run, "train.iterations=100000", "train.val_every=100000", "--progress", "json")
    proc, lines, out, err = train_until_first_progress(argv, lambda p: (run / "STOP").touch())
    assert proc.returncode == 0, err
    progress = [e for e in events("".join(lines) + out) if e["event"] == "progress"]
    last = events("".join(lines) + out)[-1]
    assert progress[0]["iteration"] == 1 and last["event"] == "stopped"
    _, state = load_state(Path(last["state"]))
    assert state["iteration"] == last["iteration"]


def test_kill_9_never_leaves_a_corrupt_latest_checkpoint_or_state(tmp_path: Path) -> None:
    rng = random.Random(0)
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=subprocess_env())
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"trial {trial}: the writer ended by itself"
        model, _ = load_generator(str(tmp_path / "latest.safetensors"))
        modules, structure = load_state(tmp_path / "state.safetensors")
        assert set(modules["G"]) == set(model.state_dict()) and structure["iteration"] >= 0


def test_ddp_two_gloo_processes_match_one_process(crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    argv = tiny_args(crop, ddp_run, "train.device=cpu", "data.val_fraction=0", "--progress", "json")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "fagan_engine", "train", *argv]
    proc = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kinds = [e["event"] for e in events(proc.stdout)]
    assert kinds.count("start") == 1 and kinds.count("finished") == 1 and kinds.count("progress") == 6  # rank 0 only
    assert main(tiny_args(crop, single_run, "train.device=cpu", "data.val_fraction=0")) == 0
    capsys.readouterr()
    ddp_modules, ddp_state = load_state(ddp_run / "training_state.safetensors")
    single_modules, _ = load_state(single_run / "training_state.safetensors")
    assert ddp_state["iteration"] == 6
    for key, tensor in single_modules["G"].items():  # same global batches: DDP averages equal shards
        assert torch.allclose(tensor, ddp_modules["G"][key], atol=1e-5), key
    load_generator(str(ddp_run / "checkpoints" / "latest.safetensors"))
    assert json.loads((ddp_run / "config.json").read_text())["train"]["iterations"] == 6


def test_sigterm_during_start_up_ends_with_a_stopped_event(crop: Path, tmp_path: Path) -> None:
    argv = tiny_args(crop, tmp_path / "run", "train.iterations=100000", "--progress", "json")
    proc = subprocess.Popen(engine_command("train", *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    time.sleep(1.0)  # past the interpreter start, well before the first iteration (torch import, data)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    kinds = [e["event"] for e in events(out)]
    assert kinds[-1] == "stopped" and "progress" not in kinds, kinds


def test_kill_9_loop_during_training_then_resume_finishes_consistently(crop: Path, tmp_path: Path) -> None:
    """kill -9 at random instants (checkpoint and state writes included), resuming each time."""
    run = tmp_path / "run"
    total = 60
    argv = tiny_args(crop, run, f"train.iterations={total}", "train.checkpoint_every=1", "train.val_every=8", "--progress", "json")
    rng = random.Random(12)
    kills = 0
    for trial in range(3):
        proc = subprocess.Popen(
            engine_command("train", *argv, *(["--resume"] if trial else [])),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
        )
        for line in proc.stdout:
            event = parse_line(line)
            if event is not None and event["event"] in ("progress", "finished"):
                break
        first_state = time.monotonic() + 60  # kill only after the first save: a resume needs a state to resume
        while not (run / "training_state.safetensors").exists() and proc.poll() is None and time.monotonic() < first_state:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8))
        proc.kill()
        proc.communicate(timeout=60)
        if proc.returncode != -signal.SIGKILL:  # a very fast machine finished first
            assert proc.returncode == 0 and kills >= 1
            break
        kills += 1
        _, state = load_state(run / "training_state.safetensors")  # never corrupt
        load_generator(str(run / "checkpoints" / "latest.safetensors"))
    done = subprocess.run(engine_command("train", *argv, "--resume"), capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert events(done.stdout)[-1]["event"] == "finished"
    _, state = load_state(run / "training_state.safetensors")
    assert state["iteration"] == total
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == list(range(1, total + 1))
    assert not [p.name for p in [*run.iterdir(), *(run / "checkpoints").iterdir()] if ".tmp" in p.name]
