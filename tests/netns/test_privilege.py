"""Least privilege for real (issue 9): the daemon starts as root in a private mount and
network namespace (a copy of /etc, loopback only) whose passwd and group hold throwaway
accounts, and drops to ``server.user`` after binding port 53, the control socket and the
takeover. Asserted from /proc/PID/status: uid and gid are not 0, and CapEff, CapPrm, CapInh,
CapAmb and CapBnd are exactly the kept set (two capabilities with takeover off, five with
takeover file). After the drop it still answers over UDP and TCP on 127.0.100.1:53, both
locally and forwarded to a real dnsmasq through a socket bound to the tunnel device (lo
here: SO_BINDTODEVICE after the drop); SIGHUP still reloads the config; a clean stop still
gives resolv.conf back byte for byte (content, mode, owner, mtime), started within the
packaged unit's bounding set only. The control socket is
mode 0660, group stubresolver: a process running as another uid in that group may call
`status` and `tunnel-down`, one outside the group is refused."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stubresolver.takeover.resolv_conf import is_ours
from testkit.privatesys import PrivateSystem, tools_missing
from testkit.processes import Process, wait_until

STUB = "127.0.100.1"
UPSTREAM = "127.0.100.2"  # a real dnsmasq, reached through the "tunnel" (lo)
UPSTREAM_ANSWER = "192.0.2.77"
LOCAL = ("printer.lan", "192.0.2.5")  # local.records: answered without an upstream
RELOADED = ("scanner.lan", "192.0.2.6")  # added by the reload

DAEMON_UID, HOOK_UID, OUTSIDER_UID = 64990, 64991, 64992
ACCOUNTS_PASSWD = (
    f"stubresolver:x:{DAEMON_UID}:{DAEMON_UID}::/nonexistent:/usr/sbin/nologin\n"
    f"vpnhook:x:{HOOK_UID}:{HOOK_UID}::/nonexistent:/usr/sbin/nologin\n"
    f"outsider:x:{OUTSIDER_UID}:{OUTSIDER_UID}::/nonexistent:/usr/sbin/nologin\n"
)
ACCOUNTS_GROUP = (
    f"stubresolver:x:{DAEMON_UID}:vpnhook\nvpnhook:x:{HOOK_UID}:\noutsider:x:{OUTSIDER_UID}:\n"
)

# linux/capability.h
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_NET_BIND_SERVICE, CAP_NET_RAW = 0, 1, 3, 10, 13
SERVICE = {CAP_NET_BIND_SERVICE, CAP_NET_RAW}
TAKEOVER = SERVICE | {CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER}

ORIGINAL = b"# from DHCP\nnameserver 127.0.80.53\n"
# Inside the namespace /etc is the copy: a directory every uid there can reach (the
# test's tmp path above it is root's 0700).
RUN_DIR = "/etc/stubresolver-test"


@pytest.fixture
def system(tmp_path: Path, netns_ok: None) -> Iterator[PrivateSystem]:
    missing = tools_missing()
    if missing is not None:
        pytest.fail(f"privilege e2e cannot run: {missing}")
    with PrivateSystem(tmp_path) as sysns:
        # Throwaway accounts in the copy of /etc only: the host's passwd is never touched.
        with (sysns.etc / "passwd").open("a") as f:
            f.write(ACCOUNTS_PASSWD)
        with (sysns.etc / "group").open("a") as f:
            f.write(ACCOUNTS_GROUP)
        (sysns.etc / "stubresolver-test").mkdir(mode=0o755)
        # The unprivileged clients run this very Python.
        sysns.open_path(Path(sys.executable))
        empty = tmp_path / "dnsmasq.conf"
        empty.write_text("")
        upstream = sysns.start(
            "upstream",
            ["dnsmasq", f"--conf-file={empty}", "--keep-in-foreground", "--log-queries",
             f"--log-facility={tmp_path / 'upstream.log'}", "--no-resolv", "--no-hosts",
             f"--address=/#/{UPSTREAM_ANSWER}", f"--listen-address={UPSTREAM}",
             "--bind-interfaces", "--port=53", "--user=root", "--pid-file="],
            tmp_path / "upstream.out",
        )  # fmt: skip
        try:
            wait_until(
                lambda: "started" in _read(tmp_path / "upstream.log"),
                upstream,
                timeout=10,
                what="upstream dnsmasq",
            )
            yield sysns
        finally:
            upstream.stop()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def config_text(
    sysns: PrivateSystem, takeover: str, records: list[str], *, guard: bool = False
) -> str:
    return "\n".join(
        [
            f'listen: ["{STUB}:53"]',
            f"upstreams: [udp://{UPSTREAM}]",
            "tunnel: {interfaces: [lo]}",  # the loopback test setup: lo is the tunnel
            "local:",
            "  records:",
            *[f'    - "{line}"' for line in records],
            "takeover:",
            f"  mode: {takeover}",
            "  restore_on_exit: true",
            f"state_dir: {sysns.tmp / 'state'}",
            f"control_socket: {RUN_DIR}/control.sock",
            "server: {user: stubresolver, group: stubresolver}",
            "logging: {level: info}",
            f"guard: {{enabled: {'true' if guard else 'false'}}}",
            "",
        ]
    )


def write_config(
    sysns: PrivateSystem, takeover: str, records: list[str], *, guard: bool = False
) -> Path:
    """The config lives where the dropped daemon can read it again on SIGHUP."""
    path = sysns.etc / "stubresolver-test" / "config.yaml"
    path.write_text(config_text(sysns, takeover, records, guard=guard))
    path.chmod(0o644)
    return Path(RUN_DIR) / "config.yaml"


def cli(sysns: PrivateSystem, *args: str, uid: int = 0) -> tuple[int, str]:
    """The real CLI, as root or as another uid with that account's groups."""
    command = [sys.executable, "-m", "stubresolver", *args, "--socket", f"{RUN_DIR}/control.sock"]
    if uid:
        groups = str(DAEMON_UID) if uid == HOOK_UID else ""
        ids = ["--reuid", str(uid), "--regid", str(uid)]
        ids += ["--groups", groups] if groups else ["--clear-groups"]
        command = ["setpriv", *ids, "--", *command]
    done = sysns.run(command)
    return done.returncode, done.stdout + done.stderr


UNIT = Path(__file__).resolve().parents[2] / "packaging" / "stubresolver.service"


def unit_bounding_set() -> list[str]:
    """The packaged unit's CapabilityBoundingSet=, as setpriv spells the names."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return [name.lower().removeprefix("cap_") for name in line.split("=", 1)[1].split()]
    raise AssertionError(f"{UNIT} has no CapabilityBoundingSet=")


def start_stub(sysns: PrivateSystem, config: Path, *, as_unit: bool = False) -> Process:
    """``as_unit``: start as root within the unit's bounding set, as systemd would (after
    execve root's permitted set is the bounding set), so the drop is tested with only the
    capabilities the unit grants."""
    command = [sys.executable, "-m", "stubresolver", "run", "-c", str(config)]
    if as_unit:
        caps = ",".join(f"+{name}" for name in unit_bounding_set())
        command = ["setpriv", f"--bounding-set=-all,{caps}", "--", *command]
    proc = sysns.start("stub", command, sysns.tmp / "stub.log")

    def dropped() -> bool:
        code, out = cli(sysns, "status", "--json")
        if code != 0:
            return False
        status = json.loads(out)
        return bool(status.get("pid") == proc.pid and status["privileges"]["dropped"])

    wait_until(dropped, proc, timeout=20, what="stub with dropped privileges")
    return proc


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def caps(hexmask: str) -> set[int]:
    value = int(hexmask, 16)
    return {bit for bit in range(64) if value >> bit & 1}


def dig(sysns: PrivateSystem, name: str, *, tcp: bool = False) -> str:
    args = ["dig", f"@{STUB}", "-p", "53", name, "A", "+time=2", "+tries=1"]
    done = sysns.run([*args, "+tcp"] if tcp else args)
    return done.stdout


def answers(sysns: PrivateSystem, name: str, address: str) -> bool:
    for tcp in (False, True):
        out = dig(sysns, name, tcp=tcp)
        if "status: NOERROR" not in out or f"\t{address}" not in out:
            return False
    return True


def assert_dropped(pid: int, kept: set[int]) -> None:
    status = proc_status(pid)
    assert status["Uid"].split() == [str(DAEMON_UID)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(DAEMON_UID)] * 4, status["Gid"]
    assert status["Groups"] == ""
    for key in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
        assert caps(status[key]) == kept, (key, status[key])
    # Every thread (the watchdog's workers came after the drop) has the same, no more.
    for task in Path(f"/proc/{pid}/task").iterdir():
        lines = (task / "status").read_text().splitlines()
        fields = {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}
        assert caps(fields["CapEff"]) <= kept and fields["Uid"].split()[0] == str(DAEMON_UID)


def check_control_socket(sysns: PrivateSystem) -> None:
    info = os.stat(sysns.etc / "stubresolver-test" / "control.sock")
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == DAEMON_UID
    code, out = cli(sysns, "status", "--json", uid=HOOK_UID)
    assert code == 0, out
    assert json.loads(out)["privileges"]["uid"] == DAEMON_UID
    code, out = cli(sysns, "status", uid=HOOK_UID)
    assert code == 0 and "privileges: stubresolver:stubresolver (uid 64990, gid 64990)" in out
    code, out = cli(sysns, "status", uid=OUTSIDER_UID)
    assert code != 0 and "permission denied" in out, out


def test_takeover_off_keeps_two_capabilities_and_still_serves(system: PrivateSystem) -> None:
    records = [f"{LOCAL[0]}. 300 IN A {LOCAL[1]}"]
    config = write_config(system, "off", records)
    proc = start_stub(system, config)
    try:
        assert_dropped(proc.pid, SERVICE)
        assert answers(system, LOCAL[0], LOCAL[1]), proc.log_tail()
        # Forwarded through a socket bound to the tunnel device, made after the drop.
        assert answers(system, "www.example.com", UPSTREAM_ANSWER), proc.log_tail()
        check_control_socket(system)

        # SIGHUP: the dropped daemon reads the config again and serves the new record.
        write_config(system, "off", [*records, f"{RELOADED[0]}. 300 IN A {RELOADED[1]}"])
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(
            lambda: answers(system, RELOADED[0], RELOADED[1]), proc, timeout=10, what="reload"
        )
        assert "config reloaded" in proc.log_tail(50)
        # The new resolver's upstream sockets, bound to the device after the drop, forward.
        assert answers(system, "after-reload.example", UPSTREAM_ANSWER), proc.log_tail()
        assert_dropped(proc.pid, SERVICE)

        # A VPN hook running unprivileged in the group takes the tunnel down: REFUSED.
        code, out = cli(system, "tunnel-down", "--interface", "lo", uid=HOOK_UID)
        assert code == 0, out
        assert "status: REFUSED" in dig(system, "after-down.example")
        code, out = cli(system, "tunnel-down", "--interface", "lo", uid=OUTSIDER_UID)
        assert code != 0 and "permission denied" in out
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    assert "running as stubresolver:stubresolver" in proc.log_tail(200)


def test_the_guard_keeps_net_admin_and_nft_still_works_after_the_drop(
    system: PrivateSystem,
) -> None:
    """With guard.enabled the dropped daemon keeps CAP_NET_ADMIN too, within the unit's
    bounding set: its nft children read the counters for status and remove the table on a
    clean stop."""
    config = write_config(system, "off", [f"{LOCAL[0]}. 300 IN A {LOCAL[1]}"], guard=True)
    proc = start_stub(system, config, as_unit=True)
    try:
        assert_dropped(proc.pid, SERVICE | {12})  # CAP_NET_ADMIN
        _, out = cli(system, "status", "--json")
        guard = json.loads(out)["guard"]
        assert guard["active"] and guard["dropped"] == 0, guard  # nft listed its counters
        tables = system.run(["nft", "list", "tables"]).stdout
        assert "table inet stubresolver" in tables
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    assert "guard: table removed" in proc.log_tail(50)
    assert "stubresolver" not in system.run(["nft", "list", "tables"]).stdout


def test_takeover_file_keeps_five_and_restores_resolv_conf_exactly(
    system: PrivateSystem,
) -> None:
    """Started within the packaged unit's CapabilityBoundingSet= only: it is enough for
    the takeover, the control socket's group and the drop itself."""
    path = system.etc / "resolv.conf"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    os.chown(path, 0, 4)  # root:adm 0640, an old mtime: all of it must come back
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    before = os.lstat(path)
    config = write_config(system, "file", [f"{LOCAL[0]}. 300 IN A {LOCAL[1]}"])
    proc = start_stub(system, config, as_unit=True)
    try:
        assert is_ours(path.read_bytes())
        assert_dropped(proc.pid, TAKEOVER)
        assert answers(system, LOCAL[0], LOCAL[1]), proc.log_tail()
        assert answers(system, "www.example.com", UPSTREAM_ANSWER), proc.log_tail()
        check_control_socket(system)
        # The watchdog, unprivileged now, still puts our file back over root's.
        other = path.with_name(".resolv.conf.other")
        other.write_bytes(ORIGINAL)
        os.rename(other, path)
        wait_until(lambda: is_ours(path.read_bytes()), proc, timeout=10, what="re-assert")
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    after = os.lstat(path)
    assert path.read_bytes() == ORIGINAL
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == (0o640, 0, 4)
    assert after.st_mtime_ns == before.st_mtime_ns
    assert not (system.tmp / "state" / "takeover.json").exists()
    assert "restore: write /etc/resolv.conf" in proc.log_tail(200)


def test_a_manager_that_trusts_only_root_keeps_the_daemon_root_and_says_why(
    system: PrivateSystem,
) -> None:
    """NetworkManager allows its reload only to root (or polkit): dropping would make the
    restore fail, so the daemon stays root, logs why and shows it in `status`. nmcli is a
    recording shim here (no NetworkManager runs in the namespace)."""
    shims = system.tmp / "shims"
    shims.mkdir()
    nmcli = shims / "nmcli"
    nmcli.write_text(f'#!/bin/sh\necho "nmcli $*" >> "{system.tmp / "calls.log"}"\n')
    nmcli.chmod(0o755)
    (system.etc / "resolv.conf").write_bytes(ORIGINAL)
    (system.etc / "NetworkManager" / "conf.d").mkdir(parents=True, exist_ok=True)
    config = write_config(system, "networkmanager", [f"{LOCAL[0]}. 300 IN A {LOCAL[1]}"])
    proc = system.start(
        "stub",
        ["env", f"PATH={shims}:{os.environ['PATH']}", sys.executable, "-m", "stubresolver",
         "run", "-c", str(config)],
        system.tmp / "stub.log",
    )  # fmt: skip
    try:
        wait_until(lambda: cli(system, "status")[0] == 0, proc, timeout=20, what="stub")
        privileges = json.loads(cli(system, "status", "--json")[1])["privileges"]
        assert privileges["dropped"] is False and privileges["uid"] == 0
        assert "networkmanager" in privileges["kept_root"]
        assert proc_status(proc.pid)["Uid"].split() == ["0"] * 4
        assert "NOT dropping privileges" in proc.log_tail(50)
        assert answers(system, LOCAL[0], LOCAL[1])
        # The group may still use the control socket.
        assert cli(system, "status", uid=HOOK_UID)[0] == 0
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    assert (system.etc / "resolv.conf").read_bytes() == ORIGINAL
    calls = (system.tmp / "calls.log").read_text().splitlines()
    # First the start-up read of the IPv6 servers links learned (learned.py), then the steps.
    assert (
        calls
        == ["nmcli -t -f GENERAL.DEVICE,IP6.DNS device show"] + ["nmcli general reload conf"] * 2
    )
