"""config: the example file, defaults, and errors that name the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stubresolver.access import ClientFilter
from stubresolver.config import load_config, parse_config
from stubresolver.config import warnings as config_warnings
from stubresolver.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def base(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"upstreams": ["udp://10.8.0.1"]}
    raw.update(overrides)
    return raw


def test_example_config_loads() -> None:
    config = load_config(REPO / "config.example.yaml")
    assert [str(a) for a in config.listen] == ["127.0.0.1:53", "[::1]:53"]
    assert config.tunnel.interfaces == ("wg*", "tun*")
    assert [u.scheme for u in config.upstreams] == ["udp", "tcp"]
    assert not config.logging.queries  # privacy by default


def test_defaults() -> None:
    config = parse_config(base())
    assert [str(a) for a in config.listen] == ["127.0.0.1:53", "[::1]:53"]
    (up,) = config.upstreams
    assert (up.host, up.port, up.timeout) == ("10.8.0.1", 53, 1.5)
    assert config.cache.enabled and config.cache.flush_on_tunnel_change
    assert config.cache.limits.max_entries == 10_000
    assert config.server.tcp_idle_timeout == 10.0


def test_upstream_forms() -> None:
    config = parse_config(
        base(
            upstreams=[
                "udp://10.8.0.1:5353",
                "tcp://[fd00::1]",
                {"url": "tls://10.8.0.1#dns.vpn.example", "timeout": 2},
                "https://10.8.0.1:8443/q#dns.vpn.example",
                "https://10.8.0.1#dns.vpn.example",
            ]
        )
    )
    udp, tcp, tls, doh, doh_default = config.upstreams
    assert (udp.port, tcp.host, tcp.port) == (5353, "fd00::1", 53)
    assert (tls.port, tls.auth_name, tls.timeout) == (853, "dns.vpn.example", 2.0)
    assert (doh.port, doh.path, doh.auth_name) == (8443, "/q", "dns.vpn.example")
    assert (doh_default.port, doh_default.path) == (443, "/dns-query")


def test_reverse_via_vpn_and_listen_forms() -> None:
    config = parse_config(
        base(
            listen=["127.0.0.53:53", "[::1]:5353", "::1"],
            local={"reverse_via_vpn": ["10.8.0.0/24"]},
        )
    )
    assert [str(a) for a in config.listen] == ["127.0.0.53:53", "[::1]:5353", "[::1]:53"]
    assert [str(n) for n in config.local.reverse_via_vpn] == ["10.8.0.0/24"]


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        ({"upstreams": ["udp://10.8.0.1"], "bogus": 1}, "bogus", "unknown key"),
        ({}, "upstreams", "required"),
        (base(upstreams=[]), "upstreams", "at least one"),
        (base(upstreams=["udp://10.8.0.1", "udp://dns.example.com"]), "upstreams[1]", "IP"),
        (base(upstreams=["quic://10.8.0.1"]), "upstreams[0]", "scheme"),
        (base(upstreams=["tls://10.8.0.1"]), "upstreams[0]", "auth-name"),
        (base(upstreams=["udp://10.8.0.1#name"]), "upstreams[0]", "no path"),
        (base(upstreams=["udp://10.8.0.1:99999"]), "upstreams[0]", "port"),
        (base(upstreams=[{"timeout": 1}]), "upstreams[0].url", "required"),
        (base(upstreams=[{"url": "udp://10.8.0.1", "timeout": -1}]), "upstreams[0].timeout", "> 0"),
        (
            base(upstreams=[{"url": "udp://10.8.0.1", "spki_pins": ["x"]}]),
            "upstreams[0].spki_pins[0]",
            "base64",
        ),
        (base(upstreams=[{"url": "udp://10.8.0.1", "extra": 1}]), "upstreams[0].extra", "unknown"),
        (
            base(upstreams=[{"url": "tls://10.8.0.1#n", "ca_file": "/nonexistent/ca.pem"}]),
            "upstreams[0].ca_file",
            "readable",
        ),
        (base(upstreams=["udp://0.0.0.0"]), "upstreams[0]", "unicast"),
        (base(upstreams=["udp://[::]:53"]), "upstreams[0]", "unicast"),
        (base(upstreams=["udp://224.0.0.251"]), "upstreams[0]", "unicast"),
        (base(upstreams=["udp://[ff02::fb]"]), "upstreams[0]", "unicast"),
        (base(upstreams=["udp://10.8.0.1", "udp://127.0.0.1"]), "upstreams[1]", "tunnel"),
        (base(upstreams=[{"url": "tcp://[::1]"}]), "upstreams[0].url", "loopback"),
        (base(upstreams=["udp://[::ffff:127.0.0.1]"]), "upstreams[0]", "loopback"),
        (
            base(upstreams=["udp://127.0.0.1"], tunnel={"interfaces": ["lo", "wg*"]}),
            "upstreams[0]",
            "loopback",
        ),
        (base(upstreams=["https://10.8.0.1/dns-query#dns.ex\u00e4mple"]), "upstreams[0]", "ASCII"),
        (base(upstreams=["tls://10.8.0.1#bad name"]), "upstreams[0]", "ASCII host"),
        (base(upstreams=["https://10.8.0.1/d\u00e9ns#dns.example"]), "upstreams[0]", "path"),
        (base(upstreams=["https://10.8.0.1/a b#dns.example"]), "upstreams[0]", "path"),
        (base(listen=["127.0.0.1:0"]), "listen[0]", "out of range"),
        (base(listen=["localhost:53"]), "listen[0]", "IP"),
        (base(listen=["[::1"]), "listen[0]", "IP:port"),
        (base(listen=["::1]:53"]), "listen[0]", "IP:port"),
        (base(listen=["127.0.0.1:53", "127.0.0.1:53"]), "listen", "twice"),
        (base(listen="127.0.0.1:53"), "listen", "list"),
        (base(tunnel={"interfaces": ["a-very-long-interface-name"]}), "tunnel.interfaces[0]", "15"),
        (base(tunnel={"interfaces": []}), "tunnel.interfaces", "at least one"),
        (base(tunnel={"poll_interval": 0}), "tunnel.poll_interval", "> 0"),
        (base(tunnel={"kinds": ["Ether!"]}), "tunnel.kinds[0]", "device kind"),
        (base(tunnel={"kinds": "ether"}), "tunnel.kinds", "list"),
        (base(cache={"max_entries": -1}), "cache.max_entries", ">= 0"),
        (base(cache={"max_entries": "many"}), "cache.max_entries", "integer"),
        (base(cache={"enabled": "yes"}), "cache.enabled", "true or false"),
        (base(cache={"min_ttl": 10, "max_ttl": 5}), "cache.min_ttl", "max_ttl"),
        (base(server={"tcp_max_connections": 0}), "server.tcp_max_connections", ">= 1"),
        (base(server={"allow": ["10.0.0.0/33"]}), "server.allow[0]", "CIDR"),
        (base(server={"allow": []}), "server.allow", "at least one"),
        (base(server={"allow": "127.0.0.1"}), "server.allow", "list"),
        (base(local={"reverse_via_vpn": ["10.8.0.0/33"]}), "local.reverse_via_vpn[0]", "CIDR"),
        (base(local={"single_label": "drop"}), "local.single_label", "nxdomain, forward"),
        (base(logging={"level": "loud"}), "logging.level", "one of"),
        (base(logging={"queries": 1}), "logging.queries", "true or false"),
        (["a", "list"], "", "mapping"),
    ],
)
def test_errors_name_the_key(raw: Any, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.path.startswith(path) if path else info.value.path == ""
    assert words in str(info.value)


def test_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: [udp://10.8.0.1\nlisten: {\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "line" in str(info.value) and "column" in str(info.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("upstreams: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stubresolver", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_cli(tmp_path: Path) -> None:
    good = run_cli("check-config", "--config", str(REPO / "config.example.yaml"))
    assert good.returncode == 0, good.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams:\n  - udp://10.8.0.1\n  - url: udp://vpn.example.com\n")
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert "upstreams[1].url" in result.stderr
    assert "never a name" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_rejects_bad_config_before_binding(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listen: ['127.0.0.1:53']\nupstreams: [udp://10.8.0.1]\ncache: {max_entries: x}\n"
    )
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 2
    assert "cache.max_entries" in result.stderr


@pytest.mark.parametrize("url", ["udp://10.8.0.1:0", "tls://10.8.0.1:0#dns.example"])
def test_upstream_port_zero_is_an_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(upstreams=["udp://10.8.0.2", url]))
    assert info.value.path == "upstreams[1]"
    assert "port" in info.value.message


def test_error_message_carries_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: [udp://10.8.0.1]\ntunnel:\n  interfaces: [wg0, 'x' ]\n  extra: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.path == "tunnel.extra"
    assert str(info.value).startswith("tunnel.extra: unknown key")
    not_yaml = tmp_path / "text.yaml"
    not_yaml.write_text("upstreams:\n  - udp://10.8.0.1\n\tlisten: x\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1"):
        load_config(not_yaml)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


def test_loopback_upstream_is_fine_with_tunnel_lo() -> None:
    config = parse_config(base(upstreams=["udp://127.0.0.1:5353"], tunnel={"interfaces": ["lo"]}))
    assert config.upstreams[0].host == "127.0.0.1"


def test_punycode_auth_name_and_percent_encoded_path_are_accepted() -> None:
    config = parse_config(base(upstreams=["https://10.8.0.1/dns%2Dquery#xn--dns-xla.example"]))
    assert config.upstreams[0].path == "/dns%2Dquery"
    assert config.upstreams[0].auth_name == "xn--dns-xla.example"


def test_server_allow_defaults_to_loopback_only() -> None:
    config = parse_config(base())
    clients = ClientFilter(config.server.allow)
    for host in ("127.0.0.1", "127.3.2.1", "::1"):
        assert clients.permits(host), host
    for host in ("10.8.0.2", "192.168.1.20", "::2", "fe80::1%eth0", "::ffff:10.0.0.1", "junk"):
        assert not clients.permits(host), host
    assert ClientFilter(parse_config(base(server={"allow": ["10.0.0.0/8"]})).server.allow).permits(
        "::ffff:10.1.2.3"
    )
    assert not config_warnings(config)


@pytest.mark.parametrize(
    ("listen", "allow", "warned"),
    [
        (["127.0.0.1:53"], ["0.0.0.0/0"], False),  # nobody else can reach a loopback listener
        (["192.0.2.1:53"], None, False),  # reachable, but only loopback is answered
        (["192.0.2.1:53"], ["127.0.0.0/8", "::1/128"], False),
        (["127.0.0.1:53", "[2001:db8::1]:53"], ["2001:db8::/64"], True),
        (["192.0.2.1:53"], ["192.168.0.0/16"], True),
    ],
)
def test_open_resolver_warning(listen: list[str], allow: list[str] | None, warned: bool) -> None:
    raw = base(listen=listen) if allow is None else base(listen=listen, server={"allow": allow})
    found = config_warnings(parse_config(raw))
    assert bool(found) == warned
    if warned:
        assert "server.allow" in found[0]


def test_check_config_prints_the_open_resolver_warning(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "listen: ['192.0.2.1:53']\nupstreams: [udp://10.8.0.1]\nserver: {allow: [0.0.0.0/0]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "stubresolver", "check-config", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warning: server.allow" in result.stderr


def test_parser_invents_no_defaults() -> None:
    """Each default is written once, in the dataclass (STYLE.md 13): a file that leaves a
    key out gets exactly the field's default, and a section given empty gets the same."""
    from dataclasses import fields

    from stubresolver.config import (
        CacheConfig,
        Config,
        LocalConfig,
        LoggingConfig,
        ServerConfig,
        TunnelConfig,
        UpstreamConfig,
    )

    config = parse_config(base())
    assert config == Config(upstreams=config.upstreams)
    sections = {"tunnel": TunnelConfig, "cache": CacheConfig, "server": ServerConfig}
    sections |= {"local": LocalConfig, "logging": LoggingConfig}
    for key, cls in sections.items():
        assert getattr(config, key) == cls(), key
        assert getattr(parse_config(base(**{key: {}})), key) == cls(), key
        assert getattr(parse_config(base(**{key: None})), key) == cls(), key
    (up,) = parse_config(base(upstreams=[{"url": "tls://10.8.0.1#dns.example"}])).upstreams
    for f in fields(UpstreamConfig):
        if f.name in ("timeout", "ca_file", "spki_pins"):
            assert getattr(up, f.name) == f.default, f.name


def test_every_dataclass_field_is_a_config_key() -> None:
    """The allowed keys are the field names, so a new field is a key at once and the error
    for an unknown key lists them."""
    with pytest.raises(ConfigError) as info:
        parse_config(base(server={"nope": 1}))
    for key in ("tcp_idle_timeout", "max_forwards", "allow", "udp_max_payload"):
        assert key in info.value.message
    with pytest.raises(ConfigError) as info:
        parse_config(base(cache={"limits": {}}))
    assert info.value.path == "cache.limits"  # the YAML section is flat


def test_takeover_and_state_dir() -> None:
    config = parse_config(base())
    # "off" is the default only until the manager backends land (issue 9).
    assert config.takeover.mode == "off"
    assert config.takeover.restore_on_exit
    assert config.takeover.resolv_conf == Path("/etc/resolv.conf")
    assert config.state_dir == Path("/var/lib/stubresolver")
    given = parse_config(
        base(
            takeover={"mode": "file", "restore_on_exit": False, "resolv_conf": "/tmp/r.conf"},
            state_dir="/tmp/state",
        )
    )
    assert given.takeover.mode == "file"
    assert not given.takeover.restore_on_exit
    assert given.takeover.resolv_conf == Path("/tmp/r.conf")
    assert given.state_dir == Path("/tmp/state")
    # A bare `mode: off` is YAML 1.1's false.
    assert (
        parse_config(
            yaml.safe_load("upstreams: [udp://10.8.0.1]\ntakeover: {mode: off}")
        ).takeover.mode
        == "off"
    )


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        ({"takeover": {"mode": "dnsmasq"}}, "takeover.mode", "not one of off, auto, file"),
        ({"takeover": {"mode": 1}}, "takeover.mode", "must be a string"),
        ({"takeover": {"mode": True}}, "takeover.mode", "got a boolean"),
        ({"takeover": {"restore_on_exit": "yes"}}, "takeover.restore_on_exit", "true or false"),
        ({"takeover": {"resolv_conf": "etc/resolv.conf"}}, "takeover.resolv_conf", "absolute"),
        ({"takeover": {"resolv_conf": "/etc/"}}, "takeover.resolv_conf", "directory"),
        ({"takeover": {"nope": 1}}, "takeover.nope", "unknown key"),
        ({"takeover": []}, "takeover", "must be a mapping"),
        ({"state_dir": "var/lib"}, "state_dir", "absolute"),
        ({"state_dir": 3}, "state_dir", "must be a string"),
    ],
)
def test_takeover_errors_name_the_key(raw: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(**raw))
    assert info.value.path == path
    assert words in info.value.message


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("x.lan. IN A 999.1.1.1", "not a zone-file record"),
        ("x.lan. IN BOGUS 1", "not a zone-file record"),
        ("x.lan. IN A", "not a zone-file record"),
        ("", "exactly one record"),
        ("$TTL 5", "exactly one record"),
        ("a.lan. IN A 10.0.0.1\nb.lan. IN A 10.0.0.2", "exactly one record"),
        ("x.lan. CH TXT hi", "class IN"),
        (5, "zone-file line"),
    ],
)
def test_bad_local_record_names_its_index(line: object, words: str) -> None:
    raw = base(local={"records": ["ok.lan. IN A 10.0.0.1", line]})
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.path == "local.records[1]"
    assert words in info.value.message


def test_local_records_cname_stands_alone() -> None:
    lines = ["w.lan. IN CNAME x.lan.", "w.lan. IN A 10.0.0.1"]
    with pytest.raises(ConfigError) as info:
        parse_config(base(local={"records": lines}))
    assert info.value.path == "local.records[1]"
    with pytest.raises(ConfigError, match=r"local\.records: a name has two CNAME"):
        parse_config(base(local={"records": ["w.lan. IN CNAME x.", "w.lan. IN CNAME y."]}))


def test_local_records_parse_to_wire_form() -> None:
    (record,) = parse_config(
        base(local={"records": ["Printer.LAN. 300 IN A 192.168.1.5"]})
    ).local.records
    assert record.name == b"\x07printer\x03lan\x00"
    assert (record.rtype, record.ttl, record.rdata) == (1, 300, bytes([192, 168, 1, 5]))
    # A name inside rdata is written in full, never as a compression pointer.
    (soa,) = parse_config(
        base(local={"records": ["lan. IN SOA ns.lan. host.ns.lan. 1 2 3 4 5"]})
    ).local.records
    assert b"\xc0" not in soa.rdata
    assert soa.rdata.startswith(b"\x02ns\x03lan\x00\x04host\x02ns\x03lan\x00")


def test_a_ca_file_that_is_no_bundle_is_a_config_error(tmp_path: Path) -> None:
    """Checked once, at config time, with the key path (issue 8): not at the first query."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        parse_config(base(upstreams=[{"url": "tls://10.8.0.1#n", "ca_file": str(bad)}]))
    assert info.value.path == "upstreams[0].ca_file"
    assert "cannot load" in str(info.value)


def test_bootstrap_hosts_become_local_a_and_aaaa_records() -> None:
    config = parse_config(
        base(
            bootstrap_hosts={
                "vpn.example.net.": ["203.0.113.7", "2001:db8::7"],
                "Other.Example": "198.51.100.9",
            }
        )
    )
    assert [(r.name, r.rtype, r.ttl) for r in config.bootstrap_hosts] == [
        (b"\x03vpn\x07example\x03net\x00", 1, 60),
        (b"\x03vpn\x07example\x03net\x00", 28, 60),
        (b"\x05other\x07example\x00", 1, 60),
    ]
    assert config.bootstrap_hosts[0].rdata == bytes([203, 0, 113, 7])


@pytest.mark.parametrize(
    ("hosts", "path"),
    [
        ({"vpn.example.net": ["not-an-ip"]}, "bootstrap_hosts.vpn.example.net[0]"),
        ({"vpn.example.net": []}, "bootstrap_hosts.vpn.example.net"),
        ({"vpn.example.net": {"a": 1}}, "bootstrap_hosts.vpn.example.net"),
        ({"vpn.ex\u00e4mple.net": "192.0.2.1"}, "bootstrap_hosts.vpn.ex\u00e4mple.net"),
        (["vpn.example.net"], "bootstrap_hosts"),
    ],
)
def test_bad_bootstrap_hosts_name_the_key(hosts: object, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(bootstrap_hosts=hosts))
    assert info.value.path == path


def test_a_bootstrap_host_cannot_also_be_a_local_cname() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            base(
                local={"records": ["vpn.example.net. IN CNAME other.example."]},
                bootstrap_hosts={"vpn.example.net": "192.0.2.1"},
            )
        )
    assert info.value.path == "bootstrap_hosts"


def test_server_user_and_group() -> None:
    """Off by default (no drop, the README's run command keeps working); names only, an
    error names the key. Whether the account exists is privilege.py's check at start."""
    config = parse_config(base())
    assert (config.server.user, config.server.group) == ("", "")
    given = parse_config(base(server={"user": "stubresolver", "group": "stubresolver"}))
    assert (given.server.user, given.server.group) == ("stubresolver", "stubresolver")
    assert parse_config(base(server={"user": "", "group": None})).server == config.server
    for key, value in (("user", 0), ("user", "1abc"), ("group", "-x"), ("group", "a b")):
        with pytest.raises(ConfigError) as info:
            parse_config(base(server={key: value}))
        assert info.value.path == f"server.{key}"
