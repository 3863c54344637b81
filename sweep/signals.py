"""Stop signals on the driver: Ctrl-C (SIGINT) and SIGTERM (``kill``, a batch scheduler,
``docker stop``) both end the sweep gracefully, and remember which one it was.

While Tune runs, its own SIGINT handler saves the experiment state and stops the trials;
ours wraps it (installed from a callback's ``setup``, after Tune's) to record the signal.
SIGTERM, which Tune ignores, is routed into the same path. Outside Tune a signal raises
KeyboardInterrupt, which the driver turns into the same clean stop. A second Ctrl-C
while stopping aborts at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

_received: list[int] = []


def received() -> int | None:
    """The signal that asked this sweep to stop, if any."""
    return _received[0] if _received else None


def _record(signum: int) -> None:
    if not _received:
        _received.append(signum)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _record(signum)
    raise KeyboardInterrupt


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _record(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Install the handlers (after ``ray.init``, whose own SIGTERM handler aborts)."""
    _received.clear()
    previous = {s: signal.signal(s, h) for s, h in _HANDLERS.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wrap_tune_handler() -> None:
    """Called once Tune has installed its SIGINT handler: record, then let Tune stop."""
    tune_handler = signal.getsignal(signal.SIGINT)
    if not callable(tune_handler) or tune_handler is _on_sigint:
        return

    def on_sigint(signum: int, frame: FrameType | None) -> Any:
        _record(signum)
        return tune_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)


_HANDLERS: dict[int, Callable[[int, FrameType | None], None]] = {
    signal.SIGINT: _on_sigint,
    signal.SIGTERM: _on_sigterm,
}
