"""The ``systemd-resolved`` backend: resolved stays in the path (resolv.conf keeps pointing
at its stub, 127.0.0.53) but sends every name to us.

- A drop-in in /etc/systemd/resolved.conf.d makes the stub the only global server with the
  routing domain ``~.`` (every name), and empties ``FallbackDNS``: resolved's compiled-in
  fallback servers (Cloudflare, Google) are a leak when no server is configured
  (resolved.conf(5)). LLMNR and mDNS are off, so no name goes out by multicast either.
- Every other link loses its DNS default route (``resolvectl default-route IF no``) and its
  own DNS servers (``resolvectl dns IF ''``). Default-route off alone leaves the link's
  servers every name under that link's routing domains (systemd-resolved.service(8),
  "Protocols and Routing") and the reverse lookups of its own subnet (measured with
  resolved 252: 5.0.110.10.in-addr.arpa went to a link on 10.110.0.0/24 whose default
  route was off); a link with no servers gets nothing at all. What each link had (servers,
  default route) is probed first and recorded in the journal; restore sets each back
  exactly, link by link. A link that appears later is taken once it has servers (refresh).
- /etc/systemd/resolved.conf.d need not exist (a fresh install has none): the plan makes it,
  and restore removes it only when it was absent before us.
- resolved reads its configuration only when it starts, hence the ``systemctl
  try-restart`` (a link's bus-set servers and default route survive it: resolved keeps them
  under /run/systemd/resolve/netif).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from stubresolver.config import Config
from stubresolver.takeover import resolv_conf
from stubresolver.takeover.backends import Found
from stubresolver.takeover.backends.file import holds_file
from stubresolver.takeover.resolvectl import default_route, dns_servers, links
from stubresolver.takeover.steps import (
    MakeDir,
    RemoveDir,
    Run,
    Step,
    WriteFile,
    restore_original,
)

DROP_IN = Path("/etc/systemd/resolved.conf.d/90-stubresolver.conf")
RESTART = Run(("systemctl", "try-restart", "systemd-resolved.service"))
#: resolved renames a new one into place whenever any link's servers, domains or default
#: route change (measured with resolved 252, also for default-route alone): the watchdog's
#: wake-up for link drift, which only a poll would see otherwise. The directory survives
#: restarts (RuntimeDirectoryPreserve=yes in resolved's unit).
RESOLVED_STATE = Path("/run/systemd/resolve/resolv.conf")
_ROUTE = "default-route:"  # fact "default-route:IF" = "yes" | "no"
_DNS = "dns:"  # fact "dns:IF" = the link's servers as resolvectl shows them, space-separated
_DIR = "drop-in-dir"  # fact = "present" | "absent"


def drop_in_text(config: Config) -> bytes:
    servers = " ".join(resolv_conf.nameservers(config.listen))
    resolv_conf.render(config.listen)  # the port-53 ConfigError when there is no server
    return (
        b"# Written by stubresolver (takeover.mode: systemd-resolved); `stubresolver restore`\n"
        b"# removes it.\n[Resolve]\n"
        + f"DNS={servers}\n".encode()
        + b"Domains=~.\nFallbackDNS=\nLLMNR=no\nMulticastDNS=no\n"
    )


def _probe_link(link: str) -> list[tuple[str, str]]:
    route = default_route(link)
    if route is None:
        return []  # not a link resolved knows: nothing to take from it
    servers = dns_servers(link)
    facts = [(_ROUTE + link, route)]
    return facts if servers is None else [*facts, (_DNS + link, servers)]


class ResolvedBackend:
    name = "systemd-resolved"

    def paths(self, config: Config) -> tuple[Path, ...]:
        return (DROP_IN,)

    def probe(self, config: Config) -> tuple[tuple[str, str], ...]:
        found: list[tuple[str, str]] = [(_DIR, "present" if DROP_IN.parent.is_dir() else "absent")]
        for link in links():
            found += _probe_link(link)
        return tuple(found)

    def refresh(self, found: Found, config: Config) -> Found:
        """Add the links that appeared since the takeover (a VPN, a dock, a USB modem) once
        they have servers: such a link gets the reverse lookups of its subnet and the names
        under its domains; one without servers gets nothing, and is left alone. What its
        manager gave it is recorded, so restore gives that back."""
        known = {link for link, _ in self._links(found)}
        extra: list[tuple[str, str]] = []
        for link in links():
            if link not in known and dns_servers(link):
                extra += _probe_link(link)
        return replace(found, facts=found.facts + tuple(extra)) if extra else found

    @staticmethod
    def _links(found: Found) -> list[tuple[str, str]]:
        return [(k.removeprefix(_ROUTE), v) for k, v in found.facts if k.startswith(_ROUTE)]

    @staticmethod
    def _made_dir(found: Found) -> bool:
        return found.fact(_DIR) == "absent"

    def apply(self, found: Found, config: Config) -> tuple[Step, ...]:
        made = (MakeDir(DROP_IN.parent),) if self._made_dir(found) else ()
        off: list[Step] = []
        for link, _ in self._links(found):
            # Cleared even when the probe could not read the servers: a leak is worse than a
            # link whose servers its manager has to set again.
            off.append(Run(("resolvectl", "dns", link, "")))
            off.append(Run(("resolvectl", "default-route", link, "no")))
        return (*made, WriteFile(DROP_IN, drop_in_text(config), 0o644), RESTART, *off)

    def restore(self, found: Found) -> tuple[Step, ...]:
        # A link may be gone by restore time; setting it back is then nothing to do.
        back: list[Step] = []
        for link, route in self._links(found):
            servers = found.fact(_DNS + link, "-")
            if servers != "-":
                argv = ("resolvectl", "dns", link, *(servers.split() or [""]))
                back.append(Run(argv, may_fail=True))
            back.append(Run(("resolvectl", "default-route", link, route), may_fail=True))
        files = tuple(restore_original(o) for o in found.originals)
        made = (RemoveDir(DROP_IN.parent),) if self._made_dir(found) else ()
        return (*files, *made, Run(RESTART.argv, may_fail=True), *back)

    def repair(self, found: Found, config: Config) -> tuple[Step, ...]:
        if not holds_file(DROP_IN, drop_in_text(config)):
            return self.apply(found, config)
        # The drop-in holds, so resolved needs no restart: only what a link got back.
        steps: list[Step] = []
        for link, _ in self._links(found):
            if dns_servers(link) not in ("", None):
                steps.append(Run(("resolvectl", "dns", link, "")))
            if default_route(link) not in ("no", None):
                steps.append(Run(("resolvectl", "default-route", link, "no")))
        return tuple(steps)

    def watch(self, config: Config) -> tuple[Path, ...]:
        # Without resolved's directory (resolved not running yet) the poll alone must do: a
        # directory that is not there cannot be watched.
        return (DROP_IN, RESOLVED_STATE) if RESOLVED_STATE.parent.is_dir() else (DROP_IN,)

    def holds(self, found: Found, config: Config) -> bool:
        if not holds_file(DROP_IN, drop_in_text(config)):
            return False
        # A manager (NetworkManager, networkd, a DHCP hook) may have given a link its
        # servers or its default route back, or a link may have appeared (refresh adds it).
        known = [link for link, _ in self._links(found)]
        if not all(
            default_route(link) in ("no", None) and dns_servers(link) in ("", None)
            for link in known
        ):
            return False
        return all(dns_servers(link) in ("", None) for link in links() if link not in known)
