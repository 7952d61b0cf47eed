"""A real OpenVPN server pushes its DNS server and domain; the hook hands them to the stub.

A world of its own (OpenVPN kind) whose VPN server is replaced by a TLS-mode one that pushes
``dhcp-option DNS 100.66.0.1`` and ``dhcp-option DOMAIN example``; the client pulls them
and runs packaging/hooks/openvpn-updown.sh as --up and --down. The stub's config names the
``vpn`` upstream for announced domains and a TCP upstream (the same VPN resolver, another
transport with its own counters) for everything else, so status shows which one answered.

Asserted: the up hook makes the vpn upstream use the pushed server and the pushed domain
route to it; the down hook makes the stub refuse at once; a bootstrap host resolves while
the tunnel is down; the ISP and the client's egress witness see zero DNS packets.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit.pki import make_client_cert, make_pki
from testkit.processes import Process

from .probe import query
from .topology import OVPN_PORT, VPN_ISP_ADDR, VPN_TUN_ADDR
from .world import REPO_ROOT, WWW_ADDR, WWW_NAME, World

pytestmark = pytest.mark.root

HOOK = REPO_ROOT / "packaging" / "hooks" / "openvpn-updown.sh"
BOOTSTRAP_NAME = "vpn.example.net"


@dataclass
class Pushed:
    world: World
    server_tls: list[str]  # --ca/--cert/--key for the server
    client_tls: list[str]  # and for the client
    server: Process | None = None

    def restart_server(self) -> None:
        """A fresh TLS-mode server: a p2p TLS server serves one peer and keeps a vanished
        one's session for a while, so every client here gets a server of its own."""
        if self.server is not None:
            self.server.stop(signal.SIGTERM, grace=5)
        world = self.world
        self.server = world._openvpn(  # the world's own way to start an endpoint, TLS mode
            world.ns_vpn,
            f"vpn-openvpn-tls-{len(world.processes)}",
            ["--tls-server", *self.server_tls, "--dh", "none", "--lport", str(OVPN_PORT),
             "--float", "--push", f"dhcp-option DNS {VPN_TUN_ADDR}",
             "--push", "dhcp-option DOMAIN example"],
        )  # fmt: skip


@pytest.fixture(scope="module")
def pushed(netns_ok: None) -> Iterator[Pushed]:
    world = World("q", "openvpn")
    try:
        world.build()
        pki = make_pki(world.tmp / "ovpn-pki", BOOTSTRAP_NAME, [VPN_ISP_ADDR], "openvpn")
        tls = ["--ca", str(pki.ca), "--cert", str(pki.cert), "--key", str(pki.key)]
        cert, key = make_client_cert(world.tmp / "ovpn-pki", "client")
        client_tls = ["--ca", str(pki.ca), "--cert", str(cert), "--key", str(key)]
        for proc in list(world.processes):
            if proc.name in ("vpn-openvpn",) or proc is world.vpn_client:
                proc.stop(signal.SIGTERM, grace=5)
        world.vpn_client = None
        yield Pushed(world, tls, client_tls)
    finally:
        world.close()


def _stub(world: World) -> tuple[Process, Path]:
    home = world.tmp / "push-stub"
    home.mkdir(exist_ok=True)
    sock = home / "control.sock"
    config = {
        "listen": ["127.0.0.1:53"],
        "tunnel": {"interfaces": [world.tun_c]},
        "upstreams": [f"tcp://{VPN_TUN_ADDR}"],
        "routes": {"vpn.invalid.example": ["vpn"]},  # names vpn: announced domains go there
        "bootstrap_hosts": {BOOTSTRAP_NAME: [VPN_ISP_ADDR]},
        "cache": {"enabled": False},
        "control_socket": str(sock),
        "logging": {"level": "debug"},
    }
    path = home / "config.yaml"
    path.write_text(json.dumps(config) + "\n")  # JSON is YAML
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    stub = world.spawn(
        "push-stub",
        world.ns_c,
        [sys.executable, "-m", "stubresolver", "run", "--config", str(path)],
        env=env,
        cwd=REPO_ROOT,
    )
    deadline = time.monotonic() + 20
    while not sock.exists():
        assert stub.alive(), stub.log_tail()
        assert time.monotonic() < deadline, stub.log_tail()
        time.sleep(0.05)
    return stub, sock


def _status(world: World, sock: Path) -> dict[str, Any]:
    proc = world.ns_run(
        world.ns_c,
        [sys.executable, "-m", "stubresolver", "status", "--json", "--socket", str(sock)],
    )
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return result


def _wait(what: str, ready: Any, log: Process, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what}:\n{log.log_tail(60)}"
        time.sleep(0.1)


def _answers(status: dict[str, Any], url: str) -> int:
    [found] = [u for u in status["upstreams"] if u["url"] == url]
    return int(found["answers"])


def _client(pushed: Pushed, sock: Path) -> Process:
    """A TLS-mode OpenVPN client that pulls the pushed options and runs the hook."""
    world = pushed.world
    pushed.restart_server()
    wrapper = world.tmp / "stubresolver-cmd"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {sys.executable} -m stubresolver "$@"\n'
    )
    wrapper.chmod(0o755)
    client = world._openvpn(  # the world's own way to start an endpoint
        world.ns_c,
        f"push-openvpn-client-{len(world.processes)}",
        ["--tls-client", "--pull", *pushed.client_tls, "--remote-cert-tls", "server",
         "--nobind", "--remote", VPN_ISP_ADDR, str(OVPN_PORT),
         "--script-security", "2", "--up", str(HOOK), "--down", str(HOOK),
         "--setenv", "STUBRESOLVER", str(wrapper),
         "--setenv", "STUBRESOLVER_SOCKET", str(sock)],
    )  # fmt: skip
    world.vpn_client = client
    world.wait_tunnel_passes()
    return client


def test_pushed_dns_and_domain_reach_the_stub_and_down_refuses(pushed: Pushed) -> None:
    world = pushed.world
    stub, sock = _stub(world)
    try:
        client = _client(pushed, sock)
        _wait("the up hook never announced", lambda: _status(world, sock)["vpn"], client)
        status = _status(world, sock)
        assert status["vpn"] == {
            "interface": world.tun_c,
            "servers": [VPN_TUN_ADDR],
            "domains": ["example"],
        }
        assert status["tunnel"]["up"] is True
        # The pushed domain routes to the pushed server, through the tunnel.
        with world.c_socket() as s:
            assert WWW_ADDR in query(s, WWW_NAME, timeout=3.0).addresses
        after = _status(world, sock)
        assert _answers(after, "vpn") == 1
        assert _answers(after, f"tcp://{VPN_TUN_ADDR}") == 0
        # Anything else goes to the configured upstream.
        with world.c_socket() as s:
            query(s, "outside.test.", timeout=3.0)
        assert _answers(_status(world, sock), f"tcp://{VPN_TUN_ADDR}") == 1
        assert _answers(_status(world, sock), "vpn") == 1

        # The down hook: forgotten, and refused at once.
        assert client.stop(signal.SIGTERM, grace=10) == 0
        world.vpn_client = None
        _wait("the down hook never withdrew", lambda: _status(world, sock)["vpn"] is None, client)
        assert _status(world, sock)["tunnel"]["up"] is False
        with world.c_socket() as s:
            assert query(s, WWW_NAME, timeout=3.0).rcode == "REFUSED"
        with world.c_socket() as s:
            assert query(s, BOOTSTRAP_NAME + ".", timeout=3.0).addresses == (VPN_ISP_ADDR,)
        log = client.log_path.read_text(errors="replace")
        assert "stubresolver hook" not in log, log  # both hooks reached the stub
        assert "PUSH: Received control message" in log
    finally:
        assert stub.stop(signal.SIGTERM, grace=10) == 0, stub.log_tail()
    assert "Traceback" not in stub.log_path.read_text(errors="replace")
    leaks = world.leak_figures()
    assert leaks == {
        "isp_packets_from_client": 0,
        "isp_packets_to_resolver": 0,
        "isp_log_queries": 0,
        "client_egress_packets": 0,
    }, leaks


def test_a_tunnel_that_dies_without_its_down_hook_loses_its_servers(pushed: Pushed) -> None:
    """kill -9 of the VPN client: no down hook runs, the tun device goes, and the epoch
    change alone forgets what that tunnel's VPN announced."""
    world = pushed.world
    stub, sock = _stub(world)
    try:
        client = _client(pushed, sock)
        _wait("the up hook never announced", lambda: _status(world, sock)["vpn"], client)
        client.stop(signal.SIGKILL)
        world.vpn_client = None
        _wait(
            "the announcement outlived its tunnel",
            lambda: _status(world, sock)["vpn"] is None,
            stub,
        )
        with world.c_socket() as s:
            assert query(s, WWW_NAME, timeout=3.0).rcode == "REFUSED"
        assert "forgetting the DNS servers its VPN announced" in stub.log_tail(400)
        # A new client announces again and answers flow.
        client = _client(pushed, sock)
        _wait("the new up hook never announced", lambda: _status(world, sock)["vpn"], client)
        with world.c_socket() as s:
            assert WWW_ADDR in query(s, WWW_NAME, timeout=3.0).addresses
        client.stop(signal.SIGTERM, grace=10)
        world.vpn_client = None
    finally:
        assert stub.stop(signal.SIGTERM, grace=10) == 0, stub.log_tail()
    assert world.leak_figures()["isp_log_queries"] == 0
