"""Whether this process was interrupted (Ctrl-C), for the code that would otherwise wait.

After Ctrl-C the user wants the command to end; a storage call that meets a locked or lost
database must then fail at once instead of waiting the outage out (a trial it could not mark is
retried on resume, once its heartbeat lapses). :func:`catch_interrupts` makes SIGINT record
that before raising ``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["catch_interrupts", "interrupted"]

_event = threading.Event()


def interrupted() -> bool:
    """Whether SIGINT reached this process since :func:`catch_interrupts`."""
    return _event.is_set()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _event.set()
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """Record SIGINT, then raise ``KeyboardInterrupt`` as Python's own handler does. Does nothing
    outside the main thread; a SIGINT that is ignored (a background job) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (e.g. main() called from a thread)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
