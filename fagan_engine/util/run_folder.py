"""What marks an earlier training run in a run folder; torch-free, so the Slicer module checks a folder as the trainer does."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fagan_engine.util.errors import ConfigError

STATE_FILE = "training_state.safetensors"
"""The resumable training state in a run folder."""
CHECKPOINT_FOLDER = "checkpoints"
"""Where a run writes its checkpoints."""
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
CHECKPOINT_SIDECARS = ("best.json", "latest.json", "iter_*.json")
"""The names of the readable sidecars a run writes beside its checkpoints (``<name>.json`` of ``<name>.safetensors``)."""
RUN_FILES = (CONFIG_FILE, SPLIT_FILE, METRICS_FILE, CURVES_FILE)
"""The files a run writes beside its state and checkpoints (its resolved recipe, data split, metrics and curves)."""


def check_run_folder(run_dir: Path, resume: bool, resume_hint: str = "pass --resume to continue it",
                     folder: str = "train.output_dir") -> bool:
    """Refuse (ConfigError, one line) a run folder whose earlier run would be overwritten: a training state unless
    ``resume``, a state path that is not a file, or checkpoints without a state; and, for a new run, a folder holding a
    file of ``RUN_FILES`` that no run of this engine wrote (someone's own ``config.json``). Returns whether a state is
    there to resume. ``resume_hint`` and ``folder`` word the messages for the caller (command line or Slicer panel)."""
    state = run_dir / STATE_FILE
    if state.exists() and not state.is_file():
        raise ConfigError(f"{state} is not a file; remove it or choose another {folder}")
    checkpoints = run_dir / CHECKPOINT_FOLDER
    if checkpoints.exists() and not checkpoints.is_dir():
        raise ConfigError(f"{checkpoints} is not a folder (a run keeps its checkpoints there); remove it or choose another {folder}")
    if state.is_file():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a training state; {resume_hint} or choose another {folder}")
        return True
    earlier = sorted(checkpoints.glob("*.safetensors"))
    if earlier:  # a finished run whose state was removed: its checkpoints would be overwritten
        raise ConfigError(f"{run_dir} holds checkpoints of an earlier run ({earlier[0].name}, ...) and no training state to resume; "
                          f"choose another {folder}")
    sidecars = sorted(p for pattern in CHECKPOINT_SIDECARS for p in checkpoints.glob(pattern))  # a checkpoint's readable sidecar
    if sidecars:
        raise ConfigError(f"{checkpoints} already holds {sidecars[0].name}, which a run writes beside its checkpoints; "
                          f"choose another {folder} (an empty or new one)")
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not _written_by_a_run(run_dir):
        raise ConfigError(f"{run_dir} already holds {present[0]}, which a run writes and no training run of this engine wrote; "
                          f"choose another {folder} (an empty or new one)")
    return False


def _written_by_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir``'s config.json is a run's resolved recipe (a JSON object with ``model``, ``data`` and ``train``):
    an earlier run stopped before it saved a state, whose files a new run may replace."""
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"model", "data", "train"} <= set(config)


def is_metrics_record(record: Any) -> bool:
    """Whether a parsed ``metrics.jsonl`` line is a record a run writes: a ``train`` record with numeric losses, or a
    ``validation`` record with the PSNRs the curves plot, at a whole iteration (the trainer's resume and the Slicer
    module's charts skip any other line, as they skip one cut by a kill)."""
    if not isinstance(record, dict) or not isinstance(record.get("iteration"), int) or isinstance(record["iteration"], bool):
        return False
    if record.get("kind") == "train":
        losses = record.get("losses")
        return isinstance(losses, dict) and all(_is_number(v) for v in losses.values())
    return record.get("kind") == "validation" and _is_number(record.get("psnr")) and _is_number(record.get("bicubic_psnr"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
