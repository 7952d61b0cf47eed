"""Leave nothing behind: the world is torn down on a normal end, an exception, Ctrl-C,
SIGTERM or SIGHUP, and at interpreter exit as a last resort; exactly once.

Python's default SIGTERM and SIGHUP end the process without running `finally`; here they
interrupt like Ctrl-C does, so the caller's `finally` runs. While tearing down, further
signals are ignored: a second impatient Ctrl-C must not leave half a world.
"""

from __future__ import annotations

import atexit
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from .processes import hold_signal

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    if hold_signal(signum):
        return  # a child is being started and recorded: raised right after (processes.py)
    # KeyboardInterrupt, like Ctrl-C: nothing in between catches it by accident.
    raise KeyboardInterrupt(signal.Signals(signum).name)


class Teardown:
    """Runs `action` once: from `run()` (the caller's `finally`) or from atexit."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._done = False
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> Teardown:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, _interrupt)
        atexit.register(self.run)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.run()

    def run(self) -> None:
        if self._done:
            return
        self._done = True
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        try:
            self._action()
        finally:
            atexit.unregister(self.run)
            for sig, previous in self._previous.items():
                if previous is not None:  # None: a handler not set from Python
                    signal.signal(sig, previous)
