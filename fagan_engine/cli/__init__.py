"""Command-line entry points. ``run_cli`` gives every command the same error contract."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import Any, Callable, List, Optional

from fagan_engine.util.errors import FAGANError, FAGANWarning, InputError
from fagan_engine.util.failures import interrupt_behind, is_out_of_memory
from fagan_engine.util.protocol import emit


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as one ``error: ...`` line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so that cleanup (``finally``) runs as for Ctrl-C."""


def terminate_now(signum: int, frame: Any) -> None:
    """SIGTERM outside a command's run (starting up, exiting): nothing is staged, so one line and exit 143."""
    os.write(2, b"error: terminated\n")
    os._exit(143)


RETRY_SECONDS = 0.05
"""How soon a SIGTERM that arrived during an import is acted on again."""


def raise_terminated(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind like KeyboardInterrupt, but never from inside an import.

    An exception raised while a C extension initialises (``import torch`` runs Python callbacks
    from pybind11) aborts the process with a C++ stack; there the signal is deferred (SIGALRM
    re-checks every ``RETRY_SECONDS``) until the import has finished.
    """
    if _importing(frame) and hasattr(signal, "setitimer"):
        signal.signal(signal.SIGALRM, raise_terminated)
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        return
    raise Terminated()


def _importing(frame: Any) -> bool:
    """True when ``frame`` runs inside an import (a frame of importlib's bootstrap is on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def entry_point(body: Callable[[List[str]], int], argv: Optional[List[str]]) -> int:
    """Run a command's ``body(args)`` under ``run_cli`` (``argv`` defaults to sys.argv).

    SIGTERM unwinds like Ctrl-C (staging files are removed) and exits 143, unless the command
    installed its own handler already (``fagan-train`` stops gracefully). Before and after the
    run (imports, interpreter exit) ``terminate_now`` answers it, installed when this package is imported.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None, terminate_now):
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return run_cli(lambda: body(args), wants_json(args))
    finally:
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def run_cli(body: Callable[[], int], json_progress: bool) -> int:
    """Run ``body``; turn user errors into one ``error: ...`` line (and an ``error`` event) + exit 2.

    Unexpected exceptions keep their traceback (a bug to report) and exit 1, after an ``error`` event (its message
    starting ``internal error:``) when progress is JSON, so a parent process such as the Slicer module learns of it;
    KeyboardInterrupt exits 130 and SIGTERM 143. The engine's own warnings (``FAGANWarning``) become one
    ``warning: ...`` line each (repeats dropped), printed at the end of a successful run only; other libraries'
    warnings are dropped. No command leaves partial output behind: writers are atomic.
    """
    notes: List[str] = []
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _collect_warning(notes)
            code = body()
        for note in notes:  # only on success: a failure prints its one error line alone
            sys.stderr.write(f"warning: {note}\n")
        return code
    except BrokenPipeError:  # the reader of stdout went away (``| head``): outputs are written; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        interrupt = interrupt_behind(exc)
        if interrupt is not None:  # raised while unwinding from Ctrl-C or SIGTERM (a library's cleanup failed)
            return _interrupted(interrupt)
        if isinstance(exc, FAGANError):
            return _error_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, type(exc).__name__, json_progress, exc.exit_code)
        if isinstance(exc, ModuleNotFoundError) and exc.name:  # an optional package this command needs (torch, onnx...)
            return _error_line(missing_package_advice(exc.name), "ModuleNotFoundError", json_progress, 2)
        if not is_out_of_memory(exc):
            if json_progress:
                emit("error", message=f"internal error: {(str(exc).splitlines() or [''])[0]}", kind=type(exc).__name__)
            raise
        message = "out of memory: use a smaller batch (fagan-sr --batch-size or --tile-size; training train.batch_size or data.patch_size)"
        return _error_line(message, "OutOfMemoryError", json_progress, 2)
    except (KeyboardInterrupt, Terminated) as exc:
        return _interrupted(exc)


def missing_package_advice(module: str) -> str:
    """One line for a Python package this command needs that is not installed (``module``: the import that failed)."""
    package = module.split(".")[0]
    if package == "torch":
        return "this needs PyTorch, which is not installed: pip install torch (in Slicer, the PyTorch extension provides it)"
    extra = {"onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx"}.get(package)
    how = f"pip install 'fagan-engine[{extra}]'" if extra else f"pip install {package}"
    return f"this needs the Python package {package}, which is not installed: {how}"


def _error_line(message: str, kind: str, json_progress: bool, code: int) -> int:
    """The one ``error:`` line (and the protocol's ``error`` event); returns ``code``."""
    if json_progress:
        emit("error", message=message, kind=kind)
    sys.stderr.write(f"error: {message}\n")
    return code


def _interrupted(exc: BaseException) -> int:
    """One line and the exit code of an interrupt: 143 for SIGTERM, 130 for Ctrl-C."""
    if isinstance(exc, Terminated):
        sys.stderr.write("error: terminated\n")
        return 143
    sys.stderr.write("error: interrupted\n")
    return 130


def _collect_warning(notes: List[str]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that keeps the first line of each distinct ``FAGANWarning`` in ``notes``; a library's
    own warnings (numpy's "invalid value encountered", torch's deprecations) are noise to the user and are dropped."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if not issubclass(category, FAGANWarning):
            return
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        if text not in notes:
            notes.append(text)

    return show


def wants_json(argv: Optional[list]) -> bool:
    """True when ``--progress json`` is among ``argv`` (known before argparse runs)."""
    args = list(argv or [])
    return any(a == "--progress=json" or (a == "--progress" and args[i + 1 : i + 2] == ["json"]) for i, a in enumerate(args))


def _install_terminate_now() -> None:
    """Answer SIGTERM with one line and exit 143 from the moment a command starts (not a bare kill).

    Only in a process started as a command (``fagan-*`` or ``python -m fagan_engine``), not in one
    that imports this package as a library (the Slicer module reads the argument parser).
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = os.path.basename(sys.argv[0] if sys.argv else "")
    command = str(getattr(spec, "name", "") or "").startswith("fagan_engine") or program.startswith("fagan-")
    try:
        if command and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, terminate_now)
    except ValueError:  # imported outside the main thread: leave signals alone
        pass


_install_terminate_now()
