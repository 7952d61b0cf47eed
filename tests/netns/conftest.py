"""Fixtures for the network-namespace end-to-end tests (see test_leak_e2e.py)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Figures, Stub
from .world import KINDS, World, netns_usable


def _require_netns() -> None:
    reason = netns_usable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"netns end-to-end tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"netns end-to-end tests: {reason}")


@pytest.fixture(scope="session")
def netns_ok() -> None:
    _require_netns()


def _sigterm_as_interrupt(_sig: int, _frame: object) -> None:
    # Python's default SIGTERM ends the process without running `finally`: namespaces,
    # processes and /etc/netns entries would be left behind. Interrupt instead, so pytest
    # tears the fixtures down.
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture(scope="module", params=KINDS)
def world(request: pytest.FixtureRequest, netns_ok: None) -> Iterator[World]:
    """The shared world, once per tunnel kind (WireGuard, then OpenVPN)."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    kind: str = request.param
    w = World("a" if kind == "wireguard" else "o", kind)
    try:
        w.build()
        yield w
    finally:
        try:
            w.close()
        finally:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def fresh_world(netns_ok: None) -> Iterator[World]:
    """A second, throwaway world (other names), for tests that must not pollute `world`."""
    w = World("b")
    try:
        w.build()
        yield w
    finally:
        w.close()


_REPORT: dict[str, Any] = {}


@pytest.fixture(scope="module")
def figures(world: World) -> Iterator[Figures]:
    figs = Figures()
    yield figs
    figs.leaks = world.leak_figures()
    figs.vpn_queries = world.vpn_log_queries()
    _REPORT[world.kind] = figs.report()
    text = json.dumps(_REPORT, indent=2, sort_keys=True)
    print(
        f"\nstubresolver e2e figures ({world.kind}):\n{json.dumps(_REPORT[world.kind], indent=2)}"
    )
    out = os.environ.get("STUBRESOLVER_E2E_REPORT")
    if out:  # rewritten after each tunnel kind, so it always holds everything so far
        Path(out).write_text(text + "\n")


@pytest.fixture
def stub(world: World) -> Iterator[Stub]:
    world.ensure_tunnel_up()
    world.wait_tunnel_passes()
    s = Stub(world)
    try:
        yield s
    finally:
        try:
            s.stop()
        finally:
            s.sock.close()


@pytest.fixture
def stubs(world: World) -> Iterator[list[Stub]]:
    """Stubs a test starts with `harness.start_stub`; each is stopped at the end, and a guard
    table one left behind (lockdown, kill -9) is removed from the client namespace."""
    made: list[Stub] = []
    yield made
    for stub in made:
        if stub.proc is not None and stub.proc.alive():
            stub.stop()
        stub.sock.close()
    world.ns_run(world.ns_c, ["nft", "delete", "table", "inet", "stubresolver"], check=False)
