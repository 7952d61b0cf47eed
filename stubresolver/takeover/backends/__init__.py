"""Takeover backends: one per DNS manager, each an apply/restore pair of plans rendered as
data (steps.py) from what was found. A backend decides; it never writes (runner.py does).

A backend declares:

- ``paths(config)``: every file its plans may change. Session records each one's original
  (bytes, link, mode, owner, mtime) in the journal before the first change, so the restore
  plan can put it back byte for byte.
- ``probe(config)``: read-only facts about the manager's state the plans depend on (for
  systemd-resolved, each link's DNS default route), recorded in the journal too, so a
  restore after a crash knows the state before us, not the state we made.
- ``refresh(found, config)``: ``found`` plus the state of what the plans must now also
  cover and the probe did not see (for systemd-resolved, a link that appeared after the
  takeover), read before it is changed; the others return ``found`` as it is. The drift
  watchdog journals what it adds before re-asserting, as the takeover journals first.
- ``apply(found, config)`` and ``restore(found)``: pure.
- ``repair(found, config)``: read-only, the steps that put back what no longer holds (the
  watchdog's re-assert runs them): the whole apply plan, whose steps are idempotent, unless
  part of it is costly and still in place (systemd-resolved skips its restart while its
  drop-in holds, so a link given its servers back does not cost a resolved restart).
- ``watch(config)``: the files whose change may mean someone took DNS back (the drift
  watchdog watches their directories with inotify), and ``holds(found, config)``: a
  read-only check that the takeover is still in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stubresolver.config import Config
from stubresolver.takeover.original import Original
from stubresolver.takeover.steps import Step


@dataclass(frozen=True, slots=True)
class Found:
    """What was there before the first change: the originals of every path a backend may
    change, and its probe facts. Comes from the system, or from the journal on a resume."""

    originals: tuple[Original, ...]
    facts: tuple[tuple[str, str], ...] = ()

    def original(self, path: Path) -> Original:
        for original in self.originals:
            if original.path == path:
                return original
        raise KeyError(path)

    def fact(self, key: str, default: str = "") -> str:
        return dict(self.facts).get(key, default)


class Backend(Protocol):
    #: The name in takeover.mode, the journal and `status`.
    name: str

    def paths(self, config: Config) -> tuple[Path, ...]: ...

    def probe(self, config: Config) -> tuple[tuple[str, str], ...]: ...

    def refresh(self, found: Found, config: Config) -> Found: ...

    def apply(self, found: Found, config: Config) -> tuple[Step, ...]: ...

    def restore(self, found: Found) -> tuple[Step, ...]: ...

    def repair(self, found: Found, config: Config) -> tuple[Step, ...]: ...

    def watch(self, config: Config) -> tuple[Path, ...]: ...

    def holds(self, found: Found, config: Config) -> bool: ...
