"""The real TunnelMonitor follows a real interface, woken by netlink (root, own netns).

The monitor runs in a subprocess inside a network namespace this test creates (so it sees
only our interface, and /sys, ioctl and netlink all belong to that namespace). This kernel
has no `dummy` driver, so the "tunnel" is one end of a veth pair: it also lets the test
take the carrier away (peer down) while the interface itself stays administratively up.
poll_interval is 30 s, so every transition seen within 1 s came through netlink.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().with_name("tunnel_monitor_driver.py")
WITHIN = 1.0  # seconds: netlink, not the 30 s poll

State = dict[str, Any]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Driver:
    """The monitor subprocess; its JSON lines arrive on a queue."""

    def __init__(self, netns: str, patterns: str, poll_interval: float, kinds: str = "") -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                str(DRIVER),
                patterns,
                str(poll_interval),
                *([kinds] if kinds else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[State] = queue.Queue()
        self.latest: State | None = None
        self.stderr = ""
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, what: str, pred: Callable[[State], bool], within: float) -> State:
        """The first reported state satisfying ``pred`` within ``within`` seconds."""
        if self.latest is not None and pred(self.latest):
            return self.latest
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            try:
                state = self.lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(
                    f"{what}: not seen within {within}s; last state {self.latest}"
                ) from None
            self.latest = state
            if pred(state):
                return state

    def stop(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def netns() -> Iterator[str]:
    name = f"tmon{secrets.token_hex(4)}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def create_tunnel(ns: str, ifname: str, peer: str) -> None:
    ip("-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer)
    ip("-n", ns, "addr", "add", "10.200.0.2/24", "dev", ifname)
    ip("-n", ns, "link", "set", peer, "up")
    ip("-n", ns, "link", "set", ifname, "up")


@pytest.mark.root
def test_monitor_follows_interface_via_netlink() -> None:
    suffix = secrets.token_hex(3)
    ifname, peer = f"tmon{suffix}", f"tpeer{suffix}"
    with netns() as ns:
        # The veth stands in for a tunnel: a glob accepts it only with tunnel.kinds [ether].
        driver = Driver(ns, "tmon*", poll_interval=30.0, kinds="ether")
        try:
            ready = driver.wait_for("ready", lambda s: s["event"] == "ready", 10)
            assert ready["netlink"], "netlink socket not active: would only poll"
            # absent -> down
            assert not ready["up"]
            assert ready["ifname"] is None

            # add + up + address -> up within 1s
            create_tunnel(ns, ifname, peer)
            start = time.monotonic()
            first = driver.wait_for("up after create", lambda s: s["up"], WITHIN)
            assert time.monotonic() - start < WITHIN
            assert first["ifname"] == ifname
            assert "10.200.0.2" in first["addresses"]
            assert first["epoch"] > ready["epoch"]

            # an IPv6 ULA appears -> same interface, new epoch; fe80:: is never listed
            ip("-n", ns, "addr", "add", "fd00:200::2/64", "dev", ifname, "nodad")
            with_v6 = driver.wait_for(
                "ULA added", lambda s: "fd00:200::2" in s["addresses"], WITHIN
            )
            assert with_v6["up"]
            assert with_v6["epoch"] > first["epoch"]
            assert not any(a.startswith("fe80") for a in with_v6["addresses"])

            # carrier lost (peer down), interface still IFF_UP -> down
            ip("-n", ns, "link", "set", peer, "down")
            no_carrier = driver.wait_for("down on no carrier", lambda s: not s["up"], WITHIN)
            assert no_carrier["ifname"] == ifname
            ip("-n", ns, "link", "set", peer, "up")
            driver.wait_for("up on carrier", lambda s: s["up"], WITHIN)

            # link down -> down within 1s
            ip("-n", ns, "link", "set", ifname, "down")
            down = driver.wait_for("down on link down", lambda s: not s["up"], WITHIN)
            assert down["ifname"] == ifname
            ip("-n", ns, "link", "set", ifname, "up")
            back = driver.wait_for("up after link up", lambda s: s["up"], WITHIN)

            # delete -> absent; re-create -> up with a new ifindex and a higher epoch
            ip("-n", ns, "link", "del", ifname)
            gone = driver.wait_for("absent after delete", lambda s: s["ifname"] is None, WITHIN)
            assert not gone["up"]
            create_tunnel(ns, ifname, peer)
            again = driver.wait_for("up after re-create", lambda s: s["up"], WITHIN)
            assert again["ifname"] == ifname
            assert again["ifindex"] != first["ifindex"]
            assert again["epoch"] > gone["epoch"] > back["epoch"]
        finally:
            subprocess.run(
                ["ip", "-n", ns, "link", "del", ifname], check=False, capture_output=True
            )
            driver.stop()
        assert "Traceback" not in driver.stderr, driver.stderr


@pytest.mark.root
def test_refresh_reads_the_state_now() -> None:
    """refresh() (used by the control socket's VPN hooks) re-probes on demand; no change, no
    new epoch."""
    suffix = secrets.token_hex(3)
    ifname, peer = f"tmon{suffix}", f"tpeer{suffix}"
    with netns() as ns:
        create_tunnel(ns, ifname, peer)
        driver = Driver(ns, ifname, poll_interval=30.0)
        try:
            ready = driver.wait_for("ready", lambda s: s["event"] == "ready", 10)
            assert ready["up"]
            assert ready["ifname"] == ifname
            assert driver.proc.stdin is not None
            driver.proc.stdin.write("refresh\n")
            driver.proc.stdin.flush()
            same = driver.wait_for("refreshed", lambda s: s["event"] == "refreshed", WITHIN)
            assert same["epoch"] == ready["epoch"]  # nothing changed: no new epoch
        finally:
            driver.stop()
        assert "Traceback" not in driver.stderr, driver.stderr


def refreshed(driver: Driver) -> State:
    assert driver.proc.stdin is not None
    driver.proc.stdin.write("refresh\n")
    driver.proc.stdin.flush()
    return driver.wait_for("refreshed", lambda s: s["event"] == "refreshed", 5)


@pytest.mark.root
def test_a_veth_named_like_a_tunnel_is_not_the_tunnel() -> None:
    """Issue 7: ``tun*`` matches any device so named (the kernel's IPIP ``tunl0``, a veth,
    a container's link); only VPN device kinds are taken, unless named exactly or widened."""
    suffix = secrets.token_hex(2)
    ifname, peer = f"tun{suffix}", f"tpeer{suffix}"
    with netns() as ns:
        create_tunnel(ns, ifname, peer)
        for patterns, kinds, up in (
            ("tun*", "", False),
            ("tun*", "ether", True),
            (ifname, "", True),
        ):
            driver = Driver(ns, patterns, poll_interval=30.0, kinds=kinds)
            try:
                ready = driver.wait_for("ready", lambda s: s["event"] == "ready", 10)
                assert ready["up"] is up, (patterns, kinds, ready)
                assert ready["ifname"] == (ifname if up else None)
                refreshed(driver)
            finally:
                driver.stop()
            assert "Traceback" not in driver.stderr, driver.stderr
            skipped = f"interface {ifname} matches tunnel.interfaces but is a ether device"
            assert (skipped in driver.stderr) is not up, driver.stderr
            assert driver.stderr.count(skipped) <= 1  # once per change, not per probe


@pytest.mark.root
def test_the_first_pattern_written_wins_when_several_are_up() -> None:
    suffix = secrets.token_hex(2)
    first, second = f"tmb{suffix}", f"tma{suffix}"  # the second sorts first by name
    with netns() as ns:
        create_tunnel(ns, first, f"tpb{suffix}")
        ip("-n", ns, "link", "add", second, "type", "veth", "peer", "name", f"tpa{suffix}")
        ip("-n", ns, "addr", "add", "10.201.0.2/24", "dev", second)
        ip("-n", ns, "link", "set", f"tpa{suffix}", "up")
        ip("-n", ns, "link", "set", second, "up")
        for patterns, want in ((f"{first},{second}", first), (f"{second},{first}", second)):
            driver = Driver(ns, patterns, poll_interval=30.0)
            try:
                ready = driver.wait_for("ready", lambda s: s["event"] == "ready", 10)
                assert ready["up"] and ready["ifname"] == want, ready
            finally:
                driver.stop()
