"""The thin runner: executes one plan step (plan.py) on the file system. No decisions."""

from __future__ import annotations

from stubresolver.errors import TakeoverError
from stubresolver.takeover import fsutil
from stubresolver.takeover.plan import MakeSymlink, Remove, Step, WriteFile


def execute(step: Step) -> None:
    """Raises TakeoverError naming the step; a failed step leaves its path unchanged."""
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
        else:
            assert isinstance(step, Remove)
            fsutil.remove(step.path)
    except OSError as exc:
        raise TakeoverError(f"{step.describe()}: {exc.strerror or exc}") from None
