"""The install and uninstall plans, rendered from the probed facts as data (STYLE.md 7):
pure, so each is unit-tested without a system. A step is planned only where the system
differs from the installed state: a second install plans nothing and says so.

Each planned step may carry a manifest claim (recorded once the step is done) or release
(dropped once it is done): uninstall removes only what a claim names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stubresolver.errors import InstallError
from stubresolver.install.layout import HOOKS, NM_DISPATCHER_HOOK, UNIT_NAME
from stubresolver.install.manifest import Claim, Manifest, digest
from stubresolver.install.probe import Facts, wanted_dirs
from stubresolver.install.shipped import Shipped, for_prefix, render_config
from stubresolver.install.steps import DeleteAccount, InstallStep, RemoveTree, RestoreDns
from stubresolver.takeover.steps import MakeDir, MakeSymlink, Remove, RemoveDir, Run, WriteFile

#: pip may download the dependencies: much longer than a manager's tool gets.
PIP_TIMEOUT = 900.0


@dataclass(frozen=True, slots=True)
class Planned:
    step: InstallStep
    claim: Claim | None = None  # recorded in the manifest once the step is done
    release: Claim | None = None  # dropped from it once the step is done


@dataclass(frozen=True, slots=True)
class Source:
    """What pip installs into the venv, and how."""

    spec: str  # a wheel, an sdist, a source directory or a requirement
    version: str  # the version that spec installs (this running stubresolver's)
    python: str  # the interpreter that makes the venv
    pip_options: tuple[str, ...] = ()
    system_site_packages: bool = False


@dataclass(frozen=True, slots=True)
class InstallPlan:
    steps: tuple[Planned, ...]
    notes: tuple[str, ...]  # what is left alone, and why


def _file_step(facts: Facts, path: Path, data: bytes, mode: int) -> Planned | None:
    now = facts.files[path]
    if now.kind == "file" and (now.data, now.mode, now.uid, now.gid) == (data, mode, 0, 0):
        return None
    return Planned(WriteFile(path, data, mode), claim=Claim("file", str(path), digest(data)))


def install_plan(facts: Facts, source: Source, shipped: Shipped) -> InstallPlan:
    """Raises InstallError when the prefix holds something that is not a virtualenv."""
    layout = facts.layout
    if facts.prefix == "other":
        raise InstallError(
            f"{layout.prefix} exists and is not a virtualenv: remove it or pass another --prefix"
        )
    notes: list[str] = []
    steps = [
        Planned(MakeDir(d, 0o700 if d == layout.manifest.parent else 0o755), Claim("dir", str(d)))
        for d in wanted_dirs(layout, facts.network_manager)
        if d not in facts.existing
    ]
    venv = _venv_steps(facts, source)
    steps += venv + _account_steps(facts)
    steps += _config_steps(facts, shipped, notes)
    unit = _file_step(facts, layout.unit, for_prefix(shipped.unit, layout.prefix), 0o644)
    steps += [s for s in (unit, *_hook_steps(facts, shipped)) if s is not None]
    steps += _link_steps(facts, notes)
    if unit is not None:
        steps.append(Planned(Run(("systemctl", "daemon-reload"))))
    if not (facts.enabled and facts.active):
        steps.append(Planned(Run(("systemctl", "enable", "--now", UNIT_NAME))))
    elif venv or unit is not None:  # running the old code or the old unit
        steps.append(Planned(Run(("systemctl", "restart", UNIT_NAME))))
    return InstallPlan(tuple(steps), tuple(notes))


def _venv_steps(facts: Facts, source: Source) -> list[Planned]:
    layout = facts.layout
    steps = []
    if facts.prefix == "absent":
        argv = [source.python, "-m", "venv"]
        argv += ["--system-site-packages"] if source.system_site_packages else []
        steps.append(Planned(Run((*argv, str(layout.prefix))), Claim("venv", str(layout.prefix))))
    if steps or facts.installed_version != source.version:
        pip = (str(layout.python), "-m", "pip", "install", "--disable-pip-version-check")
        steps.append(Planned(Run((*pip, *source.pip_options, source.spec), timeout=PIP_TIMEOUT)))
    return steps


def _account_steps(facts: Facts) -> list[Planned]:
    account = facts.layout.account
    steps = []
    if not facts.group:
        steps.append(Planned(Run(("groupadd", "--system", account)), Claim("group", account)))
    if not facts.user:
        useradd = ("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                   "--shell", "/usr/sbin/nologin", "--gid", account,
                   "--comment", "stubresolver", account)  # fmt: skip
        steps.append(Planned(Run(useradd), Claim("user", account)))
    return steps


def _config_steps(facts: Facts, shipped: Shipped, notes: list[str]) -> list[Planned]:
    """The config only where there is none: an existing one is the admin's, never rewritten."""
    path = facts.layout.config
    if facts.files[path].kind == "absent":
        data = render_config(shipped.config_example, facts.layout.account)
        return [Planned(WriteFile(path, data, 0o644), Claim("file", str(path), digest(data)))]
    if facts.manifest is None or facts.manifest.find("file", str(path)) is None:
        notes.append(f"kept the existing {path} (never overwritten)")
    return []


def _hook_steps(facts: Facts, shipped: Shipped) -> list[Planned | None]:
    layout = facts.layout
    wanted = [(layout.hooks_dir / name, shipped.hook(name)) for name in HOOKS]
    if facts.network_manager:
        # NetworkManager runs only dispatcher scripts owned by root and not writable by others.
        wanted.append((layout.dispatcher, shipped.hook(NM_DISPATCHER_HOOK)))
    return [
        _file_step(facts, path, for_prefix(data, layout.prefix), 0o755) for path, data in wanted
    ]


def _link_steps(facts: Facts, notes: list[str]) -> list[Planned]:
    layout = facts.layout
    link = facts.files[layout.command_link]
    if link.kind == "absent":
        step = MakeSymlink(layout.command_link, str(layout.command))
        return [Planned(step, Claim("link", str(layout.command_link)))]
    if link.link_target != str(layout.command):
        notes.append(f"left {layout.command_link} alone: it is not install's link")
    return []


def uninstall_plan(facts: Facts, purge: bool = False) -> InstallPlan:
    """Stop the service, restore DNS, then undo every claim, newest first. A file that no
    longer holds what install wrote (an edited config) stays unless ``purge``."""
    layout = facts.layout
    recorded = facts.manifest or Manifest()
    steps: list[Planned] = []
    notes: list[str] = []
    if facts.enabled or facts.active:
        # Stopped first: a running daemon's watchdog would take back a restored resolv.conf,
        # and with restore_on_exit its clean stop restores it already.
        steps.append(Planned(Run(("systemctl", "disable", "--now", UNIT_NAME))))
    steps.append(Planned(RestoreDns(facts.state_dir)))

    unit_removed = False
    claims = list(reversed(recorded.claims))
    for claim in (c for c in claims if c.kind in ("file", "link")):
        path = Path(claim.target)
        now = facts.files[path]
        if now.kind == "absent":
            continue
        ours = (
            claim.kind == "file" and now.kind == "file" and digest(now.data) == claim.sha256
        ) or (
            claim.kind == "link"
            and now.kind == "symlink"
            and now.link_target == str(layout.command)
        )
        if ours or purge:
            steps.append(Planned(Remove(path), release=claim))
            unit_removed = unit_removed or path == layout.unit
        else:
            notes.append(f"kept {path}: changed since install (--purge removes it)")
    config_claimed = recorded.find("file", str(layout.config)) is not None
    if purge and not config_claimed and facts.files[layout.config].kind != "absent":
        steps.append(Planned(Remove(layout.config)))
    elif not config_claimed and facts.files[layout.config].kind != "absent":
        notes.append(f"kept {layout.config}: it was there before install (--purge removes it)")
    if unit_removed:
        steps.append(Planned(Run(("systemctl", "daemon-reload"))))

    for claim in claims:
        if claim.kind == "venv":
            steps.append(Planned(RemoveTree(Path(claim.target)), release=claim))
    # The user first: groupdel refuses to remove a user's primary group.
    group_ours = recorded.find("group", layout.account) is not None
    steps += [
        Planned(DeleteAccount("user", c.target, keep_group=not group_ours), release=c)
        for c in claims
        if c.kind == "user"
    ]
    steps += [
        Planned(DeleteAccount("group", c.target), release=c) for c in claims if c.kind == "group"
    ]
    if facts.manifest is None:
        notes.append(f"no install manifest at {layout.manifest}: nothing else to remove")
    else:
        steps.append(Planned(Remove(layout.manifest)))
    # Last, deepest first, each only if empty: what install made for its files.
    dirs = [Path(c.target) for c in claims if c.kind == "dir"]
    for directory in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        steps.append(Planned(RemoveDir(directory)))
    return InstallPlan(tuple(steps), tuple(notes))
