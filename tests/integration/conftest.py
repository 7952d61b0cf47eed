"""Fixtures the DoT and DoH loopback tests share (test_upstream_tls.py,
test_upstream_https.py, test_upstream_answer_checks.py): the test PKI, unbound serving DoT
and DoH with it, and the connection counter. A test module's own fixture of the same name
(test_server.py's plain ``unbound``, say) takes precedence in that module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.pki import Pki

from .tlsworld import ConnectCounter, UnboundTls, make_pki, run_unbound_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[UnboundTls]:
    """unbound serving DoT and DoH, shared by the tests of a module."""
    with run_unbound_tls(tmp_path_factory.mktemp("unbound-tls"), pki) as server:
        yield server


@pytest.fixture
def own_unbound(tmp_path: Path, pki: Pki) -> Iterator[UnboundTls]:
    """An unbound of the test's own, for tests that stop and restart it."""
    with run_unbound_tls(tmp_path, pki) as server:
        yield server


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> ConnectCounter:
    return ConnectCounter(monkeypatch)
