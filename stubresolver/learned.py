"""DNS servers other links learned, IPv6 ones above all (router advertisements, RFC 8106
RDNSS): read at start from systemd-resolved and NetworkManager, so the log names them. They
are a leak path for any program that asks them directly; the guard blocks them."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from stubresolver.leaktest.systemcheck import networkmanager_servers, resolved_link_servers


def tool_output(argv: list[str]) -> str | None:
    """A manager tool's standard output, or None when it fails or is missing."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def learned_ipv6_servers() -> list[tuple[str, str]]:
    """(link, server) for every IPv6 DNS server a link other than loopback learned."""
    found: list[tuple[str, str]] = []
    resolvectl = shutil.which("resolvectl")
    if resolvectl:
        found += resolved_link_servers(tool_output([resolvectl, "dns"]) or "")
    nmcli = shutil.which("nmcli")
    if nmcli:
        text = tool_output([nmcli, "-t", "-f", "GENERAL.DEVICE,IP6.DNS", "device", "show"])
        found += networkmanager_servers(text)
    unique: dict[tuple[str, str], None] = {}
    for link, server in found:
        try:
            ip = ipaddress.ip_address(server)
        except ValueError:
            continue
        if ip.version == 6 and not ip.is_loopback and link != "lo":
            unique[(link, server)] = None
    return list(unique)
