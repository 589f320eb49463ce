"""What kind of failure an exception is (no torch needed: the CLI's error handling imports this).

An interrupt: Ctrl-C or SIGTERM raised inside a library's cleanup code can surface as that
library's own error (torch: ``RuntimeError: trying to pop from empty mode stack``). Out of
memory: Python's MemoryError or torch's OutOfMemoryError.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List, Optional


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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (acted on when the block ends) in the main thread, where Python runs its signal
    handlers; elsewhere a no-op. For steps that must not be cut in half: renames that replace an output, removing a
    staging folder."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: List[int] = []
    kinds = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) not in (None, signal.SIG_DFL, signal.SIG_IGN)]
    handlers = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in kinds}
    try:
        yield
    finally:
        for kind, handler in handlers.items():
            signal.signal(kind, handler)
        for kind in dict.fromkeys(caught):
            signal.raise_signal(kind)
