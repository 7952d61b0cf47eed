"""What is on the system now, for plan.py. Only reads: files, the account databases, the
prefix's own `stubresolver --version` and `systemctl is-enabled / is-active`."""

from __future__ import annotations

import dataclasses
import grp
import pwd
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stubresolver.config import Config, load_config
from stubresolver.errors import ConfigError, InstallError, TakeoverError
from stubresolver.install import manifest
from stubresolver.install.layout import HOOKS, UNIT_NAME, Layout
from stubresolver.install.manifest import Manifest
from stubresolver.takeover.original import Original, inspect

PrefixKind = Literal["absent", "venv", "other"]
PROBE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Facts:
    layout: Layout
    manifest: Manifest | None
    user: bool  # the account exists
    group: bool
    prefix: PrefixKind
    installed_version: str | None  # what `<prefix>/bin/stubresolver --version` says
    existing: frozenset[Path]  # which of the directories install may need exist
    files: Mapping[Path, Original]  # every file install writes or once wrote, as found
    network_manager: bool
    enabled: bool  # systemctl is-enabled
    active: bool  # systemctl is-active
    state_dir: Path  # the takeover journal's directory, from the installed config


def wanted_dirs(layout: Layout, network_manager: bool) -> list[Path]:
    """The directories install's files go in, parents first."""
    dirs = [
        layout.manifest.parent,
        layout.prefix.parent,
        layout.config.parent,
        layout.unit.parent,
        layout.hooks_dir,
        layout.command_link.parent,
    ]
    if network_manager:
        dirs.append(layout.dispatcher.parent)
    out: list[Path] = []
    for d in dirs:
        for p in (*reversed(d.parents), d):
            if p not in out:
                out.append(p)
    return out


def file_paths(layout: Layout, network_manager: bool) -> list[Path]:
    paths = [layout.config, layout.unit, layout.command_link]
    paths += [layout.hooks_dir / name for name in HOOKS]
    if network_manager:
        paths.append(layout.dispatcher)
    return paths


def probe(layout: Layout, *, systemctl: bool = True) -> Facts:
    """Raises InstallError for what cannot be read. ``systemctl`` False (a dry run on a
    machine without systemd) takes the service as disabled and stopped."""
    recorded = manifest.read(layout.manifest)
    network_manager = layout.network_manager.is_dir()
    paths = file_paths(layout, network_manager)
    if recorded is not None:  # and what an earlier install wrote (maybe with NM then)
        paths += [Path(c.target) for c in recorded.claims if c.kind in ("file", "link")]
    files = {}
    for path in paths:
        try:
            files[path] = inspect(path)
        except TakeoverError as exc:
            raise InstallError(str(exc)) from None
    enabled = active = False
    if systemctl:
        enabled = _systemctl("is-enabled")
        active = _systemctl("is-active")
    return Facts(
        layout=layout,
        manifest=recorded,
        user=_exists(pwd.getpwnam, layout.account),
        group=_exists(grp.getgrnam, layout.account),
        prefix=_prefix_kind(layout.prefix),
        installed_version=_version(layout.command),
        existing=frozenset(d for d in wanted_dirs(layout, network_manager) if d.is_dir()),
        files=files,
        network_manager=network_manager,
        enabled=enabled,
        active=active,
        state_dir=_state_dir(layout.config),
    )


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def _prefix_kind(prefix: Path) -> PrefixKind:
    if not prefix.exists():
        return "absent"
    if (prefix / "pyvenv.cfg").is_file():
        return "venv"
    return "other"


def _version(command: Path) -> str | None:
    if not command.exists():
        return None
    try:
        done = subprocess.run(
            [str(command), "--version"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # a broken venv: install it again
    words = done.stdout.split()
    return words[1] if done.returncode == 0 and len(words) == 2 else None


def _systemctl(verb: str) -> bool:
    try:
        done = subprocess.run(
            ["systemctl", verb, "--quiet", UNIT_NAME],
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise InstallError("systemctl not found: the service needs systemd") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"systemctl {verb} {UNIT_NAME}: no answer") from None
    return done.returncode == 0


def _state_dir(config_path: Path) -> Path:
    """The installed config's state_dir; the default when there is no readable config
    (the journal of a config that cannot be read was written under the default too, or
    never)."""
    try:
        config = load_config(config_path)
    except ConfigError:
        default = next(f.default for f in dataclasses.fields(Config) if f.name == "state_dir")
        assert isinstance(default, Path)
        return default
    return config.state_dir
