"""Which clients may ask: `server.allow`, checked per datagram and per TCP connection.

The stub is a resolver for this host. Answering anyone who can reach a listen address makes
it an open resolver (RFC 5358): a reflector for amplification, and a window on which names
this host's VPN resolves. Only loopback is allowed unless the config widens it.
"""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

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


class ClientFilter:
    """``permits(host)`` for the address strings that recvfrom and getpeername give."""

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self._networks = networks
        self._memo: dict[str, bool] = {}

    def permits(self, host: str) -> bool:
        verdict = self._memo.get(host)
        if verdict is None:
            verdict = self._decide(host)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[host] = verdict
        return verdict

    def _decide(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: drop the scope
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket spells IPv4 clients as ::ffff:a.b.c.d
        return any(ip in net for net in self._networks)
