"""A background engine process whose output is read by a thread and polled without blocking.

The process gets its own process group (POSIX session / Windows process group) so that
cancelling reaches the whole tree: PythonSlicer is a launcher whose child is the real
Python, and training may start data-loader workers. ``poll()`` never blocks: call it from a
``qt.QTimer`` in Slicer, or use ``wait()`` in scripts and tests. Methods meant for the GUI
thread (``poll``, ``kill``) wait at most ``GUI_WAIT_S``; a process that is still exiting then
is reaped by a later ``poll()``.

Why not ``qt.QProcess`` with ``readyReadStandardOutput`` in the modules: Slicer 5.6 to 5.10 are
built with Qt 5, whose QProcess cannot start the child in a new process group or session
(``setChildProcessModifier`` is Qt 6 only). Killing the QProcess would end the launcher and
orphan the real Python and its workers, and signalling their group would hit Slicer itself.
The reader thread only has to keep up with a few protocol lines per second; the module's timer
drains what it queued (PythonQt holds the GIL on the main thread, so the thread mostly runs
during those callbacks, which is enough: the pipe buffers the rest).
"""
import os
import queue
import re
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .engine import ensureEngineImportable

_EOF = object()
LOG_LINES_KEPT = 2000
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
"""The last line of a Python traceback (``RuntimeError: ...``, ``torch.OutOfMemoryError: ...``)."""
GUI_WAIT_S = 0.3
"""Longest wait of ``kill()`` by default: a few hundred ms, so the GUI thread never stalls."""


class EngineProcess:
    """Run a command, collect protocol events (``FAGAN {json}`` lines) and log lines."""

    def __init__(self, command: Sequence[str], env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None) -> None:
        self.command = [str(c) for c in command]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.events: List[Dict[str, Any]] = []
        self.logLines: List[str] = []
        self._unreadLogLines: List[str] = []
        self._unreadEvents: List[Dict[str, Any]] = []
        self.returnCode: Optional[int] = None
        self._popen: Optional[subprocess.Popen] = None
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._eof = False
        ensureEngineImportable()  # the protocol parser

    @property
    def finished(self) -> bool:
        """True once the output is exhausted and the process has exited."""
        return self.returnCode is not None

    @property
    def exiting(self) -> bool:
        """True while a started process has not finished (False before ``start`` and after a failed one)."""
        return self._popen is not None and not self.finished

    def start(self) -> None:
        """Launch the process and its output-reader thread."""
        if self._popen is not None:
            raise RuntimeError("process already started")
        kwargs: Dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True
        self._popen = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            **kwargs,
        )
        threading.Thread(target=self._readOutput, args=(self._popen.stdout,), daemon=True).start()

    def _readOutput(self, stream: Any) -> None:
        """Reader thread: every output line into the queue, then an end marker."""
        try:
            for line in stream:
                self._queue.put(line.rstrip("\r\n"))
        finally:
            stream.close()
            self._queue.put(_EOF)

    def poll(self) -> List[Dict[str, Any]]:
        """Consume the output available now; return the protocol events not returned before.
        Never blocks."""
        self._drain()
        events, self._unreadEvents = self._unreadEvents, []
        return events

    def _drain(self) -> None:
        while not self._eof:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._consume(item)
        if self._eof and self.returnCode is None and self._popen is not None:
            # Output closes when the last process of the tree exits; the launcher follows at once,
            # so a later poll() collects its exit code if it is not there yet.
            self.returnCode = self._popen.poll()

    def _consume(self, item: Any) -> None:
        if item is _EOF:
            self._eof = True
            return
        from fagan_engine.util.protocol import parse_line

        event = parse_line(item)
        if event is not None:
            self.events.append(event)
            self._unreadEvents.append(event)
        elif item.strip():
            self.logLines.append(item)
            self._unreadLogLines.append(item)
            del self.logLines[:-LOG_LINES_KEPT]
            del self._unreadLogLines[:-LOG_LINES_KEPT]

    def takeNewLogLines(self) -> List[str]:
        """Log lines received since the last call (for a log view)."""
        lines, self._unreadLogLines = self._unreadLogLines, []
        return lines

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Block until the process finished (or ``timeout`` s passed); return the exit code or None.
        Events read meanwhile are still returned by the next ``poll()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if self._popen is None:
                raise RuntimeError("process not started")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                item = self._queue.get(timeout=0.05 if remaining is None else min(0.05, remaining))
            except queue.Empty:
                self._drain()  # the output may be closed while the exit code is still coming
                continue
            self._consume(item)
            self._drain()
        return self.returnCode

    def terminate(self) -> None:
        """Ask the whole process tree to stop cleanly (SIGTERM to the process group).

        Windows has no SIGTERM for console-less children (CTRL_BREAK needs a shared console,
        which Slicer's GUI does not have), so there the tree is killed like ``kill()``.
        """
        if self._popen is None or self.finished:
            return
        if os.name == "nt":
            self.kill()
            return
        try:
            os.killpg(self._popen.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, timeout: float = GUI_WAIT_S) -> None:
        """Kill the whole process tree now and wait up to ``timeout`` s until it is gone (if it is
        not gone by then, ``finished`` becomes True at a later ``poll()`` or ``wait()``)."""
        if self._popen is None or self.finished:
            return
        if os.name == "nt":
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(self._popen.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=subprocess.CREATE_NO_WINDOW,
                check=False,
            )
            self._popen.kill()
        else:
            try:
                os.killpg(self._popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.wait(timeout)

    def _exceptionLine(self) -> str:
        """The exception line of the last traceback printed (its message may run on over more lines, as CUDA errors
        do), or the last line when it is one; else ''."""
        lines = [line.strip() for line in self.logLines]
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
        tail = lines[starts[-1] + 1:] if starts else lines[-1:]
        found = [line for line in tail if EXCEPTION_LINE.match(line)]
        return found[-1] if found else ""

    def errorMessage(self, ignoring: Optional[Callable[[str], bool]] = None) -> str:
        """One line explaining a failure: the engine's ``error`` event, its ``error:`` line, the exception line a traceback
        ends with, else how the process ended (a signal by name: ``kill -9`` or the out-of-memory killer leave no line;
        the last log line, e.g. a validation result, is not the reason). ``ignoring``: an ``error:`` line's text for which it
        is true (in a batch, a case's own failure) is not the process's reason; a process killed by a signal then says so
        first."""
        for event in reversed(self.events):
            if event.get("event") == "error" and event.get("message"):
                return str(event["message"])
        killed = self._signalMessage()
        if ignoring and killed:
            return killed
        for line in reversed(self.logLines):
            reason = line[len("error: "):]
            if line.startswith("error: ") and not (ignoring and ignoring(reason)):
                return reason
        exception = self._exceptionLine()
        if exception:
            return exception
        return killed or f"the engine process exited with code {self.returnCode}"

    def _signalMessage(self) -> str:
        """``the engine process was killed by SIGKILL (out of memory?)`` when a signal ended it, else empty."""
        code = self.returnCode
        if code is None or code >= 0:
            return ""
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the engine process was killed by {name}{hint}"
