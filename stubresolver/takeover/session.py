"""Sequencing one takeover: journal first, then each step, marked as it completes; restore
from the journal alone. The only module here that combines reading, planning and writing.

Crash semantics (issue 9): a crash or ``kill -9`` leaves the system pointing at the stub
that is gone: DNS stops and nothing leaks (fail-closed). The journal stays; the next
``run`` continues from it and ``restore`` gives the original back. Our own file is never
recorded as "the original".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from stubresolver.config import Config
from stubresolver.errors import TakeoverError
from stubresolver.takeover import detect, journal, registry, runner
from stubresolver.takeover.backends import Backend, Found
from stubresolver.takeover.journal import Journal
from stubresolver.takeover.original import inspect
from stubresolver.takeover.resolv_conf import is_ours
from stubresolver.takeover.steps import Step

log = logging.getLogger("stubresolver.takeover")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a takeover would do, and where its originals come from."""

    backend: Backend
    found: Found
    apply: tuple[Step, ...]
    restore: tuple[Step, ...]
    resumed: bool  # the originals come from an existing journal (a restart after a crash)

    @property
    def manager(self) -> str:
        return self.backend.name

    def describe(self) -> list[str]:
        source = "recorded in the journal" if self.resumed else "found"
        lines = [f"takeover: backend {self.manager}"]
        for o in self.found.originals:
            what = {
                "file": f"a file ({len(o.data)} bytes, mode {o.mode:04o}, owner {o.uid}:{o.gid})",
                "symlink": f"a symlink to {o.link_target}",
                "absent": "nothing",
            }[o.kind]
            lines.append(f"  {source} at {o.path}: {what}")
        lines += [f"  {source}: {key} = {value}" for key, value in self.found.facts]
        lines += [f"  apply: {step.describe()}" for step in self.apply]
        lines += [f"  restore: {step.describe()}" for step in self.restore]
        return lines


def plan(config: Config) -> Plan:
    """Render the plan from the journal when there is one, else from what is found. Only
    reads. Raises ConfigError (the mode cannot apply) or TakeoverError."""
    recorded = journal.read(config.state_dir)
    if recorded is not None:
        backend = registry.get(recorded.manager)
        wanted = backend.paths(config)
        if tuple(o.path for o in recorded.found.originals) != wanted:
            raise TakeoverError(
                f"the journal in {config.state_dir} is for "
                f"{', '.join(str(o.path) for o in recorded.found.originals)}, not "
                f"{', '.join(map(str, wanted))}: run `stubresolver restore` with the config "
                "that took it over"
            )
        found, restore = recorded.found, recorded.restore
    else:
        facts = detect.probe(config.takeover.resolv_conf)
        backend = registry.get(
            detect.choose(config.takeover.mode, facts, frozenset(registry.BACKENDS))
        )
        found = Found(tuple(inspect(path) for path in backend.paths(config)), backend.probe(config))
        for original in found.originals:
            if original.kind == "file" and is_ours(original.data):
                # Recording this as the original would make `restore` write our file
                # back: the real original is lost already (its journal was removed).
                raise TakeoverError(
                    f"{original.path} is stubresolver's own file but {config.state_dir} has "
                    "no journal; put the original back by hand, then start again"
                )
        restore = backend.restore(found)
    return Plan(backend, found, backend.apply(found, config), restore, recorded is not None)


def take_over(config: Config) -> Plan:
    """Journal, then apply. Raises ConfigError or TakeoverError; after a failed step the
    journal says what is done, and its restore plan undoes it."""
    chosen = plan(config)
    if chosen.resumed:
        log.warning(
            "takeover journal found in %s (an earlier run did not stop cleanly); "
            "continuing with the originals it recorded",
            config.state_dir,
        )
    else:
        log.info("takeover: found %s; backend %s", config.takeover.resolv_conf, chosen.manager)
    _journal_and_apply(chosen, config)
    log.info("took over the system's DNS (backend %s)", chosen.manager)
    return chosen


def _journal_and_apply(chosen: Plan, config: Config) -> None:
    steps = tuple(step.describe() for step in chosen.apply)
    record = Journal(chosen.manager, chosen.found, steps, chosen.restore)
    journal.write(config.state_dir, record)
    for index, step in enumerate(chosen.apply):
        runner.execute(step)
        record = record.completed(index + 1)
        journal.write(config.state_dir, record)


def reassert(chosen: Plan, config: Config) -> Plan:
    """Put back what no longer holds (the backend's repair steps, each idempotent): the
    drift watchdog's answer when someone took DNS back. The originals stay the first ones.
    When the backend finds more to cover (refresh: a link that appeared), what it found is
    journaled first and the plan grows by it; the plan to use from now on is returned."""
    found = chosen.backend.refresh(chosen.found, config)
    record: Journal | None = None
    if found != chosen.found:
        added = [f"{k} = {v}" for k, v in found.facts if (k, v) not in chosen.found.facts]
        log.warning("takeover: taking over what appeared since: %s", "; ".join(added))
        backend = chosen.backend
        chosen = Plan(
            backend, found, backend.apply(found, config), backend.restore(found), chosen.resumed
        )
        steps = tuple(step.describe() for step in chosen.apply)
        record = Journal(chosen.manager, found, steps, chosen.restore)
        journal.write(config.state_dir, record)
    for step in chosen.backend.repair(chosen.found, config):
        runner.execute(step)
    if record is not None:  # every apply step is in effect again
        journal.write(config.state_dir, record.completed(len(chosen.apply)))
    return chosen


def restore(state_dir: Path) -> list[str] | None:
    """Undo the takeover from the journal, byte for byte, then drop the journal. None when
    there is no journal (nothing to restore); idempotent: a second call finds none."""
    recorded = journal.read(state_dir)
    if recorded is None:
        return None
    done: list[str] = []
    for step in recorded.restore:
        runner.execute(step)
        done.append(step.describe())
    journal.remove(state_dir)
    log.info("restored the system's DNS from the takeover journal (backend %s)", recorded.manager)
    return done
