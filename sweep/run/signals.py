"""Stop signals on the driver: Ctrl-C (SIGINT) and SIGTERM (``kill``, a batch scheduler,
``docker stop``) end the sweep the same way, in every phase, and remember which it was.

:class:`StopSignals` is installed before anything starts and held for the sweep's whole
life. Outside Tune a signal raises ``KeyboardInterrupt``, which the driver turns into one
clean stop (runs KILLED, state saved, resume command, exit 128 + signal); once the sweep
itself runs (Ray, MLflow), it is noted and raised at the next phase boundary. While Tune runs,
its own SIGINT handler saves the experiment state and stops the trials: ours hands over to
it (:meth:`hand_to_tune`, from a callback's ``setup``, after Tune installed it) and takes
back when ``fit`` returns (:meth:`take_back`). SIGTERM, which Tune ignores, goes the same
way. A second signal while stopping aborts at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import ray._private.utils as ray_utils

Handler = Callable[[int, FrameType | None], Any]
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    def __init__(self) -> None:
        self.received: int | None = None  # the signal that asked this sweep to stop
        self._previous: dict[int, Any] = {}
        self._tune: Handler | None = None
        self._deferred = False
        self._unraisable = sys.unraisablehook

    @property
    def exit_code(self) -> int:
        """The shell's convention: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.received or signal.SIGINT)

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = self._on_unraisable
        self.take_back()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = self._unraisable

    def _on_unraisable(self, info: Any) -> None:
        """Python drops an exception raised in an at-fork callback or a finaliser, and
        prints it: our stop, dropped so, is raised again by :meth:`check`, not printed."""
        if not (isinstance(info.exc_value, KeyboardInterrupt) and self.received is not None):
            self._unraisable(info)

    def take_back(self) -> None:
        """Our handlers again: at the start, and after each Tune run (whose handler would
        swallow a later Ctrl-C)."""
        self._tune = None
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    def hand_to_tune(self) -> None:
        """Tune has installed its SIGINT handler (before it sets up callbacks, whence this
        is called): signals go through it from now on."""
        handler = signal.getsignal(signal.SIGINT)
        # == not `is`: each access of a bound method makes a new object.
        if handler == self._on_signal and not os.environ.get("TUNE_DISABLE_SIGINT_HANDLER"):
            # Tune's handler is gone already: it fired (and put ours back), a Ctrl-C while
            # Tune started. Tune stops; the sweep must know it was stopped.
            self.received = self.received or signal.SIGINT
            return
        if callable(handler):
            self._tune = handler
            for signum in SIGNALS:
                signal.signal(signum, self._on_signal)
            if self.received is not None:  # it came while Tune started: stop it now
                handler(signal.SIGINT, None)

    def check(self) -> None:
        """Raise for a signal already received: the phase boundaries call this, so a stop
        that Python dropped (Ray forks its processes at start-up) still stops the sweep."""
        if self.received is not None:
            raise KeyboardInterrupt

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # a second one while stopping: the user means it
            print("\nAborted; the same command with resume=true resumes.", file=sys.stderr)
            os._exit(self.exit_code)  # Ray's processes follow (sweep/run/reaper.py)
        self.received = signum
        if self._tune is not None:
            self._tune(signal.SIGINT, frame)  # Tune saves its state and stops the trials
            return
        if not self._deferred:
            raise KeyboardInterrupt

    def defer(self) -> None:
        """From now on a stop is noted, not raised where it lands: :meth:`check` raises it
        at the next phase boundary. Raised anywhere, it lands in library code too: in a
        fork callback of Ray's start-up that holds the logging module's lock (the exit
        then hangs), in a connection pool's finaliser (which prints a traceback)."""
        self._deferred = True

    @contextlib.contextmanager
    def around_ray_start(self) -> Iterator[None]:
        """Keeps ``ray.init`` from replacing our SIGTERM handler with its exit(15)."""
        install = ray_utils.set_sigterm_handler
        ray_utils.set_sigterm_handler = lambda handler: None
        try:
            yield
        finally:
            ray_utils.set_sigterm_handler = install
        self.check()
