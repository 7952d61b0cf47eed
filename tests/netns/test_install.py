"""`stubresolver install` / `uninstall` for real (issue 9), in a private system
(testkit.privatesys): a copy of /etc, and /opt, /var/lib, /run and /usr/local of its own,
in a network namespace with only loopback. systemd is not PID 1 there, so systemctl is a
recording shim (testkit/systemctl_shim.py) that really starts the installed unit's
ExecStart and waits for its READY=1, and really stops it. pip installs offline from a
wheelhouse built from this tree. Asserted: every file in place with its mode and owner, the
account in the namespace's passwd only, the daemon running from the venv with the takeover
active, a second run that changes nothing, the wheel's package data equal to packaging/,
and an uninstall (by the installed command itself) that gives resolv.conf back byte for byte
and leaves every private directory as it was before; the host's own files untouched."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stubresolver.config import load_config
from stubresolver.install.shipped import render_config
from stubresolver.takeover.resolv_conf import is_ours
from testkit.privatesys import PrivateSystem, tools_missing

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = ("/opt", "/var/lib", "/run", "/usr/local")
ORIGINAL = b"# from DHCP\nnameserver 192.0.2.53\nsearch corp.example\n"
SHIPPED = {  # the wheel's copy -> the source of truth
    "stubresolver/shipped/stubresolver.service": "packaging/stubresolver.service",
    "stubresolver/shipped/hooks/openvpn-updown.sh": "packaging/hooks/openvpn-updown.sh",
    "stubresolver/shipped/hooks/90-stubresolver": "packaging/hooks/90-stubresolver",
    "stubresolver/shipped/config.example.yaml": "config.example.yaml",
}
# What useradd/userdel leave beside the account files (backups, the lock): not install's.
ACCOUNT_LITTER = {"passwd-", "group-", "shadow-", "gshadow-", ".pwd.lock"}


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This tree as a wheel and as an sdist, its dependencies and the build backend, so pip
    needs no network in the namespace (an sdist is built there, offline, from these)."""
    out = tmp_path_factory.mktemp("wheelhouse")
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)
    (backend,) = project["build-system"]["requires"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # One download for the dependencies and the backend; then both builds from a throwaway
    # venv holding that backend (the test venv's setuptools may be older), without pip's
    # isolated build environment.
    builder = tmp_path_factory.mktemp("builder")
    python = str(builder / "bin" / "python")
    build = (
        "from setuptools import build_meta as b; "
        f"b.build_sdist({str(out)!r}); b.build_wheel({str(out)!r})"
    )
    for argv in (
        [*pip, "download", "--only-binary", ":all:", "--dest", str(out),
         backend, *project["project"]["dependencies"]],
        [sys.executable, "-m", "venv", "--without-pip", str(builder)],
        [*pip, "--python", python, "install", "--no-index", "--find-links", str(out), backend],
        [python, "-c", build],
    ):  # fmt: skip
        subprocess.run(argv, check=True, timeout=300, capture_output=True, cwd=ROOT)
    return out


def our_wheel(wheelhouse: Path) -> Path:
    (wheel,) = wheelhouse.glob("stubresolver-*.whl")
    return wheel


def our_sdist(wheelhouse: Path) -> Path:
    (sdist,) = wheelhouse.glob("stubresolver-*.tar.gz")
    return sdist


def assert_shipped_is_packaging(site: Path) -> None:
    for member, source in SHIPPED.items():
        assert (site / member).read_bytes() == (ROOT / source).read_bytes(), member


@pytest.fixture
def system(tmp_path: Path, netns_ok: None) -> Iterator[PrivateSystem]:
    missing = tools_missing()
    if missing is not None:
        pytest.fail(f"install e2e cannot run: {missing}")
    shims = tmp_path / "shims"
    shims.mkdir()
    (tmp_path / "systemd").mkdir()
    wrapper = shims / "systemctl"
    wrapper.write_text(
        f"#!/bin/sh\nexec /usr/bin/python3 {ROOT / 'testkit' / 'systemctl_shim.py'} "
        f'{tmp_path / "systemd"} "$@"\n'
    )
    wrapper.chmod(0o755)
    with PrivateSystem(tmp_path, PRIVATE) as sysns:
        try:
            yield sysns
        finally:
            _stop_daemon(sysns)


def _stop_daemon(sysns: PrivateSystem) -> None:
    """A daemon the shim started and a failed test left running: stop it by its PID."""
    try:
        pid = int((sysns.tmp / "systemd" / "stubresolver.pid").read_text())
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stub(
    sysns: PrivateSystem, *args: str, command: str | None = None
) -> subprocess.CompletedProcess[str]:
    # sudo's secure_path, behind the shims: `stubresolver` is found as sudo would find it.
    path = f"{sysns.tmp / 'shims'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    argv = [command] if command else [sys.executable, "-m", "stubresolver"]
    return sysns.run(["env", f"PATH={path}", *argv, *args], timeout=300)


def calls(sysns: PrivateSystem) -> list[str]:
    try:
        lines = (sysns.tmp / "systemd" / "calls.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line for line in lines if not line.startswith(("is-enabled", "is-active"))]


def tree(top: Path, *, times: bool = False) -> dict[str, tuple[object, ...]]:
    """Every entry under ``top``: kind, mode, owner and content (or link target)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if name in ACCOUNT_LITTER:
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                body: object = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                body = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                body = None
            fact: tuple[object, ...] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                                        info.st_uid, info.st_gid, body)  # fmt: skip
            if times and not stat.S_ISDIR(info.st_mode):
                fact += (info.st_mtime_ns,)
            out[str(path.relative_to(top))] = fact
    return out


def private_trees(sysns: PrivateSystem, *, times: bool = False) -> dict[str, object]:
    tops = ["/etc", "/opt", "/var/lib", "/usr/local"]
    return {top: tree(sysns.root(top), times=times) for top in tops}


HOST_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/resolv.conf")
HOST_PATHS = ("/etc/stubresolver", "/etc/systemd/system/stubresolver.service",
              "/opt/stubresolver", "/var/lib/stubresolver", "/usr/local/lib/stubresolver",
              "/usr/local/bin/stubresolver", "/run/stubresolver")  # fmt: skip


def host_facts() -> dict[str, object]:
    facts: dict[str, object] = {}
    for name in HOST_FILES:
        path = Path(name)
        info = os.lstat(path)
        body = os.readlink(path) if stat.S_ISLNK(info.st_mode) else path.read_bytes()
        facts[name] = (body, info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns)
    for name in HOST_PATHS:
        facts[name] = os.path.lexists(name)
    return facts


def resolv_facts(path: Path) -> tuple[object, ...]:
    info = os.lstat(path)
    return (path.read_bytes(), stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
            info.st_uid, info.st_gid, info.st_mtime_ns)  # fmt: skip


def owner_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def status(sysns: PrivateSystem, prefix: str = "/opt/stubresolver") -> dict[str, Any]:
    done = sysns.run(
        [f"{prefix}/bin/stubresolver", "status", "--json",
         "--config", "/etc/stubresolver/config.yaml"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_install_runs_the_service_is_idempotent_and_uninstall_leaves_nothing(
    system: PrivateSystem, wheelhouse: Path
) -> None:
    host_before = host_facts()
    resolv = system.etc / "resolv.conf"
    resolv.write_bytes(ORIGINAL)
    resolv.chmod(0o640)
    os.chown(resolv, 0, 4)
    os.utime(resolv, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    original = resolv_facts(resolv)
    (system.etc / "NetworkManager" / "dispatcher.d").mkdir(parents=True)  # NM "is present"
    before = private_trees(system)
    assert "stubresolver" not in (system.etc / "passwd").read_text()

    wheel = our_wheel(wheelhouse)
    pip = ["--pip-option=--no-index", f"--pip-option=--find-links={wheelhouse}"]
    done = stub(system, "install", "--source", str(wheel), *pip)
    assert done.returncode == 0, done.stdout + done.stderr
    # The closing status is the installed daemon's, with the takeover active.
    assert "takeover: backend file owns /etc/resolv.conf" in done.stdout, done.stdout
    assert calls(system) == ["daemon-reload", "enable --now stubresolver"]
    print(done.stdout)

    # The daemon is the installed one, from the venv, started through the unit.
    pid = int((system.tmp / "systemd" / "stubresolver.pid").read_text())
    now = status(system)
    assert now["pid"] == pid and now["takeover"]["active"]
    assert now["guard"]["active"], now["guard"]  # the installed config turns the guard on
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"/opt/stubresolver/bin/stubresolver" in cmdline and b"run" in cmdline
    assert is_ours(resolv.read_bytes())

    # Files in place, with their modes and owners.
    etc = system.etc
    config = etc / "stubresolver" / "config.yaml"
    unit = etc / "systemd" / "system" / "stubresolver.service"
    hooks = system.root("/usr/local/lib/stubresolver")
    dispatcher = etc / "NetworkManager" / "dispatcher.d" / "90-stubresolver"
    example = (ROOT / "config.example.yaml").read_bytes()
    assert config.read_bytes() == render_config(example, "stubresolver")
    assert owner_mode(config) == (0, 0, 0o644)
    loaded = load_config(config)
    assert loaded.takeover.mode == "auto"
    assert (loaded.server.user, loaded.server.group) == ("stubresolver", "stubresolver")
    assert unit.read_bytes() == (ROOT / "packaging" / "stubresolver.service").read_bytes()
    assert owner_mode(unit) == (0, 0, 0o644)
    for name in ("openvpn-updown.sh", "90-stubresolver"):
        assert (hooks / name).read_bytes() == (ROOT / "packaging" / "hooks" / name).read_bytes()
        assert owner_mode(hooks / name) == (0, 0, 0o755)
    assert dispatcher.read_bytes() == (ROOT / "packaging/hooks/90-stubresolver").read_bytes()
    assert owner_mode(dispatcher) == (0, 0, 0o755)
    link = system.root("/usr/local/bin/stubresolver")
    assert os.readlink(link) == "/opt/stubresolver/bin/stubresolver"
    assert owner_mode(system.root("/var/lib/stubresolver")) == (0, 0, 0o700)
    assert owner_mode(system.root("/var/lib/stubresolver/install.json"))[2] == 0o600

    # The account exists in the namespace's copy of /etc only, and the service runs as it
    # (the config install wrote sets server.user and server.group).
    entry = system.run(["getent", "passwd", "stubresolver"], check=True).stdout.split(":")
    assert int(entry[2]) < 1000 and entry[6].strip() == "/usr/sbin/nologin"
    group = system.run(["getent", "group", "stubresolver"], check=True).stdout.split(":")
    assert now["privileges"]["dropped"] and now["privileges"]["uid"] == int(entry[2])
    uids = next(
        x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:")
    )
    assert uids.split()[1:] == [entry[2]] * 4
    control = os.lstat(system.root("/run/stubresolver/control.sock"))
    assert (stat.S_IMODE(control.st_mode), control.st_gid) == (0o660, int(group[2]))
    assert "stubresolver:" not in Path("/etc/passwd").read_text()
    assert "stubresolver:" not in Path("/etc/group").read_text()

    # The wheel's package data, and the venv's copy of it, are packaging/'s bytes.
    site = next(system.root("/opt/stubresolver/lib").glob("python3*/site-packages"))
    with zipfile.ZipFile(wheel) as whl:
        for member, source in SHIPPED.items():
            assert whl.read(member) == (ROOT / source).read_bytes(), member
    assert_shipped_is_packaging(site)

    # A second run changes nothing, and says so: by the installed command (on PATH through
    # its link), reading the unit, hooks and config from the installed wheel's package data.
    settled = private_trees(system, times=True)
    again = stub(system, "install", command="stubresolver")
    assert again.returncode == 0, again.stdout + again.stderr
    print(again.stdout)
    assert "nothing to change" in again.stdout
    assert "takeover: backend file owns /etc/resolv.conf" in again.stdout
    assert private_trees(system, times=True) == settled
    assert calls(system) == ["daemon-reload", "enable --now stubresolver"]
    assert status(system)["pid"] == pid

    # Uninstall, by the installed command itself: DNS back byte for byte, nothing left.
    gone = stub(system, "uninstall", command="/usr/local/bin/stubresolver")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    print(gone.stdout)
    assert calls(system)[-2:] == ["disable --now stubresolver", "daemon-reload"]
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert resolv_facts(resolv) == original
    assert private_trees(system) == before
    assert system.run(["getent", "passwd", "stubresolver"]).returncode == 2
    assert system.run(["getent", "group", "stubresolver"]).returncode == 2
    assert host_facts() == host_before


MY_CONFIG = b"""# the admin's own config, from before the install
listen: ["127.0.0.1:53"]
upstreams: [udp://10.8.0.1]
takeover: {mode: file}
"""


def test_install_keeps_an_existing_config_and_group_and_uninstall_keeps_them_too(
    system: PrivateSystem, wheelhouse: Path
) -> None:
    """From the sdist, another --prefix, a symlinked resolv.conf, a config and a group that
    were there before: install uses them and never rewrites them; uninstall puts the link
    back and keeps both; only --purge removes the config."""
    host_before = host_facts()
    dhcp = system.root("/run/dhcp/resolv.conf")
    dhcp.parent.mkdir()
    dhcp.write_bytes(ORIGINAL)
    resolv = system.etc / "resolv.conf"
    os.symlink("/run/dhcp/resolv.conf", resolv)
    config = system.etc / "stubresolver" / "config.yaml"
    config.parent.mkdir()
    config.write_bytes(MY_CONFIG)
    config.chmod(0o600)
    system.run(["groupadd", "--system", "stubresolver"], check=True)
    group_line = system.run(["getent", "group", "stubresolver"], check=True).stdout
    before = private_trees(system)

    done = stub(
        system, "install", "--prefix", "/opt/sr", "--source", str(our_sdist(wheelhouse)),
        "--pip-option=--no-index", f"--pip-option=--find-links={wheelhouse}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "note: kept the existing /etc/stubresolver/config.yaml (never overwritten)" in done.stdout
    )
    assert "run groupadd" not in done.stdout
    assert "takeover: backend file owns /etc/resolv.conf" in done.stdout, done.stdout
    assert config.read_bytes() == MY_CONFIG and owner_mode(config) == (0, 0, 0o600)
    unit = (system.etc / "systemd/system/stubresolver.service").read_text()
    assert "ExecStart=/opt/sr/bin/stubresolver run --config /etc/stubresolver/config.yaml" in unit
    pid = int((system.tmp / "systemd" / "stubresolver.pid").read_text())
    assert status(system, "/opt/sr")["pid"] == pid
    assert b"/opt/sr/bin/stubresolver" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert os.readlink(system.root("/usr/local/bin/stubresolver")) == "/opt/sr/bin/stubresolver"
    assert not os.path.lexists(system.etc / "NetworkManager")  # not there: no dispatcher
    assert not os.path.islink(resolv)
    # Built from the sdist: its package data is packaging/'s too.
    assert_shipped_is_packaging(next(system.root("/opt/sr/lib").glob("python3*/site-packages")))

    gone = stub(system, "uninstall")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "kept /etc/stubresolver/config.yaml: it was there before install" in gone.stdout
    assert os.readlink(resolv) == "/run/dhcp/resolv.conf" and dhcp.read_bytes() == ORIGINAL
    assert system.run(["getent", "group", "stubresolver"]).stdout == group_line
    assert system.run(["getent", "passwd", "stubresolver"]).returncode == 2
    assert private_trees(system) == before  # the config and the group included

    purged = stub(system, "uninstall", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not config.exists()
    assert system.run(["getent", "group", "stubresolver"]).stdout == group_line
    assert host_facts() == host_before


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
