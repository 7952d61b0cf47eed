"""DNS probing for the end-to-end tests: one-shot queries and a bounded load generator.

Imported by the tests (queries from a socket created in the client namespace), and run as a
script inside the client namespace for load:

    ip netns exec C python probe.py load --per-tick 2 --tick 0.01 --duration 60 \
        --max-queries 20000

The load generator sends unique names under `load.example.` (so the stub's cache never
answers), stops on SIGTERM or at its bounds, waits for stragglers and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Final

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

EDE_TUNNEL_DOWN: Final = 23  # RFC 8914 code 23 "Network Error", as the contract says


@dataclass(frozen=True)
class Answer:
    """What came back for one query (rcode "TIMEOUT" when nothing did)."""

    rcode: str
    addresses: tuple[str, ...] = ()
    ede: tuple[tuple[int, str], ...] = ()
    sent: float = 0.0
    received: float = 0.0

    @property
    def ede_codes(self) -> tuple[int, ...]:
        return tuple(code for code, _ in self.ede)


def summarize(resp: dns.message.Message, sent: float, received: float) -> Answer:
    addresses = tuple(
        rd.to_text() for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset
    )
    ede = tuple(
        (int(opt.code), str(opt.text or ""))
        for opt in resp.options
        if isinstance(opt, dns.edns.EDEOption)
    )
    return Answer(dns.rcode.to_text(resp.rcode()), addresses, ede, sent, received)


def query(
    sock: socket.socket,
    name: str,
    *,
    server: str = "127.0.0.1",
    port: int = 53,
    timeout: float = 0.3,
    rdtype: str = "A",
) -> Answer:
    """One UDP query with EDNS (so an EDE option can come back) on a caller's socket."""
    q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    sent = time.monotonic()
    try:
        resp = dns.query.udp(q, server, port=port, timeout=timeout, sock=sock)
    except dns.exception.Timeout:
        return Answer("TIMEOUT", sent=sent, received=time.monotonic())
    except OSError as exc:  # e.g. ECONNREFUSED (ICMP port unreachable) before it listens
        return Answer(f"OSERROR:{exc.errno}", sent=sent, received=time.monotonic())
    return summarize(resp, sent, time.monotonic())


# ------------------------------------------------------------------------- load generator


@dataclass
class LoadStats:
    sent: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    wrong_answer: int = 0  # NOERROR without exactly the expected address (a forged answer?)
    forged_answer: int = 0  # carries the ISP resolver's address: a leak seen from inside
    refused_without_ede23: int = 0
    unexpected_id: int = 0
    duration: float = 0.0


def run_load(
    *,
    server: str,
    port: int,
    per_tick: int,
    tick: float,
    duration: float,
    max_queries: int,
    timeout: float,
    expect: str,
    forged: str,
    zone: str,
) -> LoadStats:
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for s in socks:
        s.setblocking(False)
        s.connect((server, port))
    by_fd = {s.fileno(): s for s in socks}
    pending: dict[tuple[int, int], float] = {}
    stats = LoadStats()
    run_id = f"{os.getpid()}-{int(time.time() * 1000) % 100000}"
    start = time.monotonic()
    next_tick = start
    n = 0

    def receive(until: float) -> None:
        while True:
            wait = until - time.monotonic()
            if wait <= 0:
                return
            ready, _, _ = select.select(socks, [], [], wait)
            for s in ready:
                while True:
                    try:
                        data = s.recv(65535)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    account(s.fileno(), data)

    def account(fd: int, data: bytes) -> None:
        try:
            msg = dns.message.from_wire(data)
        except dns.exception.DNSException:
            stats.rcodes["MALFORMED"] = stats.rcodes.get("MALFORMED", 0) + 1
            return
        if pending.pop((fd, msg.id), None) is None:
            stats.unexpected_id += 1
            return
        ans = summarize(msg, 0.0, 0.0)
        stats.rcodes[ans.rcode] = stats.rcodes.get(ans.rcode, 0) + 1
        if forged in ans.addresses:
            stats.forged_answer += 1
        if ans.rcode == "NOERROR" and ans.addresses != (expect,):
            stats.wrong_answer += 1
        if ans.rcode == "REFUSED" and EDE_TUNNEL_DOWN not in ans.ede_codes:
            stats.refused_without_ede23 += 1

    while not stop and n < max_queries and time.monotonic() - start < duration:
        now = time.monotonic()
        for _ in range(per_tick):
            s = socks[n % len(socks)]
            q = dns.message.make_query(f"q{n}-{run_id}.{zone}", "A", use_edns=0, payload=1232)
            while (s.fileno(), q.id) in pending:
                q.id = (q.id + 1) & 0xFFFF
            try:
                s.send(q.to_wire())
            except OSError:
                stats.rcodes["SEND_ERROR"] = stats.rcodes.get("SEND_ERROR", 0) + 1
            else:
                pending[(s.fileno(), q.id)] = now
            n += 1
        stats.sent = n
        # expire what waited longer than the timeout: a silent drop is a failure to answer
        for key, t in list(pending.items()):
            if now - t > timeout:
                del pending[key]
                stats.lost += 1
        next_tick += tick
        receive(max(next_tick, time.monotonic()))
    receive(time.monotonic() + timeout)
    stats.lost += len(pending)
    stats.duration = time.monotonic() - start
    del by_fd
    for s in socks:
        s.close()
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    load = sub.add_parser("load")
    load.add_argument("--server", default="127.0.0.1")
    load.add_argument("--port", type=int, default=53)
    load.add_argument("--per-tick", type=int, default=2)
    load.add_argument("--tick", type=float, default=0.01)
    load.add_argument("--duration", type=float, default=60.0)
    load.add_argument("--max-queries", type=int, default=20000)
    load.add_argument("--timeout", type=float, default=2.0)
    load.add_argument("--expect", default="192.0.2.20")
    load.add_argument("--forged", default="198.18.1.66")
    load.add_argument("--zone", default="load.example.")
    args = parser.parse_args(argv)
    stats = run_load(
        server=args.server,
        port=args.port,
        per_tick=args.per_tick,
        tick=args.tick,
        duration=min(args.duration, 600.0),
        max_queries=min(args.max_queries, 200_000),
        timeout=args.timeout,
        expect=args.expect,
        forged=args.forged,
        zone=args.zone,
    )
    print(json.dumps(asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
