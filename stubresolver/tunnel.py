"""The tunnel monitor: publishes `TunnelState` and bumps its epoch on every change.

DESIGN.md, "Gate": a query is forwarded only while the tunnel is up. Netlink link/address
events (a stdlib AF_NETLINK socket) wake the monitor at once; a slow poll is the fallback.

The probe is split in two so the decision is testable without an interface:
`read_interfaces` does the I/O (ioctl flags, netifaces addresses, ifindex) and
`select_tunnel` is a pure function from patterns and interface facts to a `ProbeResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import fnmatch
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A `TunnelState` without the epoch: the monitor owns the epoch."""

    up: bool
    ifname: str | None
    ifindex: int | None
    addresses: tuple[str, ...]


ABSENT = ProbeResult(up=False, ifname=None, ifindex=None, addresses=())

Probe = Callable[[Sequence[str]], ProbeResult]


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` matches one of the fnmatch globs (case-sensitive, like the kernel)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_usable(info: InterfaceInfo) -> bool:
    """Up means IFF_UP and a carrier (IFF_RUNNING or IFF_LOWER_UP) and at least one address."""
    return bool(
        info.flags & IFF_UP and info.flags & (IFF_RUNNING | IFF_LOWER_UP) and info.addresses
    )


def select_tunnel(patterns: Sequence[str], interfaces: Sequence[InterfaceInfo]) -> ProbeResult:
    """Pick the tunnel among ``interfaces`` (pure).

    Candidates are the interfaces whose name matches a pattern, sorted by name. The first
    usable one wins; when none is usable, the first candidate is reported as down (so the
    REFUSED text can name it); with no candidate the tunnel is absent.
    """
    candidates = sorted((i for i in interfaces if matches(i.name, patterns)), key=lambda i: i.name)
    for info in candidates:
        if is_usable(info):
            return ProbeResult(True, info.name, info.ifindex, info.addresses)
    if candidates:
        first = candidates[0]
        return ProbeResult(False, first.name, first.ifindex, first.addresses)
    return ABSENT


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
        result.append(InterfaceInfo(name, ifindex, flags, addresses))
    return result


def system_probe(patterns: Sequence[str]) -> ProbeResult:
    """The default probe: the kernel's view, decided by `select_tunnel`."""
    return select_tunnel(patterns, read_interfaces(patterns))


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
    ) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.poll_interval = poll_interval
        self._probe: Probe = probe or system_probe
        self._state: TunnelState = DOWN
        self._subscribers: list[Subscriber] = []
        self._netlink: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_task: asyncio.Task[None] | None = None

    @property
    def state(self) -> TunnelState:
        return self._state

    @property
    def netlink_active(self) -> bool:
        """True while netlink events drive the monitor (false: polling only)."""
        return self._netlink is not None

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
        old = self._state
        if (result.up, result.ifname, result.ifindex, result.addresses) == (
            old.up,
            old.ifname,
            old.ifindex,
            old.addresses,
        ):
            return old
        new = TunnelState(
            up=result.up,
            ifname=result.ifname,
            ifindex=result.ifindex,
            addresses=result.addresses,
            epoch=old.epoch + 1,
        )
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

    async def start(self) -> None:
        """Read the state at once, then follow netlink events and poll as a fallback."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._open_netlink()
        self.refresh()
        self._poll_task = asyncio.create_task(self._poll(), name="tunnel-monitor-poll")

    async def stop(self) -> None:
        self._close_netlink()
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

    def _open_netlink(self) -> None:
        assert self._loop is not None
        sock: socket.socket | None = None
        try:
            sock = socket.socket(
                socket.AF_NETLINK,
                socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                socket.NETLINK_ROUTE,
            )
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._loop.add_reader(sock.fileno(), self._on_netlink)
        except (OSError, AttributeError, NotImplementedError, ValueError) as exc:
            if sock is not None:
                sock.close()
            log.warning("netlink unavailable (%s); polling every %.1fs", exc, self.poll_interval)
            return
        self._netlink = sock

    def _close_netlink(self) -> None:
        sock, self._netlink = self._netlink, None
        if sock is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()

    def _on_netlink(self) -> None:
        """Drain the batch of events (their content is not needed) and re-probe once."""
        sock = self._netlink
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
                log.warning(
                    "netlink read failed (%s); polling every %.1fs", exc, self.poll_interval
                )
                self._close_netlink()
                break
        self.refresh()
