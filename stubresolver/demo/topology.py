"""The netns world's network (shared by the tests and `stubresolver demo`): client, ISP
and VPN namespaces, the veth links between them, their addresses and routes, and the names
of everything (unique per run).

Plain subprocess calls to `ip`; every process started is remembered by PID (`spawn`).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from stubresolver.errors import WorldError

from .processes import Process, recording, start
from .unbound_conf import vpn_zone_lines

# Addresses (RFC 2544 benchmarking space for the "physical" links, CGNAT space for the
# tunnel, RFC 5737 TEST-NET-1 for answers). The ISP resolver answers everything with
# ISP_FORGED_ANSWER, so an answer carrying it is a leak seen from the client side.
C_ISP_ADDR: Final = "198.18.1.2"
ISP_C_ADDR: Final = "198.18.1.1"
ISP_VPN_ADDR: Final = "198.18.2.1"
VPN_ISP_ADDR: Final = "198.18.2.2"
C_ISP_ADDR6: Final = "fd00:1::2"
ISP_C_ADDR6: Final = "fd00:1::1"
C_TUN_ADDR: Final = "100.66.0.2"
VPN_TUN_ADDR: Final = "100.66.0.1"
VPN_ALLOW: Final = "100.66.0.0/24"  # the tunnel's addresses: the only clients of the VPN
WG_PORT: Final = 51820
OVPN_PORT: Final = 1194
KINDS: Final = ("wireguard", "openvpn")
WWW_NAME: Final = "www.example."
WWW_ADDR: Final = "192.0.2.10"
LOAD_ZONE: Final = "load.example."
LOAD_ADDR: Final = "192.0.2.20"
ISP_FORGED_ANSWER: Final = "198.18.1.66"
WATCHED_PORTS: Final = (53, 853, 443)
# What the VPN's resolvers (plain, and DoT/DoH in encrypted_world) serve.
VPN_ZONE: Final = tuple(vpn_zone_lines(WWW_NAME, WWW_ADDR, LOAD_ZONE, LOAD_ADDR))

WG_RUN_DIR: Final = Path("/var/run/wireguard")
NETNS_RUN_DIR: Final = Path("/var/run/netns")
CLONE_NEWNET: Final = 0x40000000

# The ways a tunnel goes down, in the order flaps cycle through them.
WAYS: Final = ("link-down", "delete", "kill", "addr-flush")


def run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = 15.0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise WorldError(
            f"{' '.join(cmd)} -> {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def netns_usable() -> str | None:
    """None when this process can build namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft", "wg", "wireguard-go", "openvpn", "unbound", "unbound-checkconf",
                 "dnsmasq", "dig", "getent"):  # fmt: skip
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    name = f"srprobe{os.getpid()}"
    try:
        run(["ip", "netns", "add", name], timeout=10)
    except (WorldError, OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns unavailable: {exc}"
    run(["ip", "netns", "del", name], check=False)
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def socket_in_netns(ns: str, family: int, kind: int) -> socket.socket:
    """A socket created inside network namespace `ns`, usable from this process.

    A socket belongs to the namespace it was created in for its whole life. setns() for a
    network namespace only moves the calling thread, so a throwaway thread enters the
    namespace, creates the socket and exits; the test's own threads never move.
    """
    result: list[socket.socket | BaseException] = []

    def enter_and_create() -> None:
        try:
            fd = os.open(NETNS_RUN_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(family, kind))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=enter_and_create, name=f"setns-{ns}")
    thread.start()
    thread.join()
    item = result[0]
    if isinstance(item, BaseException):
        raise item
    return item


class Topology:
    """Three namespaces joined by veth links; the names every part of the world uses."""

    #: Children in sessions of their own (the demo: Ctrl-C must reach only the demo, which
    #: then stops them in order); the tests keep them in pytest's process group.
    own_session = False

    def __init__(self, tag: str, kind: str = "wireguard") -> None:
        if kind not in KINDS:
            raise ValueError(kind)
        prefix = f"sr{os.getpid() % 10000}{tag}"
        self.prefix = prefix
        self.kind = kind
        self.ns_c = f"{prefix}-c"
        self.ns_isp = f"{prefix}-isp"
        self.ns_vpn = f"{prefix}-vpn"
        # Interface names: at most 15 bytes, unique host-wide (WireGuard's UAPI sockets in
        # /var/run/wireguard are shared by all namespaces).
        self.veth_c = f"{prefix}ci"
        self.veth_isp_c = f"{prefix}ic"
        self.veth_isp_v = f"{prefix}iv"
        self.veth_v = f"{prefix}vi"
        letter = "w" if kind == "wireguard" else "o"
        self.tun_c = f"{prefix}{letter}c"
        self.tun_v = f"{prefix}{letter}v"
        self.isp_table = f"{prefix}isp"
        self.c_table = f"{prefix}c"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        self.etc_netns = Path("/etc/netns") / self.ns_c
        self.processes: list[Process] = []
        self.vpn_client: Process | None = None
        self.isp_log = self.tmp / "isp-dnsmasq.log"
        self.vpn_log = self.tmp / "vpn-unbound.log"
        self._made_ns: list[str] = []

    # ---------------------------------------------------------------- processes

    def spawn(
        self,
        name: str,
        ns: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
    ) -> Process:
        """Start argv inside namespace ns (`ip netns exec` execs it: the PID is argv's)."""
        with recording():  # an interrupt now waits until the child is in self.processes
            proc = start(
                name,
                ["ip", "netns", "exec", ns, *argv],
                self.tmp / f"{name}.log",
                env=env,
                cwd=cwd,
                stdin=stdin,
                stdout=stdout,
                new_session=self.own_session,
            )
            self.processes.append(proc)
        return proc

    def ns_run(
        self, ns: str, argv: Sequence[str], *, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", ns, *argv], check=check, stdin=stdin)

    # ---------------------------------------------------------------- build

    def _links(self) -> None:
        c, isp, v = self.ns_c, self.ns_isp, self.ns_vpn
        run(["ip", "link", "add", self.veth_c, "netns", c, "type", "veth",
             "peer", "name", self.veth_isp_c, "netns", isp])  # fmt: skip
        run(["ip", "link", "add", self.veth_isp_v, "netns", isp, "type", "veth",
             "peer", "name", self.veth_v, "netns", v])  # fmt: skip
        for ns, dev, addr in (
            (c, self.veth_c, f"{C_ISP_ADDR}/24"),
            (isp, self.veth_isp_c, f"{ISP_C_ADDR}/24"),
            (isp, self.veth_isp_v, f"{ISP_VPN_ADDR}/24"),
            (v, self.veth_v, f"{VPN_ISP_ADDR}/24"),
        ):
            run(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        # IPv6 on the client's physical link too, so a v6 leak has somewhere to go.
        run(["ip", "-n", c, "addr", "add", f"{C_ISP_ADDR6}/64", "dev", self.veth_c, "nodad"])
        run(["ip", "-n", isp, "addr", "add", f"{ISP_C_ADDR6}/64", "dev", self.veth_isp_c,
             "nodad"])  # fmt: skip
        run(["ip", "-n", c, "route", "add", "default", "via", ISP_C_ADDR])
        run(["ip", "-n", c, "-6", "route", "add", "default", "via", ISP_C_ADDR6])
        # The VPN side only needs the way back to the client's public address; no default
        # route, so its own resolver could never recurse out through the ISP.
        run(["ip", "-n", v, "route", "add", "198.18.1.0/24", "via", ISP_VPN_ADDR])
        self.ns_run(isp, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.ns_run(isp, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

    def link_exists(self, ns: str, ifname: str) -> bool:
        return run(["ip", "-n", ns, "link", "show", "dev", ifname], check=False).returncode == 0

    def tunnel_state(self, ns: str, ifname: str) -> dict[str, Any]:
        proc = run(["ip", "-n", ns, "-j", "addr", "show", "dev", ifname], check=False)
        if proc.returncode != 0:
            return {"exists": False}
        info: dict[str, Any] = json.loads(proc.stdout)[0]
        return {
            "exists": True,
            "ifindex": info["ifindex"],
            "up": "UP" in info.get("flags", []),
            "addrs": [a["local"] for a in info.get("addr_info", [])],
        }

    def _counter(self, ns: str, table: str, name: str) -> int:
        out = self.ns_run(ns, ["nft", "-j", "list", "counter", "inet", table, name]).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise WorldError(f"counter {table}/{name} not found in {out}")

    def c_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
    ) -> socket.socket:
        """A non-blocking socket in the client namespace (dnspython requires non-blocking)."""
        sock = socket_in_netns(self.ns_c, family, kind)
        sock.setblocking(False)
        return sock
