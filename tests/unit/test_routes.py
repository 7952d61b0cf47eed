"""Split DNS: config ``routes``, the ``vpn`` upstream's config form, the router's choice and
what a VPN hook may announce (routes.py, announce.py, config.py). All pure."""

from __future__ import annotations

from typing import Any

import pytest

from stubresolver import wire
from stubresolver.announce import Announced, parse_announcement
from stubresolver.config import VPN_UPSTREAM, parse_config
from stubresolver.errors import ConfigError
from stubresolver.routes import Router


def config(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"upstreams": ["udp://10.8.0.1"], "tunnel": {"interfaces": ["tun0"]}}
    raw.update(overrides)
    return raw


def router(raw: dict[str, Any], announced: Announced | None = None) -> Router:
    cfg = parse_config(raw)
    return Router(cfg.all_upstreams(), cfg.upstreams, cfg.routes, announced)


def urls(raw: dict[str, Any], name: str, announced: Announced | None = None) -> list[str]:
    cfg = parse_config(raw)
    every = cfg.all_upstreams()
    found = router(raw, announced).candidates(wire.encode_name(name.lower()))
    return [every[i].url for i in found]


# --- config ---------------------------------------------------------------------------------


def test_vpn_upstream_forms() -> None:
    cfg = parse_config(config(upstreams=["vpn", {"url": "vpn", "timeout": 2.5}]))
    assert [u.scheme for u in cfg.upstreams] == [VPN_UPSTREAM, VPN_UPSTREAM]
    assert cfg.upstreams[1].timeout == 2.5
    # The same upstream named twice is one transport.
    assert len(cfg.all_upstreams()) == 2  # distinct by timeout


def test_routes_share_transports_and_keep_order() -> None:
    cfg = parse_config(
        config(
            upstreams=["udp://10.8.0.1", "tls://10.8.0.2#dns.example"],
            routes={"Corp.Example.": ["vpn"], "lab.example": ["udp://10.8.0.1", "vpn"]},
        )
    )
    assert [r.suffix for r in cfg.routes] == ["corp.example", "lab.example"]
    assert [u.url for u in cfg.all_upstreams()] == [
        "udp://10.8.0.1",
        "tls://10.8.0.2#dns.example",
        "vpn",
    ]


@pytest.mark.parametrize(
    ("routes", "path", "words"),
    [
        ({"corp.example": []}, "routes.corp.example", "non-empty list"),
        ({"corp.example": "udp://10.8.0.1"}, "routes.corp.example", "non-empty list"),
        ({".": ["vpn"]}, "routes..", "the root is not a route"),
        ({"bad..name": ["vpn"]}, "routes.bad..name", "is not a domain name"),
        ({"x.example": ["ftp://10.8.0.1"]}, "routes.x.example[0]", "scheme must be one of"),
        ({"x.example": ["udp://127.0.0.1"]}, "routes.x.example[0]", "loopback"),
        ({"x.example": [{"url": "vpn", "ca_file": "/x"}]}, "routes.x.example[0]", "only timeout"),
        ({"a.example": ["vpn"], "A.example.": ["vpn"]}, "routes.A.example.", "routed twice"),
        (["corp.example"], "routes", "must be a mapping"),
    ],
)
def test_route_errors_name_the_key(routes: Any, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(routes=routes))
    assert info.value.path == path
    assert words in info.value.message


# --- the router -----------------------------------------------------------------------------


def test_no_routes_means_every_name_to_the_upstreams() -> None:
    raw = config(upstreams=["udp://10.8.0.1", "udp://10.8.0.2"])
    assert urls(raw, "www.example") == ["udp://10.8.0.1", "udp://10.8.0.2"]
    assert urls(raw, ".") == ["udp://10.8.0.1", "udp://10.8.0.2"]


def test_longest_suffix_wins_on_label_boundaries() -> None:
    raw = config(
        routes={"example": ["udp://10.8.0.2"], "corp.example": ["udp://10.8.0.3"]},
    )
    assert urls(raw, "a.b.corp.example") == ["udp://10.8.0.3"]
    assert urls(raw, "corp.example") == ["udp://10.8.0.3"]
    assert urls(raw, "xcorp.example") == ["udp://10.8.0.2"]
    assert urls(raw, "EXAMPLE") == ["udp://10.8.0.2"]
    assert urls(raw, "example.org") == ["udp://10.8.0.1"]


def test_announced_domains_route_to_vpn_and_configured_routes_win_ties() -> None:
    announced = Announced()
    raw = config(routes={"corp.example": ["udp://10.8.0.3"], "lab": ["vpn"]})
    assert urls(raw, "x.vpn.example", announced) == ["udp://10.8.0.1"]
    announced.set(
        parse_announcement(
            {"interface": "tun0", "dns": ["10.8.0.53"], "domains": ["vpn.example", "corp.example"]},
            allow_loopback=False,
        )
    )
    assert urls(raw, "x.vpn.example", announced) == ["vpn"]
    assert urls(raw, "x.corp.example", announced) == ["udp://10.8.0.3"]  # configured wins
    assert urls(raw, "www.example", announced) == ["udp://10.8.0.1"]
    announced.set(None)
    assert urls(raw, "x.vpn.example", announced) == ["udp://10.8.0.1"]


def test_announced_domains_need_a_vpn_upstream_somewhere() -> None:
    announced = Announced()
    announced.set(
        parse_announcement(
            {"interface": "tun0", "dns": ["10.8.0.53"], "domains": ["vpn.example"]},
            allow_loopback=False,
        )
    )
    # The user configured no vpn upstream: the VPN's word does not add one.
    assert urls(config(), "x.vpn.example", announced) == ["udp://10.8.0.1"]


# --- what a hook may announce ---------------------------------------------------------------


def test_announcement_is_normalised() -> None:
    got = parse_announcement(
        {
            "interface": "tun0",
            "dns": ["10.8.0.1", " fd00::1 ", "10.8.0.1"],
            "domains": ["Corp.Example.", "corp.example"],
        },
        allow_loopback=False,
    )
    assert got.servers == ("10.8.0.1", "fd00::1")
    assert got.domains == ("corp.example",)
    assert got.as_dict() == {
        "interface": "tun0",
        "servers": ["10.8.0.1", "fd00::1"],
        "domains": ["corp.example"],
    }


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        ({"dns": ["10.8.0.1"]}, 'needs "interface"'),
        ({"interface": "a" * 16}, 'needs "interface"'),
        ({"interface": "../x"}, "not a device name"),
        ({"interface": "tun0", "dns": "10.8.0.1"}, "must be lists"),
        ({"interface": "tun0", "dns": ["dns.example"]}, "not an IP address"),
        ({"interface": "tun0", "dns": [53]}, "not an IP address"),
        ({"interface": "tun0", "dns": ["127.0.0.53"]}, "loopback"),
        ({"interface": "tun0", "dns": ["::ffff:127.0.0.1"]}, "loopback"),
        ({"interface": "tun0", "dns": ["fe80::1"]}, "link-local"),
        ({"interface": "tun0", "dns": ["224.0.0.251"]}, "not a unicast"),
        ({"interface": "tun0", "dns": ["10.0.0.1"] * 9}, "at most 8 servers"),
        ({"interface": "tun0", "domains": ["a..b"]}, "not a domain name"),
        ({"interface": "tun0", "domains": ["."]}, "the root"),
    ],
)
def test_bad_announcements_say_why(request_: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_announcement(request_, allow_loopback=False)
    assert words in str(info.value)


def test_loopback_servers_only_in_the_loopback_setup() -> None:
    got = parse_announcement({"interface": "lo", "dns": ["127.0.90.1"]}, allow_loopback=True)
    assert got.servers == ("127.0.90.1",)
