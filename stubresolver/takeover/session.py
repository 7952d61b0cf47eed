"""Sequencing one takeover: journal first, then each step, marked as it completes; restore
from the journal alone. The only module here that combines reading, planning and writing.

Crash semantics (issue 9): a crash or ``kill -9`` leaves our resolv.conf in place, so the
system asks a stub that is gone: DNS stops and nothing leaks (fail-closed). The journal
stays; the next ``run`` continues from it and ``restore`` gives the original back. Our own
file is never recorded as "the original".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from stubresolver.config import Config
from stubresolver.errors import TakeoverError
from stubresolver.takeover import journal, runner
from stubresolver.takeover.detect import choose_backend
from stubresolver.takeover.journal import Journal
from stubresolver.takeover.original import Original, inspect
from stubresolver.takeover.plan import Step, apply_plan, is_ours, restore_plan

log = logging.getLogger("stubresolver.takeover")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a takeover would do, and where its original comes from."""

    manager: str
    original: Original
    apply: tuple[Step, ...]
    restore: tuple[Step, ...]
    resumed: bool  # the original comes from an existing journal (a restart after a crash)

    def describe(self) -> list[str]:
        o = self.original
        found = {
            "file": f"a file ({len(o.data)} bytes, mode {o.mode:04o}, owner {o.uid}:{o.gid})",
            "symlink": f"a symlink to {o.link_target}",
            "absent": "nothing",
        }[o.kind]
        source = "recorded in the journal" if self.resumed else "found"
        lines = [f"takeover: backend {self.manager}; {source} at {o.path}: {found}"]
        lines += [f"  apply: {step.describe()}" for step in self.apply]
        lines += [f"  restore: {step.describe()}" for step in self.restore]
        return lines


def plan(config: Config) -> Plan:
    """Render the plan from the journal when there is one, else from what is found. Only
    reads. Raises ConfigError (the mode cannot apply) or TakeoverError."""
    path = config.takeover.resolv_conf
    recorded = journal.read(config.state_dir)
    if recorded is not None:
        if recorded.original.path != path:
            raise TakeoverError(
                f"the journal in {config.state_dir} is for {recorded.original.path}, not "
                f"{path}: run `stubresolver restore` with the config that took it over"
            )
        original = recorded.original
        manager = recorded.manager
    else:
        original = inspect(path)
        manager = choose_backend(config.takeover.mode, original)
        if original.kind == "file" and is_ours(original.data):
            # Recording this as the original would make `restore` write our file back:
            # the real original is lost already (its journal was removed by hand).
            raise TakeoverError(
                f"{path} is stubresolver's own file but {config.state_dir} has no journal; "
                "put the original resolv.conf back by hand, then start again"
            )
    return Plan(
        manager,
        original,
        apply_plan(original, config.listen),
        restore_plan(original),
        resumed=recorded is not None,
    )


def take_over(config: Config) -> Plan:
    """Journal, then apply. Raises ConfigError or TakeoverError; after a failed step the
    journal says what is done, so `restore` can undo it."""
    chosen = plan(config)
    steps = tuple(step.describe() for step in chosen.apply)
    if chosen.resumed:
        log.warning(
            "takeover journal found in %s (an earlier run did not stop cleanly); "
            "continuing with the original it recorded",
            config.state_dir,
        )
    record = Journal(chosen.manager, chosen.original, steps)
    journal.write(config.state_dir, record)
    for index, step in enumerate(chosen.apply):
        runner.execute(step)
        record = record.completed(index + 1)
        journal.write(config.state_dir, record)
    log.info("took over %s (backend %s)", chosen.original.path, chosen.manager)
    return chosen


def restore(state_dir: Path) -> list[str] | None:
    """Undo the takeover from the journal, byte for byte, then drop the journal. None when
    there is no journal (nothing to restore); idempotent: a second call finds none."""
    recorded = journal.read(state_dir)
    if recorded is None:
        return None
    done: list[str] = []
    for step in restore_plan(recorded.original):
        runner.execute(step)
        done.append(step.describe())
    journal.remove(state_dir)
    log.info("restored %s from the takeover journal", recorded.original.path)
    return done
