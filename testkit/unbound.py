"""unbound, the real server behind every test and bench run: its config files, and starting,
waiting for and stopping it.

Every config answers only from data it holds (``local-zone``/``local-data`` or an
``auth-zone``) or forwards only to a server we started: nothing ever recurses out to the
internet. Each ``*_config`` function returns the text of one ``unbound.conf``; they share the
``server:`` lines every one of them needs (no chroot, no user switch, our own directory and
log) from `_basics`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from stubresolver.demo.processes import Process, start, wait_until

# vpn_config and vpn_zone_lines are re-exported: they ship with `demo` now.
from stubresolver.demo.unbound_conf import NO_CONTROL, vpn_config, vpn_zone_lines  # noqa: F401
from stubresolver.demo.unbound_conf import basics as _basics
from stubresolver.demo.unbound_conf import text as _text
from testkit.ports import free_port, port_open
from testkit.zones import bench_zone_lines

DOH_PATH = "/dns-query"

# The small test zone the loopback servers answer (RFC 2606 "example.", RFC 5737 addresses).
EXAMPLE_ZONE_LINES: tuple[str, ...] = (
    '  local-zone: "example." static',
    '  local-data: "example. 300 IN SOA ns.example. host.example. 1 3600 600 86400 300"',
    '  local-data: "a.example. 300 IN A 192.0.2.1"',
    '  local-data: "b.example. 300 IN A 192.0.2.2"',
)


def _transports(*, udp: bool) -> list[str]:
    """IPv4 only; TCP always (RFC 7766), UDP unless the server speaks only DoT/DoH."""
    return [
        "  do-ip4: yes",
        "  do-ip6: no",
        f"  do-udp: {'yes' if udp else 'no'}",
        "  do-tcp: yes",
    ]


def _tls_service(
    addr: str, dot_port: int, doh_port: int, key: Path | str, cert: Path | str
) -> list[str]:
    """DoT (RFC 7858) on ``dot_port`` and DoH (RFC 8484) on ``doh_port``, path /dns-query."""
    return [
        f"  interface: {addr}@{dot_port}",
        f"  interface: {addr}@{doh_port}",
        f"  tls-port: {dot_port}",
        f"  https-port: {doh_port}",
        f'  tls-service-key: "{key}"',
        f'  tls-service-pem: "{cert}"',
        f'  http-endpoint: "{DOH_PATH}"',
    ]


# ---------------------------------------------------------------- loopback test servers


def _loopback_plain(addr: str, port: int, directory: Path) -> list[str]:
    """The ``server:`` head of a plain-DNS test server on ``addr:port``, open to loopback
    clients, logging to ``directory/unbound.log``."""
    return [
        "server:",
        f"  interface: {addr}",
        f"  port: {port}",
        *_transports(udp=True),
        "  so-reuseport: no",
        *_basics(directory, logfile=directory / "unbound.log", pidfile=f"{directory}/unbound.pid"),
        "  do-not-query-localhost: no",
        "  access-control: 127.0.0.0/8 allow",
    ]


def loopback_config(addr: str, port: int, directory: Path, extra_data: Sequence[str]) -> str:
    """Plain DNS on ``addr:port``: the example. zone, plus ``extra_data`` lines."""
    return _text(
        _loopback_plain(addr, port, directory),
        [
            '  module-config: "iterator"',
            "  # Never recurse anywhere: only the test zone is answered, everything else REFUSED.",
            '  local-zone: "." refuse',
        ],
        EXAMPLE_ZONE_LINES,
        extra_data,
        NO_CONTROL,
    )


def loopback_tls_config(
    addr: str, dot_port: int, doh_port: int, directory: Path, key: Path, cert: Path
) -> str:
    """The example. zone over DoT and DoH only (no UDP), with ``unbound-control`` on a
    local socket for its statistics."""
    return _text(
        ["server:"],
        _tls_service(addr, dot_port, doh_port, key, cert),
        _transports(udp=False),
        ["  so-reuseport: no"],
        _basics(directory, logfile=directory / "unbound.log", pidfile=f"{directory}/unbound.pid"),
        [
            "  tcp-idle-timeout: 30000",
            '  module-config: "iterator"',
            "  access-control: 127.0.0.0/8 allow",
            "  statistics-cumulative: yes",
            "  extended-statistics: yes",
            "  # Never recurse anywhere: only the test zone is answered, everything else REFUSED.",
            '  local-zone: "." refuse',
        ],
        EXAMPLE_ZONE_LINES,
        [
            "remote-control:",
            "  control-enable: yes",
            f'  control-interface: "{directory}/control.sock"',
            "  control-use-cert: no",
        ],
    )


def validating_config(addr: str, port: int, directory: Path, zone: str, insecure: str) -> str:
    """A validating resolver for ``zone`` (signed, in ``directory/zone.signed``, anchored by
    ``directory/anchor.ds``) and its unsigned child ``insecure`` (``insecure.zone``)."""

    def auth_zone(name: str, zonefile: str) -> list[str]:
        return [
            "auth-zone:",
            f'  name: "{name}"',
            f'  zonefile: "{directory}/{zonefile}"',
            "  for-upstream: yes",
            "  for-downstream: no",
            "  fallback-enabled: no",
        ]

    return _text(
        _loopback_plain(addr, port, directory),
        [
            '  module-config: "validator iterator"',
            "  # The same size as the stub's cap, so both advertise the same in their OPT records.",
            "  edns-buffer-size: 1232",
            "  # Validation is real: the only anchor is the test zone's key; no root, no RFC 5011.",
            f'  trust-anchor-file: "{directory}/anchor.ds"',
            "  val-log-level: 2",
            "  # Nothing else exists: no query leaves the machine.",
            '  local-zone: "." refuse',
            f'  local-zone: "{zone}" transparent',
        ],
        auth_zone(zone, "zone.signed"),
        auth_zone(insecure, "insecure.zone"),
        NO_CONTROL,
    )


# ---------------------------------------------------------------- the VPN's resolver (netns)


def vpn_tls_config(
    addr: str,
    dot_port: int,
    doh_port: int,
    directory: Path,
    log: Path,
    key: Path,
    cert: Path,
    allow: str,
    zone_lines: Sequence[str],
) -> str:
    """DoT and DoH (TCP only) on the VPN tunnel address, logging every query."""
    return _text(
        ["server:"],
        _basics(directory, logfile=log, pidfile="", foreground=True),
        ["  log-queries: yes", "  so-reuseport: no"],
        _tls_service(addr, dot_port, doh_port, key, cert),
        _transports(udp=False),
        ["  tcp-idle-timeout: 30000"],
        [f"  access-control: {allow} allow", '  module-config: "iterator"'],
        zone_lines,
        NO_CONTROL,
    )


# ---------------------------------------------------------------- the bench's servers


def _bench_server(directory: str) -> list[str]:
    """A fast server for measuring: no logging, big caches, many TCP slots."""
    return [
        *_basics(directory, logfile=None, pidfile="", verbosity=0, foreground=True),
        "  log-queries: no",
        "  log-replies: no",
        "  msg-cache-size: 64m",
        "  rrset-cache-size: 128m",
        "  access-control: 127.0.0.0/8 allow",
        "  incoming-num-tcp: 256",
        '  module-config: "iterator"',
    ]


def bench_config(addr: str, port: int, workdir: str, names: int) -> str:
    """The bench upstream: a single-thread server answering only from local data.

    The bench zone is a static zone with ``names`` A records, and a redirect zone under it,
    so every name there gets the apex's A record: a wildcard that lets each forwarded query
    use a never-seen name.
    """
    return _text(
        ["server:", f"  interface: {addr}@{port}", f"  port: {port}"],
        _transports(udp=True),
        _bench_server(workdir),
        ["  do-not-query-localhost: no"],
        bench_zone_lines(names),
        NO_CONTROL,
    )


def bench_tls_config(
    addr: str, plain_port: int, dot_port: int, doh_port: int, workdir: str, key: str,
    cert: str, names: int,
) -> str:  # fmt: skip
    """The bench zone over plain DNS (``plain_port``, for the readiness probe), DoT
    (``dot_port``) and DoH (``doh_port``, path /dns-query)."""
    return _text(
        ["server:", f"  interface: {addr}@{plain_port}"],
        _tls_service(addr, dot_port, doh_port, key, cert),
        [f"  port: {plain_port}"],
        _transports(udp=True),
        ["  so-reuseport: no"],
        _bench_server(workdir),
        bench_zone_lines(names),
        NO_CONTROL,
    )


def bench_forwarder_config(
    addr: str, port: int, upstream: str, dot_port: int, auth_name: str, ca_file: str,
    workdir: str,
) -> str:  # fmt: skip
    """A caching forwarder on ``addr:port`` sending everything to ``upstream`` over DoT
    (RFC 7858), verifying its certificate for ``auth_name`` against ``ca_file``."""
    return _text(
        ["server:", f"  interface: {addr}@{port}", f"  port: {port}"],
        _transports(udp=True),
        ["  so-reuseport: no", "  do-not-query-localhost: no", f'  tls-cert-bundle: "{ca_file}"'],
        _bench_server(workdir),
        [
            "forward-zone:",
            '  name: "."',
            "  forward-tls-upstream: yes",
            f"  forward-addr: {upstream}@{dot_port}#{auth_name}",
        ],
        NO_CONTROL,
    )


# ---------------------------------------------------------------- running it


def executable() -> str:
    exe = shutil.which("unbound")
    if exe is None:
        raise RuntimeError("unbound is not installed")
    return exe


def check_config(conf: Path, prefix: Sequence[str] = ()) -> None:
    """``unbound-checkconf`` (inside ``prefix``, e.g. ``ip netns exec NS``); RuntimeError
    with what it says when the file is wrong."""
    check = subprocess.run(
        [*prefix, "unbound-checkconf", str(conf)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if check.returncode != 0:
        raise RuntimeError(f"unbound-checkconf: {check.stdout}{check.stderr}")


def write_config(conf: Path, text: str) -> Path:
    """Write ``text`` to ``conf`` and check it."""
    conf.write_text(text)
    check_config(conf)
    return conf


def start_unbound(name: str, conf: Path, log_path: Path) -> Process:
    """``unbound -d -c conf`` in the foreground; its stderr goes to ``log_path``."""
    return start(name, [executable(), "-d", "-c", str(conf)], log_path)


def answers(addr: str, port: int, query: dns.message.Message, timeout: float = 0.2) -> bool:
    """``addr:port`` answers ``query`` over UDP with NOERROR."""
    try:
        answer = dns.query.udp(query, addr, port=port, timeout=timeout)
    except (OSError, dns.exception.Timeout):
        return False
    return answer.rcode() == dns.rcode.NOERROR


def wait_listening(proc: Process, addr: str, ports: Sequence[int], log: Path) -> None:
    """Until every port in ``ports`` accepts TCP (DoT/DoH servers have no UDP to ask)."""
    wait_until(
        lambda: all(port_open(addr, p) for p in ports),
        proc, timeout=10, what="unbound", error=RuntimeError,
        details=lambda: log.read_text(errors="replace") if log.exists() else "",
    )  # fmt: skip


@dataclass
class Unbound:
    """A running unbound serving plain DNS on ``addr:port``."""

    addr: str
    port: int
    proc: Process
    log: Path


@contextmanager
def run_unbound(
    tmp: Path, addr: str, config: Callable[[int], str], probe: dns.message.Message
) -> Iterator[Unbound]:
    """Start unbound with ``config(port)`` on a free port of ``addr``, wait until it answers
    ``probe`` with NOERROR, and stop it (by PID) when the block ends."""
    port = free_port(addr)
    conf = write_config(tmp / "unbound.conf", config(port))
    proc = start_unbound("unbound", conf, tmp / "unbound-stderr.log")
    server = Unbound(addr, port, proc, tmp / "unbound.log")
    try:
        wait_until(
            lambda: answers(addr, port, probe, timeout=0.3),
            proc, timeout=10, what="unbound", error=RuntimeError,
            details=lambda: server.log.read_text() if server.log.exists() else "",
        )  # fmt: skip
        yield server
    finally:
        proc.stop(grace=5)
