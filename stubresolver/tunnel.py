"""The tunnel monitor: publishes `TunnelState` and bumps its epoch on every change.

DESIGN.md, "Gate": a query is forwarded only while the tunnel is up. Netlink link/address
events (a stdlib AF_NETLINK socket) wake the monitor at once; a slow poll is the fallback.

The probe is split in two so the decision is testable without an interface:
`read_interfaces` does the I/O (ioctl flags, netifaces addresses, ifindex, device kind) and
`select_tunnel` is a pure function from patterns and interface facts to a `ProbeResult`.
`transition` is the pure step from the old state and a probe result to the new state and
epoch; `TunnelMonitor` only does the I/O around it (netlink, the poll, subscribers).

Which interface is the tunnel (issue 7: "the tunnel cannot be mistaken"):
- patterns are tried in the order written; the first pattern with a usable interface wins;
- a glob accepts only the device kinds a VPN makes (tun/tap, WireGuard, PPP, plus
  ``tunnel.kinds``): ``tun*`` also matches ``tunl0``, the kernel's IPIP fallback device,
  and a socket bound there would send plain DNS over the ISP route, encapsulated;
- an exact name (no glob characters) is trusted whatever its kind, as the user wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import fnmatch
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import netifaces

from stubresolver.tunnel_state import DOWN, TunnelState

log = logging.getLogger(__name__)

# <linux/if.h>. IFF_RUNNING is computed by the kernel (dev_get_flags) and is only visible
# through SIOCGIFFLAGS or netlink, not /sys/class/net/<if>/flags. operstate is useless here:
# a working tun reports UNKNOWN (DESIGN.md, kernel table).
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
_SIOCGIFFLAGS = 0x8913
_IFREQ = struct.Struct("16sh22x")  # struct ifreq: name + ifr_flags, 40 bytes on 64-bit

# <linux/rtnetlink.h> multicast groups (legacy bitmask form for bind()).
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

Subscriber = Callable[[TunnelState, TunnelState], None]


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """What the kernel says about one interface at probe time."""

    name: str
    ifindex: int
    flags: int
    addresses: tuple[str, ...]
    kind: str  # see device_kind: "tun", "tap", "wireguard", "ppp", "ether", "ipip", ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A `TunnelState` without the epoch: the monitor owns the epoch."""

    up: bool
    ifname: str | None
    ifindex: int | None
    addresses: tuple[str, ...]
    #: Interfaces a glob matched but whose kind is not accepted: (name, kind), for the log.
    skipped: tuple[tuple[str, str], ...] = ()


ABSENT = ProbeResult(up=False, ifname=None, ifindex=None, addresses=())

#: Device kinds a VPN client makes: OpenVPN and wireguard-go use tun (or tap), kernel
#: WireGuard its own kind, pppd (PPTP, L2TP, SSTP) ppp.
DEFAULT_KINDS = frozenset(("tun", "tap", "wireguard", "ppp"))
_GLOB_CHARS = frozenset("*?[")

Probe = Callable[[Sequence[str]], ProbeResult]


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` matches one of the fnmatch globs (case-sensitive, like the kernel)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_usable(info: InterfaceInfo) -> bool:
    """Up means IFF_UP and a carrier (IFF_RUNNING or IFF_LOWER_UP) and at least one address."""
    return bool(
        info.flags & IFF_UP and info.flags & (IFF_RUNNING | IFF_LOWER_UP) and info.addresses
    )


def is_exact(pattern: str) -> bool:
    """An interface name as written, not a glob: trusted whatever its kind."""
    return not _GLOB_CHARS.intersection(pattern)


def select_tunnel(
    patterns: Sequence[str],
    interfaces: Sequence[InterfaceInfo],
    kinds: frozenset[str] = DEFAULT_KINDS,
) -> ProbeResult:
    """Pick the tunnel among ``interfaces`` (pure).

    Patterns are taken in the order written; within one glob, matches go by name. A glob's
    match whose kind is not in ``kinds`` is skipped (and reported in ``skipped``). The first
    usable candidate wins; when none is usable, the first candidate is reported as down (so
    the REFUSED text can name it); with no candidate the tunnel is absent.
    """
    candidates: list[InterfaceInfo] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    by_name = sorted(interfaces, key=lambda i: i.name)
    for pattern in patterns:
        exact = is_exact(pattern)
        for info in by_name:
            if info.name in seen or not fnmatch.fnmatchcase(info.name, pattern):
                continue
            seen.add(info.name)
            if exact or info.kind in kinds:
                candidates.append(info)
            else:
                skipped.append((info.name, info.kind))
    found = tuple(skipped)
    for info in candidates:
        if is_usable(info):
            return ProbeResult(True, info.name, info.ifindex, info.addresses, found)
    if candidates:
        first = candidates[0]
        return ProbeResult(False, first.name, first.ifindex, first.addresses, found)
    return ProbeResult(False, None, None, (), found)


def transition(old: TunnelState, result: ProbeResult) -> TunnelState:
    """The state after a probe (pure): ``old`` itself when nothing changed, else a new state
    with the next epoch. Any change of up, name, index or addresses is a new epoch: sockets
    and answers of the old one are stale (DESIGN.md kernel table)."""
    if (result.up, result.ifname, result.ifindex, result.addresses) == (
        old.up,
        old.ifname,
        old.ifindex,
        old.addresses,
    ):
        return old
    return TunnelState(
        up=result.up,
        ifname=result.ifname,
        ifindex=result.ifindex,
        addresses=result.addresses,
        epoch=old.epoch + 1,
        current_epoch=old.current_epoch,
    )


# <linux/if_arp.h> device types for the kinds sysfs has no better name for.
_ARPHRD_KINDS = {1: "ether", 512: "ppp", 768: "ipip", 769: "ip6tnl", 772: "loopback", 776: "sit"}
_IFF_TUN = 0x0001
_IFF_TAP = 0x0002


def device_kind(name: str, sysfs: Path = Path("/sys/class/net")) -> str:
    """The kind of device ``name`` is, from sysfs.

    tun/tap devices have ``tun_flags`` (IFF_TUN or IFF_TAP; wireguard-go and OpenVPN make
    these); kernel WireGuard, PPP, bridges and VLANs name themselves in ``uevent`` as
    DEVTYPE; the rest are named by their ARPHRD type (``tunl0`` is "ipip", a veth or a dummy
    "ether"). "unknown" when sysfs cannot be read.
    """
    base = sysfs / name
    try:
        tun_flags = int((base / "tun_flags").read_text().strip(), 16)
    except (OSError, ValueError):
        pass
    else:
        return "tap" if tun_flags & _IFF_TAP else "tun"
    try:
        for line in (base / "uevent").read_text().splitlines():
            if line.startswith("DEVTYPE="):
                return line.split("=", 1)[1].strip()
        arphrd = int((base / "type").read_text().strip())
    except (OSError, ValueError):
        return "unknown"
    return _ARPHRD_KINDS.get(arphrd, f"arphrd-{arphrd}")


def _interface_flags(name: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = _IFREQ.pack(name.encode(), 0)
        res = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req)
    flags: int = _IFREQ.unpack(res)[1]
    return flags & 0xFFFF


def _interface_addresses(name: str) -> tuple[str, ...]:
    """IPv4 and non-link-local IPv6 addresses, in the kernel's order (primary first)."""
    found: list[str] = []
    per_family = netifaces.ifaddresses(name)
    for family in (netifaces.AF_INET, netifaces.AF_INET6):
        for entry in per_family.get(family, ()):
            raw = str(entry.get("addr", "")).split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(raw)
            except ValueError:
                continue
            # fe80::/10 needs a scope and is never a tunnel source address.
            if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
                continue
            if str(ip) not in found:
                found.append(str(ip))
    return tuple(found)


def read_interfaces(patterns: Sequence[str]) -> list[InterfaceInfo]:
    """Read flags, ifindex and addresses of every interface matching ``patterns``.

    An interface that vanishes while it is read is skipped (it is absent now).
    """
    result: list[InterfaceInfo] = []
    for name in netifaces.interfaces():
        if not matches(name, patterns):
            continue
        try:
            ifindex = socket.if_nametoindex(name)
            flags = _interface_flags(name)
            addresses = _interface_addresses(name)
        except (OSError, ValueError):
            continue
        result.append(InterfaceInfo(name, ifindex, flags, addresses, device_kind(name)))
    return result


def system_probe(patterns: Sequence[str], kinds: frozenset[str] = DEFAULT_KINDS) -> ProbeResult:
    """The default probe: the kernel's view, decided by `select_tunnel`."""
    return select_tunnel(patterns, read_interfaces(patterns), kinds)


class TunnelMonitor:
    """Watches the tunnel interfaces and publishes `TunnelState`.

    ``state`` is valid before `start` (DOWN, epoch 0). Every change of (up, ifname, ifindex,
    addresses) bumps ``epoch`` by one and calls the subscribers synchronously with
    (old, new). A probe that raises is logged and read as "down" (fail closed).
    """

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        poll_interval: float = 5.0,
        probe: Probe | None = None,
        kinds: frozenset[str] = DEFAULT_KINDS,
    ) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.poll_interval = poll_interval
        #: Device kinds a glob may match (reload may change it, like ``patterns``).
        self.kinds = kinds
        self._probe: Probe = probe or self._system_probe
        self._skipped: tuple[tuple[str, str], ...] = ()
        self._state: TunnelState = dataclasses.replace(DOWN, current_epoch=self._current_epoch)
        self._subscribers: list[Subscriber] = []
        self._netlink: NetlinkWatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_task: asyncio.Task[None] | None = None
        #: (name, ifindex) of a device a VPN hook said is going down (`tunnel-down`) while
        #: it still exists (wg-quick PreDown): it reads as down until `release` or until
        #: that device is gone (a new device of the same name has another ifindex).
        self._held: set[tuple[str, int]] = set()

    def _system_probe(self, patterns: Sequence[str]) -> ProbeResult:
        return system_probe(patterns, self.kinds)

    @property
    def state(self) -> TunnelState:
        return self._state

    def _current_epoch(self) -> int:
        return self._state.epoch

    @property
    def netlink_active(self) -> bool:
        """True while netlink events drive the monitor (false: polling only)."""
        return self._netlink is not None and self._netlink.active

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(old, new)`` on every change; returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def refresh(self) -> TunnelState:
        """Probe now; publish and return the (possibly new) state."""
        try:
            result = self._probe(self.patterns)
        except Exception:
            log.exception("tunnel probe failed; treating the tunnel as down")
            result = ProbeResult(False, self._state.ifname, self._state.ifindex, ())
        if self._held:
            result = self._apply_hold(result)
        if result.skipped != self._skipped:
            self._skipped = result.skipped
            for name, kind in result.skipped:
                # Once per change, not per poll.
                log.warning(
                    "interface %s matches tunnel.interfaces but is a %s device, not a VPN "
                    "tunnel; skipped (name it exactly, or add %r to tunnel.kinds)",
                    name,
                    kind,
                    kind,
                )
        old = self._state
        new = transition(old, result)
        if new is old:
            return old
        self._state = new
        log.info(
            "tunnel %s %s (ifindex %s, addresses %s, epoch %d)",
            new.label,
            "up" if new.up else "down",
            new.ifindex,
            ",".join(new.addresses) or "-",
            new.epoch,
        )
        for callback in list(self._subscribers):
            try:
                callback(old, new)
            except Exception:
                log.exception("tunnel subscriber %r failed", callback)
        return new

    def hold_down(self, ifname: str) -> TunnelState:
        """Treat ``ifname`` as down from now on (a hook's `tunnel-down`); returns the state."""
        state = self._state
        if state.ifname == ifname and state.ifindex is not None:
            self._held.add((ifname, state.ifindex))
        return self.refresh()

    def release(self, ifname: str) -> None:
        """A hook's `tunnel-up` for ``ifname``: its hold, if any, ends (refresh to see it)."""
        self._held = {held for held in self._held if held[0] != ifname}

    def _apply_hold(self, result: ProbeResult) -> ProbeResult:
        device = (result.ifname, result.ifindex)
        # A hold lasts only while the probe still sees that very device.
        self._held = {held for held in self._held if held == device}
        if result.up and device in self._held:
            return dataclasses.replace(result, up=False)
        return result

    async def start(self) -> None:
        """Read the state at once, then follow netlink events and poll as a fallback."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        watcher = NetlinkWatcher(self._loop, self.refresh, self.poll_interval)
        self._netlink = watcher if watcher.open() else None
        self.refresh()
        self._poll_task = asyncio.create_task(self._poll(), name="tunnel-monitor-poll")

    async def stop(self) -> None:
        watcher, self._netlink = self._netlink, None
        if watcher is not None:
            watcher.close()
        task, self._poll_task = self._poll_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self.refresh()


class NetlinkWatcher:
    """The netlink reader: wakes ``on_change`` once per batch of link and address events
    (RTMGRP_LINK and the IFADDR groups). The events' content is not read: the monitor
    probes the whole state again, which is simpler and never out of step."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], object], poll: float
    ) -> None:
        self._loop = loop
        self._on_change = on_change
        self._poll = poll  # for the log line: what the monitor falls back to
        self._sock: socket.socket | None = None

    @property
    def active(self) -> bool:
        return self._sock is not None

    def open(self) -> bool:
        """Subscribe; False (and a warning) where netlink is unavailable, as in a sandbox."""
        sock: socket.socket | None = None
        try:
            sock = socket.socket(
                socket.AF_NETLINK,
                socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                socket.NETLINK_ROUTE,
            )
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._loop.add_reader(sock.fileno(), self._readable)
        except (OSError, AttributeError, NotImplementedError, ValueError) as exc:
            if sock is not None:
                sock.close()
            log.warning("netlink unavailable (%s); polling every %.1fs", exc, self._poll)
            return False
        self._sock = sock
        return True

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def _readable(self) -> None:
        """Drain the batch of events and wake the monitor once."""
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                if not sock.recv(65536):
                    break
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    # The kernel dropped events for us; the re-probe below catches up.
                    continue
                log.warning("netlink read failed (%s); polling every %.1fs", exc, self._poll)
                self.close()
                break
        self._on_change()
