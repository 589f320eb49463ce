"""What kind of failure an exception is (no torch needed: the CLI's error handling imports this).

An interrupt: Ctrl-C or SIGTERM raised inside a library's cleanup code can surface as that
library's own error (torch: ``RuntimeError: trying to pop from empty mode stack``). Out of
memory: Python's MemoryError or torch's OutOfMemoryError.
"""
from __future__ import annotations

from typing import Optional


def interrupt_behind(exc: BaseException) -> Optional[BaseException]:
    """The KeyboardInterrupt (or other non-``Exception`` interrupt, such as the CLI's SIGTERM) that
    ``exc`` was raised while handling, or None."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if not isinstance(current, Exception):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """CPU MemoryError or torch's (CUDA) OutOfMemoryError (matched by name: torch may be absent)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
