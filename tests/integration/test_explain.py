"""`stubresolver explain` against the real daemon (`python -m stubresolver run`, tunnel `lo`)
forwarding to a real unbound, through the real CLI: one case per kind of outcome, and the
`status` counters (outcomes, cache hits and misses, upstream answers) do not move while
explaining. 127.0.130.0/24 is this module's loopback range."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest

from testkit.ports import free_port
from testkit.unbound import Unbound, loopback_config, run_unbound

from .stub_process import StubProcess, listen_port, run_cli, run_stub, write_config

UNBOUND_ADDR = "127.0.130.1"
ROUTE_ADDR = "127.0.130.2"  # a route's upstream; explain never sends, so nothing listens
STUB_ADDR = "127.0.130.10"


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    tmp = tmp_path_factory.mktemp("unbound")
    with run_unbound(
        tmp,
        UNBOUND_ADDR,
        lambda port: loopback_config(UNBOUND_ADDR, port, tmp, []),
        dns.message.make_query("a.example.", "A"),
    ) as server:
        yield server


def stub_config(tmp: Path, unbound: Unbound, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": [f"{STUB_ADDR}:{free_port(STUB_ADDR)}"],
        "tunnel": {"interfaces": ["lo"]},
        "upstreams": [f"udp://{unbound.addr}:{unbound.port}"],
        "routes": {"corp.example": [f"udp://{ROUTE_ADDR}:53"], "vpn-only.example": ["vpn"]},
        "local": {"records": ["printer.lan. 300 IN A 192.168.1.5"]},
        # lo carries ::1, so `auto` would forward AAAA: `never` arranges the AAAA policy.
        "policy": {"aaaa": "never"},
        "control_socket": str(tmp / "control.sock"),
        "logging": {"level": "debug"},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory, unbound: Unbound) -> Iterator[StubProcess]:
    tmp = tmp_path_factory.mktemp("stub")
    config = stub_config(tmp, unbound)
    path = write_config(tmp / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        yield proc
    assert proc.proc.returncode == 0
    assert "Traceback" not in proc.stderr


def explain(stub: StubProcess, *args: str) -> dict[str, Any]:
    proc = run_cli("explain", "--json", "--config", str(stub.config), *args)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return result


def counters(stub: StubProcess) -> dict[str, Any]:
    """What explaining must not move."""
    proc = run_cli("status", "--json", "--config", str(stub.config))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    return {
        "outcomes": status["outcomes"],
        "cache": status["cache"],
        "upstreams": [(u["url"], u["answers"], u["failures"]) for u in status["upstreams"]],
    }


def test_every_kind_of_outcome_and_nothing_moves(stub: StubProcess, unbound: Unbound) -> None:
    upstream = f"udp://{unbound.addr}:{unbound.port}"
    # A first real query fills the cache (the form glibc asks in: RD, no EDNS).
    first = stub.udp(dns.message.make_query("a.example.", "A", use_edns=False))
    assert first.rcode() == dns.rcode.NOERROR
    before = counters(stub)

    local = explain(stub, "nas.home.arpa")
    assert (local["outcome"], local["rule"], local["rcode"]) == ("local", "special-use", "NXDOMAIN")
    record = explain(stub, "printer.lan", "A")
    assert (record["rule"], record["answers"]) == (
        "local.records",
        ["printer.lan. 300 IN A 192.168.1.5"],
    )
    reverse = explain(stub, "5.1.168.192.in-addr.arpa", "PTR")
    assert (reverse["rule"], reverse["range"]) == ("private-reverse", "192.168.0.0/16")

    cached = explain(stub, "a.example")
    assert cached["outcome"] == "cached"
    [entry] = cached["cache"]
    assert entry["flags"] == "RD"
    assert 0 < entry["ttl_left"] <= 300
    assert entry["answers"][0].endswith("IN A 192.0.2.1")

    forwarded = explain(stub, "b.example", "A")
    assert forwarded["outcome"] == "forwarded"
    assert forwarded["route"] == {"kind": "default", "suffix": None}
    assert [u["url"] for u in forwarded["upstreams"]] == [upstream]
    assert forwarded["interface"] == "lo"

    routed = explain(stub, "git.corp.example", "A")
    assert routed["route"] == {"kind": "route", "suffix": "corp.example."}
    assert [u["url"] for u in routed["upstreams"]] == [f"udp://{ROUTE_ADDR}:53"]

    aaaa = explain(stub, "b.example", "AAAA")
    assert (aaaa["outcome"], aaaa["rule"], aaaa["ede"]["code"]) == (
        "aaaa-nodata",
        "policy.aaaa",
        17,
    )

    malformed = explain(stub, "a..example")
    assert (malformed["outcome"], malformed["rcode"]) == ("refused-malformed-name", "REFUSED")

    assert counters(stub) == before, "explain changed the daemon's state"
    # What explain said is what happens: b.example is really forwarded, then cached.
    assert stub.udp(dns.message.make_query("b.example.", "A", use_edns=False)).answer
    assert explain(stub, "b.example")["outcome"] == "cached"


def test_human_text_and_cli_errors(stub: StubProcess) -> None:
    proc = run_cli("explain", "--config", str(stub.config), "git.corp.example")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("git.corp.example. A: forwarded")
    assert "route: route corp.example." in proc.stdout
    assert f"1. udp://{ROUTE_ADDR}:53" in proc.stdout
    proc = run_cli("explain", "--config", str(stub.config), "use-application-dns.net", "TXT")
    assert "answered locally" in proc.stdout and "rule: canary" in proc.stdout
    proc = run_cli("explain", "--config", str(stub.config), "a.example", "NOSUCHTYPE")
    assert proc.returncode == 1
    assert "not a DNS type" in proc.stderr
    # No query name reaches the log unless logging.queries is on (it is off here).
    run_cli("explain", "--config", str(stub.config), "secret-name-7f3a.example")
    assert "secret-name-7f3a" not in stub.stderr


def test_announced_domain_routes_to_the_announced_servers(stub: StubProcess) -> None:
    """Runs after the others in this module: an announcement flushes the cache."""
    socket_path = str(stub.config.parent / "control.sock")
    proc = run_cli(
        "tunnel-up", "--socket", socket_path, "--interface", "lo",
        "--dns", "127.0.130.3", "--dns", "127.0.130.4", "--domain", "announced.example",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    before = counters(stub)
    result = explain(stub, "git.announced.example")
    assert result["route"] == {"kind": "announced", "suffix": "announced.example."}
    [vpn] = result["upstreams"]
    assert (vpn["url"], vpn["servers"]) == ("vpn", ["127.0.130.3", "127.0.130.4"])
    text = run_cli("explain", "--socket", socket_path, "git.announced.example").stdout
    assert "domain announced.example. the VPN announced" in text
    assert "announced servers: 127.0.130.3, 127.0.130.4" in text
    assert counters(stub) == before


def test_tunnel_down_names_the_interface(tmp_path: Path, unbound: Unbound) -> None:
    # A pattern that matches no interface: the tunnel is absent, and a loopback upstream
    # needs tunnel `lo`, so the upstream is a documentation address nothing answers.
    config = stub_config(
        tmp_path,
        unbound,
        tunnel={"interfaces": ["nosuchtun*"]},
        upstreams=["udp://192.0.2.53"],
        routes={},
    )
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        before = counters(proc)
        result = explain(proc, "b.example")
        assert result["outcome"] == "refused-tunnel-down"
        assert result["interface"] == "nosuchtun*"
        assert result["ede"] == {"code": 23, "text": "tunnel nosuchtun* down"}
        # Local rules still answer while the tunnel is down.
        assert explain(proc, "localhost")["outcome"] == "local"
        assert counters(proc) == before
        text = run_cli("explain", "--config", str(path), "b.example").stdout
        assert "REFUSED: the tunnel is down" in text and "nosuchtun*" in text
        # And the real query is refused the way explain said.
        assert proc.udp(dns.message.make_query("b.example.", "A")).rcode() == dns.rcode.REFUSED
    assert proc.proc.returncode == 0
