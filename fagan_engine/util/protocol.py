"""Line protocol between engine processes and their parent (the Slicer modules, schedulers).

Each event is one line on stdout: ``FAGAN {json}``. Lines without the prefix are free-form log
text and must be ignored by parsers. See docs/protocol.md.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional, TextIO

PREFIX = "FAGAN "
EVENTS = (
    "start", "progress", "validation", "checkpoint", "warning", "stopped", "finished", "error",
    "batch_start", "case_start", "case_end",
)


def format_event(event: str, **fields: Any) -> str:
    """Return the protocol line (without newline) for ``event`` with JSON-serialisable ``fields``."""
    if event not in EVENTS:
        raise ValueError(f"unknown protocol event {event!r}")
    payload = {"event": event}
    payload.update(fields)
    return PREFIX + json.dumps(payload, sort_keys=True, allow_nan=False, default=_jsonable)


def emit(event: str, stream: Optional[TextIO] = None, **fields: Any) -> None:
    """Write one protocol line and flush, so a parent polling the pipe sees it at once."""
    out = stream if stream is not None else sys.stdout
    out.write(format_event(event, **fields) + "\n")
    out.flush()


def parse_line(line: str) -> Optional[Dict[str, Any]]:
    """Parse one output line; return the event dict, or None for log lines and malformed events."""
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    try:
        payload = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("event") not in EVENTS:
        return None
    return payload


def _jsonable(value: Any) -> Any:
    """Make numpy scalars and paths serialisable; finite floats only."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
