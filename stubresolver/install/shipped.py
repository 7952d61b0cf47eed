"""The files install writes, read from the package data (stubresolver/shipped/, links to
packaging/ and config.example.yaml) and rendered for this install. Rendering is pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from stubresolver.errors import InstallError
from stubresolver.install.layout import DEFAULT_PREFIX, HOOKS


@dataclass(frozen=True, slots=True)
class Shipped:
    unit: bytes
    config_example: bytes
    hooks: tuple[tuple[str, bytes], ...]  # (name, bytes) in HOOKS order

    def hook(self, name: str) -> bytes:
        return dict(self.hooks)[name]


def load() -> Shipped:
    """Raises InstallError when the package data is missing (a broken build)."""
    base = resources.files("stubresolver.shipped")
    try:
        return Shipped(
            unit=base.joinpath("stubresolver.service").read_bytes(),
            config_example=base.joinpath("config.example.yaml").read_bytes(),
            hooks=tuple((name, base.joinpath("hooks", name).read_bytes()) for name in HOOKS),
        )
    except OSError as exc:
        raise InstallError(f"this build of stubresolver lacks its package data: {exc}") from None


def for_prefix(text: bytes, prefix: Path) -> bytes:
    """The unit and the hooks name /opt/stubresolver/bin/stubresolver; another --prefix
    is written into them instead."""
    if prefix == DEFAULT_PREFIX:
        return text
    return text.replace(f"{DEFAULT_PREFIX}/".encode(), f"{prefix}/".encode())


# The lines of config.example.yaml install changes; each must be found exactly once, so an
# edit of the example that moves them fails the unit test instead of installing a config
# that silently keeps takeover off.
_TAKEOVER_MODE = re.compile(rb'^(  mode: )"off"( *#.*)?$', re.MULTILINE)
_ACCOUNT_LINE = rb"^  # (user|group): stubresolver$"
_GUARD_ENABLED = re.compile(rb"^(  enabled: )false$", re.MULTILINE)


def render_config(example: bytes, account: str) -> bytes:
    """config.example.yaml with takeover.mode auto (the installed service owns the system's
    DNS), the guard on (no other program's DNS leaves outside the tunnel) and server.user /
    server.group set to the service account."""
    text, count = _TAKEOVER_MODE.subn(lambda m: m.group(1) + b"auto" + (m.group(2) or b""), example)
    if count != 1:
        raise InstallError('config.example.yaml: no single `takeover.mode: "off"` line')
    text, count = _GUARD_ENABLED.subn(b"\\1true", text)
    if count != 1:
        raise InstallError("config.example.yaml: no single `guard.enabled: false` line")
    text, count = re.subn(
        _ACCOUNT_LINE, lambda m: b"  " + m.group(1) + b": " + account.encode(), text, flags=re.M
    )
    if count != 2:
        raise InstallError("config.example.yaml: no commented server.user/server.group lines")
    return text
