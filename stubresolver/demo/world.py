"""The netns world of the end-to-end tests and of `stubresolver demo`: client, ISP and VPN
network namespaces joined by a real tunnel.

The picture is in the module docstring of tests/netns/test_leak_e2e.py. `World` composes the
parts: `topology` (namespaces, links, addresses), `vpn` (the tunnel) and `services` (the
ISP resolver and counters, the VPN resolver). Everything here is plain
subprocess calls to `ip`, `wg`, `nft`, `wireguard-go`, `unbound` and `dnsmasq`; every process
started is remembered by PID and killed by PID in `close()`; nothing outside the namespaces
this module creates is touched except `/etc/netns/<client>/` and the WireGuard control
sockets of our own uniquely named interfaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal

from stubresolver.errors import WorldError

from .services import Services
from .topology import (
    C_ISP_ADDR,
    C_ISP_ADDR6,
    C_TUN_ADDR,
    CLONE_NEWNET,
    ISP_C_ADDR,
    ISP_C_ADDR6,
    ISP_FORGED_ANSWER,
    ISP_VPN_ADDR,
    KINDS,
    LOAD_ADDR,
    LOAD_ZONE,
    NETNS_RUN_DIR,
    OVPN_PORT,
    VPN_ALLOW,
    VPN_ISP_ADDR,
    VPN_TUN_ADDR,
    VPN_ZONE,
    WATCHED_PORTS,
    WAYS,
    WG_PORT,
    WG_RUN_DIR,
    WWW_ADDR,
    WWW_NAME,
    netns_usable,
    run,
    socket_in_netns,
)
from .vpn import Vpn

__all__ = [
    "CLONE_NEWNET",
    "C_ISP_ADDR",
    "C_ISP_ADDR6",
    "C_TUN_ADDR",
    "ISP_C_ADDR",
    "ISP_C_ADDR6",
    "ISP_FORGED_ANSWER",
    "ISP_VPN_ADDR",
    "KINDS",
    "LOAD_ADDR",
    "LOAD_ZONE",
    "NETNS_RUN_DIR",
    "OVPN_PORT",
    "VPN_ALLOW",
    "VPN_ISP_ADDR",
    "VPN_TUN_ADDR",
    "VPN_ZONE",
    "WATCHED_PORTS",
    "WAYS",
    "WG_PORT",
    "WG_RUN_DIR",
    "WWW_ADDR",
    "WWW_NAME",
    "World",
    "WorldError",
    "netns_usable",
    "run",
    "socket_in_netns",
]


class World(Vpn, Services):
    """Three namespaces, a userspace WireGuard tunnel, a logging ISP resolver, VPN DNS."""

    def build(self) -> None:
        for ns in (self.ns_c, self.ns_isp, self.ns_vpn):
            run(["ip", "netns", "add", ns])
            self._made_ns.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self._links()
        self._isp_services()
        self._client_firewall_witness()
        self._keys()
        self._vpn_side_tunnel()
        self._vpn_dns()
        self.start_client_tunnel()
        self.etc_netns.mkdir(parents=True, exist_ok=True)
        (self.etc_netns / "resolv.conf").write_text(
            "# written by the stubresolver netns world: glibc here asks the stub\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n"
        )
        self.wait_tunnel_passes()

    def close(self) -> None:
        errors: list[str] = []
        for proc in reversed(self.processes):
            try:
                proc.stop(signal.SIGTERM, grace=3)
            except Exception as exc:
                errors.append(f"{proc.name}: {exc}")
        for ns in reversed(self._made_ns):
            proc_ = run(["ip", "netns", "del", ns], check=False)
            if proc_.returncode != 0:
                errors.append(f"netns del {ns}: {proc_.stderr}")
        for ifname in (self.tun_c, self.tun_v):
            with contextlib.suppress(FileNotFoundError):
                (WG_RUN_DIR / f"{ifname}.sock").unlink()
        shutil.rmtree(self.etc_netns, ignore_errors=True)
        if os.environ.get("STUBRESOLVER_E2E_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise WorldError("teardown: " + "; ".join(errors))
