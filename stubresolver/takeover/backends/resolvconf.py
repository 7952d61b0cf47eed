"""The ``resolvconf`` backend, for openresolv: an exclusive interface record
(``resolvconf -x -a lo.stubresolver``) naming only the stub, so resolvconf(8) writes a
resolv.conf with our servers alone; ``-d`` removes it on restore, and resolvconf writes the
file from the other interfaces' records again. resolv.conf itself is never written by us
here: it stays the manager's link. Debian's older resolvconf has no ``-x``: the step then
fails, the takeover is undone, and ``takeover.mode: file`` is the way on such a host."""

from __future__ import annotations

from pathlib import Path

from stubresolver.config import Config
from stubresolver.takeover import resolv_conf
from stubresolver.takeover.backends import Found
from stubresolver.takeover.steps import Run, Step

RECORD = "lo.stubresolver"  # "lo." sorts first in every interface order


def record_text(config: Config) -> bytes:
    servers = resolv_conf.nameservers(config.listen)
    resolv_conf.render(config.listen)  # raises the port-53 ConfigError when there are none
    return b"".join(f"nameserver {ip}\n".encode() for ip in servers) + b"options edns0 trust-ad\n"


class ResolvconfBackend:
    name = "resolvconf"

    def paths(self, config: Config) -> tuple[Path, ...]:
        return ()  # resolvconf writes the files; its -d undoes its own record

    def probe(self, config: Config) -> tuple[tuple[str, str], ...]:
        return ()

    def refresh(self, found: Found, config: Config) -> Found:
        return found

    def apply(self, found: Found, config: Config) -> tuple[Step, ...]:
        return (Run(("resolvconf", "-x", "-a", RECORD), stdin=record_text(config)),)

    def restore(self, found: Found) -> tuple[Step, ...]:
        return (Run(("resolvconf", "-f", "-d", RECORD)),)  # -f: no error if already gone

    def repair(self, found: Found, config: Config) -> tuple[Step, ...]:
        return self.apply(found, config)

    def watch(self, config: Config) -> tuple[Path, ...]:
        return (config.takeover.resolv_conf,)

    def holds(self, found: Found, config: Config) -> bool:
        """resolv.conf (through its link) names our servers and no other."""
        try:
            text = config.takeover.resolv_conf.read_bytes()
        except OSError:
            return False
        named = [
            line.split()[1].decode(errors="replace")
            for line in text.splitlines()
            if line.startswith(b"nameserver") and len(line.split()) > 1
        ]
        return bool(named) and set(named) <= set(resolv_conf.nameservers(config.listen))
