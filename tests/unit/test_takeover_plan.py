"""takeover: the file backend's plans, the backend choice and the journal, as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from stubresolver.config import ListenAddress
from stubresolver.errors import ConfigError, TakeoverError
from stubresolver.takeover.detect import choose_backend, manager_of
from stubresolver.takeover.journal import Journal, decode, encode
from stubresolver.takeover.original import Original
from stubresolver.takeover.plan import (
    MARKER,
    MakeSymlink,
    Remove,
    WriteFile,
    apply_plan,
    is_ours,
    nameservers,
    render_resolv_conf,
    restore_plan,
)

PATH = Path("/etc/resolv.conf")
DEFAULT_LISTEN = (ListenAddress("127.0.0.1", 53), ListenAddress("::1", 53))
PLAIN = Original(PATH, "file", b"nameserver 192.0.2.1\n", None, 0o640, 0, 4, 1_700_000_000_5)
LINK = Original(PATH, "symlink", b"nameserver 10.0.0.1\n", "/run/x/resolv.conf", 0o777, 0, 0, 1234)


def test_default_listen_renders_both_loopbacks_and_options() -> None:
    text = render_resolv_conf(DEFAULT_LISTEN)
    lines = text.decode().splitlines()
    assert lines[0].encode() == MARKER and is_ours(text)
    assert "stubresolver restore" in lines[1]
    assert lines[2:] == ["nameserver 127.0.0.1", "nameserver ::1", "options edns0 trust-ad"]
    assert text.endswith(b"\n")


def test_nameservers_only_on_port_53() -> None:
    # resolv.conf(5) has no port: an address on another port cannot be named.
    listen = (
        ListenAddress("127.0.0.1", 5353),
        ListenAddress("127.0.80.1", 53),
        ListenAddress("0.0.0.0", 53),
        ListenAddress("::", 53),
        ListenAddress("127.0.0.1", 53),
    )
    assert nameservers(listen) == ("127.0.80.1", "127.0.0.1", "::1")
    with pytest.raises(ConfigError) as info:
        render_resolv_conf((ListenAddress("127.0.0.1", 5353),))
    assert info.value.path == "takeover.mode"
    assert "port 53" in info.value.message


def test_plain_file_plans() -> None:
    (apply,) = apply_plan(PLAIN, DEFAULT_LISTEN)
    assert apply == WriteFile(PATH, render_resolv_conf(DEFAULT_LISTEN), 0o644)
    (restore,) = restore_plan(PLAIN)
    # Every fact of the original comes back: bytes, mode, owner, mtime.
    assert restore == WriteFile(PATH, PLAIN.data, 0o640, 0, 4, 1_700_000_000_5)


def test_symlink_plans_restore_the_link_itself() -> None:
    (apply,) = apply_plan(LINK, DEFAULT_LISTEN)
    assert isinstance(apply, WriteFile) and apply.path == PATH
    assert restore_plan(LINK) == (MakeSymlink(PATH, "/run/x/resolv.conf", 0, 0),)


def test_absent_file_is_removed_on_restore() -> None:
    assert restore_plan(Original(PATH, "absent")) == (Remove(PATH),)


def test_describe_names_path_and_target() -> None:
    assert apply_plan(PLAIN, DEFAULT_LISTEN)[0].describe().startswith("write /etc/resolv.conf (")
    assert restore_plan(LINK)[0].describe() == "link /etc/resolv.conf -> /run/x/resolv.conf"


@pytest.mark.parametrize(
    ("target", "manager"),
    [
        ("/run/systemd/resolve/stub-resolv.conf", "systemd-resolved"),
        ("../run/systemd/resolve/resolv.conf", "systemd-resolved"),
        ("/run/NetworkManager/resolv.conf", "NetworkManager"),
        ("/var/run/NetworkManager/resolv.conf", "NetworkManager"),
        ("/run/resolvconf/resolv.conf", "resolvconf"),
        ("/etc/resolvconf/run/resolv.conf", "resolvconf"),
        ("/etc/resolv.conf.vpn", None),
    ],
)
def test_manager_of_symlink(target: str, manager: str | None) -> None:
    assert manager_of(Original(PATH, "symlink", b"", target)) == manager


def test_choose_backend() -> None:
    assert choose_backend("file", PLAIN) == "file"
    assert choose_backend("auto", PLAIN) == "file"
    assert choose_backend("auto", LINK) == "file"
    assert choose_backend("auto", Original(PATH, "absent")) == "file"
    owned = Original(PATH, "symlink", b"", "/run/systemd/resolve/stub-resolv.conf")
    assert choose_backend("file", owned) == "file"  # asked for explicitly
    with pytest.raises(ConfigError) as info:
        choose_backend("auto", owned)
    assert info.value.path == "takeover.mode"
    assert "systemd-resolved" in info.value.message
    assert "/run/systemd/resolve/stub-resolv.conf" in info.value.message


def test_journal_round_trip_keeps_every_byte() -> None:
    every_byte = Original(PATH, "file", bytes(range(256)), None, 0o600, 7, 8, 99)
    for original in (every_byte, LINK, Original(PATH, "absent")):
        journal = Journal("file", original, ("write /etc/resolv.conf",), done=1)
        assert decode(encode(journal), PATH) == journal
    text = encode(Journal("file", every_byte, ("a", "b"), done=1)).decode()
    assert '"done": true' in text and '"done": false' in text


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b"not json",
        b'{"version": 2}',
        b'{"version": 1, "manager": "file", "original": {"kind": "fifo"}, "steps": []}',
        encode(Journal("file", PLAIN, ())).replace(b'"data_base64": "', b'"data_base64": "!'),
        encode(Journal("file", LINK, ())).replace(b'"/run/x/resolv.conf"', b"null"),
    ],
)
def test_unreadable_journal_is_an_error(data: bytes) -> None:
    with pytest.raises(TakeoverError) as info:
        decode(data, Path("/var/lib/stubresolver/takeover.json"))
    assert "takeover.json is unreadable" in str(info.value)
