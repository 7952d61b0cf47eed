"""End-to-end: DoT and DoH upstreams through a real WireGuard tunnel, and nothing else.

The world of `test_leak_e2e.py` (client / ISP / VPN namespaces, wireguard-go between client
and VPN through the ISP, a logging and hijacking ISP resolver, nft counters of ports 53, 853
and 443 at the ISP and at the client's non-tunnel egress), plus a second unbound in the VPN
namespace serving DoT on 100.66.0.1:853 and DoH on 100.66.0.1:443/dns-query with a
certificate for `dns.test.example` from a CA generated per run (`encrypted_world.py`). The
stub in the client namespace is configured with only that encrypted upstream and `ca_file`.

Proved here, for `tls://` and for `https://` (issue 3, "Tests"):
1. Answers arrive (dig over UDP and TCP against the stub, and glibc's `getent ahosts`), and
   the DoT/DoH server logged them while the VPN's plain resolver saw nothing.
2. A capture on the client's tunnel interface holds only TCP to port 853 (resp. 443), no
   port 53; a capture on the client's physical link holds only WireGuard (UDP 51820).
3. A wrong auth name, a wrong SPKI pin and an untrusted CA each give SERVFAIL with EDE 22
   whose text names the reason; no query reaches the server, and no port-53 packet appears
   in the tunnel, on the physical link or at the ISP (no cleartext fallback).
4. Twelve tunnel flaps (link down, device deleted, VPN process killed, address flushed;
   deleted and killed come back as a new device) under query load: REFUSED with EDE 23 while
   down, answers again after each restore, and the ISP saw zero packets to 53, 853 and 443
   (captures on the VPN side's tunnel interface and the client's physical link agree).
Also: connections are reused (one TCP connection for 24 queries), a failed authentication
costs one handshake, not one per query, and a restart of the DoT/DoH server is recovered
from (SERVFAIL while it is away, never a cleartext retry).

Figures (per scheme: packets by port, EDE texts, time to refuse / recover, load counts) are
printed at the end of the module with `pytest -s`.

Run (root): pytest -s tests/netns/test_encrypted_e2e.py
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from testkit.pki import Pki

from .encrypted_world import (
    DOH_PORT,
    DOT_PORT,
    WRONG_NAME,
    Capture,
    CaptureResult,
    ConfiguredStub,
    TlsServer,
    make_pki,
    start_tls_server,
    upstream_entry,
)
from .probe import EDE_TUNNEL_DOWN, Answer, query
from .world import LOAD_ADDR, LOAD_ZONE, WAYS, WG_PORT, WWW_ADDR, WWW_NAME, World

pytestmark = pytest.mark.root

SCHEMES: Final = ("tls", "https")
SERVICE_PORT: Final = {"tls": DOT_PORT, "https": DOH_PORT}
EDE_NO_REACHABLE_AUTHORITY: Final = 22  # RFC 8914 4.23
FLAPS: Final = 12  # three of each way in WAYS
FLAP_DWELL_S: Final = 0.25  # time in each state, so the load hits both plenty
REFUSE_LIMIT_S: Final = 3.0
RECOVER_LIMIT_S: Final = 6.0
RECOVER_BUDGET_S: Final = 3.0  # p95 bound; the limit above only ends a hopeless wait

_names = itertools.count()
_REPORT: dict[str, Any] = {}


def unique_name() -> str:
    """A fresh name under the wildcard zone: never in the stub's cache."""
    return f"e{next(_names)}-{time.monotonic_ns() % 10**9}.{LOAD_ZONE}"


@dataclass
class EncWorld:
    world: World
    pki: Pki
    server: TlsServer
    stubs: list[ConfiguredStub] = field(default_factory=list)


def _sigterm_as_interrupt(_sig: int, _frame: object) -> None:
    # As in conftest: let pytest run the teardown (namespaces, processes) on SIGTERM.
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture(scope="module")
def enc(netns_ok: None) -> Iterator[EncWorld]:
    """One WireGuard world (tag "e": names unique per run and distinct from the leak
    module's), a PKI and the DoT/DoH unbound in its VPN namespace."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    world = World("e", "wireguard")
    try:
        world.build()
        pki = make_pki(world.tmp / "pki")
        server = start_tls_server(world, pki)
        yield EncWorld(world, pki, server)
        if _REPORT:
            print(f"\nstubresolver encrypted e2e figures:\n{json.dumps(_REPORT, indent=2)}")
    finally:
        try:
            world.close()
        finally:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def start_stub(enc: EncWorld) -> Iterator[Callable[[list[Any]], ConfiguredStub]]:
    """Start a stub with the given upstream list; every stub is stopped after the test, and
    the ISP and the client's egress witness must still read zero."""
    world = enc.world
    world.ensure_tunnel_up()
    world.wait_tunnel_passes()  # plain DNS to the VPN resolver: before any capture starts
    started: list[ConfiguredStub] = []

    def start(upstreams: list[Any]) -> ConfiguredStub:
        stub = ConfiguredStub(world, upstreams)
        started.append(stub)
        stub.start()
        return stub

    try:
        yield start
    finally:
        for stub in started:
            try:
                stub.stop()
            finally:
                stub.sock.close()
    leaks = world.leak_figures()
    assert all(v == 0 for v in leaks.values()), f"DNS LEAKED past the tunnel: {leaks}"


def captures(world: World) -> tuple[Capture, Capture]:
    """Captures on the client's tunnel interface and on its physical (ISP) link."""
    tag = f"{time.monotonic_ns() % 10**9}"
    tun = Capture(world, world.ns_c, world.tun_c, f"c-tun-{tag}").start()
    try:
        phys = Capture(world, world.ns_c, world.veth_c, f"c-phys-{tag}").start()
    except BaseException:
        tun.stop()
        raise
    return tun, phys


def assert_tunnel_only(cap: CaptureResult, port: int) -> None:
    """In the tunnel: TCP on the encrypted ports only, never port 53, and every connection
    opened during the capture goes to `port`. (Packets on the other encrypted port can be
    the server closing a connection an earlier test left behind on a deleted device.)"""
    assert cap.packets, f"{cap.iface}: nothing captured"
    assert not cap.touching(53), f"{cap.iface}: PORT 53 IN THE TUNNEL: {cap.touching(53)[:5]}"
    others = [p for p in cap.packets if p.proto != "tcp" or not {DOT_PORT, DOH_PORT} & set(p.ports)]
    assert not others, f"{cap.iface}: not TCP/{port}: {others[:5]} ({cap.port_summary()})"
    assert cap.touching(port), f"{cap.iface}: nothing on port {port}: {cap.port_summary()}"
    wrong = [p for p in cap.syns if p.dport != port]
    assert not wrong, f"{cap.iface}: connections not to {port}: {wrong[:5]}"
    strays = cap.unparsed + cap.udp_unreachable
    assert not strays, f"{cap.iface}: packets without ports: {strays[:5]}"


def assert_physical_only_wireguard(cap: CaptureResult) -> None:
    """On the client's link to the ISP: only the WireGuard transport (UDP 51820)."""
    for port in (53, DOT_PORT, DOH_PORT):
        assert not cap.touching(port), f"{cap.iface}: port {port} on the ISP link: {cap.packets}"
    others = [p for p in cap.packets if p.proto != "udp" or WG_PORT not in p.ports]
    assert not others, f"{cap.iface}: not WireGuard: {others[:5]} ({cap.port_summary()})"
    # ICMP "udp port N unreachable" is allowed here: the client kernel answering WireGuard
    # packets that reach the port of a VPN process the flaps just killed.
    assert not cap.unparsed, f"{cap.iface}: packets without ports: {cap.unparsed[:5]}"


def dig(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return world.ns_run(world.ns_c, ["dig", "+time=3", "+tries=1", "@127.0.0.1", *args],
                        check=False)  # fmt: skip


# ---------------------------------------------------------------------------- 1 + 2


@pytest.mark.parametrize("scheme", SCHEMES)
def test_answers_only_over_encrypted_port(
    enc: EncWorld, start_stub: Callable[[list[Any]], ConfiguredStub], scheme: str
) -> None:
    world, port = enc.world, SERVICE_PORT[scheme]
    stub = start_stub([upstream_entry(scheme, enc.pki)])
    served_before = enc.server.client_queries()
    plain_before = world.vpn_log_queries()
    tun, phys = captures(world)
    try:
        udp = dig(world, WWW_NAME)
        assert "status: NOERROR" in udp.stdout, udp.stdout + udp.stderr + stub.log_tail()
        short = dig(world, "+short", WWW_NAME)
        assert short.stdout.split() == [WWW_ADDR], short.stdout
        tcp = dig(world, "+tcp", "+short", unique_name())
        assert tcp.stdout.split() == [LOAD_ADDR], tcp.stdout + stub.log_tail()
        getent = world.ns_run(world.ns_c, ["getent", "ahosts", WWW_NAME.rstrip(".")], check=False)
        assert getent.returncode == 0, getent.stderr + stub.log_tail()
        assert WWW_ADDR in getent.stdout.split(), getent.stdout
        for _ in range(20):  # a burst over the pooled connection
            ans = query(stub.sock, unique_name(), timeout=2.0)
            assert ans.rcode == "NOERROR" and ans.addresses == (LOAD_ADDR,), ans
        time.sleep(0.2)  # the last ACKs
    finally:
        tun_cap, phys_cap = tun.stop(), phys.stop()
    assert_tunnel_only(tun_cap, port)
    assert_physical_only_wireguard(phys_cap)
    served = enc.server.client_queries() - served_before
    assert served >= 22, f"the {scheme} server logged only {served} queries"
    # Persistent, reused connections: 24 queries, not 24 handshakes.
    conns = tun_cap.connections(port)
    assert conns <= 2, f"{conns} connections to port {port} for {served} queries"
    assert world.vpn_log_queries() == plain_before, "the VPN's plain port-53 resolver was used"
    _REPORT.setdefault(scheme, {})["answers"] = {
        "tunnel_packets": tun_cap.port_summary(),
        "physical_packets": phys_cap.port_summary(),
        "queries_served": served,
        "connections": conns,
    }


# ---------------------------------------------------------------------------- 3


FAILURES: Final = ("wrong-auth-name", "wrong-spki-pin", "untrusted-ca")


def failing_entry(enc: EncWorld, scheme: str, failure: str) -> dict[str, Any]:
    pki = enc.pki
    if failure == "wrong-auth-name":
        return upstream_entry(scheme, pki, auth_name=WRONG_NAME)
    if failure == "wrong-spki-pin":
        return upstream_entry(scheme, pki, pins=(pki.pin(pki.other_key),))
    if failure == "untrusted-ca":
        return upstream_entry(scheme, pki, ca_file=pki.other_ca)
    raise ValueError(failure)


def reason_matches(failure: str, text: str) -> bool:
    low = text.lower()
    if failure == "wrong-auth-name":
        return "certificate verify failed" in low and "hostname mismatch" in low
    if failure == "wrong-spki-pin":
        return "spki pin mismatch" in low
    # The server sends its CA along with the leaf, so OpenSSL meets a root it does not trust
    # ("self-signed certificate in certificate chain"); without it: "unable to get local
    # issuer certificate". Either names an untrusted CA.
    untrusted = ("self-signed certificate in certificate chain", "unable to get local issuer")
    return "certificate verify failed" in low and any(u in low for u in untrusted)


def test_correct_pin_answers(
    enc: EncWorld, start_stub: Callable[[list[Any]], ConfiguredStub]
) -> None:
    """Control for the pin case: the server's own pin (plus a wrong one) is accepted."""
    pki = enc.pki
    stub = start_stub([upstream_entry("tls", pki, pins=(pki.pin(pki.other_key), pki.pin()))])
    ans = query(stub.sock, unique_name(), timeout=3.0)
    assert ans.rcode == "NOERROR" and ans.addresses == (LOAD_ADDR,), f"{ans}\n{stub.log_tail()}"


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_auth_failure_servfail_no_fallback(
    enc: EncWorld,
    start_stub: Callable[[list[Any]], ConfiguredStub],
    scheme: str,
    failure: str,
) -> None:
    world, port = enc.world, SERVICE_PORT[scheme]
    stub = start_stub([failing_entry(enc, scheme, failure)])
    served_before = enc.server.client_queries()
    plain_before = world.vpn_log_queries()
    tun, phys = captures(world)
    answers: list[Answer] = []
    try:
        for name in (unique_name(), WWW_NAME, unique_name()):
            answers.append(query(stub.sock, name, timeout=3.0))
        via_dig = dig(world, WWW_NAME)
        time.sleep(0.2)
    finally:
        tun_cap, phys_cap = tun.stop(), phys.stop()
    for ans in answers:
        assert ans.rcode == "SERVFAIL", f"{failure}: {ans}\n{stub.log_tail()}"
        assert not ans.addresses, ans
        texts = [text for code, text in ans.ede if code == EDE_NO_REACHABLE_AUTHORITY]
        assert texts, f"{failure}: no EDE {EDE_NO_REACHABLE_AUTHORITY}: {ans.ede}"
        assert reason_matches(failure, texts[0]), f"{failure}: EDE text {texts[0]!r}"
    assert "status: SERVFAIL" in via_dig.stdout, via_dig.stdout
    assert "EDE: 22" in via_dig.stdout, via_dig.stdout
    # The handshake was tried in the tunnel, on the encrypted port only: no cleartext retry.
    assert tun_cap.touching(port), f"no {port} traffic at all: {tun_cap.port_summary()}"
    assert_tunnel_only(tun_cap, port)
    assert_physical_only_wireguard(phys_cap)
    assert enc.server.client_queries() == served_before, "a query got through a failed auth"
    # The failure is remembered (reconnects back off): four queries, not four handshakes.
    tries = tun_cap.connections(port)
    assert tries <= 2, f"{tries} handshakes for {len(answers) + 1} queries"
    assert world.vpn_log_queries() == plain_before, "cleartext fallback to the VPN's port 53"
    _REPORT.setdefault(scheme, {}).setdefault("failures", {})[failure] = {
        "ede_text": answers[0].ede[0][1] if answers[0].ede else None,
        "tunnel_packets": tun_cap.port_summary(),
        "handshakes_tried": tries,
    }


# ---------------------------------------------------------------------------- 4


def poll_until(
    sock: socket.socket, done: Callable[[Answer], bool], limit: float
) -> tuple[float | None, list[Answer]]:
    t0 = time.monotonic()
    seen: list[Answer] = []
    while time.monotonic() - t0 < limit:
        ans = query(sock, unique_name(), timeout=0.5)
        seen.append(ans)
        if done(ans):
            return ans.received - t0, seen
        time.sleep(0.01)
    return None, seen


def outline(seen: list[Answer]) -> str:
    parts = [f"{rc} x{len(list(g))}" for rc, g in itertools.groupby(a.rcode for a in seen)]
    return ", ".join(parts) or "nothing"


def is_answer(ans: Answer) -> bool:
    return ans.rcode == "NOERROR" and ans.addresses == (LOAD_ADDR,)


def is_refused_tunnel_down(ans: Answer) -> bool:
    return ans.rcode == "REFUSED" and EDE_TUNNEL_DOWN in ans.ede_codes


@pytest.mark.parametrize("scheme", SCHEMES)
def test_flaps_under_load(
    enc: EncWorld, start_stub: Callable[[list[Any]], ConfiguredStub], scheme: str
) -> None:
    world, port = enc.world, SERVICE_PORT[scheme]
    stub = start_stub([upstream_entry(scheme, enc.pki)])
    assert poll_until(stub.sock, is_answer, RECOVER_LIMIT_S)[0] is not None, stub.log_tail()
    # The VPN side's tunnel interface survives every client-side way down: capture there.
    vpn_tun = Capture(world, world.ns_vpn, world.tun_v, f"v-tun-flaps-{scheme}").start()
    # And the client's physical link, which survives them too: WireGuard only.
    phys = Capture(world, world.ns_c, world.veth_c, f"c-phys-flaps-{scheme}").start()
    load = world.spawn(
        f"load-{scheme}",
        world.ns_c,
        [sys.executable, str(Path(__file__).with_name("probe.py")), "load",
         "--per-tick", "4", "--tick", "0.01", "--duration", "60", "--max-queries", "20000",
         "--timeout", "2.0", "--expect", LOAD_ADDR, "--zone", LOAD_ZONE],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    refuse: list[float] = []
    recover: list[float] = []
    try:
        time.sleep(0.3)
        for way in itertools.islice(itertools.cycle(WAYS), FLAPS):
            world.take_down(way)
            took, seen = poll_until(stub.sock, is_refused_tunnel_down, REFUSE_LIMIT_S)
            assert took is not None, f"{way}: not refused: {outline(seen)}\n{stub.log_tail()}"
            refuse.append(took)
            time.sleep(FLAP_DWELL_S)
            world.restore(way)
            took, seen = poll_until(stub.sock, is_answer, RECOVER_LIMIT_S)
            assert took is not None, (
                f"{way}: no answer {RECOVER_LIMIT_S}s after restoring: {outline(seen)}\n"
                f"{stub.log_tail()}"
            )
            recover.append(took)
            time.sleep(FLAP_DWELL_S)
        time.sleep(0.3)
    finally:
        if load.alive():
            load.popen.send_signal(signal.SIGTERM)
        out, _ = load.popen.communicate(timeout=15)
        vpn_cap, phys_cap = vpn_tun.stop(), phys.stop()
    assert load.popen.returncode == 0, load.log_tail()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    rcodes = stats["rcodes"]
    assert stats["sent"] > 1000, stats
    assert rcodes.get("NOERROR", 0) > 0 and rcodes.get("REFUSED", 0) > 0, stats
    assert stats["forged_answer"] == 0, f"ISP-forged answers reached the client: {stats}"
    assert stats["wrong_answer"] == 0, stats
    assert stats["refused_without_ede23"] == 0, stats
    assert stats["lost"] <= stats["sent"] // 100, stats
    # Answers resumed after every flap, and fast.
    assert len(recover) == FLAPS
    p95 = sorted(recover)[-(-95 * len(recover) // 100) - 1]
    assert p95 < RECOVER_BUDGET_S, f"recovery p95 {p95:.3f}s: {recover}"
    # Through the tunnel: only the encrypted port, never 53.
    assert_tunnel_only(vpn_cap, port)
    assert_physical_only_wireguard(phys_cap)
    # The ISP saw nothing on 53, 853 or 443, and logged no query.
    leaks = world.leak_figures()
    assert leaks == dict.fromkeys(leaks, 0), f"DNS LEAKED during flaps: {leaks}"
    _REPORT.setdefault(scheme, {})["flaps"] = {
        "flaps": len(recover),
        "refuse_s": {"p50": round(statistics.median(refuse), 4), "max": round(max(refuse), 4)},
        "recover_s": {
            "p50": round(statistics.median(recover), 4),
            "p95": round(p95, 4),
            "max": round(max(recover), 4),
        },
        "load": stats,
        "vpn_tunnel_packets": vpn_cap.port_summary(),
        "connections_opened": vpn_cap.connections(port),
        "client_physical_packets": phys_cap.port_summary(),
        "isp": leaks,
    }


# ---------------------------------------------------------------------------- restart


@pytest.mark.parametrize("scheme", SCHEMES)
def test_server_restart_recovered(
    enc: EncWorld, start_stub: Callable[[list[Any]], ConfiguredStub], scheme: str
) -> None:
    """The DoT/DoH server restarts under the stub's pooled connection: SERVFAIL (never a
    cleartext retry) while it is away, answers again once it is back."""
    world, port = enc.world, SERVICE_PORT[scheme]
    stub = start_stub([upstream_entry(scheme, enc.pki)])
    assert poll_until(stub.sock, is_answer, RECOVER_LIMIT_S)[0] is not None, stub.log_tail()
    tun, phys = captures(world)
    try:
        enc.server.stop()
        away = query(stub.sock, unique_name(), timeout=3.0)
        enc.server.start()
        took, seen = poll_until(stub.sock, is_answer, 12.0)  # reconnects back off (max 8 s)
    finally:
        tun_cap, phys_cap = tun.stop(), phys.stop()
    assert away.rcode == "SERVFAIL", away
    assert EDE_NO_REACHABLE_AUTHORITY in away.ede_codes, away
    assert took is not None, f"no answer after the restart: {outline(seen)}\n{stub.log_tail()}"
    assert_tunnel_only(tun_cap, port)
    assert_physical_only_wireguard(phys_cap)
    _REPORT.setdefault(scheme, {})["restart"] = {
        "while_away": f"{away.rcode} {away.ede}",
        "recover_s": round(took, 4),
    }


# ---------------------------------------------------------------------------- verdict


def test_isp_saw_zero(enc: EncWorld) -> None:
    """Over the whole module: zero packets to 53/853/443 at the ISP, zero logged queries."""
    leaks = enc.world.leak_figures()
    assert leaks == {
        "isp_packets_from_client": 0,
        "isp_packets_to_resolver": 0,
        "isp_log_queries": 0,
        "client_egress_packets": 0,
    }, f"DNS LEAKED: {leaks}"
    assert enc.server.client_queries() > 0
