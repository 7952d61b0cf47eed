"""Can `stubresolver demo` run here? Root, and the tools the world is built from.

Pure: the caller passes its effective uid and a `which`, so the messages are tested without
uninstalling anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

# Every program the demo runs, and the Debian package that ships it.
TOOLS: Final[dict[str, str]] = {
    "ip": "iproute2",
    "nft": "nftables",
    "wg": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "unbound": "unbound",
    "unbound-checkconf": "unbound",
    "dnsmasq": "dnsmasq-base",
    "dig": "bind9-dnsutils",
    "getent": "libc-bin",
}


def problems(euid: int, which: Callable[[str], str | None]) -> list[str]:
    """What stops the demo, each as a sentence a newcomer can act on; empty when nothing."""
    found: list[str] = []
    if euid != 0:
        found.append(
            "the demo builds network namespaces and must run as root: "
            "sudo stubresolver demo (it changes nothing outside the namespaces it makes)"
        )
    missing = [tool for tool in TOOLS if which(tool) is None]
    if missing:
        packages = sorted({TOOLS[tool] for tool in missing})
        found.append(
            f"missing {', '.join(missing)}: "
            f"apt-get install --no-install-recommends {' '.join(packages)}"
        )
    return found
