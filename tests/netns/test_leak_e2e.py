"""End-to-end proof of the promise: no DNS query leaves except through the VPN tunnel.

The world (built by `world.py`, once per module, names unique per run: `sr<pid%10000><tag>`)::

      client ns "C"                      ns "ISP"                       ns "VPN"
   +-----------------+  198.18.1.0/24  +-------------------+  198.18.2.0/24  +----------------+
   | stub 127.0.0.1  |--veth---------->| ip_forward         |--veth--------->| wireguard-go   |
   | glibc -> stub   | .2   fd00:1::/64| dnsmasq .1:53 logs |.1           .2 | :51820         |
   | wireguard-go or |   default route | every query, hijacks|                | unbound        |
   |  100.66.0.2/24  |                 | any port-53 packet |                | 100.66.0.1:53  |
   +-----------------+                 | nft counters: every|                +----------------+
           \\__________ WireGuard (UDP 51820) through the ISP ____________________/

- C: the stub under test (`python -m stubresolver run`, upstream `udp://100.66.0.1`, tunnel
  interface = the client's WireGuard device), glibc pointed at it by
  `/etc/netns/<C>/resolv.conf`; an nft counter (never dropping) of DNS-port packets leaving
  by any interface but `lo` and the tunnel.
- ISP: forwards, and is the leak witness: an nft counter of every packet from the client with
  destination port 53, 853 or 443 (before NAT, any destination address), a NAT redirect of
  any plain DNS to dnsmasq, and dnsmasq logging every query and answering everything with
  198.18.1.66 (so a forged answer would also show up at the client).
- VPN: the WireGuard peer and unbound serving `example.` (`www.example. A 192.0.2.10`,
  `*.load.example. A 192.0.2.20`), authoritative only, no route out.

The tests take the tunnel down every way it goes down (link down, device deleted, VPN process
killed, address removed), time the first REFUSED (with EDE 23) and the first answer after
restoring (delete and kill come back as a new device with a new ifindex), start the stub with
the tunnel absent, flap the tunnel under continuous load, and assert that the ISP side saw
zero DNS packets and zero logged queries. A control test in a fresh world shows that the
witnesses do see a query that bypasses the stub, so the zero means something.

Everything runs twice: over userspace WireGuard (wireguard-go) and over OpenVPN 2.6
(static-key point-to-point; OpenVPN survives the deletion of its tun, so that way is restored
by replacing the process).

Figures (flaps, leaked packets, p50/p95 time to refuse and to recover) are printed at the end
of the module and written as JSON to $STUBRESOLVER_E2E_REPORT when set.

Run (root; needs ip, nft, wg, wireguard-go, openvpn, unbound, dnsmasq, dig, getent):
    pytest -s tests/netns
Not root / no namespaces: skipped, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import Figures, Stub
from .probe import EDE_TUNNEL_DOWN, Answer, query
from .world import (
    C_TUN_ADDR,
    ISP_C_ADDR,
    ISP_C_ADDR6,
    LOAD_ADDR,
    LOAD_ZONE,
    VPN_TUN_ADDR,
    WAYS,
    WWW_ADDR,
    WWW_NAME,
    World,
)

pytestmark = pytest.mark.root

REFUSE_BUDGET_S = 1.0
RECOVER_BUDGET_S = 2.0
POLL_INTERVAL_S = 0.01
FLAPS = 24  # six of each way
FLAP_DWELL_S = 0.1  # time spent in each state, so the load hits both plenty

_names = itertools.count()


def unique_name() -> str:
    """A fresh name under the wildcard zone: never in the stub's cache."""
    return f"p{next(_names)}-{time.monotonic_ns() % 10**9}.{LOAD_ZONE}"


def is_refused(ans: Answer) -> bool:
    return ans.rcode == "REFUSED"


def is_answer(ans: Answer) -> bool:
    return ans.rcode == "NOERROR" and ans.addresses == (LOAD_ADDR,)


def poll_until(
    sock: socket.socket, done: Callable[[Answer], bool], t0: float, limit: float
) -> tuple[float | None, list[Answer]]:
    """Query unique names every POLL_INTERVAL_S until `done`; seconds from t0 to that answer."""
    seen: list[Answer] = []
    next_at = time.monotonic()
    while time.monotonic() - t0 < limit:
        ans = query(sock, unique_name(), timeout=0.3)
        seen.append(ans)
        if done(ans):
            return ans.received - t0, seen
        next_at += POLL_INTERVAL_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    return None, seen


def outline(seen: list[Answer]) -> str:
    """Run-length summary of what came back, for failure messages."""
    parts = [f"{rc} x{len(list(g))}" for rc, g in itertools.groupby(a.rcode for a in seen)]
    return ", ".join(parts) or "nothing"


def assert_answers(stub: Stub, sock: socket.socket) -> None:
    ans = query(sock, unique_name(), timeout=2.0)
    assert is_answer(ans), f"tunnel up but got {ans}\n{stub.log_tail()}"


def take_down_and_time_refusal(
    world: World, stub: Stub, sock: socket.socket, way: str, figures: Figures
) -> float:
    assert_answers(stub, sock)
    t0 = time.monotonic()
    world.take_down(way)
    elapsed, seen = poll_until(sock, is_refused, t0, limit=3 * REFUSE_BUDGET_S)
    assert elapsed is not None, (
        f"{way}: no REFUSED within {3 * REFUSE_BUDGET_S}s; got {outline(seen)}\n{stub.log_tail()}"
    )
    figures.add_refuse(way, elapsed)
    first = seen[-1]
    assert EDE_TUNNEL_DOWN in first.ede_codes, f"{way}: REFUSED without EDE 23: {first}"
    # and it stays refused (fail closed, not a blip)
    for _ in range(3):
        again = query(sock, unique_name(), timeout=0.5)
        assert is_refused(again) and EDE_TUNNEL_DOWN in again.ede_codes, f"{way}: then {again}"
    assert elapsed < REFUSE_BUDGET_S, f"{way}: first REFUSED after {elapsed:.3f}s"
    return elapsed


def restore_and_time_recovery(
    world: World, stub: Stub, sock: socket.socket, way: str, figures: Figures
) -> float:
    world.restore(way)
    t0 = time.monotonic()  # the tunnel is back (a re-created device is configured and up)
    elapsed, seen = poll_until(sock, is_answer, t0, limit=3 * RECOVER_BUDGET_S)
    assert elapsed is not None, (
        f"{way}: no answer within {3 * RECOVER_BUDGET_S}s after restoring; got {outline(seen)}\n"
        f"{stub.log_tail()}"
    )
    figures.recover.append(elapsed)
    assert elapsed < RECOVER_BUDGET_S, f"{way}: answers resumed after {elapsed:.3f}s"
    return elapsed


@pytest.fixture(autouse=True)
def no_leak(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test of the shared world: the ISP and the client's witness saw nothing."""
    yield
    if "world" not in request.fixturenames:
        return
    world: World = request.getfixturevalue("world")
    leaks = world.leak_figures()
    assert all(v == 0 for v in leaks.values()), f"DNS LEAKED past the tunnel: {leaks}"


# ---------------------------------------------------------------------------- the world


def test_world_tunnel_carries_vpn_dns(world: World) -> None:
    """The world itself: DNS to the VPN resolver goes through WireGuard, not the ISP."""
    before = world.vpn_log_queries()
    out = world.ns_run(world.ns_c, ["dig", "+short", "+time=2", f"@{VPN_TUN_ADDR}", WWW_NAME])
    assert out.stdout.split() == [WWW_ADDR]
    assert world.vpn_log_queries() > before
    state = world.client_tunnel_state()
    assert state["exists"] and state["up"]


# ---------------------------------------------------------------------------- tunnel up


def test_tunnel_up_answers_through_vpn(world: World, stub: Stub) -> None:
    stub.start()
    before = world.vpn_log_queries()
    dig = world.ns_run(world.ns_c, ["dig", "+time=2", "+tries=1", "@127.0.0.1", WWW_NAME])
    assert "status: NOERROR" in dig.stdout, dig.stdout + stub.log_tail()
    short = world.ns_run(world.ns_c, ["dig", "+short", "+time=2", "@127.0.0.1", WWW_NAME])
    assert short.stdout.split() == [WWW_ADDR], short.stdout
    tcp = world.ns_run(world.ns_c, ["dig", "+tcp", "+short", "+time=2", "@127.0.0.1",
                                    unique_name()])  # fmt: skip
    assert tcp.stdout.split() == [LOAD_ADDR], tcp.stdout
    # glibc (getaddrinfo via /etc/netns/<C>/resolv.conf) through the stub
    getent = world.ns_run(world.ns_c, ["getent", "ahosts", WWW_NAME.rstrip(".")], check=False)
    assert getent.returncode == 0, getent.stderr + stub.log_tail()
    assert WWW_ADDR in getent.stdout.split(), getent.stdout
    # the answers came from the VPN's resolver, through the tunnel
    assert world.vpn_log_queries() > before


def test_ipv4_only_tunnel_gets_aaaa_nodata_and_canaries_stay_local(
    world: World, stub: Stub
) -> None:
    """The client has IPv6 only towards the ISP (fd00:1::/64) and the tunnel is IPv4-only:
    an AAAA answer would send its connections outside the tunnel, so policy.aaaa auto answers
    NODATA with EDE 17; the canaries that switch off Firefox's DoH and iCloud Private Relay
    are NXDOMAIN. None of it is asked of the VPN's resolver (issue 10)."""
    stub.start()
    before = world.vpn_log_queries()
    aaaa = world.ns_run(world.ns_c, ["dig", "+time=2", "+tries=1", "@127.0.0.1", WWW_NAME, "AAAA"])
    assert "status: NOERROR" in aaaa.stdout and "ANSWER: 0" in aaaa.stdout, aaaa.stdout
    assert "EDE: 17 (Filtered)" in aaaa.stdout, aaaa.stdout
    for name, rdtype in (("mask.icloud.com", "A"), ("mask-h2.icloud.com", "HTTPS"),
                         ("use-application-dns.net", "AAAA")):  # fmt: skip
        dig = world.ns_run(world.ns_c, ["dig", "+time=2", "+tries=1", "@127.0.0.1", name, rdtype])
        assert "status: NXDOMAIN" in dig.stdout, dig.stdout
    getent = world.ns_run(world.ns_c, ["getent", "ahosts", WWW_NAME.rstrip(".")], check=False)
    assert getent.returncode == 0, getent.stderr + stub.log_tail()
    assert {line.split()[0] for line in getent.stdout.splitlines()} == {WWW_ADDR}, getent.stdout
    asked = [line for line in world.vpn_log.read_text(errors="replace").splitlines()
             if f"{C_TUN_ADDR} " in line][before:]  # fmt: skip
    assert not [line for line in asked if "icloud" in line or "application" in line], asked
    assert not [line for line in asked if f"{WWW_NAME} AAAA" in line], asked


# ---------------------------------------------------------------------------- tunnel down


@pytest.mark.parametrize("way", WAYS)
def test_tunnel_down_refuses_and_recovers(
    world: World, stub: Stub, figures: Figures, way: str
) -> None:
    stub.start()
    ifindex = world.client_tunnel_state()["ifindex"]
    take_down_and_time_refusal(world, stub, stub.sock, way, figures)
    restore_and_time_recovery(world, stub, stub.sock, way, figures)
    if way in ("delete", "kill"):
        assert world.client_tunnel_state()["ifindex"] != ifindex, "expected a new device"


def test_startup_with_tunnel_absent(world: World, stub: Stub, figures: Figures) -> None:
    world.take_down("kill")  # no VPN process, no tun device
    assert world.vpn_client is not None
    world.vpn_client.popen.wait(5)
    assert not world.client_tunnel_state()["exists"]
    stub.start()
    ans = query(stub.sock, unique_name(), timeout=1.0)
    assert is_refused(ans), f"tunnel absent at start, got {ans}\n{stub.log_tail()}"
    assert EDE_TUNNEL_DOWN in ans.ede_codes, ans
    www = query(stub.sock, WWW_NAME, timeout=1.0)
    assert is_refused(www), www
    restore_and_time_recovery(world, stub, stub.sock, "kill", figures)
    www = query(stub.sock, WWW_NAME, timeout=2.0)
    assert www.addresses == (WWW_ADDR,), www


# ---------------------------------------------------------------------------- flaps


def test_flaps_under_load(world: World, stub: Stub, figures: Figures) -> None:
    stub.start()
    load = world.spawn(
        "load",
        world.ns_c,
        [sys.executable, str(Path(__file__).with_name("probe.py")), "load",
         "--per-tick", "3", "--tick", "0.01", "--duration", "90", "--max-queries", "30000",
         "--timeout", "2.0", "--expect", LOAD_ADDR, "--zone", LOAD_ZONE],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # let the load get going
        for way in itertools.islice(itertools.cycle(WAYS), FLAPS):
            take_down_and_time_refusal(world, stub, stub.sock, way, figures)
            time.sleep(FLAP_DWELL_S)
            restore_and_time_recovery(world, stub, stub.sock, way, figures)
            figures.flaps += 1
            time.sleep(FLAP_DWELL_S)
        time.sleep(0.3)
    finally:
        if load.alive():
            load.popen.send_signal(signal.SIGTERM)
        out, _ = load.popen.communicate(timeout=15)
    assert load.popen.returncode == 0, load.log_tail()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    figures.load = stats
    print(f"\nload during {figures.flaps} flaps: {stats}")
    rcodes = stats["rcodes"]
    assert stats["sent"] > 1000, stats
    assert rcodes.get("NOERROR", 0) > 0 and rcodes.get("REFUSED", 0) > 0, stats
    assert stats["forged_answer"] == 0, f"ISP-forged answers reached the client: {stats}"
    assert stats["wrong_answer"] == 0, stats
    assert stats["refused_without_ede23"] == 0, stats
    assert stats["unexpected_id"] == 0, stats
    # Every query gets an answer (fail closed is loud, never a silent timeout); allow a
    # sliver for loopback drops under load.
    assert stats["lost"] <= stats["sent"] // 100, stats


# ---------------------------------------------------------------------------- the verdict


def test_isp_saw_zero_dns(world: World) -> None:
    """Over everything above: zero DNS packets at the ISP, zero queries in its log."""
    leaks = world.leak_figures()
    assert leaks == {
        "isp_packets_from_client": 0,
        "isp_packets_to_resolver": 0,
        "isp_log_queries": 0,
        "client_egress_packets": 0,
    }, f"DNS LEAKED: {leaks}"
    assert world.vpn_log_queries() > 0


def test_control_witnesses_see_a_bypassing_query(fresh_world: World) -> None:
    """Sanity control, in its own world: a query that bypasses the stub IS seen."""
    w = fresh_world
    assert w.leak_figures() == dict.fromkeys(w.leak_figures(), 0)
    for server in (ISP_C_ADDR, "192.0.2.53", ISP_C_ADDR6):  # direct, hijacked, IPv6
        out = w.ns_run(w.ns_c, ["dig", "+short", "+time=2", "+tries=1", f"@{server}",
                                "bypass.example"])  # fmt: skip
        assert out.stdout.split() == ["198.18.1.66"], out.stdout + out.stderr
    leaks = w.leak_figures()
    assert leaks["isp_packets_from_client"] >= 3, leaks
    assert leaks["isp_packets_to_resolver"] >= 3, leaks
    assert leaks["isp_log_queries"] >= 3, leaks
    assert leaks["client_egress_packets"] >= 3, leaks
