"""The guard's nftables ruleset as text, from a plan: pure, so the text is unit-tested.

One table, ``inet stubresolver``, is ours alone: applying it never touches another table or
chain, and removing it is ``delete table inet stubresolver``. Its parts:

- ``output`` (filter hook, priority filter): DNS (53) and DNS-over-TLS/QUIC (853, plus
  ``guard.extra_ports``), UDP and TCP, IPv4 and IPv6, leaving by any interface other than
  loopback and the tunnel is dropped and counted (``dropped``). A packet to a loopback address
  is let through: that is where a redirected packet now goes (the filter hook still sees the
  interface the packet was first routed to), and loopback never leaves the host.
- ``stray_dns`` (nat hook, priority -100, NF_IP_PRI_NAT_DST), with ``redirect_stray_dns``:
  port-53 traffic of other programs that would leave outside the tunnel, to any address (a
  hard-coded 8.8.8.8), is sent to the stub instead and counted (``redirected``), so it gets
  answers through the tunnel. Traffic already routed into the tunnel is left alone: it is
  inside the tunnel already. That is also how the stub's own upstream sockets are exempt
  without a mark or a uid match: they are bound to the tunnel device (netbind.py), so
  nothing loops.
- ``tunnel``, a set holding the current tunnel's name. Following the tunnel means replacing
  that set's elements in one transaction (`tunnel_update`): the rules and their counters stay.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILY = "inet"
TABLE = "stubresolver"
#: Plain DNS (RFC 1035) and DNS over TLS (RFC 7858) / over QUIC (RFC 9250).
BASE_PORTS = (53, 853)


@dataclass(frozen=True, slots=True)
class GuardPlan:
    """What the table says. ``tunnel`` is None while there is no tunnel: then only loopback
    may carry DNS. A redirect target is a loopback (address, port) the stub listens on."""

    tunnel: str | None
    extra_ports: tuple[int, ...] = ()
    redirect_v4: tuple[str, int] | None = None
    redirect_v6: tuple[str, int] | None = None

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys((*BASE_PORTS, *self.extra_ports)))


def _quote(ifname: str) -> str:
    # Interface names are at most 15 bytes and cannot hold '"' or whitespace (dev_valid_name
    # in the kernel); refuse anything else rather than quote it.
    if not ifname or len(ifname) > 15 or any(c in ifname for c in '"\\ \t\n/'):
        raise ValueError(f"{ifname!r} is not an interface name")
    return f'"{ifname}"'


def _elements(plan: GuardPlan) -> str:
    return "" if plan.tunnel is None else f" elements = {{ {_quote(plan.tunnel)} }};"


def render(plan: GuardPlan) -> str:
    """The whole table, as one ``nft -f`` transaction that replaces any table of ours (the
    ``add`` makes the ``delete`` valid when there is none): atomic, no moment without rules."""
    ports = ", ".join(str(p) for p in plan.ports)
    lines = [
        f"add table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        f"  set tunnel {{ type ifname;{_elements(plan)} }}",
        "  counter dropped { }",
        "  counter redirected { }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        '    oifname "lo" accept',
        "    oifname @tunnel accept",
        "    ip daddr 127.0.0.0/8 accept",
        "    ip6 daddr ::1 accept",
        f'    meta l4proto {{ udp, tcp }} th dport {{ {ports} }} counter name "dropped" drop',
        "  }",
    ]
    if plan.redirect_v4 is not None or plan.redirect_v6 is not None:
        lines += [
            "  chain stray_dns {",
            "    type nat hook output priority -100; policy accept;",  # NF_IP_PRI_NAT_DST
            '    oifname "lo" return',
            "    oifname @tunnel return",
        ]
        for proto in ("udp", "tcp"):
            if plan.redirect_v4 is not None:
                host, port = plan.redirect_v4
                lines.append(
                    f"    ip daddr != 127.0.0.0/8 {proto} dport 53 "
                    f'counter name "redirected" dnat ip to {host}:{port}'
                )
            if plan.redirect_v6 is not None:
                host, port = plan.redirect_v6
                lines.append(
                    f"    ip6 daddr != ::1 {proto} dport 53 "
                    f'counter name "redirected" dnat ip6 to [{host}]:{port}'
                )
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def tunnel_update(tunnel: str | None) -> str:
    """Point the rules at another tunnel (or none) in one transaction: the set is flushed
    and refilled atomically, so no packet sees it empty in between, and counters stay."""
    lines = [f"flush set {FAMILY} {TABLE} tunnel"]
    if tunnel is not None:
        lines.append(f"add element {FAMILY} {TABLE} tunnel {{ {_quote(tunnel)} }}")
    return "\n".join(lines) + "\n"


REMOVE = f"delete table {FAMILY} {TABLE}\n"
