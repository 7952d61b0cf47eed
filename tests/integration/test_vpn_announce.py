"""VPN-announced DNS servers and split DNS, end to end over loopback (issue 9).

The real `stubresolver run` with ``tunnel.interfaces: [lo]`` and the real CLI as a VPN hook
would run it (`tunnel-up --interface lo --dns IP --domain D`, `tunnel-down`). Three real
dnsmasq servers on port 53 of their own loopback addresses each answer every A query with
their own address, and log what they were asked, so every test can see which server
answered and which servers were asked at all.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from testkit.ports import free_port
from testkit.processes import Process, start, wait_until

from .stub_process import StubProcess, run_cli, run_stub, write_config

pytestmark = pytest.mark.root  # port 53 on the servers' addresses

# 127.0.90.0/24 belongs to the VPN-announcement tests (unique loopback ranges per module).
STUB_ADDR = "127.0.90.10"
VPN_DNS_1 = "127.0.90.1"
VPN_DNS_2 = "127.0.90.2"
STATIC_DNS = "127.0.90.3"
SILENT = "127.0.90.9"  # nothing listens here: a dead announced server
ANSWERS = {VPN_DNS_1: "198.51.100.1", VPN_DNS_2: "198.51.100.2", STATIC_DNS: "198.51.100.3"}
BOOTSTRAP = {"vpn.example.net": ["203.0.113.7"]}


@dataclass
class Dnsmasq:
    addr: str
    log: Path
    proc: Process

    def queries(self, name: str) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(1 for line in text.splitlines() if " query[" in line and f" {name} " in line)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Dnsmasq]]:
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is not installed (scripts/test installs dnsmasq-base)")
    tmp = tmp_path_factory.mktemp("dnsmasq")
    empty = tmp / "empty.conf"
    empty.write_text("")
    running: dict[str, Dnsmasq] = {}
    try:
        for addr, answer in ANSWERS.items():
            log = tmp / f"{addr}.log"
            proc = start(
                f"dnsmasq-{addr}",
                ["dnsmasq", f"--conf-file={empty}", "--keep-in-foreground", "--log-queries",
                 f"--log-facility={log}", "--no-resolv", "--no-hosts", f"--address=/#/{answer}",
                 f"--listen-address={addr}", "--bind-interfaces", "--port=53", "--user=root",
                 "--pid-file="],
                tmp / f"{addr}.out",
            )  # fmt: skip
            running[addr] = Dnsmasq(addr, log, proc)
            wait_until(
                functools.partial(_answers, addr), proc, timeout=10, what=f"dnsmasq on {addr}"
            )
        yield running
    finally:
        for server in running.values():
            server.proc.stop()


def _answers(addr: str) -> bool:
    try:
        dns.query.udp(dns.message.make_query("ready.test", "A"), addr, timeout=0.3)
    except Exception:
        return False
    return True


def _config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": [f"{STUB_ADDR}:{free_port(STUB_ADDR)}"],
        "tunnel": {"interfaces": ["lo"]},
        "upstreams": ["vpn"],
        "bootstrap_hosts": BOOTSTRAP,
        "control_socket": str(tmp / "control.sock"),
        "cache": {"enabled": False},  # every query reaches a server: the logs tell which
        "logging": {"level": "debug"},
    }
    config.update(overrides)
    return config


def _run(tmp: Path, config: dict[str, Any]) -> Iterator[StubProcess]:
    path = write_config(tmp / "config.yaml", config)
    port = int(str(config["listen"][0]).rsplit(":", 1)[1])
    with run_stub(path, STUB_ADDR, port) as proc:
        yield proc
    assert "Traceback" not in proc.stderr


@pytest.fixture
def vpn_only(tmp_path: Path, servers: dict[str, Dnsmasq]) -> Iterator[StubProcess]:
    """``upstreams: [vpn]`` plus one static route to a configured server."""
    routes = {"static.test": [f"udp://{STATIC_DNS}:53"]}
    yield from _run(tmp_path, _config(tmp_path, routes=routes))


@pytest.fixture
def split(tmp_path: Path, servers: dict[str, Dnsmasq]) -> Iterator[StubProcess]:
    """Everything to a configured server; the VPN's announced domains to ``vpn``."""
    routes = {"intra.test": ["vpn"], "pinned.corp.test": [f"udp://{STATIC_DNS}:53"]}
    yield from _run(
        tmp_path, _config(tmp_path, upstreams=[f"udp://{STATIC_DNS}:53"], routes=routes)
    )


def cli(stub: StubProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a VPN hook runs it."""
    return run_cli(*args, "--config", str(stub.config))


def tunnel_up(stub: StubProcess, *servers: str, domains: tuple[str, ...] = ()) -> str:
    args = ["tunnel-up", "--interface", "lo"]
    for server in servers:
        args += ["--dns", server]
    for domain in domains:
        args += ["--domain", domain]
    proc = cli(stub, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def status(stub: StubProcess) -> dict[str, Any]:
    proc = cli(stub, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return result


def ask(stub: StubProcess, name: str) -> tuple[str, list[str]]:
    reply = stub.udp(dns.message.make_query(name, "A"))
    found = [
        r.to_text() for rrset in reply.answer for r in rrset if rrset.rdtype == dns.rdatatype.A
    ]
    return dns.rcode.to_text(reply.rcode()), found


# --- the vpn upstream -------------------------------------------------------------------------


def test_nothing_announced_is_servfail_and_nothing_is_asked(
    vpn_only: StubProcess, servers: dict[str, Dnsmasq]
) -> None:
    assert ask(vpn_only, "before.example") == ("SERVFAIL", [])
    assert all(s.queries("before.example") == 0 for s in servers.values())
    assert status(vpn_only)["vpn"] is None
    # The static route needs no announcement.
    assert ask(vpn_only, "a.static.test") == ("NOERROR", [ANSWERS[STATIC_DNS]])


def test_announced_server_answers_and_status_shows_it(
    vpn_only: StubProcess, servers: dict[str, Dnsmasq]
) -> None:
    out = tunnel_up(vpn_only, VPN_DNS_1)
    assert f"servers {VPN_DNS_1}" in out
    assert ask(vpn_only, "one.example") == ("NOERROR", [ANSWERS[VPN_DNS_1]])
    assert servers[VPN_DNS_1].queries("one.example") == 1
    assert servers[VPN_DNS_2].queries("one.example") == 0
    info = status(vpn_only)
    assert info["vpn"] == {"interface": "lo", "servers": [VPN_DNS_1], "domains": []}
    [vpn] = [u for u in info["upstreams"] if u["url"] == "vpn"]
    assert vpn["answers"] >= 1 and vpn["announced_servers"] == 1
    text = cli(vpn_only, "status").stdout
    assert f"vpn: lo announced {VPN_DNS_1}" in text
    # A new announcement replaces the old one at once: the next query asks the new server.
    tunnel_up(vpn_only, VPN_DNS_2)
    assert ask(vpn_only, "two.example") == ("NOERROR", [ANSWERS[VPN_DNS_2]])
    assert servers[VPN_DNS_1].queries("two.example") == 0


def test_a_dead_announced_server_hands_over_to_the_next(
    vpn_only: StubProcess, servers: dict[str, Dnsmasq]
) -> None:
    tunnel_up(vpn_only, SILENT, VPN_DNS_2)
    assert ask(vpn_only, "failover.example") == ("NOERROR", [ANSWERS[VPN_DNS_2]])
    # The server that answered is asked first from now on.
    assert ask(vpn_only, "failover2.example") == ("NOERROR", [ANSWERS[VPN_DNS_2]])


def test_tunnel_down_refuses_at_once_and_bootstrap_names_still_resolve(
    vpn_only: StubProcess, servers: dict[str, Dnsmasq]
) -> None:
    tunnel_up(vpn_only, VPN_DNS_1)
    assert ask(vpn_only, "up.example")[0] == "NOERROR"
    # lo still exists (like a wg-quick PreDown): the hook's word makes it read as down.
    proc = cli(vpn_only, "tunnel-down")
    assert proc.returncode == 0, proc.stderr
    assert "tunnel down (lo)" in proc.stdout
    assert ask(vpn_only, "down.example") == ("REFUSED", [])
    assert all(s.queries("down.example") == 0 for s in servers.values())
    assert ask(vpn_only, "vpn.example.net") == ("NOERROR", BOOTSTRAP["vpn.example.net"])
    info = status(vpn_only)
    assert info["vpn"] is None and info["tunnel"]["up"] is False
    # tunnel-changed is no way around the hold: only tunnel-up (or a new device) ends it.
    cli(vpn_only, "tunnel-changed")
    assert ask(vpn_only, "still-down.example") == ("REFUSED", [])
    tunnel_up(vpn_only, VPN_DNS_1)
    assert ask(vpn_only, "again.example") == ("NOERROR", [ANSWERS[VPN_DNS_1]])


def test_bad_announcements_are_refused_with_a_reason(vpn_only: StubProcess) -> None:
    cases = {
        ("--interface", "eth9", "--dns", VPN_DNS_1): "not one tunnel.interfaces names",
        ("--interface", "lo", "--dns", "vpn.example.net"): "is not an IP address",
        ("--interface", "lo", "--dns", "fe80::1"): "link-local",
        ("--interface", "lo", "--dns", "0.0.0.0"): "not a unicast server address",
        ("--interface", "lo", "--domain", "bad..name"): "is not a domain name",
    }
    for args, reason in cases.items():
        proc = cli(vpn_only, "tunnel-up", *args)
        assert proc.returncode == 1, (args, proc.stdout)
        assert reason in proc.stderr, (args, proc.stderr)
    assert status(vpn_only)["vpn"] is None  # nothing half-taken


# --- split DNS ----------------------------------------------------------------------------


def test_announced_domains_route_to_the_vpn_and_the_longest_suffix_wins(
    split: StubProcess, servers: dict[str, Dnsmasq]
) -> None:
    assert ask(split, "host.corp.test") == ("NOERROR", [ANSWERS[STATIC_DNS]])
    assert ask(split, "x.intra.test") == ("SERVFAIL", [])  # routed to vpn; none announced
    tunnel_up(split, VPN_DNS_1, domains=("corp.test", "Other.Test."))
    assert ask(split, "host.corp.test") == ("NOERROR", [ANSWERS[VPN_DNS_1]])
    assert ask(split, "HOST.other.test") == ("NOERROR", [ANSWERS[VPN_DNS_1]])
    assert ask(split, "x.intra.test") == ("NOERROR", [ANSWERS[VPN_DNS_1]])
    # Not below a label boundary, and not announced: the default upstream.
    assert ask(split, "host.xcorp.test") == ("NOERROR", [ANSWERS[STATIC_DNS]])
    assert ask(split, "www.example") == ("NOERROR", [ANSWERS[STATIC_DNS]])
    # A longer configured route beats the announced parent.
    assert ask(split, "a.pinned.corp.test") == ("NOERROR", [ANSWERS[STATIC_DNS]])
    assert servers[VPN_DNS_1].queries("www.example") == 0
    assert servers[VPN_DNS_1].queries("a.pinned.corp.test") == 0
    # tunnel-down withdraws the routes with the servers; the tunnel (lo) reads as down.
    cli(split, "tunnel-down", "--interface", "lo")
    assert ask(split, "host.corp.test") == ("REFUSED", [])
    tunnel_up(split, VPN_DNS_2)  # no domains this time
    assert ask(split, "host.corp.test") == ("NOERROR", [ANSWERS[STATIC_DNS]])
