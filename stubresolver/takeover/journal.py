"""The takeover journal: what was found, the restore plan, and which apply steps are done.
It is written atomically under ``state_dir`` before the first change and again after each
step (issue 9). Once resolv.conf is ours it is the only copy of the original, so it is
fsynced like the file itself, and root-only (0600 in a 0700 directory)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stubresolver.errors import TakeoverError
from stubresolver.takeover import fsutil
from stubresolver.takeover.backends import Found
from stubresolver.takeover.original import Original
from stubresolver.takeover.steps import Step, decode_step, encode_step

JOURNAL_NAME = "takeover.json"
_VERSION = 2


@dataclass(frozen=True, slots=True)
class Journal:
    manager: str  # the backend that took over
    found: Found  # the originals and facts from before the first change
    apply: tuple[str, ...]  # the apply steps, described
    restore: tuple[Step, ...]  # rendered before the first change, run as recorded
    done: int = 0  # how many apply steps completed

    def completed(self, count: int) -> Journal:
        return replace(self, done=count)


def journal_path(state_dir: Path) -> Path:
    return state_dir / JOURNAL_NAME


def _encode_original(o: Original) -> dict[str, Any]:
    return {
        "path": str(o.path),
        "kind": o.kind,
        "data_base64": base64.b64encode(o.data).decode(),
        "link_target": o.link_target,
        "mode": o.mode,
        "uid": o.uid,
        "gid": o.gid,
        "mtime_ns": o.mtime_ns,
    }


def _decode_original(raw: dict[str, Any]) -> Original:
    kind = raw["kind"]
    if kind not in ("file", "symlink", "absent"):
        raise ValueError(f"original kind {kind!r}")
    target = raw["link_target"]
    if kind == "symlink" and not isinstance(target, str):
        raise ValueError("a symlink original without its target")
    return Original(
        path=Path(str(raw["path"])),
        kind=kind,
        data=base64.b64decode(raw["data_base64"], validate=True),
        link_target=target,
        mode=int(raw["mode"]),
        uid=int(raw["uid"]),
        gid=int(raw["gid"]),
        mtime_ns=int(raw["mtime_ns"]),
    )


def encode(journal: Journal) -> bytes:
    doc = {
        "version": _VERSION,
        "manager": journal.manager,
        "originals": [_encode_original(o) for o in journal.found.originals],
        "facts": dict(journal.found.facts),
        "apply": [{"step": text, "done": i < journal.done} for i, text in enumerate(journal.apply)],
        "restore": [encode_step(step) for step in journal.restore],
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def decode(data: bytes, where: Path) -> Journal:
    """Raises TakeoverError: a journal we cannot read is never guessed around."""
    try:
        doc = json.loads(data)
        if doc.get("version") != _VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {_VERSION}")
        originals = tuple(_decode_original(raw) for raw in doc["originals"])
        facts = tuple((str(k), str(v)) for k, v in dict(doc["facts"]).items())
        apply = tuple(str(s["step"]) for s in doc["apply"])
        done = sum(1 for s in doc["apply"] if s["done"] is True)
        restore = tuple(decode_step(raw) for raw in doc["restore"])
        return Journal(str(doc["manager"]), Found(originals, facts), apply, restore, done)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise TakeoverError(f"takeover journal {where} is unreadable ({exc})") from None


def read(state_dir: Path) -> Journal | None:
    """The journal, or None when there is none (nothing was taken over)."""
    path = journal_path(state_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TakeoverError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode(data, path)


def write(state_dir: Path, journal: Journal) -> None:
    """Atomic and durable (tmp, fsync, rename, fsync dir)."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fsutil.replace_with_file(journal_path(state_dir), encode(journal), 0o600)
    except OSError as exc:
        raise TakeoverError(
            f"cannot write the takeover journal in {state_dir}: {exc.strerror or exc}"
        ) from None


def remove(state_dir: Path) -> None:
    try:
        fsutil.remove(journal_path(state_dir))
    except OSError as exc:
        raise TakeoverError(f"cannot remove {journal_path(state_dir)}: {exc}") from None
