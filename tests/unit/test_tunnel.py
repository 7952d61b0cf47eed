"""Tunnel decision logic and epoch bookkeeping, with no real interface (injected probe)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from stubresolver.tunnel import (
    ABSENT,
    DEFAULT_KINDS,
    IFF_LOWER_UP,
    IFF_RUNNING,
    IFF_UP,
    InterfaceInfo,
    ProbeResult,
    TunnelMonitor,
    device_kind,
    matches,
    select_tunnel,
    transition,
)
from stubresolver.tunnel_state import TunnelState

UP_RUNNING = IFF_UP | IFF_RUNNING


def iface(
    name: str,
    flags: int = UP_RUNNING,
    addresses: tuple[str, ...] = ("10.8.0.2",),
    index: int = 7,
    kind: str = "tun",
) -> InterfaceInfo:
    return InterfaceInfo(name=name, ifindex=index, flags=flags, addresses=addresses, kind=kind)


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


def test_patterns_are_taken_in_the_order_written() -> None:
    # Issue 7: [wg0, tun0] with both up picks wg0 (matches used to be sorted by name).
    both = [iface("tun0", index=9), iface("wg0", index=2)]
    assert select_tunnel(["wg0", "tun0"], both).ifname == "wg0"
    assert select_tunnel(["tun0", "wg0"], both).ifname == "tun0"
    assert select_tunnel(["wg*", "tun*"], list(reversed(both))).ifname == "wg0"
    # Within one glob, by name; a later pattern wins only when earlier ones have nothing.
    a = [iface("wg2", index=2), iface("tun0", index=9), iface("wg10", index=10)]
    assert select_tunnel(["wg*", "tun*"], a).ifname == "wg10"
    a_down = [iface("wg2", flags=0), iface("tun0", index=9)]
    assert select_tunnel(["wg*", "tun*"], a_down).ifname == "tun0"


@pytest.mark.parametrize("kind", ["ipip", "ether", "loopback", "unknown"])
def test_a_glob_skips_devices_that_are_not_vpn_tunnels(kind: str) -> None:
    # tun* matches tunl0, the IPIP fallback device; it must never be taken for the tunnel.
    interfaces = [iface("tunl0", kind=kind, index=3)]
    result = select_tunnel(["tun*"], interfaces)
    assert not result.up and result.ifname is None
    assert result.skipped == (("tunl0", kind),)
    good = select_tunnel(["tun*"], [*interfaces, iface("tun0", index=4)])
    assert good.up and good.ifname == "tun0" and good.skipped == (("tunl0", kind),)


@pytest.mark.parametrize("kind", ["tun", "tap", "wireguard", "ppp"])
def test_vpn_device_kinds_are_accepted_by_default(kind: str) -> None:
    assert select_tunnel(["*"], [iface("vpn0", kind=kind)]).up


def test_tunnel_kinds_widen_the_set_and_exact_names_are_trusted() -> None:
    veth = [iface("tun9", kind="ether")]
    assert not select_tunnel(["tun*"], veth).up
    assert select_tunnel(["tun*"], veth, DEFAULT_KINDS | {"ether"}).up
    assert select_tunnel(["tun9"], veth).up  # written exactly: as the user said
    assert select_tunnel(["lo"], [iface("lo", kind="loopback")]).up


def test_transition_keeps_the_state_or_bumps_the_epoch() -> None:
    old = TunnelState(True, "wg0", 3, ("10.8.0.2",), 4)
    same = ProbeResult(True, "wg0", 3, ("10.8.0.2",), (("tunl0", "ipip"),))
    assert transition(old, same) is old
    moved = transition(old, ProbeResult(True, "wg0", 3, ("10.8.0.3",)))
    assert moved == TunnelState(True, "wg0", 3, ("10.8.0.3",), 5)
    down = transition(moved, ABSENT)
    assert not down.up and down.epoch == 6 and down.ifname is None


def test_device_kind_reads_sysfs(tmp_path: Path) -> None:
    def dev(name: str, **files: str) -> None:
        (tmp_path / name).mkdir()
        for key, text in files.items():
            (tmp_path / name / key).write_text(text)

    dev("tun0", tun_flags="0x1001\n", type="65534\n", uevent="INTERFACE=tun0\n")
    dev("tap0", tun_flags="0x1002\n", type="1\n", uevent="INTERFACE=tap0\n")
    dev("wg0", type="65534\n", uevent="DEVTYPE=wireguard\nINTERFACE=wg0\n")
    dev("ppp0", type="512\n", uevent="INTERFACE=ppp0\n")
    dev("tunl0", type="768\n", uevent="INTERFACE=tunl0\n")
    dev("tun9", type="1\n", uevent="INTERFACE=tun9\n")  # a veth named to look like a tun
    dev("odd0", type="9999\n", uevent="")
    found = {
        name: device_kind(name, tmp_path) for name in sorted(p.name for p in tmp_path.iterdir())
    }
    assert found == {
        "odd0": "arphrd-9999",
        "ppp0": "ppp",
        "tap0": "tap",
        "tun0": "tun",
        "tun9": "ether",
        "tunl0": "ipip",
        "wg0": "wireguard",
    }
    assert device_kind("gone0", tmp_path) == "unknown"


def test_device_kind_of_this_hosts_loopback() -> None:
    assert device_kind("lo") == "loopback"


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


def test_hold_down_reads_the_device_as_down_until_released_or_gone() -> None:
    probe = ScriptedProbe(UP_WG0)
    monitor = TunnelMonitor(["wg*"], probe=probe)
    assert monitor.refresh().up
    held = monitor.hold_down("wg0")  # a hook's tunnel-down while wg0 still exists
    assert not held.up and held.ifname == "wg0" and held.epoch == 2
    assert monitor.refresh() is held  # the same device stays down, poll after poll
    monitor.release("wg0")
    assert monitor.refresh().up
    monitor.hold_down("wg0")
    probe.result = ABSENT  # the device went: its hold ends with it
    assert not monitor.refresh().up
    probe.result = ProbeResult(True, "wg0", 9, ("10.8.0.2",))  # a new wg0
    assert monitor.refresh().up
    assert monitor.hold_down("wg1").up  # another name: nothing held
