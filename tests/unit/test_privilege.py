"""privilege.py's pure parts: which capabilities are kept for which config, and the
account look-up's errors, which name the key (checked at start and by check-config)."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from stubresolver import privilege
from stubresolver.cli import EXIT_CONFIG, main
from stubresolver.config import Config, GuardConfig, ServerConfig, TakeoverConfig, UpstreamConfig
from stubresolver.errors import ConfigError

UPSTREAM = UpstreamConfig("udp://10.8.0.1", "udp", "10.8.0.1", 53, None, None)


def config(mode: str) -> Config:
    return Config(upstreams=(UPSTREAM,), takeover=TakeoverConfig(mode=mode))


def test_takeover_off_keeps_port_53_and_device_binding_only() -> None:
    assert privilege.kept(config("off")) == {10, 13}
    assert privilege.names(privilege.kept(config("off"))) == [
        "cap_net_bind_service",
        "cap_net_raw",
    ]


@pytest.mark.parametrize("mode", ["file", "auto"])
def test_a_takeover_adds_what_restoring_root_files_needs(mode: str) -> None:
    assert privilege.kept(config(mode)) == {0, 1, 3, 10, 13}
    assert privilege.mask(privilege.kept(config(mode))) == 0x240B


def test_manager_backends_that_trust_only_root_are_named() -> None:
    # A backend not listed here is dropped to server.user; these say why they cannot be.
    assert set(privilege.KEEPS_ROOT) == {"systemd-resolved", "networkmanager", "resolvconf"}


def test_empty_names_mean_no_drop() -> None:
    accounts = privilege.resolve(ServerConfig())
    assert accounts == privilege.Accounts(None, None, None, None)


def test_an_existing_user_resolves_with_its_primary_group() -> None:
    entry = next(e for e in pwd.getpwall() if e.pw_uid != 0)
    accounts = privilege.resolve(ServerConfig(user=entry.pw_name))
    assert (accounts.uid, accounts.gid) == (entry.pw_uid, entry.pw_gid)


@pytest.mark.parametrize(
    ("server", "key"),
    [
        (ServerConfig(user="no-such-user-here"), "server.user"),
        (ServerConfig(user="root"), "server.user"),
        (ServerConfig(group="no-such-group-here"), "server.group"),
    ],
)
def test_bad_accounts_name_the_key(server: ServerConfig, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        privilege.resolve(server)
    assert info.value.path == key


def test_check_config_rejects_a_user_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("upstreams: [udp://10.8.0.1]\nserver: {user: no-such-user-here}\n")
    assert main(["check-config", "-c", str(path)]) == EXIT_CONFIG
    assert "server.user: no such user 'no-such-user-here'" in capsys.readouterr().err


def test_capability_names_follow_the_kernel_numbers() -> None:
    assert privilege.names([0, 1, 3, 10, 13, 21, 40, 63]) == [
        "cap_chown", "cap_dac_override", "cap_fowner", "cap_net_bind_service", "cap_net_raw",
        "cap_sys_admin", "cap_checkpoint_restore", "cap_63",
    ]  # fmt: skip


def test_the_guard_adds_net_admin_for_nft() -> None:
    guarded = Config(upstreams=(UPSTREAM,), guard=GuardConfig(enabled=True))
    assert privilege.kept(guarded) == {10, 12, 13}
    assert "cap_net_admin" in privilege.names(privilege.kept(guarded))
