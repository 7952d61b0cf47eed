"""Which clients may ask: `server.allow`, checked per datagram and per TCP connection.

The stub is a resolver for this host. Answering anyone who can reach a listen address makes
it an open resolver (RFC 5358): a reflector for amplification, and a window on which names
this host's VPN resolves. Only loopback is allowed unless the config widens it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import TypeAlias

import netifaces

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

# Verdicts remembered per source address string (the hot path is a dict lookup); bounded,
# and cleared when full, so a spoofed-source flood cannot grow it.
_MEMO_MAX = 4096


def is_loopback_only(networks: tuple[Network, ...]) -> bool:
    """True when every network lies inside loopback (what `check-config` warns about)."""
    return all(_inside_loopback(net) for net in networks)


def _inside_loopback(net: Network) -> bool:
    if isinstance(net, ipaddress.IPv4Network):
        return net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    return net == ipaddress.IPv6Network("::1/128")


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostAddresses:
    """This host's own interface addresses, re-read at most every ``ttl`` seconds.

    A query the guard redirects to the stub (guard/ruleset.py) keeps the source address the
    program's socket chose for the outside route, such as the LAN address. It comes from this
    host all the same, so it may be answered."""

    def __init__(self, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._read_at = -ttl
        self._addresses: frozenset[IPAddress] = frozenset()

    def __contains__(self, ip: IPAddress) -> bool:
        now = self._clock()
        if now - self._read_at >= self._ttl:
            self._addresses = _interface_addresses()
            self._read_at = now
        return ip in self._addresses


def _interface_addresses() -> frozenset[IPAddress]:
    found: set[IPAddress] = set()
    for name in netifaces.interfaces():
        for family in (netifaces.AF_INET, netifaces.AF_INET6):
            for entry in netifaces.ifaddresses(name).get(family, []):
                try:
                    found.add(ipaddress.ip_address(str(entry.get("addr", "")).split("%", 1)[0]))
                except ValueError:
                    continue
    return frozenset(found)


class ClientFilter:
    """``permits(host)`` for the address strings that recvfrom and getpeername give."""

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self._networks = networks
        self._memo: dict[str, bool] = {}
        #: Set by the guard when it redirects other programs' DNS here: their own host's
        #: addresses are clients too. Never memoized, since the addresses change.
        self.host: HostAddresses | None = None

    def permits(self, host: str) -> bool:
        verdict = self._memo.get(host)
        if verdict is None:
            ip = _parse(host)
            if ip is not None and self.host is not None and ip in self.host:
                return True
            verdict = ip is not None and any(ip in net for net in self._networks)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[host] = verdict
        return verdict


def _parse(host: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: drop the scope
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket spells IPv4 clients as ::ffff:a.b.c.d
    return ip
