"""What marks an earlier training run in a run folder; torch-free, so the Slicer module checks a folder as the trainer does."""
from __future__ import annotations

from pathlib import Path

from fagan_engine.util.errors import ConfigError

STATE_FILE = "training_state.safetensors"
"""The resumable training state in a run folder."""
CHECKPOINT_FOLDER = "checkpoints"
"""Where a run writes its checkpoints."""


def check_run_folder(run_dir: Path, resume: bool, resume_hint: str = "pass --resume to continue it",
                     folder: str = "train.output_dir") -> bool:
    """Refuse (ConfigError, one line) a run folder whose earlier run would be overwritten: a training state unless
    ``resume``, a state path that is not a file, or checkpoints without a state. Returns whether a state is there to
    resume. ``resume_hint`` and ``folder`` word the messages for the caller (command line or Slicer panel)."""
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
    return False
