"""What `stubresolver install` created, so `uninstall` removes exactly that and nothing that
was there before. Written atomically after every step that creates something (an install
cut short still leaves a true record); root-only, like the takeover journal beside it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast, get_args

from stubresolver.errors import InstallError
from stubresolver.takeover import fsutil

ClaimKind = Literal["dir", "venv", "file", "link", "user", "group"]
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Claim:
    """One thing install created: a path (``dir``, ``venv``, ``file``, ``link``) or an
    account (``user``, ``group``). ``sha256`` is what a ``file`` held when we wrote it:
    uninstall removes it only while it still does (an edited config is the user's)."""

    kind: ClaimKind
    target: str
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class Manifest:
    claims: tuple[Claim, ...] = ()

    def with_claim(self, claim: Claim) -> Manifest:
        kept = tuple(c for c in self.claims if (c.kind, c.target) != (claim.kind, claim.target))
        return replace(self, claims=(*kept, claim))

    def without(self, claim: Claim) -> Manifest:
        key = (claim.kind, claim.target)
        return replace(self, claims=tuple(c for c in self.claims if (c.kind, c.target) != key))

    def find(self, kind: ClaimKind, target: str) -> Claim | None:
        return next((c for c in self.claims if (c.kind, c.target) == (kind, target)), None)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(path: Path) -> Manifest | None:
    """None when there is none (nothing installed, or installed by hand)."""
    try:
        raw = json.loads(path.read_bytes())
        if raw.get("version") != _VERSION:
            raise InstallError(f"{path}: unknown manifest version {raw.get('version')!r}")
        claims = []
        for item in raw["claims"]:
            kind = str(item["kind"])
            if kind not in get_args(ClaimKind):
                raise InstallError(f"{path}: unknown claim kind {kind!r}")
            claims.append(Claim(cast(ClaimKind, kind), str(item["target"]), str(item["sha256"])))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InstallError(f"cannot read the install manifest {path}: {exc}") from None
    return Manifest(tuple(claims))


def write(path: Path, manifest: Manifest) -> None:
    body = {
        "version": _VERSION,
        "claims": [
            {"kind": c.kind, "target": c.target, "sha256": c.sha256} for c in manifest.claims
        ],
    }
    data = (json.dumps(body, indent=2) + "\n").encode()
    try:
        fsutil.replace_with_file(path, data, 0o600, owner=(0, 0))
    except OSError as exc:
        raise InstallError(f"cannot write the install manifest {path}: {exc}") from None
