"""The end-to-end test world: client, ISP and VPN network namespaces joined by a real tunnel.

See the module docstring of `test_leak_e2e.py` for the picture. Everything here is plain
subprocess calls to `ip`, `wg`, `nft`, `wireguard-go`, `unbound` and `dnsmasq`; every process
started is remembered by PID and killed by PID in `close()`; nothing outside the namespaces
this module creates is touched except `/etc/netns/<client>/` and the WireGuard control
sockets of our own uniquely named interfaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from testkit.processes import Process, start
from testkit.unbound import vpn_config, vpn_zone_lines

REPO_ROOT: Final = Path(__file__).resolve().parents[2]

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


class WorldError(RuntimeError):
    """A command building or driving the world failed."""


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


class World:
    """Three namespaces, a userspace WireGuard tunnel, a logging ISP resolver, VPN DNS."""

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
        proc = start(
            name,
            ["ip", "netns", "exec", ns, *argv],
            self.tmp / f"{name}.log",
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
        )
        self.processes.append(proc)
        return proc

    def ns_run(
        self, ns: str, argv: Sequence[str], *, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", ns, *argv], check=check, stdin=stdin)

    # ---------------------------------------------------------------- build

    def build(self) -> None:
        for ns in (self.ns_c, self.ns_isp, self.ns_vpn):
            run(["ip", "netns", "add", ns])
            self._made_ns.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self._links()
        self._isp_services()
        self._client_firewall_witness()
        self._keys()
        self._vpn_tunnel_and_dns()
        self.start_client_tunnel()
        self.etc_netns.mkdir(parents=True, exist_ok=True)
        (self.etc_netns / "resolv.conf").write_text(
            "# written by tests/netns: glibc in the client namespace asks the stub\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n"
        )
        self.wait_tunnel_passes()

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

    def _isp_services(self) -> None:
        ports = ", ".join(str(p) for p in WATCHED_PORTS)
        # Counters run before conntrack and NAT (priority -300): every packet arriving from
        # the client with a DNS, DoT or DoH destination port is counted, whatever its
        # destination address. A NAT redirect then hands any plain DNS, to any address, to
        # the logging resolver: this ISP is a hijacking one, nothing sneaks past its log.
        ruleset = f"""
table inet {self.isp_table} {{
  counter from_client {{ }}
  counter to_isp_resolver {{ }}
  chain pre {{
    type filter hook prerouting priority -300; policy accept;
    iifname "{self.veth_isp_c}" meta l4proto {{ udp, tcp }} th dport {{ {ports} }} \
counter name "from_client"
  }}
  chain inp {{
    type filter hook input priority -300; policy accept;
    meta l4proto {{ udp, tcp }} th dport {{ {ports} }} counter name "to_isp_resolver"
  }}
  chain hijack {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{self.veth_isp_c}" meta l4proto {{ udp, tcp }} th dport 53 redirect to :53
  }}
}}
"""
        self.ns_run(self.ns_isp, ["nft", "-f", "-"], stdin=ruleset)
        empty_conf = self.tmp / "dnsmasq-empty.conf"
        empty_conf.write_text("")
        self.spawn(
            "isp-dnsmasq",
            self.ns_isp,
            ["dnsmasq", f"--conf-file={empty_conf}", "--keep-in-foreground",
             "--log-queries", f"--log-facility={self.isp_log}", "--no-resolv", "--no-hosts",
             f"--address=/#/{ISP_FORGED_ANSWER}", f"--listen-address={ISP_C_ADDR}",
             f"--listen-address={ISP_C_ADDR6}", "--bind-interfaces", "--port=53",
             "--user=root", "--pid-file="],
        )  # fmt: skip

    def _client_firewall_witness(self) -> None:
        # A second, independent witness inside the client: DNS-port packets leaving by any
        # interface other than loopback and the tunnel. It only counts; it never drops
        # (the stub must keep the promise on its own).
        ports = ", ".join(str(p) for p in WATCHED_PORTS)
        ruleset = f"""
table inet {self.c_table} {{
  counter egress {{ }}
  chain out {{
    type filter hook output priority -300; policy accept;
    oifname != {{ "lo", "{self.tun_c}" }} meta l4proto {{ udp, tcp }} th dport {{ {ports} }} \
counter name "egress"
  }}
}}
"""
        self.ns_run(self.ns_c, ["nft", "-f", "-"], stdin=ruleset)

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

    def _vpn_tunnel_and_dns(self) -> None:
        self._vpn_side_tunnel()
        conf = self.tmp / "unbound.conf"
        conf.write_text(vpn_config(VPN_TUN_ADDR, self.tmp, self.vpn_log, VPN_ALLOW, VPN_ZONE))
        run(["unbound-checkconf", str(conf)])
        self.spawn("vpn-unbound", self.ns_vpn, ["unbound", "-d", "-c", str(conf)])

    pub_c: str
    pub_v: str

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

    def link_exists(self, ns: str, ifname: str) -> bool:
        return run(["ip", "-n", ns, "link", "show", "dev", ifname], check=False).returncode == 0

    def client_addr_args(self) -> list[str]:
        if self.kind == "openvpn":  # what `--ifconfig local remote` sets on a p2p tun
            return [C_TUN_ADDR, "peer", VPN_TUN_ADDR]
        return [f"{C_TUN_ADDR}/24"]

    def client_tunnel_state(self) -> dict[str, Any]:
        return self.tunnel_state(self.ns_c, self.tun_c)

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

    # ---------------------------------------------------------------- witnesses

    def _counter(self, ns: str, table: str, name: str) -> int:
        out = self.ns_run(ns, ["nft", "-j", "list", "counter", "inet", table, name]).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise WorldError(f"counter {table}/{name} not found in {out}")

    def leak_figures(self) -> dict[str, int]:
        """Everything the ISP side and the client's egress witness have seen."""
        return {
            "isp_packets_from_client": self._counter(self.ns_isp, self.isp_table, "from_client"),
            "isp_packets_to_resolver": self._counter(
                self.ns_isp, self.isp_table, "to_isp_resolver"
            ),
            "isp_log_queries": self.isp_log_queries(),
            "client_egress_packets": self._counter(self.ns_c, self.c_table, "egress"),
        }

    def isp_log_queries(self) -> int:
        try:
            text = self.isp_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if " query[" in line)

    def vpn_log_queries(self) -> int:
        try:
            text = self.vpn_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if f"{C_TUN_ADDR} " in line)

    def c_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
    ) -> socket.socket:
        """A non-blocking socket in the client namespace (dnspython requires non-blocking)."""
        sock = socket_in_netns(self.ns_c, family, kind)
        sock.setblocking(False)
        return sock

    # ---------------------------------------------------------------- teardown

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
