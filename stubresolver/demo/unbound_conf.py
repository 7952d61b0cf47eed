"""unbound configs of the demo world: the VPN's own resolver, serving only its small zone.

The tests' other unbound configs (testkit/unbound.py) share `basics` and `text` from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

NO_CONTROL: tuple[str, ...] = ("remote-control:", "  control-enable: no")


def basics(
    directory: Path | str,
    *,
    logfile: Path | str | None,
    pidfile: str,
    verbosity: int = 1,
    foreground: bool = False,
) -> list[str]:
    """The ``server:`` lines every config has: run as we started it (no chroot, no user
    switch), in ``directory``, one thread, logging to ``logfile`` (None: stderr)."""
    lines = [
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{directory}"',
        f'  pidfile: "{pidfile}"',
    ]
    if foreground:
        lines.append("  do-daemonize: no")
    lines.append("  use-syslog: no")
    if logfile is not None:
        lines.append(f'  logfile: "{logfile}"')
    lines += [f"  verbosity: {verbosity}", "  num-threads: 1"]
    return lines


def text(*sections: Iterable[str]) -> str:
    return "\n".join(line for section in sections for line in section) + "\n"


def vpn_zone_lines(www_name: str, www_addr: str, load_zone: str, load_addr: str) -> list[str]:
    """The zone the VPN's resolver serves: one www name, and a redirect zone for load."""
    return [
        "  # Authoritative-only: nothing outside the test zone is ever recursed for.",
        '  local-zone: "." static',
        '  local-zone: "example." static',
        f'  local-data: "{www_name} 300 IN A {www_addr}"',
        f'  local-zone: "{load_zone}" redirect',
        f'  local-data: "{load_zone} 60 IN A {load_addr}"',
    ]


def vpn_config(addr: str, directory: Path, log: Path, allow: str, zone_lines: Sequence[str]) -> str:
    """Plain DNS on ``addr:53`` inside the VPN namespace, logging every query."""
    return text(
        ["server:"],
        basics(directory, logfile=log, pidfile="", foreground=True),
        ["  log-queries: yes", f"  interface: {addr}", "  port: 53", "  do-ip6: no"],
        [f"  access-control: {allow} allow", '  module-config: "iterator"'],
        zone_lines,
        NO_CONTROL,
    )
