"""The nftables guard (issue 10) in the netns world: another program in the client namespace
sends DNS straight at the ISP's resolver (a hard-coded server, like a container or an app
with 8.8.8.8 built in), over UDP and TCP, IPv4 and IPv6.

- guard on, redirect off: those queries are dropped and counted; the ISP hears nothing;
- redirect on: the same queries are answered by the stub, from the VPN's DNS, through the
  tunnel; while the tunnel is down they are REFUSED by the stub instead of leaking;
- the guard follows 20 tunnel flaps (the device deleted and re-made, the VPN process killed);
- a clean stop leaves `nft list ruleset` exactly as before; a lockdown table outlives
  `kill -9` of the stub, and `guard off` / `restore` remove it.

The world's ISP namespace would answer any leaked query with 198.18.1.66 and counts every
DNS-port packet from the client, so a leak cannot pass unseen.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import Stub, start_stub
from .world import (
    ISP_C_ADDR,
    ISP_C_ADDR6,
    ISP_FORGED_ANSWER,
    LOAD_ZONE,
    REPO_ROOT,
    WAYS,
    WWW_ADDR,
    WWW_NAME,
    World,
)

pytestmark = pytest.mark.root

HARD_CODED = "192.0.2.53"  # an address nobody serves: routed out by the default route
FLAPS = 20


@pytest.fixture(scope="module")
def world(netns_ok: None) -> Iterator[World]:
    w = World("g", "wireguard")
    try:
        w.build()
        yield w
    finally:
        w.close()


def guarded(world: World, stubs: list[Stub], **guard: Any) -> Stub:
    return start_stub(world, stubs, listen=["127.0.0.1:53", "[::1]:53"],
                      guard={"enabled": True, **guard})  # fmt: skip


def ruleset(world: World) -> str:
    # -s (stateless): without counter values; the world's egress witness counts our digs.
    return world.ns_run(world.ns_c, ["nft", "-s", "list", "ruleset"]).stdout


def dig(
    world: World, server: str, *extra: str, short: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = ["dig", "+time=1", "+tries=1", *(["+short"] if short else []), f"@{server}", WWW_NAME,
            *extra]  # fmt: skip
    return world.ns_run(world.ns_c, argv, check=False)


def addresses(answer: subprocess.CompletedProcess[str]) -> list[str]:
    """The answer lines of `dig +short` (dig prints its errors as ';;' lines)."""
    return [line for line in answer.stdout.split("\n") if line and not line.startswith(";")]


def status(stub: Stub) -> dict[str, Any]:
    assert stub.home is not None
    done = subprocess.run(
        [sys.executable, "-m", "stubresolver", "status", "--json",
         "--socket", str(stub.home / "control.sock")],
        capture_output=True, text=True, timeout=30, check=True, cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return world.ns_run(
        world.ns_c,
        ["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-m", "stubresolver", *args],
        check=False,
    )


def assert_isp_heard_nothing(world: World) -> None:
    figures = world.leak_figures()
    assert figures["isp_packets_from_client"] == 0, figures
    assert figures["isp_log_queries"] == 0, figures


def test_guard_drops_stray_dns_and_leaves_the_ruleset_as_it_was(
    world: World, stubs: list[Stub]
) -> None:
    before = ruleset(world)
    stub = guarded(world, stubs, redirect_stray_dns=False)
    for server, extra in ((ISP_C_ADDR, ()), (ISP_C_ADDR, ("+tcp",)), (ISP_C_ADDR6, ()),
                          (HARD_CODED, ()), (ISP_C_ADDR, ("-p", "853"))):  # fmt: skip
        answer = dig(world, server, *extra)
        assert answer.returncode != 0 and not addresses(answer), (server, answer.stdout)
    guard = status(stub)["guard"]
    assert guard["active"] and guard["tunnel"] == world.tun_c, guard
    assert guard["dropped"] >= 5, guard
    # The stub itself still answers through the tunnel.
    assert addresses(dig(world, "127.0.0.1")) == [WWW_ADDR]
    stub.stop()
    assert ruleset(world) == before
    assert_isp_heard_nothing(world)


def test_redirect_answers_stray_dns_through_the_tunnel(world: World, stubs: list[Stub]) -> None:
    stub = guarded(world, stubs)
    vpn_before = world.vpn_log_queries()
    for server, extra in ((ISP_C_ADDR, ()), (ISP_C_ADDR, ("+tcp",)), (ISP_C_ADDR6, ()),
                          (ISP_C_ADDR6, ("+tcp",)), (HARD_CODED, ())):  # fmt: skip
        answer = dig(world, server, *extra, "+nocookie")
        assert addresses(answer) == [WWW_ADDR], (server, extra, answer.stdout, answer.stderr)
    assert world.vpn_log_queries() > vpn_before  # asked of the VPN's DNS, through the tunnel
    guard = status(stub)["guard"]
    assert guard["redirected"] >= 5, guard
    # Port 853 is never redirected (it is TLS, not DNS the stub speaks): dropped.
    assert not addresses(dig(world, ISP_C_ADDR, "-p", "853"))
    assert_isp_heard_nothing(world)


def test_guard_follows_the_tunnel_through_flaps(world: World, stubs: list[Stub]) -> None:
    stub = guarded(world, stubs)
    for flap in range(FLAPS):
        way = WAYS[flap % len(WAYS)]
        world.take_down(way)
        # A name never asked before (no cached answer): the stub refuses it, or, when the
        # query beat the stub's notice of a killed VPN process, fails it after its timeout.
        fresh = f"flap{flap}.{LOAD_ZONE}"
        down = world.ns_run(world.ns_c, ["dig", "+time=4", "+tries=1", "+nocookie",
                                         f"@{ISP_C_ADDR}", fresh], check=False)  # fmt: skip
        assert re.search(r"status: (REFUSED|SERVFAIL)", down.stdout), (way, down.stdout)
        world.restore(way)
        deadline = time.monotonic() + 15
        while addresses(dig(world, ISP_C_ADDR)) != [WWW_ADDR]:
            assert time.monotonic() < deadline, (way, stub.log_tail())
            time.sleep(0.05)
    tunnel_set = world.ns_run(world.ns_c, ["nft", "list", "set", "inet", "stubresolver", "tunnel"])
    assert f'"{world.tun_c}"' in tunnel_set.stdout
    guard = status(stub)["guard"]
    assert guard["active"] and guard["tunnel"] == world.tun_c and not guard["update_failures"]
    assert_isp_heard_nothing(world)


def test_lockdown_outlives_kill_9_and_guard_off_removes_it(world: World, stubs: list[Stub]) -> None:
    before = ruleset(world)
    stub = guarded(world, stubs, lockdown=True)
    assert stub.proc is not None
    stub.proc.popen.send_signal(signal.SIGKILL)
    stub.proc.popen.wait(10)
    stub.proc = None
    assert "table inet stubresolver" in ruleset(world)
    for server in (ISP_C_ADDR, ISP_C_ADDR6, HARD_CODED):
        answer = dig(world, server)
        assert not addresses(answer), answer.stdout  # nothing resolves, nothing leaks
    shown = cli(world, "guard", "show")
    assert "counter dropped" in shown.stdout, shown.stdout + shown.stderr
    off = cli(world, "guard", "off")
    assert off.returncode == 0 and "removed" in off.stdout, off.stdout + off.stderr
    assert ruleset(world) == before
    assert cli(world, "guard", "off").stdout.strip() == "no guard table"
    assert_isp_heard_nothing(world)


def test_a_crashed_daemons_table_stays_until_restore(world: World, stubs: list[Stub]) -> None:
    """Without lockdown a clean stop removes the table; a crash cannot, and that is
    fail-closed: `restore` removes it with the takeover."""
    before = ruleset(world)
    stub = guarded(world, stubs)
    assert stub.proc is not None and stub.home is not None
    stub.proc.popen.send_signal(signal.SIGKILL)
    stub.proc.popen.wait(10)
    stub.proc = None
    assert not addresses(dig(world, ISP_C_ADDR))
    done = cli(world, "restore", "--state-dir", str(stub.home / "state"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "guard table inet stubresolver removed" in done.stdout, done.stdout
    assert ruleset(world) == before
    assert_isp_heard_nothing(world)


def test_the_witness_sees_an_unguarded_stray_query(world: World) -> None:
    """Control, last: without the guard the same stray query is answered by the ISP (its
    forged address) and counted there, so the zeros above mean something."""
    before = world.leak_figures()
    answer = dig(world, ISP_C_ADDR)
    assert addresses(answer) == [ISP_FORGED_ANSWER], answer.stdout + answer.stderr
    after = world.leak_figures()
    assert after["isp_packets_from_client"] > before["isp_packets_from_client"]
