"""install / uninstall: the plans as data, rendered from facts with no system (issue 9)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from stubresolver import __version__
from stubresolver.config import parse_config
from stubresolver.errors import InstallError
from stubresolver.install import shipped as shipped_files
from stubresolver.install.layout import HOOKS, Layout
from stubresolver.install.manifest import Claim, Manifest, digest
from stubresolver.install.plan import InstallPlan, Source, install_plan, uninstall_plan
from stubresolver.install.probe import Facts, file_paths, wanted_dirs
from stubresolver.install.shipped import for_prefix, render_config
from stubresolver.install.steps import DeleteAccount, RemoveTree, RestoreDns
from stubresolver.takeover.original import Original
from stubresolver.takeover.steps import MakeDir, MakeSymlink, Remove, RemoveDir, Run, WriteFile

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = Layout()
SHIPPED = shipped_files.load()
SOURCE = Source("/tmp/stubresolver-0.1.0-py3-none-any.whl", __version__, "/usr/bin/python3")


def fresh(layout: Layout = LAYOUT, *, nm: bool = False) -> Facts:
    """A Debian box with systemd and nothing of ours: /etc, /var/lib, /usr/local/... exist."""
    dirs = wanted_dirs(layout, nm)
    ours = {layout.manifest.parent, layout.config.parent, layout.hooks_dir}
    return Facts(
        layout=layout,
        manifest=None,
        user=False,
        group=False,
        prefix="absent",
        installed_version=None,
        existing=frozenset(d for d in dirs if d not in ours),
        files={p: Original(p, "absent") for p in file_paths(layout, nm)},
        network_manager=nm,
        enabled=False,
        active=False,
        state_dir=Path("/var/lib/stubresolver"),
    )


def after(facts: Facts, plan: InstallPlan) -> Facts:
    """The facts once ``plan`` has run: what a second probe would find."""
    files = dict(facts.files)
    record = facts.manifest or Manifest()
    existing = set(facts.existing)
    for planned in plan.steps:
        step = planned.step
        if isinstance(step, WriteFile):
            files[step.path] = Original(step.path, "file", step.data, None, step.mode, 0, 0)
        elif isinstance(step, MakeSymlink):
            files[step.path] = Original(step.path, "symlink", b"", step.target, 0o777)
        elif isinstance(step, MakeDir):
            existing.add(step.path)
        if planned.claim is not None:
            record = record.with_claim(planned.claim)
    return replace(
        facts,
        manifest=record,
        user=True,
        group=True,
        prefix="venv",
        installed_version=__version__,
        existing=frozenset(existing),
        files=files,
        enabled=True,
        active=True,
    )


def described(plan: InstallPlan) -> list[str]:
    return [p.step.describe() for p in plan.steps]


def test_fresh_install_plan_in_order_with_a_claim_for_everything_it_creates() -> None:
    plan = install_plan(fresh(), SOURCE, SHIPPED)
    steps = [p.step for p in plan.steps]
    assert steps[:3] == [
        MakeDir(Path("/var/lib/stubresolver"), 0o700),  # the manifest's, root only
        MakeDir(Path("/etc/stubresolver"), 0o755),
        MakeDir(Path("/usr/local/lib/stubresolver"), 0o755),
    ]
    assert steps[3] == Run(("/usr/bin/python3", "-m", "venv", "/opt/stubresolver"))
    pip = steps[4]
    assert isinstance(pip, Run) and pip.argv[:4] == (
        "/opt/stubresolver/bin/python",
        "-m",
        "pip",
        "install",
    )
    assert pip.argv[-1] == SOURCE.spec and pip.timeout is not None and pip.timeout >= 300
    assert steps[5] == Run(("groupadd", "--system", "stubresolver"))
    useradd = steps[6]
    assert isinstance(useradd, Run) and useradd.argv[0] == "useradd"
    for flag in ("--system", "--no-create-home", "--gid"):
        assert flag in useradd.argv
    assert useradd.argv[useradd.argv.index("--shell") + 1] == "/usr/sbin/nologin"
    written = {s.path: s for s in steps if isinstance(s, WriteFile)}
    assert written[LAYOUT.config].data == render_config(SHIPPED.config_example, "stubresolver")
    assert written[LAYOUT.config].mode == 0o644
    assert written[LAYOUT.unit].data == (ROOT / "packaging/stubresolver.service").read_bytes()
    for name in HOOKS:
        hook = written[LAYOUT.hooks_dir / name]
        assert hook.data == (ROOT / "packaging/hooks" / name).read_bytes() and hook.mode == 0o755
    assert all((s.uid, s.gid) == (0, 0) for s in written.values())
    assert LAYOUT.dispatcher not in written  # no /etc/NetworkManager
    assert MakeSymlink(LAYOUT.command_link, "/opt/stubresolver/bin/stubresolver") in steps
    assert steps[-2:] == [
        Run(("systemctl", "daemon-reload")),
        Run(("systemctl", "enable", "--now", "stubresolver")),
    ]
    claims = {p.claim for p in plan.steps if p.claim is not None}
    assert Claim("venv", "/opt/stubresolver") in claims
    assert {Claim("user", "stubresolver"), Claim("group", "stubresolver")} <= claims
    assert Claim("file", str(LAYOUT.config), digest(written[LAYOUT.config].data)) in claims
    assert Claim("dir", "/etc/stubresolver") in claims and plan.notes == ()


def test_network_manager_present_gets_the_dispatcher_script_owned_by_root() -> None:
    plan = install_plan(fresh(nm=True), SOURCE, SHIPPED)
    (hook,) = [
        p.step
        for p in plan.steps
        if isinstance(p.step, WriteFile) and p.step.path == LAYOUT.dispatcher
    ]
    assert isinstance(hook, WriteFile)
    assert (hook.mode, hook.uid, hook.gid) == (0o755, 0, 0)
    assert hook.data == (ROOT / "packaging/hooks/90-stubresolver").read_bytes()


def test_a_second_run_plans_nothing() -> None:
    first = fresh(nm=True)
    assert install_plan(after(first, install_plan(first, SOURCE, SHIPPED)), SOURCE, SHIPPED) == (
        InstallPlan((), ())
    )


def test_an_existing_config_is_never_overwritten_and_said_so() -> None:
    facts = fresh()
    mine = Original(LAYOUT.config, "file", b"upstreams: [udp://10.9.0.1]\n", None, 0o600)
    facts = replace(facts, files={**facts.files, LAYOUT.config: mine})
    plan = install_plan(facts, SOURCE, SHIPPED)
    assert not any(
        isinstance(p.step, WriteFile) and p.step.path == LAYOUT.config for p in plan.steps
    )
    assert plan.notes == (f"kept the existing {LAYOUT.config} (never overwritten)",)
    # ... and on every later run, even once install's manifest exists.
    again = install_plan(after(facts, plan), SOURCE, SHIPPED)
    assert again.steps == ()


def test_a_new_version_reinstalls_into_the_venv_and_restarts_the_running_service() -> None:
    first = fresh()
    installed = replace(
        after(first, install_plan(first, SOURCE, SHIPPED)), installed_version="0.0.9"
    )
    assert described(install_plan(installed, SOURCE, SHIPPED)) == [
        "run /opt/stubresolver/bin/python -m pip install --disable-pip-version-check "
        + SOURCE.spec,
        "run systemctl restart stubresolver",
    ]


def test_a_stopped_service_is_started_again_and_an_edited_unit_rewritten() -> None:
    first = fresh()
    installed = after(first, install_plan(first, SOURCE, SHIPPED))
    edited = Original(LAYOUT.unit, "file", b"[Service]\n", None, 0o644)
    broken = replace(installed, active=False, files={**installed.files, LAYOUT.unit: edited})
    assert described(install_plan(broken, SOURCE, SHIPPED)) == [
        f"write {LAYOUT.unit} ({len(SHIPPED.unit)} bytes, mode 0644)",
        "run systemctl daemon-reload",
        "run systemctl enable --now stubresolver",
    ]


def test_a_prefix_that_is_not_a_venv_is_refused() -> None:
    with pytest.raises(InstallError, match="not a virtualenv"):
        install_plan(replace(fresh(), prefix="other"), SOURCE, SHIPPED)


def test_another_prefix_is_written_into_the_unit_and_the_hooks() -> None:
    layout = Layout(prefix=Path("/srv/sr"))
    plan = install_plan(fresh(layout), SOURCE, SHIPPED)
    written = {p.step.path: p.step.data for p in plan.steps if isinstance(p.step, WriteFile)}
    unit = written[layout.unit].decode()
    assert "ExecStart=/srv/sr/bin/stubresolver run --config /etc/stubresolver/config.yaml" in unit
    assert "/opt/stubresolver/" not in unit
    assert b"/srv/sr/bin/stubresolver" in written[layout.hooks_dir / "openvpn-updown.sh"]
    assert for_prefix(SHIPPED.unit, Path("/opt/stubresolver")) == SHIPPED.unit


def test_the_installed_config_is_the_example_with_takeover_auto_and_the_account() -> None:
    text = render_config(SHIPPED.config_example, "stubresolver")
    config = parse_config(yaml.safe_load(text))
    assert config.takeover.mode == "auto"
    assert (config.server.user, config.server.group) == ("stubresolver", "stubresolver")
    assert config.guard.enabled
    example = parse_config(yaml.safe_load(SHIPPED.config_example))
    assert example.takeover.mode == "off"  # the example itself stays safe to run anywhere
    assert not example.guard.enabled
    # Every other line is the example's: its comments document the installed file.
    changed = [
        (a, b)
        for a, b in zip(SHIPPED.config_example.splitlines(), text.splitlines(), strict=True)
        if a != b
    ]
    assert len(changed) == 4
    with pytest.raises(InstallError, match=r"takeover\.mode"):
        render_config(b"takeover:\n  mode: file\n", "stubresolver")


def test_package_data_is_packaging_s_bytes() -> None:
    assert SHIPPED.unit == (ROOT / "packaging/stubresolver.service").read_bytes()
    assert SHIPPED.config_example == (ROOT / "config.example.yaml").read_bytes()
    for name in HOOKS:
        assert SHIPPED.hook(name) == (ROOT / "packaging/hooks" / name).read_bytes()


def test_uninstall_stops_restores_then_removes_only_its_claims_newest_first() -> None:
    first = fresh(nm=True)
    installed = after(first, install_plan(first, SOURCE, SHIPPED))
    plan = uninstall_plan(installed)
    steps = [p.step for p in plan.steps]
    assert steps[:2] == [
        Run(("systemctl", "disable", "--now", "stubresolver")),
        RestoreDns(Path("/var/lib/stubresolver")),
    ]
    removed = [s.path for s in steps if isinstance(s, Remove)]
    assert set(removed) == {
        LAYOUT.config, LAYOUT.unit, LAYOUT.dispatcher, LAYOUT.command_link, LAYOUT.manifest,
        *(LAYOUT.hooks_dir / name for name in HOOKS),
    }  # fmt: skip
    assert removed[-1] == LAYOUT.manifest
    reload = steps.index(Run(("systemctl", "daemon-reload")))
    assert steps.index(Remove(LAYOUT.unit)) < reload
    assert reload == steps.index(RemoveTree(Path("/opt/stubresolver"))) - 1
    users = [s for s in steps if isinstance(s, DeleteAccount)]
    assert users == [DeleteAccount("user", "stubresolver"), DeleteAccount("group", "stubresolver")]
    dirs = [s.path for s in steps if isinstance(s, RemoveDir)]
    assert dirs[: len(dirs)] == sorted(dirs, key=lambda d: len(d.parts), reverse=True)
    assert set(dirs) == {Path("/var/lib/stubresolver"), Path("/etc/stubresolver"), LAYOUT.hooks_dir}
    assert isinstance(steps[-len(dirs) - 1], Remove)  # dirs go after the manifest
    assert plan.notes == ()


def test_uninstall_keeps_an_edited_config_and_a_pre_existing_one_unless_purged() -> None:
    first = fresh()
    installed = after(first, install_plan(first, SOURCE, SHIPPED))
    edited = Original(LAYOUT.config, "file", b"upstreams: [vpn]\n", None, 0o644)
    facts = replace(installed, files={**installed.files, LAYOUT.config: edited})
    kept = uninstall_plan(facts)
    assert Remove(LAYOUT.config) not in [p.step for p in kept.steps]
    assert kept.notes == (f"kept {LAYOUT.config}: changed since install (--purge removes it)",)
    assert Remove(LAYOUT.config) in [p.step for p in uninstall_plan(facts, purge=True).steps]

    mine = replace(first, files={**first.files, LAYOUT.config: edited})
    installed = after(mine, install_plan(mine, SOURCE, SHIPPED))
    kept = uninstall_plan(installed)
    assert Remove(LAYOUT.config) not in [p.step for p in kept.steps]
    assert kept.notes == (
        f"kept {LAYOUT.config}: it was there before install (--purge removes it)",
    )
    assert Remove(LAYOUT.config) in [p.step for p in uninstall_plan(installed, purge=True).steps]


def test_uninstall_keeps_a_group_install_did_not_create() -> None:
    first = replace(fresh(), group=True)
    plan = uninstall_plan(after(first, install_plan(first, SOURCE, SHIPPED)))
    accounts = [p.step for p in plan.steps if isinstance(p.step, DeleteAccount)]
    assert accounts == [DeleteAccount("user", "stubresolver", keep_group=True)]
    assert accounts[0].commands[0] == ("usermod", "--gid", "65534", "stubresolver")


def test_uninstall_without_a_manifest_still_stops_and_restores_and_removes_nothing() -> None:
    facts = replace(fresh(), enabled=True, active=True)
    plan = uninstall_plan(facts)
    assert [p.step for p in plan.steps] == [
        Run(("systemctl", "disable", "--now", "stubresolver")),
        RestoreDns(Path("/var/lib/stubresolver")),
    ]
    assert plan.notes == (f"no install manifest at {LAYOUT.manifest}: nothing else to remove",)


def test_manifest_claims_replace_by_kind_and_target() -> None:
    record = Manifest().with_claim(Claim("file", "/x", "a")).with_claim(Claim("user", "u"))
    record = record.with_claim(Claim("file", "/x", "b"))
    assert record.claims == (Claim("user", "u"), Claim("file", "/x", "b"))
    assert record.find("file", "/x") == Claim("file", "/x", "b")
    assert record.without(Claim("user", "u")).claims == (Claim("file", "/x", "b"),)
