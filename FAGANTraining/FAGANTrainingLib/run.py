"""A training run in a background ``fagan_engine train`` process, as a small state machine.

    idle -> starting -> running -> finished
                  \\        \\-> stopping -> stopped --resume--> starting
                   \\-> failed --resume--> starting

``start``/``resume`` launch the process, ``stop`` sends SIGTERM to its process group (the
trainer saves a resumable state and reports ``stopped``), ``poll`` (from a timer) reads the
protocol events and moves the state.
"""
import enum
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from FAGANSuperResLib.engine import engineEnvironment, ensureEngineImportable
from FAGANSuperResLib.process import EngineProcess

from .history import TrainingHistory
from .training import trainingCommand


class RunState(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"


ACTIVE_STATES = (RunState.STARTING, RunState.RUNNING, RunState.STOPPING)
_TRANSITIONS = {
    RunState.IDLE: (RunState.STARTING,),
    RunState.STARTING: (RunState.RUNNING, RunState.STOPPING, RunState.STOPPED, RunState.FINISHED, RunState.FAILED),
    RunState.RUNNING: (RunState.STOPPING, RunState.STOPPED, RunState.FINISHED, RunState.FAILED),
    RunState.STOPPING: (RunState.STOPPED, RunState.FINISHED, RunState.FAILED),
    RunState.STOPPED: (RunState.STARTING,),
    RunState.FAILED: (RunState.STARTING,),
    RunState.FINISHED: (),
}


def configuredRunFolder(configPath: Path) -> Optional[Path]:
    """The ``train.output_dir`` a run's config names (resolved), or None when the config cannot say (the trainer's own
    errors then apply)."""
    try:
        config = json.loads(Path(configPath).read_text(encoding="utf-8"))
        return Path(config["train"]["output_dir"]).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None


class TrainingRun:
    """One run folder trained by the engine; survives stop/resume cycles."""

    def __init__(self, configPath: Any, commandFactory: Callable[[Any, bool], List[str]] = trainingCommand) -> None:
        self.configPath = Path(configPath)
        self.commandFactory = commandFactory
        self.state = RunState.IDLE
        self.history = TrainingHistory()
        self.process: Optional[EngineProcess] = None
        self.runDir: Optional[str] = None
        self.iteration = 0
        self.total = 0
        self.etaSeconds: Optional[float] = None
        self.phase = ""
        self.bestCheckpoint: Optional[str] = None
        self.latestCheckpoint: Optional[str] = None
        self.error: Optional[str] = None

    @classmethod
    def stoppedEarlier(cls, configPath: Any) -> "TrainingRun":
        """A run stopped in an earlier session (e.g. before a scene reload), ready to resume, with the history that
        session showed (from its run folder's ``metrics.jsonl``: the charts keep the rows before the stop)."""
        ensureEngineImportable()
        from fagan_engine.util.run_folder import METRICS_FILE, is_metrics_record

        run = cls(configPath)
        run.state = RunState.STOPPED
        run.history = TrainingHistory.fromMetrics(run.configPath.parent / METRICS_FILE, is_metrics_record)
        return run

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def canResume(self) -> bool:
        return self.state in (RunState.STOPPED, RunState.FAILED)

    @property
    def fraction(self) -> float:
        return min(1.0, self.iteration / self.total) if self.total else 0.0

    def start(self) -> None:
        """Start training from scratch (only from idle)."""
        if self.state != RunState.IDLE:
            raise RuntimeError(f"cannot start a run that is {self.state.value}; resume it or create a new run")
        self._launch(resume=False)

    def resume(self) -> None:
        """Continue a stopped or failed run from its last saved state. ValueError (one line) when the run folder was moved:
        its config names the old folder, where the trainer would begin a new run."""
        if not self.canResume:
            raise RuntimeError(f"cannot resume a run that is {self.state.value}")
        named = configuredRunFolder(self.configPath)
        if named is not None and named != self.configPath.parent.resolve():
            raise ValueError(f"this run was moved: its config names the run folder {named}, not {self.configPath.parent}; "
                             "resume it where it was made, or start a new run")
        self._launch(resume=True)

    def stop(self) -> None:
        """Ask the trainer to save its state and exit.

        The engine's portable stop is a ``STOP`` file in the run folder (checked every
        iteration); POSIX also gets SIGTERM to the process group. On Windows, before the run
        folder is known, the only way left is to end the process.
        """
        if self.state not in (RunState.STARTING, RunState.RUNNING):
            return
        self._setState(RunState.STOPPING)
        if self.runDir:
            ensureEngineImportable()
            from fagan_engine.training.stop import STOP_FILE  # torch-free

            (self.configPath.parent / self.runDir / STOP_FILE).touch()
        if os.name == "posix" or not self.runDir:
            self.process.terminate()

    def kill(self) -> None:
        """Kill the process tree at once (application exit); progress since the last checkpoint is lost."""
        if self.process and self.active:
            self.process.kill()
            self.poll()

    def poll(self) -> List[Dict[str, Any]]:
        """Handle new output (never blocks); return the new protocol events."""
        if self.process is None:
            return []
        events = self.process.poll()
        for event in events:
            self._handleEvent(event)
        if self.process.finished and self.active:
            self._processEnded()
        return events

    def wait(self, timeout: Optional[float] = None) -> RunState:
        """Block until the process ended (scripts and tests)."""
        if self.process is not None:
            self.process.wait(timeout)
            self.poll()
        return self.state

    def _launch(self, resume: bool) -> None:
        self.error = None
        self.process = EngineProcess(self.commandFactory(self.configPath, resume), env=engineEnvironment(),
                                     cwd=str(self.configPath.parent))
        self._setState(RunState.STARTING)
        try:
            self.process.start()
        except OSError as exc:
            self.error = f"cannot start the trainer ({exc})"
            self._setState(RunState.FAILED)

    def _handleEvent(self, event: Dict[str, Any]) -> None:
        self.history.add(event)
        kind = event.get("event")
        if kind == "start":
            self.runDir = event.get("run_dir", self.runDir)
            self.iteration = int(event.get("iteration", 0))
            self.total = int(event.get("total", self.total))
            if self.state == RunState.STARTING:
                self._setState(RunState.RUNNING)
        elif kind == "progress":
            self.iteration = int(event.get("iteration", self.iteration))
            self.total = int(event.get("total", self.total))
            self.etaSeconds = event.get("eta_s")
            self.phase = event.get("phase", self.phase)
        elif kind == "checkpoint":
            if event.get("kind") == "best":
                self.bestCheckpoint = event.get("path")
            elif event.get("kind") == "latest":
                self.latestCheckpoint = event.get("path")
        elif kind == "stopped":
            self.iteration = int(event.get("iteration", self.iteration))
            self._setState(RunState.STOPPED)
        elif kind == "finished":
            self.iteration = int(event.get("iteration", self.iteration))
            self.bestCheckpoint = event.get("best_checkpoint") or self.bestCheckpoint
            self.latestCheckpoint = event.get("latest_checkpoint") or self.latestCheckpoint
            self.etaSeconds = 0
            self._setState(RunState.FINISHED)
        elif kind == "error":
            self.error = str(event.get("message", "training failed"))
            self._setState(RunState.FAILED)

    def _processEnded(self) -> None:
        """The process exited without a final event: killed, crashed or stopped by force (Windows)."""
        if self.state == RunState.STOPPING:
            self._setState(RunState.STOPPED)
        else:
            self.error = self.error or self.process.errorMessage()
            self._setState(RunState.FAILED)

    def _setState(self, state: RunState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"invalid training state change {self.state.value} -> {state.value}")
        self.state = state
