"""`stubresolver leaktest` (issue 10) in the netns world, run in the client namespace as a
user would run it: clean on a clean setup; a resolv.conf pointing at the ISP caught twice
(the system check, and the probes glibc sends the ISP, seen on the wire); a process asking
the ISP during the sniff window named with its packet; the guard turning that same process
into a clean result; exit 2 when it cannot run (no root)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from testkit.processes import Process

from .harness import Stub, start_stub
from .world import ISP_C_ADDR, LOAD_ZONE, REPO_ROOT, World

pytestmark = pytest.mark.root

PROBE_DOMAIN = LOAD_ZONE.rstrip(".")  # the VPN's DNS answers every name below it


@pytest.fixture(scope="module")
def world(netns_ok: None) -> Iterator[World]:
    w = World("l", "wireguard")
    try:
        w.build()
        yield w
    finally:
        w.close()


def leaktest(
    world: World, stub: Stub, *prefix: str, window: float = 2.0
) -> tuple[int, dict[str, Any]]:
    assert stub.home is not None
    argv = ["ip", "netns", "exec", world.ns_c, *prefix, "env", f"PYTHONPATH={REPO_ROOT}",
            sys.executable, "-m", "stubresolver", "leaktest", "--json",
            "--socket", str(stub.home / "control.sock"),
            "--probe-domain", PROBE_DOMAIN, "--window", str(window)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["exit_status"] == done.returncode
    return done.returncode, report


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in report["steps"]}


def test_clean_setup_is_clean(world: World, stubs: list[Stub]) -> None:
    stub = start_stub(world, stubs, guard={"enabled": True})
    code, report = leaktest(world, stub)
    assert code == 0, json.dumps(report, indent=1)
    by = steps(report)
    assert by["resolv.conf names only the stub"]["verdict"] == "ok"
    sniff = by["probes while every other interface is sniffed"]
    assert sniff["verdict"] == "ok"
    # The probes were answered through the tunnel, by glibc and by the stub directly.
    assert any("via system resolver: answered" in d for d in sniff["details"]), sniff
    assert any("via stub at 127.0.0.1: NOERROR" in d for d in sniff["details"]), sniff
    assert by["the guard is in place"]["verdict"] == "ok"
    assert "WebRTC" in report["limits"]


def test_resolv_conf_pointing_at_the_isp_is_caught_on_paper_and_on_the_wire(
    world: World, stubs: list[Stub]
) -> None:
    stub = start_stub(world, stubs)
    resolv = world.etc_netns / "resolv.conf"
    original = resolv.read_text()
    resolv.write_text(f"nameserver {ISP_C_ADDR}\noptions timeout:1 attempts:1\n")
    try:
        code, report = leaktest(world, stub)
    finally:
        resolv.write_text(original)
    assert code == 1, json.dumps(report, indent=1)
    by = steps(report)
    system = by["resolv.conf names only the stub"]
    assert system["verdict"] == "misconfigured"
    assert any(ISP_C_ADDR in d and "NOT the stub" in d for d in system["details"]), system
    sniff = by["probes while every other interface is sniffed"]
    assert sniff["verdict"] == "leak"
    probes = [d for d in sniff["details"] if "a PROBE" in d]
    assert probes and f"-> {ISP_C_ADDR}:53 asking leaktest-" in probes[0], sniff
    assert report["verdict"] == "LEAK"


STRAY = """
import socket, sys, time
import dns.message
name, server = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # one socket, kept: like an app
for i in range(40):  # bounded: 40 queries, 4 s
    sock.sendto(dns.message.make_query(f"{name}{i}.example", "A").to_wire(), (server, 53))
    time.sleep(0.1)
"""


def _querying_the_isp(world: World, name: str) -> Process:
    """An app with a hard-coded resolver: it asks the ISP's server directly."""
    return world.spawn(f"stray-{name}", world.ns_c, [sys.executable, "-c", STRAY, name, ISP_C_ADDR])


def test_a_process_asking_the_isp_is_named_with_its_packet(world: World, stubs: list[Stub]) -> None:
    stub = start_stub(world, stubs)
    stray = _querying_the_isp(world, "stray")
    try:
        code, report = leaktest(world, stub, window=2.5)
    finally:
        stray.stop()
    assert code == 1, json.dumps(report, indent=1)
    sniff = steps(report)["probes while every other interface is sniffed"]
    seen = [d for d in sniff["details"] if d.startswith("SEEN DNS on ")]
    assert seen, sniff
    assert any(f"-> {ISP_C_ADDR}:53 asking stray" in d for d in seen), seen
    assert any(
        f" from python3 (pid {stray.pid})" in d or f"(pid {stray.pid})" in d for d in seen
    ), seen
    assert not any("a PROBE" in d for d in seen)  # the system resolver itself is fine


def test_the_guard_turns_the_same_process_into_a_clean_result(
    world: World, stubs: list[Stub]
) -> None:
    stub = start_stub(world, stubs, guard={"enabled": True})
    stray = _querying_the_isp(world, "guarded")
    try:
        code, report = leaktest(world, stub, window=2.5)
    finally:
        stray.stop()
    assert code == 0, json.dumps(report, indent=1)
    guard = steps(report)["the guard is in place"]
    assert "redirected 0" not in guard["details"][0], guard


def test_exit_2_when_it_cannot_run(world: World, stubs: list[Stub]) -> None:
    """Root without capabilities (an empty bounding set): no CAP_NET_RAW, so no sniffing;
    nothing was found, but the test did not run: exit 2, not 0."""
    stub = start_stub(world, stubs)
    code, report = leaktest(world, stub, "setpriv", "--bounding-set=-all", "--inh-caps=-all")
    assert code == 2, json.dumps(report, indent=1)
    by = steps(report)
    sniff = by["probes while every other interface is sniffed"]
    assert sniff["verdict"] == "could not run" and "CAP_NET_RAW" in sniff["details"][0]
    assert by["the stub is running"]["verdict"] == "ok"
    assert report["verdict"].startswith("INCOMPLETE")


def test_no_daemon_is_a_misconfiguration(world: World, stubs: list[Stub]) -> None:
    stub = start_stub(world, stubs)
    stub.stop()
    code, report = leaktest(world, stub, window=0.5)
    assert code == 1, json.dumps(report, indent=1)
    assert steps(report)["the stub is running"]["verdict"] == "misconfigured"
