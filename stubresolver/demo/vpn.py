"""The tunnel between the client and VPN namespaces: userspace WireGuard (wireguard-go) or
OpenVPN static-key point-to-point; bringing the client side down every way it goes down
and back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from stubresolver.errors import WorldError

from .processes import Process
from .topology import (
    C_TUN_ADDR,
    OVPN_PORT,
    VPN_ISP_ADDR,
    VPN_TUN_ADDR,
    WG_PORT,
    WG_RUN_DIR,
    WWW_ADDR,
    WWW_NAME,
    Topology,
    run,
)


class Vpn(Topology):
    """The VPN tunnel of the world, client and server side."""

    pub_c: str
    pub_v: str

    def _keys(self) -> None:
        if self.kind == "openvpn":
            # OpenVPN 2.6 static-key point-to-point: one shared key, no TLS handshake.
            run(["openvpn", "--genkey", "secret", str(self.tmp / "ovpn.key")])
            return
        for side in ("c", "v"):
            key = run(["wg", "genkey"]).stdout.strip()
            pub = run(["wg", "pubkey"], stdin=key + "\n").stdout.strip()
            path = self.tmp / f"wg-{side}.key"
            path.write_text(key + "\n")
            path.chmod(0o600)
            setattr(self, f"pub_{side}", pub)

    def _start_wireguard_go(self, ns: str, ifname: str, name: str) -> Process:
        sock = WG_RUN_DIR / f"{ifname}.sock"
        # A SIGKILLed wireguard-go leaves its control socket behind; it is ours (the name is
        # unique to this run), so clear it before the next one starts.
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="error")
        proc = self.spawn(name, ns, ["wireguard-go", "-f", ifname], env=env)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not proc.alive():
                raise WorldError(f"wireguard-go {ifname} exited:\n{proc.log_tail()}")
            if sock.exists() and self.link_exists(ns, ifname):
                return proc
            time.sleep(0.01)
        raise WorldError(f"wireguard-go {ifname} did not come up:\n{proc.log_tail()}")

    def _wg_set(self, ns: str, args: Sequence[str]) -> None:
        # The control socket can exist a moment before it accepts; retry briefly.
        deadline = time.monotonic() + 3
        while True:
            proc = self.ns_run(ns, ["wg", "set", *args], check=False)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise WorldError(f"wg set {args[0]}: {proc.stderr}")
            time.sleep(0.02)

    def _openvpn(self, ns: str, name: str, args: Sequence[str]) -> Process:
        """An OpenVPN static-key p2p endpoint; returns once its tun has its address."""
        ifname = self.tun_v if ns == self.ns_vpn else self.tun_c
        local = VPN_TUN_ADDR if ns == self.ns_vpn else C_TUN_ADDR
        remote = C_TUN_ADDR if ns == self.ns_vpn else VPN_TUN_ADDR
        proc = self.spawn(
            name,
            ns,
            ["openvpn", "--dev", ifname, "--dev-type", "tun", "--proto", "udp",
             "--ifconfig", local, remote, "--cipher", "AES-256-CBC", "--auth", "SHA256",
             "--ping", "1", "--verb", "3", "--suppress-timestamps", *args],
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not proc.alive():
                raise WorldError(f"openvpn {ifname} exited:\n{proc.log_tail()}")
            # The address is set before the data channel is ready; OpenVPN says when it is.
            # A client sets its address before the data channel is ready; OpenVPN says when
            # it is (the server says so only once a client has reached it).
            ready = ns == self.ns_vpn or "Initialization Sequence Completed" in proc.log_tail(400)
            if ready and local in self.tunnel_state(ns, ifname).get("addrs", []):
                return proc
            time.sleep(0.02)
        raise WorldError(f"openvpn {ifname} did not come up:\n{proc.log_tail()}")

    def _vpn_side_tunnel(self) -> None:
        if self.kind == "openvpn":
            # --float: the client's source port changes whenever its process is replaced.
            self._openvpn(
                self.ns_vpn,
                "vpn-openvpn",
                ["--secret", str(self.tmp / "ovpn.key"), "0", "--lport", str(OVPN_PORT),
                 "--float"],
            )  # fmt: skip
            return
        self._start_wireguard_go(self.ns_vpn, self.tun_v, "vpn-wireguard-go")
        self._wg_set(
            self.ns_vpn,
            [self.tun_v, "private-key", str(self.tmp / "wg-v.key"), "listen-port", str(WG_PORT),
             "peer", self.pub_c, "allowed-ips", f"{C_TUN_ADDR}/32"],
        )  # fmt: skip
        run(["ip", "-n", self.ns_vpn, "addr", "add", f"{VPN_TUN_ADDR}/24", "dev", self.tun_v])
        run(["ip", "-n", self.ns_vpn, "link", "set", self.tun_v, "up"])

    # ---------------------------------------------------------------- client tunnel

    def start_client_tunnel(self) -> None:
        """A new client VPN process: a new tun device with a new ifindex."""
        if self.vpn_client is not None:
            self.vpn_client.stop()
        if self.kind == "openvpn":
            self.vpn_client = self._openvpn(
                self.ns_c,
                f"client-openvpn-{len(self.processes)}",  # one log per process
                ["--secret", str(self.tmp / "ovpn.key"), "1", "--nobind",
                 "--remote", VPN_ISP_ADDR, str(OVPN_PORT)],
            )  # fmt: skip
            return
        self.vpn_client = self._start_wireguard_go(self.ns_c, self.tun_c, "client-wireguard-go")
        self._wg_set(
            self.ns_c,
            [self.tun_c, "private-key", str(self.tmp / "wg-c.key"),
             "peer", self.pub_v, "endpoint", f"{VPN_ISP_ADDR}:{WG_PORT}",
             "allowed-ips", "100.66.0.0/24"],
        )  # fmt: skip
        run(["ip", "-n", self.ns_c, "addr", "add", f"{C_TUN_ADDR}/24", "dev", self.tun_c])
        run(["ip", "-n", self.ns_c, "link", "set", self.tun_c, "up"])

    def client_addr_args(self) -> list[str]:
        if self.kind == "openvpn":  # what `--ifconfig local remote` sets on a p2p tun
            return [C_TUN_ADDR, "peer", VPN_TUN_ADDR]
        return [f"{C_TUN_ADDR}/24"]

    def client_tunnel_state(self) -> dict[str, Any]:
        return self.tunnel_state(self.ns_c, self.tun_c)

    def take_down(self, way: str) -> None:
        """Take the client tunnel down one way. Returns once the command has completed."""
        if way == "link-down":
            run(["ip", "-n", self.ns_c, "link", "set", self.tun_c, "down"])
        elif way == "delete":
            run(["ip", "-n", self.ns_c, "link", "del", self.tun_c])
        elif way == "kill":
            assert self.vpn_client is not None
            self.vpn_client.popen.send_signal(signal.SIGKILL)
        elif way == "addr-flush":
            run(["ip", "-n", self.ns_c, "addr", "flush", "dev", self.tun_c])
        else:
            raise ValueError(way)

    def restore(self, way: str) -> None:
        """Undo take_down(way); delete and kill come back as a new device (new ifindex)."""
        if way == "link-down":
            run(["ip", "-n", self.ns_c, "link", "set", self.tun_c, "up"])
        elif way in ("delete", "kill"):
            assert self.vpn_client is not None
            if self.kind == "wireguard":  # wireguard-go exits when its tun is deleted
                self.vpn_client.popen.wait(5)
            else:  # openvpn survives the loss of its tun (uselessly): replace it
                self.vpn_client.stop(signal.SIGTERM, grace=3)
            self.start_client_tunnel()
        elif way == "addr-flush":
            run(["ip", "-n", self.ns_c, "addr", "add", *self.client_addr_args(), "dev", self.tun_c])
        else:
            raise ValueError(way)

    def ensure_tunnel_up(self) -> None:
        """Whatever a previous test left behind, bring the client tunnel back to normal."""
        state = self.client_tunnel_state()
        if not (state["exists"] and self.vpn_client is not None and self.vpn_client.alive()):
            if state["exists"]:
                run(["ip", "-n", self.ns_c, "link", "del", self.tun_c], check=False)
            if self.vpn_client is not None:
                self.vpn_client.stop(signal.SIGKILL)
            self.start_client_tunnel()
            return
        if C_TUN_ADDR not in state["addrs"]:
            run(["ip", "-n", self.ns_c, "addr", "add", *self.client_addr_args(), "dev", self.tun_c])
        if not state["up"]:
            run(["ip", "-n", self.ns_c, "link", "set", self.tun_c, "up"])

    def wait_tunnel_passes(self, timeout: float = 5.0) -> None:
        """The tunnel carries DNS: ask the VPN resolver directly (stub bypassed) via dig."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.ns_run(
                self.ns_c,
                ["dig", "+time=1", "+tries=1", "+short", f"@{VPN_TUN_ADDR}", WWW_NAME],
                check=False,
            )
            last = proc.stdout + proc.stderr
            if proc.returncode == 0 and WWW_ADDR in proc.stdout.split():
                return
            time.sleep(0.05)
        raise WorldError(f"tunnel does not pass DNS to {VPN_TUN_ADDR}: {last}")
