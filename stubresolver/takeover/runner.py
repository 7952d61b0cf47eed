"""The thin runner: executes one plan step (steps.py) on the system. No decisions."""

from __future__ import annotations

import subprocess

from stubresolver.errors import TakeoverError
from stubresolver.takeover import fsutil
from stubresolver.takeover.steps import (
    MakeDir,
    MakeSymlink,
    Remove,
    RemoveDir,
    Run,
    Step,
    WriteFile,
)

#: A manager's tool that does not answer in this time is treated as failed; the plan stops
#: there and the journal says how far it got.
RUN_TIMEOUT = 30.0


def execute(step: Step) -> None:
    """Raises TakeoverError naming the step; a failed file step leaves its path unchanged."""
    try:
        if isinstance(step, WriteFile):
            fsutil.replace_with_file(
                step.path,
                step.data,
                step.mode,
                owner=(step.uid, step.gid),
                mtime_ns=step.mtime_ns,
            )
        elif isinstance(step, MakeSymlink):
            fsutil.replace_with_symlink(step.path, step.target, (step.uid, step.gid))
        elif isinstance(step, Remove):
            fsutil.remove(step.path)
        elif isinstance(step, MakeDir):
            fsutil.make_dir(step.path, step.mode)
        elif isinstance(step, RemoveDir):
            fsutil.remove_empty_dir(step.path)
        else:
            _run(step)
    except OSError as exc:
        raise TakeoverError(f"{step.describe()}: {exc.strerror or exc}") from None


def _run(step: Run) -> None:
    timeout = RUN_TIMEOUT if step.timeout is None else step.timeout
    try:
        done = subprocess.run(
            step.argv,
            input=step.stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TakeoverError(f"{step.describe()}: no answer in {timeout:g} s") from None
    if done.returncode != 0 and not step.may_fail:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        reason = said[-1] if said else f"exit {done.returncode}"
        raise TakeoverError(f"{step.describe()}: {reason}")
