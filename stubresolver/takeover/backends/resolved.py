"""The ``systemd-resolved`` backend: resolved stays in the path (resolv.conf keeps pointing
at its stub, 127.0.0.53) but sends every name to us.

- A drop-in in /etc/systemd/resolved.conf.d makes the stub the only global server with the
  routing domain ``~.`` (every name), and empties ``FallbackDNS``: resolved's compiled-in
  fallback servers (Cloudflare, Google) are a leak when no server is configured
  (resolved.conf(5)). LLMNR and mDNS are off, so no name goes out by multicast either.
- Every other link loses its DNS default route (``resolvectl default-route IF no``), so
  a link's own servers get no name that is not in that link's routing domains
  (systemd-resolved.service(8), "Protocols and Routing"). What each link had is probed first
  and recorded in the journal; restore sets it back link by link.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from stubresolver.config import Config
from stubresolver.takeover import resolv_conf
from stubresolver.takeover.backends import Found
from stubresolver.takeover.backends.file import holds_file
from stubresolver.takeover.steps import Run, Step, WriteFile, restore_original

DROP_IN = Path("/etc/systemd/resolved.conf.d/90-stubresolver.conf")
RESTART = Run(("systemctl", "try-restart", "systemd-resolved.service"))
_PREFIX = "default-route:"


def drop_in_text(config: Config) -> bytes:
    servers = " ".join(resolv_conf.nameservers(config.listen))
    resolv_conf.render(config.listen)  # the port-53 ConfigError when there is no server
    return (
        b"# Written by stubresolver (takeover.mode: systemd-resolved); `stubresolver restore`\n"
        b"# removes it.\n[Resolve]\n"
        + f"DNS={servers}\n".encode()
        + b"Domains=~.\nFallbackDNS=\nLLMNR=no\nMulticastDNS=no\n"
    )


def links() -> list[str]:
    """This network namespace's links (if_nameindex asks the kernel; /sys/class/net shows
    the namespace sysfs was mounted in, which need not be ours)."""
    try:
        return sorted(name for _, name in socket.if_nameindex() if name != "lo")
    except OSError:
        return []


def default_route(link: str) -> str | None:
    """``yes``/``no`` as resolvectl reports it for ``link``, None when it cannot say."""
    try:
        done = subprocess.run(
            ["resolvectl", "default-route", link],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # "Link 2 (eth0): yes"
    words = done.stdout.strip().rsplit(":", 1)
    if done.returncode != 0 or len(words) != 2 or words[1].strip() not in ("yes", "no"):
        return None
    return words[1].strip()


class ResolvedBackend:
    name = "systemd-resolved"

    def paths(self, config: Config) -> tuple[Path, ...]:
        return (DROP_IN,)

    def probe(self, config: Config) -> tuple[tuple[str, str], ...]:
        found: list[tuple[str, str]] = []
        for link in links():
            value = default_route(link)
            if value is not None:
                found.append((_PREFIX + link, value))
        return tuple(found)

    @staticmethod
    def _links(found: Found) -> list[tuple[str, str]]:
        return [(k.removeprefix(_PREFIX), v) for k, v in found.facts if k.startswith(_PREFIX)]

    def apply(self, found: Found, config: Config) -> tuple[Step, ...]:
        off = tuple(
            Run(("resolvectl", "default-route", link, "no")) for link, _ in self._links(found)
        )
        return (WriteFile(DROP_IN, drop_in_text(config), 0o644), RESTART, *off)

    def restore(self, found: Found) -> tuple[Step, ...]:
        # A link may be gone by restore time; setting it back is then nothing to do.
        back = tuple(
            Run(("resolvectl", "default-route", link, value), may_fail=True)
            for link, value in self._links(found)
        )
        files = tuple(restore_original(o) for o in found.originals)
        return (*files, Run(RESTART.argv, may_fail=True), *back)

    def watch(self, config: Config) -> tuple[Path, ...]:
        return (DROP_IN,)

    def holds(self, found: Found, config: Config) -> bool:
        if not holds_file(DROP_IN, drop_in_text(config)):
            return False
        # A manager (NetworkManager, networkd) may have turned a link's default route on.
        return all(default_route(link) in ("no", None) for link, _ in self._links(found))
