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


OUT_OF_MEMORY_MESSAGES = ("can't allocate memory", "not enough memory", "failed to allocate memory", "out of memory",
                          "cannot allocate memory", "status_alloc_failed")
"""What a failed allocation says where it is no MemoryError: torch's CPU allocator (``DefaultCPUAllocator: can't allocate
memory`` on Linux, ``not enough memory`` on Windows: a RuntimeError), ONNX Runtime's arena (``Failed to allocate memory``),
the OS (``Cannot allocate memory``, ENOMEM) and cuDNN/cuBLAS (``..._STATUS_ALLOC_FAILED``)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """CPU MemoryError, torch's (CUDA) OutOfMemoryError (matched by name: torch may be absent), or a library's failed
    allocation (``OUT_OF_MEMORY_MESSAGES`` in the first line of an error that is no lookup of a name)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if not isinstance(exc, Exception) or isinstance(exc, LookupError):
        return False
    first = (str(exc).splitlines() or [""])[0].lower()
    return any(message in first for message in OUT_OF_MEMORY_MESSAGES)


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
