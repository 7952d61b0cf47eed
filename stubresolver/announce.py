"""What the VPN client announced for the current tunnel: its DNS servers and domains.

A VPN hook hands them over through the control socket (`stubresolver tunnel-up --interface
IF --dns IP ... --domain D ...`, from OpenVPN's ``dhcp-option DNS/DNS6/DOMAIN``, wg-quick's
``DNS =`` or NetworkManager's ``IP4_NAMESERVERS``). The ``vpn`` upstream asks those servers
(upstream/vpn.py) and the announced domains are routed to it (routes.py).

An announcement is bound to one interface. It is forgotten on ``tunnel-down`` and on any
epoch change that loses that interface (app.py), so servers of a tunnel that is gone are
never asked through the next one.

`parse_announcement` is pure; `Announced` is the one holder the service, the ``vpn``
upstream and the router share, so a reload keeps what the VPN said.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stubresolver import wire
from stubresolver.config import normal_domain
from stubresolver.errors import ConfigError

#: Most servers and domains one announcement may carry (a hook passes a handful).
MAX_SERVERS = 8
MAX_DOMAINS = 32
_IFNAME_MAX = 15  # IFNAMSIZ - 1


@dataclass(frozen=True, slots=True)
class Announcement:
    interface: str
    servers: tuple[str, ...]  # IP literals, in the order announced
    domains: tuple[str, ...] = ()  # lower case, without the final dot

    def as_dict(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "servers": list(self.servers),
            "domains": list(self.domains),
        }


def _server(text: object, allow_loopback: bool) -> str:
    if not isinstance(text, str):
        raise ValueError(f"dns: {text!r} is not an IP address")
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"dns: {text!r} is not an IP address (never a name)") from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"dns: {ip} is not a unicast server address")
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if (ip.is_loopback or (mapped is not None and mapped.is_loopback)) and not allow_loopback:
        # Same rule as a configured upstream: a loopback server is no server in the tunnel.
        raise ValueError(f"dns: {ip} is a loopback address, not a server inside the tunnel")
    if ip.is_link_local:
        raise ValueError(f"dns: {ip} is link-local; it needs a scope the stub cannot bind")
    return str(ip)


def parse_announcement(request: Mapping[str, Any], *, allow_loopback: bool) -> Announcement:
    """The announcement in a ``tunnel-up`` request; ValueError with a message for the hook."""
    interface = request.get("interface")
    if not isinstance(interface, str) or not 0 < len(interface) <= _IFNAME_MAX:
        raise ValueError('tunnel-up needs "interface": the tunnel device name')
    if any(c in interface for c in "/ \t\n*?[") or interface in (".", ".."):
        raise ValueError(f"interface {interface[:32]!r} is not a device name")
    servers_raw = request.get("dns", [])
    domains_raw = request.get("domains", [])
    if not isinstance(servers_raw, list) or not isinstance(domains_raw, list):
        raise ValueError('"dns" and "domains" must be lists')
    if len(servers_raw) > MAX_SERVERS or len(domains_raw) > MAX_DOMAINS:
        raise ValueError(f"at most {MAX_SERVERS} servers and {MAX_DOMAINS} domains")
    servers = tuple(dict.fromkeys(_server(s, allow_loopback) for s in servers_raw))
    domains: list[str] = []
    for index, text in enumerate(domains_raw):
        try:
            domains.append(normal_domain(text, f"domains[{index}]"))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return Announcement(interface, servers, tuple(dict.fromkeys(domains)))


class Announced:
    """The current announcement, or None; `domains_wire` is what the router matches."""

    __slots__ = ("current", "domains_wire")

    def __init__(self) -> None:
        self.current: Announcement | None = None
        self.domains_wire: frozenset[bytes] = frozenset()

    def set(self, announcement: Announcement | None) -> None:
        self.current = announcement
        domains = announcement.domains if announcement is not None else ()
        self.domains_wire = frozenset(wire.encode_name(d) for d in domains)

    def status(self) -> dict[str, Any] | None:
        return self.current.as_dict() if self.current is not None else None
