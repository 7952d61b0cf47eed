"""Probe queries with names nobody asked before (a random label), built and read with
dnspython: through the system resolver (glibc getaddrinfo, as every program asks) and
straight to the stub."""

from __future__ import annotations

import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.query
import dns.rcode

PROBE_TYPES = ("A", "AAAA", "HTTPS")


def probe_names(domain: str, count: int) -> list[str]:
    """``count`` fresh names under ``domain``: a cache cannot answer them, so each one that
    shows up on the wire shows which path asked it."""
    base = domain.strip(".").lower()
    return [f"leaktest-{secrets.token_hex(6)}.{base}" for _ in range(count)]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    name: str
    path: str  # "system resolver" / "stub at ADDRESS"
    rdtype: str
    outcome: str  # an rcode name, "answered", "no answer", "TIMEOUT" or an error


def ask_stub(name: str, rdtype: str, server: str, port: int, timeout: float) -> ProbeResult:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    path = f"stub at {server}"
    try:
        reply = dns.query.udp(query, server, port=port, timeout=timeout)
    except dns.exception.Timeout:
        return ProbeResult(name, path, rdtype, "TIMEOUT")
    except (OSError, dns.exception.DNSException) as exc:
        return ProbeResult(name, path, rdtype, f"error: {exc}")
    return ProbeResult(name, path, rdtype, dns.rcode.to_text(reply.rcode()))


def ask_system(name: str) -> ProbeResult:
    """glibc's getaddrinfo: whatever resolv.conf / nsswitch.conf send it to."""
    try:
        socket.getaddrinfo(name, None)
    except socket.gaierror as exc:
        return ProbeResult(name, "system resolver", "A+AAAA", f"no answer ({exc.strerror})")
    return ProbeResult(name, "system resolver", "A+AAAA", "answered")


def run_probes(
    domain: str, stub: tuple[str, int] | None, timeout: float = 3.0
) -> list[ProbeResult]:
    """Two system-resolver probes and one direct probe per type; bounded by ``timeout``
    (getaddrinfo cannot be cancelled, so a stuck one is left to its thread)."""
    names = probe_names(domain, 2 + len(PROBE_TYPES))
    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="leaktest-probe")
    futures = [pool.submit(ask_system, n) for n in names[:2]]
    if stub is not None:
        host, port = stub
        futures += [
            pool.submit(ask_stub, name, rdtype, host, port, timeout)
            for name, rdtype in zip(names[2:], PROBE_TYPES, strict=True)
        ]
    deadline = time.monotonic() + timeout + 1
    done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
    pool.shutdown(wait=False, cancel_futures=True)
    results = [f.result() for f in futures if f in done]
    for name in names[:2]:
        if not any(r.name == name for r in results):
            results.append(ProbeResult(name, "system resolver", "A+AAAA", "TIMEOUT"))
    return results
