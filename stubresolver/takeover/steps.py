"""The steps a takeover plan is made of, as data (STYLE.md 7): every backend renders its
apply and restore plans from these, runner.py executes them, the journal stores them.
`stubresolver install` builds its plans from the same steps (stubresolver/install/steps.py
adds the few it needs beyond them). A step
describes itself in one line, for the log, `--dry-run` and the closing `restore` report."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stubresolver.takeover.original import Original


@dataclass(frozen=True, slots=True)
class WriteFile:
    """Replace ``path`` atomically with a regular file (a symlink there is replaced, not
    followed). ``mtime_ns`` None: now."""

    path: Path
    data: bytes
    mode: int
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = None

    def describe(self) -> str:
        return f"write {self.path} ({len(self.data)} bytes, mode {self.mode:04o})"


@dataclass(frozen=True, slots=True)
class MakeSymlink:
    """Replace ``path`` atomically with a symlink to ``target``, owned by uid:gid."""

    path: Path
    target: str
    uid: int = 0
    gid: int = 0

    def describe(self) -> str:
        return f"link {self.path} -> {self.target}"


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove ``path`` (it was absent before we wrote it)."""

    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True, slots=True)
class MakeDir:
    """Make the directory ``path`` (a drop-in directory the system does not have yet); one
    that exists already is left as it is, so a re-assert can run this again."""

    path: Path
    mode: int = 0o755

    def describe(self) -> str:
        return f"make directory {self.path} (mode {self.mode:04o})"


@dataclass(frozen=True, slots=True)
class RemoveDir:
    """Remove the directory ``path`` that a MakeDir made. Restore plans use it only for a
    directory that was absent before us; if someone else has put a file in it since, it is
    left, with their file (rmdir never removes contents)."""

    path: Path

    def describe(self) -> str:
        return f"remove directory {self.path} (if empty)"


@dataclass(frozen=True, slots=True)
class Run:
    """Run a DNS manager's own tool (resolvectl, nmcli, resolvconf, busctl): how a plan
    speaks to a daemon. A non-zero exit fails the step, unless ``may_fail`` (an undo that
    is also right when there was nothing to undo). ``timeout`` None: the runner's default
    (a pip install of the service gets longer than a manager's tool)."""

    argv: tuple[str, ...]
    may_fail: bool = False
    stdin: bytes = b""
    timeout: float | None = None

    def describe(self) -> str:
        tail = f" < {len(self.stdin)} bytes" if self.stdin else ""
        return "run " + " ".join(self.argv) + tail


Step = WriteFile | MakeSymlink | Remove | MakeDir | RemoveDir | Run


def restore_original(original: Original) -> Step:
    """Put back exactly what was found at a path: the bytes, mode, owner and mtime of a
    file; the link and its owner for a symlink; nothing at all where there was nothing."""
    if original.kind == "symlink":
        assert original.link_target is not None  # an Original of kind symlink has one
        return MakeSymlink(original.path, original.link_target, original.uid, original.gid)
    if original.kind == "absent":
        return Remove(original.path)
    return WriteFile(
        original.path, original.data, original.mode, original.uid, original.gid, original.mtime_ns
    )


def encode_step(step: Step) -> dict[str, Any]:
    if isinstance(step, WriteFile):
        return {
            "write": str(step.path),
            "data_base64": base64.b64encode(step.data).decode(),
            "mode": step.mode,
            "uid": step.uid,
            "gid": step.gid,
            "mtime_ns": step.mtime_ns,
        }
    if isinstance(step, MakeSymlink):
        return {"link": str(step.path), "target": step.target, "uid": step.uid, "gid": step.gid}
    if isinstance(step, Remove):
        return {"remove": str(step.path)}
    if isinstance(step, MakeDir):
        return {"mkdir": str(step.path), "mode": step.mode}
    if isinstance(step, RemoveDir):
        return {"rmdir": str(step.path)}
    encoded: dict[str, Any] = {
        "run": list(step.argv),
        "may_fail": step.may_fail,
        "stdin_base64": base64.b64encode(step.stdin).decode(),
    }
    if step.timeout is not None:
        encoded["timeout"] = step.timeout
    return encoded


def decode_step(raw: dict[str, Any]) -> Step:
    """Raises ValueError, KeyError or TypeError on a malformed record (journal.py turns
    them into one TakeoverError)."""
    if "write" in raw:
        mtime = raw["mtime_ns"]
        return WriteFile(
            Path(str(raw["write"])),
            base64.b64decode(raw["data_base64"], validate=True),
            int(raw["mode"]),
            int(raw["uid"]),
            int(raw["gid"]),
            None if mtime is None else int(mtime),
        )
    if "link" in raw:
        return MakeSymlink(
            Path(str(raw["link"])), str(raw["target"]), int(raw["uid"]), int(raw["gid"])
        )
    if "remove" in raw:
        return Remove(Path(str(raw["remove"])))
    if "mkdir" in raw:
        return MakeDir(Path(str(raw["mkdir"])), int(raw["mode"]))
    if "rmdir" in raw:
        return RemoveDir(Path(str(raw["rmdir"])))
    argv = raw["run"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"run step {argv!r}")
    timeout = raw.get("timeout")
    return Run(
        tuple(argv),
        bool(raw["may_fail"]),
        base64.b64decode(raw.get("stdin_base64", ""), validate=True),
        None if timeout is None else float(timeout),
    )
