"""Tunnel decision logic and epoch bookkeeping, with no real interface (injected probe)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

import pytest

from stubresolver.tunnel import (
    ABSENT,
    IFF_LOWER_UP,
    IFF_RUNNING,
    IFF_UP,
    InterfaceInfo,
    ProbeResult,
    TunnelMonitor,
    matches,
    select_tunnel,
)
from stubresolver.tunnel_state import TunnelState

UP_RUNNING = IFF_UP | IFF_RUNNING


def iface(
    name: str, flags: int = UP_RUNNING, addresses: tuple[str, ...] = ("10.8.0.2",), index: int = 7
) -> InterfaceInfo:
    return InterfaceInfo(name=name, ifindex=index, flags=flags, addresses=addresses)


# --- pattern matching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "patterns", "expected"),
    [
        ("wg0", ["wg*"], True),
        ("wg0", ["tun*", "wg*"], True),
        ("tun12", ["tun?"], False),
        ("tun1", ["tun?"], True),
        ("lo", ["lo"], True),
        ("lo0", ["lo"], False),
        ("WG0", ["wg*"], False),  # interface names are case-sensitive
        ("eth0", ["wg*", "tun*"], False),
        ("wg0", [], False),
    ],
)
def test_matches(name: str, patterns: list[str], expected: bool) -> None:
    assert matches(name, patterns) is expected


# --- flag logic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "up"),
    [
        (IFF_UP | IFF_RUNNING, True),
        (IFF_UP | IFF_LOWER_UP, True),
        (IFF_UP | IFF_RUNNING | IFF_LOWER_UP, True),
        (IFF_UP, False),  # administratively up, no carrier (a tun nobody holds open)
        (IFF_RUNNING, False),
        (IFF_LOWER_UP, False),
        (0, False),
    ],
)
def test_flags_decide_up(flags: int, up: bool) -> None:
    result = select_tunnel(["wg*"], [iface("wg0", flags=flags)])
    assert result.up is up
    assert result.ifname == "wg0"
    assert result.ifindex == 7


def test_up_needs_an_address() -> None:
    result = select_tunnel(["wg*"], [iface("wg0", addresses=())])
    assert result == ProbeResult(False, "wg0", 7, ())


def test_no_candidate_is_absent() -> None:
    assert select_tunnel(["wg*"], [iface("eth0"), iface("lo")]) == ABSENT
    assert select_tunnel(["wg*"], []) == ABSENT


def test_prefers_an_up_interface() -> None:
    interfaces = [
        iface("wg0", flags=IFF_UP, index=3),
        iface("wg1", addresses=("10.9.0.2", "fd00::2"), index=4),
        iface("tun0", flags=0, index=5),
    ]
    assert select_tunnel(["wg*", "tun*"], interfaces) == ProbeResult(
        True, "wg1", 4, ("10.9.0.2", "fd00::2")
    )


def test_several_up_first_by_name_regardless_of_order() -> None:
    a = [iface("wg2", index=2), iface("tun0", index=9), iface("wg10", index=10)]
    assert select_tunnel(["wg*", "tun*"], a).ifname == "tun0"
    assert select_tunnel(["wg*", "tun*"], list(reversed(a))).ifname == "tun0"


def test_none_up_reports_first_candidate_down() -> None:
    interfaces = [iface("wg1", flags=IFF_UP, index=4), iface("wg0", flags=0, index=3)]
    assert select_tunnel(["wg*"], interfaces) == ProbeResult(False, "wg0", 3, ("10.8.0.2",))


# --- monitor: epochs and subscribers --------------------------------------------------


class ScriptedProbe:
    """A probe whose answer the test sets; records the patterns it was asked about."""

    def __init__(self, result: ProbeResult = ABSENT) -> None:
        self.result = result
        self.calls: list[tuple[str, ...]] = []
        self.fail = False

    def __call__(self, patterns: Sequence[str]) -> ProbeResult:
        self.calls.append(tuple(patterns))
        if self.fail:
            raise RuntimeError("probe exploded")
        return self.result


UP_WG0 = ProbeResult(True, "wg0", 7, ("10.8.0.2",))


def test_state_before_start_is_down_epoch_zero() -> None:
    monitor = TunnelMonitor(["wg*"], probe=ScriptedProbe(UP_WG0))
    assert monitor.state == TunnelState(False, None, None, (), 0)


def test_epoch_bumps_on_every_change_only() -> None:
    probe = ScriptedProbe()
    monitor = TunnelMonitor(["wg*"], probe=probe)
    changes: list[tuple[TunnelState, TunnelState]] = []
    monitor.subscribe(lambda old, new: changes.append((old, new)))

    assert monitor.refresh().epoch == 0  # absent == initial DOWN: no change
    assert changes == []

    steps = [
        UP_WG0,  # up
        ProbeResult(True, "wg0", 7, ("10.8.0.2", "fd00::2")),  # address added
        ProbeResult(True, "wg0", 7, ("fd00::2",)),  # address removed
        ProbeResult(False, "wg0", 7, ("fd00::2",)),  # link down
        ABSENT,  # deleted
        ProbeResult(True, "wg0", 8, ("10.8.0.2",)),  # re-created: new ifindex
        ProbeResult(True, "wg1", 8, ("10.8.0.2",)),  # renamed
    ]
    for n, step in enumerate(steps, start=1):
        probe.result = step
        state = monitor.refresh()
        assert state.epoch == n
        assert (state.up, state.ifname, state.ifindex, state.addresses) == (
            step.up,
            step.ifname,
            step.ifindex,
            step.addresses,
        )
        assert monitor.refresh() is state  # same facts: same state, same epoch
    assert [new.epoch for _, new in changes] == list(range(1, len(steps) + 1))
    assert all(new.epoch == old.epoch + 1 for old, new in changes)
    assert all(p == ("wg*",) for p in probe.calls)


def test_failing_probe_means_down_not_crash() -> None:
    probe = ScriptedProbe(UP_WG0)
    monitor = TunnelMonitor(["wg*"], probe=probe)
    assert monitor.refresh().up
    probe.fail = True
    state = monitor.refresh()
    assert not state.up
    assert state.epoch == 2
    assert state.addresses == ()


def test_failing_subscriber_does_not_stop_the_others() -> None:
    probe = ScriptedProbe(UP_WG0)
    monitor = TunnelMonitor(["wg*"], probe=probe)
    seen: list[int] = []

    def bad(old: TunnelState, new: TunnelState) -> None:
        raise RuntimeError("subscriber bug")

    monitor.subscribe(bad)
    monitor.subscribe(lambda old, new: seen.append(new.epoch))
    monitor.refresh()
    assert seen == [1]
    assert monitor.state.up


def test_unsubscribe() -> None:
    probe = ScriptedProbe(UP_WG0)
    monitor = TunnelMonitor(["wg*"], probe=probe)
    seen: list[int] = []
    unsubscribe = monitor.subscribe(lambda old, new: seen.append(new.epoch))
    monitor.refresh()
    unsubscribe()
    unsubscribe()  # idempotent
    probe.result = ABSENT
    monitor.refresh()
    assert seen == [1]


def test_start_reads_state_at_once_and_polls() -> None:
    async def body() -> None:
        probe = ScriptedProbe(UP_WG0)
        monitor = TunnelMonitor(["wg*"], poll_interval=0.02, probe=probe)
        await monitor.start()
        try:
            assert monitor.state.up
            assert monitor.state.epoch == 1
            probe.result = ABSENT
            for _ in range(100):
                if not monitor.state.up:
                    break
                await asyncio.sleep(0.01)
            assert not monitor.state.up
            assert monitor.state.epoch == 2
        finally:
            await monitor.stop()
        calls = len(probe.calls)
        await asyncio.sleep(0.06)
        assert len(probe.calls) == calls  # stopped: no more polling

    asyncio.run(body())


def test_netlink_failure_falls_back_to_polling(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An address family the kernel does not know: socket() fails like a sandbox would.
    monkeypatch.setattr(socket, "AF_NETLINK", 255)

    async def body() -> None:
        probe = ScriptedProbe(UP_WG0)
        monitor = TunnelMonitor(["wg*"], poll_interval=0.02, probe=probe)
        with caplog.at_level(logging.WARNING, logger="stubresolver.tunnel"):
            await monitor.start()
        try:
            assert not monitor.netlink_active
            assert monitor.state.up
            probe.result = ABSENT
            for _ in range(100):
                if not monitor.state.up:
                    break
                await asyncio.sleep(0.01)
            assert not monitor.state.up
        finally:
            await monitor.stop()

    asyncio.run(body())
    warnings = [r for r in caplog.records if "netlink unavailable" in r.getMessage()]
    assert len(warnings) == 1
