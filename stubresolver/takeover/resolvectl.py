"""Reading systemd-resolved's per-link DNS settings through its own tool, resolvectl (it
asks resolved over D-Bus). Read-only: the backends' plans change them, as Run steps."""

from __future__ import annotations

import re
import socket
import subprocess

#: "Link 2 (eth0): 192.0.2.1 2001:db8::1" (servers may carry :port, %ifindex, #name)
_LINK_LINE = re.compile(r"^Link \d+ \((?P<link>[^)]*)\):(?P<value>.*)$")
TIMEOUT = 10.0


def links() -> list[str]:
    """This network namespace's links (if_nameindex asks the kernel; /sys/class/net shows
    the namespace sysfs was mounted in, which need not be ours)."""
    try:
        return sorted(name for _, name in socket.if_nameindex() if name != "lo")
    except OSError:
        return []


def link_value(output: str, link: str) -> str | None:
    """The value ``resolvectl VERB LINK`` printed for ``link`` (stripped; "" for none),
    None when no line names it."""
    for line in output.splitlines():
        match = _LINK_LINE.match(line.strip())
        if match is not None and match["link"] == link:
            return match["value"].strip()
    return None


def _setting(verb: str, link: str) -> str | None:
    """None when resolvectl cannot say (resolved not answering, the link unknown to it)."""
    try:
        done = subprocess.run(
            ["resolvectl", verb, link],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return link_value(done.stdout, link) if done.returncode == 0 else None


def default_route(link: str) -> str | None:
    """``yes``/``no`` as resolvectl reports it for ``link``, None when it cannot say."""
    value = _setting("default-route", link)
    return value if value in ("yes", "no") else None


def dns_servers(link: str) -> str | None:
    """The link's own DNS servers, space-separated ("" for none), None when unknown."""
    value = _setting("dns", link)
    return None if value is None else " ".join(value.split())
