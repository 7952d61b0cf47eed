"""guard/ruleset.py: the nftables text as data (the netns test applies it for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stubresolver.cli import main
from stubresolver.config import ListenAddress, parse_config
from stubresolver.errors import ConfigError
from stubresolver.guard.nftables import redirect_targets
from stubresolver.guard.ruleset import REMOVE, GuardPlan, render, tunnel_update


def test_drop_only_table_replaces_itself_in_one_transaction() -> None:
    text = render(GuardPlan("wg0"))
    lines = text.splitlines()
    # add + delete first: the replacement is one batch whether or not a table exists.
    assert lines[:3] == [
        "add table inet stubresolver",
        "delete table inet stubresolver",
        "table inet stubresolver {",
    ]
    assert '  set tunnel { type ifname; elements = { "wg0" }; }' in lines
    assert '    meta l4proto { udp, tcp } th dport { 53, 853 } counter name "dropped" drop' in lines
    # Loopback and the tunnel pass before the drop; nothing is redirected.
    order = [
        lines.index(f"    {rule}") for rule in ('oifname "lo" accept', "oifname @tunnel accept")
    ]
    assert order == sorted(order) and max(order) < len(lines) - 3
    assert "dnat" not in text and "stray_dns" not in text
    # Only our table is named anywhere.
    assert {w for w in text.split() if w.startswith("stub")} == {"stubresolver"}


def test_no_tunnel_means_an_empty_set_and_extra_ports_are_dropped() -> None:
    text = render(GuardPlan(None, extra_ports=(853, 8853)))
    assert "  set tunnel { type ifname; }" in text.splitlines()
    assert "th dport { 53, 853, 8853 }" in text


def test_redirect_rules_exempt_the_tunnel_and_target_the_stub() -> None:
    text = render(GuardPlan("tun0", redirect_v4=("127.0.0.1", 53), redirect_v6=("::1", 5353)))
    chain = text[text.index("chain stray_dns") :]
    assert "type nat hook output priority -100; policy accept;" in chain
    assert chain.index("oifname @tunnel return") < chain.index("dnat")
    for proto in ("udp", "tcp"):
        assert (
            f'ip daddr != 127.0.0.0/8 {proto} dport 53 counter name "redirected" '
            "dnat ip to 127.0.0.1:53" in chain
        )
        assert f"ip6 daddr != ::1 {proto} dport 53 counter name" in chain
    assert "dnat ip6 to [::1]:5353" in chain


def test_following_the_tunnel_is_a_set_swap_and_removal_names_only_our_table() -> None:
    assert tunnel_update("wg1") == (
        'flush set inet stubresolver tunnel\nadd element inet stubresolver tunnel { "wg1" }\n'
    )
    assert tunnel_update(None) == "flush set inet stubresolver tunnel\n"
    assert REMOVE == "delete table inet stubresolver\n"


@pytest.mark.parametrize("name", ['wg"0', "a b", "x" * 16, ""])
def test_an_interface_name_nft_could_misread_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not an interface name"):
        render(GuardPlan(name))


def test_redirect_targets_are_the_first_loopback_listeners() -> None:
    listen = [ListenAddress("192.168.1.2", 53), ListenAddress("127.0.0.53", 53),
              ListenAddress("127.0.0.1", 53), ListenAddress("::1", 5353)]  # fmt: skip
    assert redirect_targets(listen) == (("127.0.0.53", 53), ("::1", 5353))
    assert redirect_targets([ListenAddress("10.0.0.1", 53)]) == (None, None)


@pytest.mark.parametrize(
    ("guard", "where"),
    [
        ({"enabled": "yes"}, "guard.enabled"),
        ({"lockdown": 1}, "guard.lockdown"),
        ({"extra_ports": [70000]}, "guard.extra_ports[0]"),
        ({"extra_ports": [True]}, "guard.extra_ports[0]"),
        ({"mode": "x"}, "guard.mode"),
    ],
)
def test_guard_config_errors_name_the_key(guard: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"upstreams": ["udp://10.0.0.1"], "guard": guard})
    assert str(caught.value).startswith(where), caught.value


def test_guard_defaults_off() -> None:
    config = parse_config({"upstreams": ["udp://10.0.0.1"]}).guard
    assert (config.enabled, config.redirect_stray_dns, config.lockdown) == (False, True, False)


def test_check_config_prints_the_table_it_would_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = (Path(__file__).resolve().parents[2] / "config.example.yaml").read_text()
    path = tmp_path / "config.yaml"
    path.write_text(example.replace("\n  enabled: false\n", "\n  enabled: true\n", 1))
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "guard: would load, in one nft transaction" in out
    assert render(GuardPlan(None, redirect_v4=("127.0.0.1", 53), redirect_v6=("::1", 53))) in out
