"""Pure: does the system point at the stub, and only the stub? Each check reads one text
(resolv.conf, `resolvectl dns`, `nmcli device show`) that run.py gathered."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

from stubresolver.leaktest.report import MISCONFIGURED, OK, SKIPPED, Step

RESOLVED_STUB = "127.0.0.53"  # systemd-resolved's own stub listener (resolved.conf(5))


def nameservers(text: str) -> list[str]:
    """The nameserver lines of a resolv.conf (resolv.conf(5)), in order."""
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1].split("%", 1)[0])
    return found


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _ours(server: str, stub: Collection[str]) -> bool:
    return any(_same(server, s) for s in stub)


def check_resolv_conf(text: str | None, stub: Collection[str], *, via_resolved: bool) -> Step:
    """``stub``: the addresses the stub serves on port 53. ``via_resolved``: resolved's own
    check passed, so its stub 127.0.0.53 forwards only to us."""
    step = Step("resolv.conf names only the stub", OK)
    if text is None:
        step.verdict = MISCONFIGURED
        step.details.append("/etc/resolv.conf cannot be read")
        return step
    servers = nameservers(text)
    if not servers:
        # resolv.conf(5): no nameserver line means the local host's port 53.
        servers = ["127.0.0.1"]
    for server in servers:
        if _ours(server, stub):
            step.details.append(f"nameserver {server}: the stub")
        elif _same(server, RESOLVED_STUB) and via_resolved:
            step.details.append(f"nameserver {server}: systemd-resolved, which asks only the stub")
        else:
            step.verdict = MISCONFIGURED
            step.details.append(f"nameserver {server}: NOT the stub (queries may go there)")
    return step


_RESOLVED_LINE = re.compile(r"^(Global|Link \d+ \(([^)]+)\)):\s*(.*)$")


def resolved_link_servers(text: str) -> list[tuple[str, str]]:
    """(link, server) pairs of ``resolvectl dns`` output, the global line left out."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _RESOLVED_LINE.match(line.strip())
        if match and match.group(2):
            found += [(match.group(2), s.split("#", 1)[0].split("%", 1)[0])
                      for s in match.group(3).split()]  # fmt: skip
    return found


def check_resolved(text: str | None, stub: Collection[str]) -> Step:
    """``resolvectl dns`` output: the global servers must be ours alone and no link may
    have servers of its own (resolved would send names there, DHCP- or RA-learned)."""
    step = Step("systemd-resolved asks only the stub", OK)
    if text is None:
        step.verdict = SKIPPED
        step.details.append("systemd-resolved is not running")
        return step
    global_servers: list[str] = []
    for line in text.splitlines():
        match = _RESOLVED_LINE.match(line.strip())
        if not match:
            continue
        servers = [s.split("#", 1)[0].split("%", 1)[0] for s in match.group(3).split()]
        if match.group(1) == "Global":
            global_servers = servers
            continue
        link = match.group(2)
        if link == "lo" and all(_ours(s, stub) for s in servers):
            continue
        if servers:
            step.verdict = MISCONFIGURED
            six = [s for s in servers if ":" in s]
            note = " (IPv6: likely from router advertisements)" if six else ""
            step.details.append(f"link {link} has its own DNS servers {' '.join(servers)}{note}")
    if global_servers and not all(_ours(s, stub) for s in global_servers):
        step.verdict = MISCONFIGURED
        step.details.append(f"global servers {' '.join(global_servers)} are not only the stub")
    if not global_servers:
        step.verdict = MISCONFIGURED
        step.details.append("no global DNS server: resolved does not send names to the stub")
    if step.verdict == OK:
        step.details.append(f"global {' '.join(global_servers)}; no link has servers of its own")
    return step


def networkmanager_servers(text: str | None) -> list[tuple[str, str]]:
    """(device, server) pairs from ``nmcli -t -f GENERAL.DEVICE,IP4.DNS,IP6.DNS device show``."""
    found: list[tuple[str, str]] = []
    device = ""
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key == "GENERAL.DEVICE":
            device = value
        elif key.startswith(("IP4.DNS", "IP6.DNS")) and value:
            found.append((device, value.replace("\\:", ":")))
    return found


def check_networkmanager(text: str | None, resolv_conf_ok: bool) -> Step:
    """NetworkManager's view: the servers it learned are used only if it writes DNS; while
    resolv.conf names only the stub they are named here for information."""
    step = Step("NetworkManager's view", OK)
    if text is None:
        step.verdict = SKIPPED
        step.details.append("NetworkManager is not running")
        return step
    servers = networkmanager_servers(text)
    for device, server in servers:
        note = " (IPv6, likely from router advertisements)" if ":" in server else ""
        state = "unused while resolv.conf names only the stub" if resolv_conf_ok else "IN USE?"
        step.details.append(f"{device} learned DNS server {server}{note}: {state}")
    if servers and not resolv_conf_ok:
        step.verdict = MISCONFIGURED
    if not servers:
        step.details.append("no DNS servers learned")
    return step
