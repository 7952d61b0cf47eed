"""The drift watchdog: someone else pointing the system's DNS away from us (a DHCP client,
a VPN script, a manager that was not told) is the most common DNS leak, so the takeover is
re-asserted when it no longer holds.

It wakes on inotify events in the directories of the backend's watched files (managers
write by rename-over) and on a slow poll, for state inotify cannot see (a manager's
in-memory settings) or when inotify is unavailable. Re-asserts back off exponentially
(backoff.py), so a fight with another writer settles: our writes become rare, the other
writer's last word lasts at most ``maximum`` seconds, and ours is the last once it stops.
Checks and re-asserts run in a worker thread: a manager's tool may take a while, and the
event loop keeps answering DNS meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from stubresolver.backoff import Backoff
from stubresolver.config import Config
from stubresolver.errors import TakeoverError
from stubresolver.takeover.inotify import Inotify
from stubresolver.takeover.session import Plan, reassert

log = logging.getLogger("stubresolver.takeover")

#: The first re-assert after a drift is at once; then 0.05 s, doubling to 2 s while the
#: drifts keep coming. Quiet for QUIET seconds forgives the past.
INITIAL, MAXIMUM, QUIET = 0.05, 2.0, 30.0
POLL = 5.0


class DriftWatchdog:
    def __init__(self, chosen: Plan, config: Config, *, poll: float = POLL) -> None:
        self.chosen = chosen
        self.config = config
        self.poll = poll
        self.backoff = Backoff(INITIAL, MAXIMUM)
        self.drifts = 0  # checks that found the takeover gone
        self.reasserts = 0  # re-asserts done
        self.failures = 0  # re-asserts that failed
        self.last_error: str | None = None
        self.inotify_active = False
        self._last_drift = 0.0
        self._inotify: Inotify | None = None
        self._names = {path.name for path in chosen.backend.watch(config)}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            inotify = Inotify()
            for directory in {path.parent for path in self.chosen.backend.watch(self.config)}:
                inotify.watch_dir(directory)
        except OSError as exc:
            log.warning("takeover watchdog: %s; checking every %g s instead", exc, self.poll)
        else:
            self._inotify = inotify
            self.inotify_active = True
            asyncio.get_running_loop().add_reader(inotify.fd, self._on_events)
        self._task = asyncio.create_task(self._loop(), name="takeover-watchdog")

    def _on_events(self) -> None:
        assert self._inotify is not None
        try:
            names = self._inotify.names()
        except OSError as exc:
            log.warning("takeover watchdog: reading inotify: %s", exc)
            return
        if names & self._names:
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()
            delay = await asyncio.to_thread(self._check)
            while delay > 0:  # still drifted, but backing off: look again after the delay
                await asyncio.sleep(delay)
                self._wake.clear()
                delay = await asyncio.to_thread(self._check)

    def _check(self) -> float:
        """One look; re-assert when the takeover no longer holds and the backoff allows.
        Returns the seconds until the next look is needed (0: none until the next event)."""
        now = time.monotonic()
        if self.chosen.backend.holds(self.chosen.found, self.config):
            if now - self._last_drift > QUIET:
                self.backoff.reset()
            return 0.0
        wait = self.backoff.next_delay(now)
        if wait > 0:
            return wait
        self.drifts += 1
        self._last_drift = now
        log.warning(
            "takeover: the system's DNS was pointed elsewhere (backend %s); re-asserting",
            self.chosen.manager,
        )
        try:
            self.chosen = reassert(self.chosen, self.config)
        except TakeoverError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("takeover: re-assert failed: %s", exc)
        else:
            self.reasserts += 1
        self.backoff.failed(now)
        return 0.0

    def counters(self) -> dict[str, Any]:
        return {
            "drifts": self.drifts,
            "reasserts": self.reasserts,
            "reassert_failures": self.failures,
            "last_error": self.last_error,
            "inotify": self.inotify_active,
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
