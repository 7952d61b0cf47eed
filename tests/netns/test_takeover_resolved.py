"""The systemd-resolved backend against a real systemd-resolved (testkit.resolvedsys): its
own daemon, bus and resolvectl in a private mount + network namespace, with a veth link whose
own DNS server (a logging dnsmasq in a second namespace, the "ISP") answers every name.

Everything is asserted through resolved itself: its settings (resolvectl dns, domain,
default-route, status) and real queries, through resolvectl and through glibc via
resolved's 127.0.0.53 stub listener. The one stand-in is systemctl (no systemd as PID 1 in
the test world): see testkit.resolvedsys.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.privatesys import tools_missing
from testkit.processes import Process, wait_until
from testkit.resolvedpkg import PackageError, ResolvedPackage, unpack
from testkit.resolvedsys import ISP, ISP_ANSWER, LINK, ResolvedSystem

STUB = "127.0.110.1"
BOOTSTRAP = ("vpn.example.net", "203.0.113.7")  # answered by the stub itself
RESOLVED_STUB_FILE = "../run/systemd/resolve/stub-resolv.conf"
DROP_IN_DIR = "systemd/resolved.conf.d"
LINK_DOMAIN = "corp.example"  # the link's search domain: its names went to its server


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, netns_ok: None) -> ResolvedPackage:
    missing = tools_missing()
    if missing is None and shutil.which("dbus-daemon") is None:
        missing = "dbus-daemon not installed (scripts/test installs it)"
    if missing is not None:
        pytest.fail(f"resolved takeover e2e cannot run: {missing}")
    try:
        return unpack(tmp_path_factory.mktemp("resolved-pkg"))
    except PackageError as exc:
        pytest.fail(f"resolved takeover e2e cannot run: {exc}")


@pytest.fixture
def rsys(tmp_path: Path, package: ResolvedPackage) -> Iterator[ResolvedSystem]:
    with ResolvedSystem(tmp_path, package) as w:
        # What a DHCP client (networkd, NetworkManager) would have told resolved: the link's
        # own server, the ISP's, and its search domain.
        for argv in (("dns", LINK, ISP), ("domain", LINK, LINK_DOMAIN)):
            done = w.resolvectl(*argv)
            assert done.returncode == 0, done.stderr
        yield w


def link_state(w: ResolvedSystem, link: str = LINK) -> tuple[str, str]:
    """(servers, default route) of the link, as resolvectl reports them."""
    return setting(w, "dns", link), setting(w, "default-route", link)


def retaken(w: ResolvedSystem, link: str = LINK) -> bool:
    """The link has no servers and no default route again. The re-assert restarts resolved,
    so for a moment nobody answers on the bus: that is "not yet"."""
    try:
        return link_state(w, link) == ("", "no")
    except AssertionError:
        return False


def setting(w: ResolvedSystem, verb: str, link: str | None = None) -> str:
    done = w.resolvectl(verb, *([link] if link else []))
    assert done.returncode == 0, done.stderr
    want = "Global:" if link is None else f"({link}):"
    for line in done.stdout.splitlines():
        if want in line:
            return line.split(want, 1)[1].strip()
    return ""  # resolvectl prints no Global line when there is nothing global


def settings_shown(w: ResolvedSystem) -> list[str]:
    """Every line of ``resolvectl status`` but "Current Scopes", which follows the link's
    addresses (LLMNR/IPv6 appears once the IPv6 link-local address has passed DAD), not a
    setting."""
    done = w.resolvectl("status")
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if "Current Scopes:" not in line]


def query(w: ResolvedSystem, name: str) -> tuple[int, str]:
    done = w.resolvectl("query", "--cache=no", "-4", name, timeout=60)
    return done.returncode, done.stdout + done.stderr


def getent(w: ResolvedSystem, name: str) -> tuple[int, str]:
    """glibc: /etc/resolv.conf -> resolved's stub file -> 127.0.0.53 -> resolved."""
    done = w.sys.run(["getent", "ahostsv4", name], timeout=60)
    return done.returncode, done.stdout


def files(w: ResolvedSystem) -> dict[str, object]:
    """Everything the backend may touch under /etc, exactly."""
    etc = w.etc
    drop_ins = etc / DROP_IN_DIR
    return {
        "resolv.conf": os.readlink(etc / "resolv.conf"),
        "resolved.conf": (etc / "systemd/resolved.conf").read_bytes(),
        "drop-in dir": sorted(os.listdir(drop_ins)) if drop_ins.exists() else None,
    }


def write_config(w: ResolvedSystem) -> Path:
    config = w.tmp / "stub.yaml"
    config.write_text(
        "\n".join(
            [
                f'listen: ["{STUB}:53"]',
                "upstreams: [udp://10.8.0.1]",
                "tunnel: {interfaces: [tun-absent]}",  # down: every forwarded name REFUSED
                "bootstrap_hosts:",
                f"  {BOOTSTRAP[0]}: [{BOOTSTRAP[1]}]",
                "takeover: {mode: auto, restore_on_exit: true}",
                f"state_dir: {w.tmp / 'state'}",
                f"control_socket: {w.tmp / 'control.sock'}",
                "logging: {level: info}",
                "",
            ]
        )
    )
    return config


def status(w: ResolvedSystem) -> dict[str, Any] | None:
    done = w.sys.run(
        [sys.executable, "-m", "stubresolver", "status", "--json",
         "--socket", str(w.tmp / "control.sock")],
        env=w.env,
    )  # fmt: skip
    if done.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def start_stub(w: ResolvedSystem, config: Path) -> Process:
    proc = w.sys.start(
        "stub",
        [sys.executable, "-m", "stubresolver", "run", "-c", str(config)],
        w.tmp / "stub.log",
        env=w.env,
    )

    def ready() -> bool:
        now = status(w)
        return now is not None and now.get("pid") == proc.pid and now["takeover"]["active"]

    wait_until(ready, proc, timeout=60, what="stub taking over from systemd-resolved")
    return proc


def assert_taken_over(w: ResolvedSystem, isp_before: int) -> None:
    # resolved's own view: the stub is the only server, for every name; the link has no
    # servers and no default route.
    assert setting(w, "dns") == STUB
    assert setting(w, "domain") == "~."
    assert link_state(w) == ("", "no")
    links = w.resolvectl("status").stdout.split("\nLink ")[1:]
    assert links and all("+DefaultRoute" not in section for section in links), links
    # Real queries: the stub's own answer comes back, through resolvectl and through glibc
    # via 127.0.0.53; a name the stub refuses (tunnel down) fails; the ISP hears nothing.
    code, out = query(w, BOOTSTRAP[0])
    assert code == 0 and BOOTSTRAP[1] in out, out
    code, out = getent(w, BOOTSTRAP[0])
    assert code == 0 and BOOTSTRAP[1] in out, out
    code, out = query(w, "www.example.com")
    assert code != 0, out
    code, _ = getent(w, "mail.example.com")
    assert code != 0
    # A reverse lookup in the link's own subnet: resolved sends it to a link's servers even
    # without a default route (measured: it reached the ISP when only default-route was off).
    query(w, "10.110.0.5")
    query(w, f"intranet.{LINK_DOMAIN}")  # the link keeps its domain, but not its server
    assert w.isp_queries() == isp_before


def witness(w: ResolvedSystem, links: tuple[str, ...] = (LINK,)) -> int:
    """The world works as it should before (and after) us: a name goes to a link's own
    server, the ISP. Returns how many queries the ISP has seen."""
    seen = w.isp_queries()
    code, out = query(w, "before.example")
    assert code == 0 and ISP_ANSWER in out, out
    assert any(f"link: {link}" in out for link in links), out
    assert w.isp_queries() > seen
    return w.isp_queries()


def test_takeover_sends_every_name_to_the_stub_and_restore_is_exact(
    rsys: ResolvedSystem,
) -> None:
    w = rsys
    before_files, before_link = files(w), link_state(w)
    assert before_files["drop-in dir"] is None and before_link == (ISP, "yes")
    before_global = (setting(w, "dns"), setting(w, "domain"))
    seen = witness(w)
    before_status = settings_shown(w)
    first_resolved = w.resolved_pid()
    config = write_config(w)
    # The dry run prints the plan auto chose, from what resolved reports, and changes nothing.
    dry = w.sys.run(
        [sys.executable, "-m", "stubresolver", "run", "--dry-run", "-c", str(config)], env=w.env
    )
    assert dry.returncode == 0, dry.stderr
    for line in (
        "takeover: backend systemd-resolved",
        f"found: dns:{LINK} = {ISP}",
        f"found: default-route:{LINK} = yes",
        "apply: make directory /etc/systemd/resolved.conf.d (mode 0755)",
        f"apply: run resolvectl dns {LINK} ",
        f"restore: run resolvectl dns {LINK} {ISP}",
    ):
        assert line in dry.stdout, dry.stdout
    assert settings_shown(w) == before_status and files(w) == before_files
    assert w.resolved_pid() == first_resolved
    proc = start_stub(w, config)
    try:
        taken = status(w)
        assert taken is not None
        assert taken["takeover"]["backend"] == "systemd-resolved"  # auto found it
        assert w.resolved_pid() != first_resolved  # restarted to read the drop-in
        assert_taken_over(w, seen)
        assert os.readlink(w.etc / "resolv.conf") == RESOLVED_STUB_FILE  # resolved stays
    finally:
        assert proc.stop(signal.SIGTERM, grace=20) == 0, proc.log_tail()
    # Exactly as before: files (the drop-in directory we made is gone again), the link's
    # servers and default route, resolved's global settings.
    assert files(w) == before_files
    assert link_state(w) == before_link
    assert (setting(w, "dns"), setting(w, "domain")) == before_global
    assert not (w.tmp / "state" / "takeover.json").exists()
    witness(w)
    assert settings_shown(w) == before_status


def test_kill_9_fails_closed_and_restore_gives_everything_back(rsys: ResolvedSystem) -> None:
    w = rsys
    before_files, before_link = files(w), link_state(w)
    seen = witness(w)
    config = write_config(w)
    start_stub(w, config).stop(signal.SIGKILL)
    # resolved still sends every name to the stub that is gone: DNS stops, nothing leaks.
    assert setting(w, "dns") == STUB and link_state(w) == ("", "no")
    code, out = query(w, "after-crash.example")
    assert code != 0, out
    code, _ = getent(w, "after-crash.example")
    assert code != 0
    assert w.isp_queries() == seen
    done = w.sys.run(
        [sys.executable, "-m", "stubresolver", "restore", "-c", str(config)], env=w.env, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert f"restored: run resolvectl dns {LINK} {ISP}" in done.stdout, done.stdout
    assert files(w) == before_files
    assert link_state(w) == before_link
    assert setting(w, "dns") == ""
    witness(w)


def test_a_link_given_its_servers_back_is_taken_again(rsys: ResolvedSystem) -> None:
    w = rsys
    before_files, before_link = files(w), link_state(w)
    seen = witness(w)
    proc = start_stub(w, write_config(w))
    try:
        resolved_pid = w.resolved_pid()
        # A DHCP renewal (say) gives the link its server and default route back.
        for argv in (("dns", LINK, ISP), ("default-route", LINK, "yes")):
            done = w.resolvectl(*argv)
            assert done.returncode == 0, done.stderr
        wait_until(lambda: retaken(w), proc, timeout=30, what="re-assert", interval=0.2)
        now = status(w)
        assert now is not None
        assert now["takeover"]["drifts"] >= 1 and now["takeover"]["reasserts"] >= 1
        assert now["takeover"]["inotify"]  # resolved's rewrite of its resolv.conf wakes it
        assert w.resolved_pid() == resolved_pid  # the drop-in held: no restart was needed
        # Names leaked in the window before the re-assert go uncounted here: from now on,
        # nothing reaches the ISP.
        seen = w.isp_queries()
        assert_taken_over(w, seen)
        # Someone removes the drop-in: it is written again and resolved restarted to read it.
        drop_in = w.etc / DROP_IN_DIR / "90-stubresolver.conf"
        ours = drop_in.read_bytes()
        drop_in.unlink()
        wait_until(
            lambda: drop_in.exists() and w.resolved_pid() != resolved_pid and retaken(w),
            proc,
            timeout=30,
            what="drop-in re-asserted",
        )
        assert drop_in.read_bytes() == ours
        assert_taken_over(w, seen)
    finally:
        assert proc.stop(signal.SIGTERM, grace=20) == 0, proc.log_tail()
    # Restore gives back what was there before the takeover, not what the renewal set.
    assert files(w) == before_files
    assert link_state(w) == before_link
    witness(w)


def test_a_link_that_appears_after_the_takeover_is_taken_too(rsys: ResolvedSystem) -> None:
    w = rsys
    before_files, before_link = files(w), link_state(w)
    seen = witness(w)
    proc = start_stub(w, write_config(w))
    try:
        # A new link (a dock, a USB modem) whose manager gives it a server. Left alone, it
        # would get the reverse lookups of its subnet (measured: they reached the ISP).
        resolved_pid = w.resolved_pid()
        w.add_link("rveth2", "rveth3", "10.110.1.1", "10.110.1.2")
        done = w.resolvectl("dns", "rveth2", ISP)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: retaken(w, "rveth2"), proc, timeout=30, what="new link", interval=0.2)
        seen = w.isp_queries()  # the moments before it was taken go uncounted
        query(w, "10.110.1.5")
        assert_taken_over(w, seen)
        assert "taking over what appeared since: default-route:rveth2 = yes" in proc.log_tail(200)
        assert w.resolved_pid() == resolved_pid
    finally:
        assert proc.stop(signal.SIGTERM, grace=20) == 0, proc.log_tail()
    assert files(w) == before_files
    assert link_state(w) == before_link
    # The new link gets back what its manager had given it when it was taken.
    assert link_state(w, "rveth2") == (ISP, "yes")
    witness(w, (LINK, "rveth2"))  # both links have the ISP's server now: either answers


def test_a_restart_after_a_crash_keeps_each_links_original_servers(rsys: ResolvedSystem) -> None:
    w = rsys
    before_files, before_link = files(w), link_state(w)
    config = write_config(w)
    start_stub(w, config).stop(signal.SIGKILL)
    assert link_state(w) == ("", "no")  # what a new probe would see now: ours, not theirs
    proc = start_stub(w, config)
    try:
        now = status(w)
        assert now is not None and now["takeover"]["resumed"] is True
        assert_taken_over(w, w.isp_queries())
    finally:
        assert proc.stop(signal.SIGTERM, grace=20) == 0, proc.log_tail()
    assert files(w) == before_files
    assert link_state(w) == before_link


def test_an_ipv6_server_a_link_learned_is_named_at_start(rsys: ResolvedSystem) -> None:
    """A router advertisement's RDNSS server (RFC 8106) ends up as a link server in resolved:
    set one the way networkd would, and the stub's start-up log names it (issue 10)."""
    w = rsys
    servers = setting(w, "dns", LINK).split()
    done = w.resolvectl("dns", LINK, *servers, "fd00:110::53")
    assert done.returncode == 0, done.stderr
    proc = start_stub(w, write_config(w))
    try:
        wait_until(
            lambda: "learned the IPv6 DNS server fd00:110::53" in proc.log_tail(200),
            proc, timeout=10, what="the start-up warning",
        )  # fmt: skip
        assert f"link {LINK} learned the IPv6 DNS server fd00:110::53" in proc.log_tail(200)
    finally:
        assert proc.stop(signal.SIGTERM, grace=20) == 0, proc.log_tail()
    assert "fd00:110::53" in setting(w, "dns", LINK)  # given back as it was
