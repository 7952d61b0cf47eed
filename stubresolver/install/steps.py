"""The steps install and uninstall need beyond the takeover's (WriteFile, MakeSymlink,
Remove, MakeDir, RemoveDir, Run from stubresolver.takeover.steps, run by its runner), and
the one ``execute`` for both. Every step here is idempotent: it checks the system when it
runs, so a second run, or one after an interrupted run, does no harm."""

from __future__ import annotations

import contextlib
import grp
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stubresolver.errors import GuardError, InstallError, TakeoverError
from stubresolver.guard import nftables
from stubresolver.takeover import runner, session
from stubresolver.takeover.steps import (
    MakeDir,
    MakeSymlink,
    Remove,
    RemoveDir,
    Run,
    Step,
    WriteFile,
)


@dataclass(frozen=True, slots=True)
class RemoveTree:
    """The virtualenv install made, with everything in it."""

    path: Path

    def describe(self) -> str:
        return f"remove {self.path} and everything in it"


@dataclass(frozen=True, slots=True)
class DeleteAccount:
    """userdel / groupdel, when the account still exists. userdel also deletes the user's
    primary group when it bears the user's name (USERGROUPS_ENAB, and Debian's userdel has
    no -K to say otherwise); with ``keep_group`` (a group that was there before install)
    the user is first moved to gid 65534 (nogroup), so that group stays."""

    kind: Literal["user", "group"]
    name: str
    keep_group: bool = False

    @property
    def commands(self) -> tuple[tuple[str, ...], ...]:
        if self.kind == "group":
            return (("groupdel", self.name),)
        if self.keep_group:
            return (("usermod", "--gid", "65534", self.name), ("userdel", self.name))
        return (("userdel", self.name),)

    def describe(self) -> str:
        return "run " + "; ".join(" ".join(argv) for argv in self.commands)


@dataclass(frozen=True, slots=True)
class RestoreDns:
    """`stubresolver restore`: give back what a takeover replaced, from its journal, and
    remove the guard's table if one is left (lockdown)."""

    state_dir: Path

    def describe(self) -> str:
        return (
            f"restore the system's DNS from the takeover journal in {self.state_dir}, if any,"
            " and remove the guard's table, if any"
        )


InstallStep = Step | RemoveTree | DeleteAccount | RestoreDns


def execute(step: InstallStep) -> list[str]:
    """Run one step; returns what it has to report (restore's lines). Raises InstallError
    naming the step."""
    if isinstance(step, WriteFile | MakeSymlink | Remove | MakeDir | RemoveDir | Run):
        try:
            runner.execute(step)
        except TakeoverError as exc:  # it names the step already
            raise InstallError(str(exc)) from None
        return []
    try:
        if isinstance(step, RemoveTree):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(step.path)
        elif isinstance(step, DeleteAccount):
            _delete_account(step)
        else:
            done = session.restore(step.state_dir)
            lines = (
                ["nothing left to restore: no takeover journal"]  # a clean stop did it
                if done is None
                else [f"restored: {line}" for line in done]
            )
            if nftables.remove_if_there():  # a lockdown's table outlives the service
                lines.append("restored: guard table inet stubresolver removed")
            return lines
    except (TakeoverError, GuardError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InstallError(f"{step.describe()}: {reason}") from None
    return []


def _delete_account(step: DeleteAccount) -> None:
    try:
        if step.kind == "user":
            pwd.getpwnam(step.name)
        else:
            grp.getgrnam(step.name)
    except KeyError:
        return
    for argv in step.commands:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()
            reason = said[0] if said else f"exit {done.returncode}"
            raise InstallError(f"{' '.join(argv)}: {reason}")
