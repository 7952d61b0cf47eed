"""One install or uninstall run: probe, plan, then each step, recording in the manifest what
it created as soon as it exists. The only module here that both reads and writes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from stubresolver.errors import InstallError
from stubresolver.install import manifest, shipped, steps
from stubresolver.install.layout import Layout
from stubresolver.install.manifest import Manifest
from stubresolver.install.plan import InstallPlan, Source, install_plan, uninstall_plan
from stubresolver.install.probe import Facts, probe
from stubresolver.takeover.steps import Remove

Say = Callable[[str], None]
STATUS_TIMEOUT = 30.0


def _facts(layout: Layout, dry_run: bool) -> Facts:
    if not dry_run and os.geteuid() != 0:
        raise InstallError("needs root: run it with sudo (or --dry-run to see the plan)")
    # A dry run also works on a machine without systemd, to show what would happen.
    return probe(layout, systemctl=not dry_run or shutil.which("systemctl") is not None)


def install(layout: Layout, source: Source, *, dry_run: bool, say: Say) -> int:
    """Raises InstallError; returns the exit status of the closing `status`."""
    facts = _facts(layout, dry_run)
    chosen = install_plan(facts, source, shipped.load())
    status = [str(layout.command), "status", "--config", str(layout.config)]
    if dry_run:
        _show(chosen, "would", say)
        say(f"then: {' '.join(status)}")
        return 0
    if not chosen.steps:
        say("stubresolver install: nothing to change; every part is in place")
    _run(chosen, layout, facts.manifest, say)
    for note in chosen.notes:
        say(f"note: {note}")
    return _status(status, say)


def uninstall(layout: Layout, *, purge: bool, dry_run: bool, say: Say) -> int:
    recorded = manifest.read(layout.manifest)
    venv = next((c for c in (recorded.claims if recorded else ()) if c.kind == "venv"), None)
    if venv is not None:  # the prefix install used, whatever the default is now
        layout = replace(layout, prefix=Path(venv.target))
    chosen = uninstall_plan(_facts(layout, dry_run), purge)
    if dry_run:
        _show(chosen, "would", say)
        return 0
    _run(chosen, layout, recorded, say)
    for note in chosen.notes:
        say(f"note: {note}")
    say("stubresolver uninstall: done")
    return 0


def _show(chosen: InstallPlan, verb: str, say: Say) -> None:
    if not chosen.steps:
        say("nothing to change; every part is in place")
    for planned in chosen.steps:
        say(f"{verb}: {planned.step.describe()}")
    for note in chosen.notes:
        say(f"note: {note}")


def _run(chosen: InstallPlan, layout: Layout, recorded: Manifest | None, say: Say) -> None:
    record = recorded or Manifest()
    dirty = False
    gone = False
    for planned in chosen.steps:
        say(f"- {planned.step.describe()}")
        for line in steps.execute(planned.step):
            say(f"  {line}")
        if isinstance(planned.step, Remove) and planned.step.path == layout.manifest:
            gone = True  # uninstall's last word: nothing more to record
        if planned.claim is not None:
            record, dirty = record.with_claim(planned.claim), True
        elif planned.release is not None:
            record, dirty = record.without(planned.release), True
        # Written as soon as its directory exists (install may be about to make it).
        if dirty and not gone and layout.manifest.parent.is_dir():
            manifest.write(layout.manifest, record)
            dirty = False


def _status(argv: list[str], say: Say) -> int:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=STATUS_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{' '.join(argv)}: {exc}") from None
    say(done.stdout.rstrip("\n"))
    if done.returncode != 0:
        say(done.stderr.rstrip("\n"))
        say(
            "stubresolver install: the service does not answer `status`; see journalctl -u "
            "stubresolver"
        )
    return done.returncode
