"""Capture what C libraries (ITK, GDCM, NIfTI, MetaIO, teem) print on file descriptor 2.

Those libraries write straight to the process's stderr, below Python's ``sys.stderr``, so
their messages would reach the user raw, before or instead of the one ``error:`` line. Inside
``captured_stderr()`` descriptor 2 points at a temporary file; the text is handed back so the
caller can turn what matters into its one ``error:`` or ``warning:`` line.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Iterator, List, Tuple

_LOCATION = re.compile(r"^(\w+): In .*, line \d+")
"""ITK's (and GDCM's) first line of a message: ``WARNING: In /build/path/file.cxx, line 2008``."""
_OBJECT = re.compile(r"^[\w:]+ \(0x[0-9a-fA-F]+\): ")
"""ITK's object prefix: ``NiftiImageIO (0x55f6...): ``."""
_LOCK = threading.RLock()  # re-entrant: a captured block may call code that captures too


class CapturedText:
    """The lines a C library printed while captured (filled in when the block ends)."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def messages(self) -> List[Tuple[bool, str]]:
        """(is an error, text) per message, without ITK's source locations and object addresses."""
        found: List[Tuple[bool, str]] = []
        level = ""
        for line in self.lines:
            location = _LOCATION.match(line)
            if location:
                level = location.group(1).lower()
                continue
            text = _OBJECT.sub("", line)
            found.append(("error" in level or "error" in text.lower(), text))
            level = ""
        return found

    def has_error(self) -> bool:
        """True when a library reported an error (not only a warning)."""
        return any(error for error, _ in self.messages())

    def first_message(self) -> str:
        """The most informative message: the first error, else the first message ('' when none)."""
        found = self.messages()
        return next((text for error, text in found if error), found[0][1] if found else "")


@contextlib.contextmanager
def captured_stderr() -> Iterator[CapturedText]:
    """Redirect descriptor 2 to a temporary file for the block; yield the captured lines."""
    captured = CapturedText()
    with _LOCK:
        _flush_python_stderr()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                _flush_python_stderr()  # what Python code (e.g. a logging handler) wrote goes to the sink too
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", errors="replace")
                captured.lines[:] = [line.strip() for line in text.splitlines() if line.strip()]


def _flush_python_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):  # replaced or closed stream
        pass
