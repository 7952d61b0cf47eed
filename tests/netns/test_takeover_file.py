"""`takeover.mode: file` for real (issue 9): the stub runs in a private mount namespace over
a copy of /etc and a network namespace with only loopback, and takes over the /etc/resolv.conf
it sees there. The namespace's "ISP" is a logging dnsmasq that the original resolv.conf
names; glibc (getent) is the client. Asserted: the plain-file and symlink cases come back
byte for byte after a clean stop; after kill -9 DNS is refused and nothing reaches the ISP,
and `restore` gives the original bytes; a restart after a crash keeps the original; a rewrite
by someone else is re-asserted, and a fight between two writers settles."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stubresolver.takeover.resolv_conf import is_ours
from testkit.privatesys import PrivateSystem, tools_missing
from testkit.processes import Process, wait_until

ISP = "127.0.80.53"  # the "ISP resolver" inside the private network namespace
ISP_ANSWER = "192.0.2.66"
ORIGINAL = f"# from DHCP\nnameserver {ISP}\nsearch corp.example\n".encode()
BOOTSTRAP = ("vpn.example.net", "203.0.113.7")  # answered by the stub at any tunnel state


@pytest.fixture
def system(tmp_path: Path, netns_ok: None) -> Iterator[PrivateSystem]:
    missing = tools_missing()
    if missing is not None:
        pytest.fail(f"takeover e2e cannot run: {missing}")
    with PrivateSystem(tmp_path) as sysns:
        sysns.run(["ip", "addr", "add", f"{ISP}/32", "dev", "lo"], check=True)
        empty = tmp_path / "dnsmasq.conf"
        empty.write_text("")
        isp = sysns.start(
            "isp",
            ["dnsmasq", f"--conf-file={empty}", "--keep-in-foreground", "--log-queries",
             f"--log-facility={tmp_path / 'isp.log'}", "--no-resolv", "--no-hosts",
             f"--address=/#/{ISP_ANSWER}", f"--listen-address={ISP}", "--bind-interfaces",
             "--port=53", "--user=root", "--pid-file="],
            tmp_path / "isp.out",
        )  # fmt: skip
        try:
            wait_until(
                lambda: (
                    (tmp_path / "isp.log").exists()
                    and "started" in (tmp_path / "isp.log").read_text(errors="replace")
                ),
                isp,
                timeout=10,
                what="ISP dnsmasq",
            )
            yield sysns
        finally:
            isp.stop()


def isp_queries(sysns: PrivateSystem) -> int:
    try:
        text = (sysns.tmp / "isp.log").read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if " query[" in line)


def write_config(sysns: PrivateSystem) -> Path:
    config = sysns.tmp / "stub.yaml"
    config.write_text(
        "\n".join(
            [
                'listen: ["127.0.0.1:53"]',
                "upstreams: [udp://10.8.0.1]",
                "tunnel:",
                "  interfaces: [tun-absent]",  # down: every forwarded query is REFUSED
                "bootstrap_hosts:",
                f"  {BOOTSTRAP[0]}: [{BOOTSTRAP[1]}]",
                "takeover:",
                "  mode: file",
                "  restore_on_exit: true",
                f"state_dir: {sysns.tmp / 'state'}",
                f"control_socket: {sysns.tmp / 'control.sock'}",
                "logging: {level: info}",
                "",
            ]
        )
    )
    return config


def start_stub(sysns: PrivateSystem, config: Path) -> Process:
    proc = sysns.start(
        "stub", [sys.executable, "-m", "stubresolver", "run", "-c", str(config)],
        sysns.tmp / "stub.log",
    )  # fmt: skip
    resolv = sysns.etc / "resolv.conf"

    def ready() -> bool:
        # This very process answers (a socket left by a stub killed before is not it).
        done = sysns.run(
            [sys.executable, "-m", "stubresolver", "status", "--json",
             "--socket", str(sysns.tmp / "control.sock")]
        )  # fmt: skip
        if done.returncode != 0 or json.loads(done.stdout).get("pid") != proc.pid:
            return False
        return is_ours(resolv.read_bytes())

    wait_until(ready, proc, timeout=20, what="stub with takeover")
    return proc


def getent(sysns: PrivateSystem, name: str) -> tuple[int, str]:
    done = sysns.run(["getent", "ahostsv4", name], timeout=30)
    return done.returncode, done.stdout


def status(sysns: PrivateSystem) -> dict[str, Any]:
    done = sysns.run(
        [sys.executable, "-m", "stubresolver", "status", "--json",
         "--socket", str(sysns.tmp / "control.sock")]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def facts(path: Path) -> tuple[object, ...]:
    info = os.lstat(path)
    body = os.readlink(path) if stat.S_ISLNK(info.st_mode) else path.read_bytes()
    return body, stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


def plain_original(sysns: PrivateSystem) -> Path:
    path = sysns.etc / "resolv.conf"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    os.chown(path, 0, 4)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return path


def test_plain_file_taken_over_answered_through_and_restored_exactly(
    system: PrivateSystem,
) -> None:
    path = plain_original(system)
    before, mtime = facts(path), os.lstat(path).st_mtime_ns
    # The witness works: before the takeover, glibc asks the ISP.
    code, out = getent(system, "before.example")
    assert code == 0 and ISP_ANSWER in out
    seen = isp_queries(system)
    assert seen >= 1
    proc = start_stub(system, write_config(system))
    try:
        assert b"nameserver 127.0.0.1\noptions edns0 trust-ad\n" in path.read_bytes()
        code, out = getent(system, BOOTSTRAP[0])  # glibc -> resolv.conf -> the stub
        assert code == 0 and BOOTSTRAP[1] in out, (code, out, proc.log_tail())
        code, _ = getent(system, "www.example.com")  # tunnel down: REFUSED, nothing leaks
        assert code != 0
        taken = status(system)["takeover"]
        assert taken["active"] and taken["backend"] == "file"
        assert taken["paths"] == ["/etc/resolv.conf"]
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    assert facts(path) == before and os.lstat(path).st_mtime_ns == mtime
    assert not (system.tmp / "state" / "takeover.json").exists()
    assert isp_queries(system) == seen  # not one query reached the ISP while we owned DNS


def test_symlink_is_replaced_and_the_link_restored(system: PrivateSystem) -> None:
    (system.etc / "resolv.conf.dhcp").write_bytes(ORIGINAL)
    link = system.etc / "resolv.conf"
    link.symlink_to("resolv.conf.dhcp")
    before = facts(link)
    proc = start_stub(system, write_config(system))
    try:
        assert not link.is_symlink()
        assert (system.etc / "resolv.conf.dhcp").read_bytes() == ORIGINAL  # never written
        code, out = getent(system, BOOTSTRAP[0])
        assert code == 0 and BOOTSTRAP[1] in out
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    assert facts(link) == before
    assert isp_queries(system) == 0


def test_kill_9_fails_closed_and_restore_gives_the_original_back(system: PrivateSystem) -> None:
    path = plain_original(system)
    before = facts(path)
    config = write_config(system)
    proc = start_stub(system, config)
    proc.stop(signal.SIGKILL)
    # The system points at a stub that is gone: DNS stops, nothing leaks.
    assert is_ours(path.read_bytes())
    code, _ = getent(system, "after-crash.example")
    assert code != 0
    assert isp_queries(system) == 0
    assert (system.tmp / "state" / "takeover.json").exists()
    done = system.run([sys.executable, "-m", "stubresolver", "restore", "-c", str(config)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("restored: write /etc/resolv.conf (")
    assert facts(path) == before
    again = system.run([sys.executable, "-m", "stubresolver", "restore", "-c", str(config)])
    assert again.returncode == 0 and "nothing to restore" in again.stdout  # idempotent
    code, out = getent(system, "after-restore.example")  # the ISP again: the witness works
    assert code == 0 and ISP_ANSWER in out


def test_a_restart_after_a_crash_keeps_the_original(system: PrivateSystem) -> None:
    path = plain_original(system)
    before = facts(path)
    config = write_config(system)
    start_stub(system, config).stop(signal.SIGKILL)
    proc = start_stub(system, config)
    try:
        assert status(system)["takeover"]["resumed"] is True
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    assert facts(path) == before
    assert "continuing with the originals it recorded" in proc.log_tail(200)


def rewrite(path: Path, data: bytes) -> None:
    """How DHCP clients and managers write: a new file renamed over the old one."""
    tmp = path.with_name(".resolv.conf.other")
    tmp.write_bytes(data)
    os.rename(tmp, path)


def test_someone_elses_rewrite_is_reasserted_and_a_fight_settles(system: PrivateSystem) -> None:
    path = plain_original(system)
    before = facts(path)
    proc = start_stub(system, write_config(system))
    try:
        ours = path.read_bytes()
        rewrite(path, ORIGINAL)
        wait_until(lambda: path.read_bytes() == ours, proc, timeout=10, what="re-assert")
        first = status(system)["takeover"]
        assert first["drifts"] >= 1 and first["reasserts"] >= 1 and first["inotify"]

        # A fight: another writer puts its file back 300 times over 3 s.
        writes = 0
        stop = threading.Event()

        def other_writer() -> None:
            nonlocal writes
            while writes < 300 and not stop.is_set():
                rewrite(path, ORIGINAL)
                writes += 1
                time.sleep(0.01)

        writer = threading.Thread(target=other_writer)
        writer.start()
        writer.join(timeout=20)
        stop.set()
        # It settles: once the other writer stops, ours is the last word (the backoff is
        # at most 2 s), and we wrote far less often than it did.
        wait_until(lambda: path.read_bytes() == ours, proc, timeout=15, what="settle")
        after = status(system)["takeover"]
        fought = after["reasserts"] - first["reasserts"]
        assert 1 <= fought <= 30, after
        assert writes == 300
        code, out = getent(system, BOOTSTRAP[0])
        assert code == 0 and BOOTSTRAP[1] in out
    finally:
        assert proc.stop(signal.SIGTERM, grace=10) == 0, proc.log_tail()
    assert facts(path) == before
    assert isp_queries(system) == 0  # no one asked during the fight; the file is back
