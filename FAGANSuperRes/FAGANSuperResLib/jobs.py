"""What every engine job of the module shares (Qt-free): the background process, its work folder and its lifecycle.

``SuperResolutionJob`` (and ``StacksJob``) and ``BatchJob`` are ``EngineJob``s: ``start`` (or ``run``), ``poll``
from a timer, ``wait``; ``state`` stays ``running`` until the engine ended and the job settled. A subclass
handles the engine's events (``_handleEvent``), its end (``_ended``) and a failure to start (``_fail``).
"""
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, TypeVar

from .process import EngineProcess

if TYPE_CHECKING:
    from fagan_engine.util.options import RunOptions

_Job = TypeVar("_Job", bound="EngineJob")


@contextmanager
def workFolder(prefix: str, parent: Optional[str]) -> Iterator[Path]:
    """A new temporary folder for one job, removed again if the block raises (the job removes it when it ends)."""
    workDir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield workDir
    except BaseException:
        shutil.rmtree(workDir, ignore_errors=True)
        raise


class EngineJob:
    """One engine process: ``state``, ``fraction``, ``status``, ``error``, ``warnings``; ``device`` and ``threads``
    as the engine reports them; ``onProgress`` is called after every event."""

    def __init__(self, options: "RunOptions", command: List[str], workDir: Path, env: Optional[Dict[str, str]],
                 identity: Optional[Dict[str, str]], status: str) -> None:
        self.options = options
        self.workDir = workDir
        self.identity: Dict[str, str] = dict(identity or {})
        self.process = EngineProcess(command, env=env, cwd=str(workDir))
        self.state = "running"
        self.fraction = 0.0
        self.status = status
        self.error: Optional[str] = None
        self.warnings: List[str] = []
        self.device = ""
        self.threads: Optional[int] = None
        self.onProgress: Optional[Callable[[Any], None]] = None
        self._logLines: List[str] = []

    @property
    def done(self) -> bool:
        return self.state != "running"

    def run(self: _Job, waitForCompletion: bool) -> _Job:
        """Start the engine; with ``waitForCompletion`` block until the job is done (``wait``)."""
        self.start()
        return self.wait() if waitForCompletion else self

    def start(self) -> None:
        try:
            self.process.start()
        except OSError as exc:
            self._fail(f"cannot start the engine ({exc})")

    def poll(self) -> bool:
        """Handle the engine output available now; settle the job when the engine ended.

        Returns True when the job is done. Call this from a timer (it never blocks for long;
        at the end it reads the result files and updates the scene).
        """
        if self.done:
            self.process.poll()  # collects the exit code of a cancelled engine that was still exiting
            return True
        for event in self.process.poll():
            self._handleEvent(event)
        self._readLog()
        if self.process.finished:
            self._ended()
        return self.done

    def wait(self: _Job) -> _Job:
        """Block until done."""
        while not self.done:
            self.process.wait(timeout=0.2)
            self.poll()
        return self

    def takeLogLines(self) -> List[str]:
        """The engine's output lines (not protocol events) received since the last call, for a log view."""
        self._readLog()
        lines, self._logLines = self._logLines, []
        return lines

    def _readLog(self) -> List[str]:
        """Move the engine's new output lines to the log; return them."""
        lines = self.process.takeNewLogLines()
        self._logLines += lines
        return lines

    def _handleEvent(self, event: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _ended(self) -> None:
        raise NotImplementedError

    def _fail(self, message: str) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)
