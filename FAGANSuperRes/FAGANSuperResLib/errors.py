"""One-line error display for the modules' buttons (Qt-free: the display is passed in).

``slicer.util.tryWithErrorDisplay`` puts a Python traceback under "Show Details..." and re-raises, so the Qt slot
prints it again; the modules show the reason in one line instead and keep the traceback for the log.
"""
import logging
from types import TracebackType
from typing import Callable, Optional, Type


def oneLine(exc: BaseException) -> str:
    """The last non-empty line of an exception's message (its type name if it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class OneLineErrors:
    """``with OneLineErrors(display, message) as errors:`` shows an ``Exception`` raised inside as ``display("message
    reason")``, logs its traceback at debug level and swallows it; ``errors.failed`` then tells the caller to stop."""

    def __init__(self, display: Callable[[str], None], message: str) -> None:
        self.display = display
        self.message = message
        self.failed = False

    def __enter__(self) -> "OneLineErrors":
        return self

    def __exit__(self, excType: Optional[Type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.failed = True
        logging.getLogger(__name__).debug(self.message, exc_info=(excType, exc, traceback))
        self.display(f"{self.message} {oneLine(exc)}")
        return True
