"""The control socket of the real `stubresolver run` process, driven by the real CLI.

unbound on loopback is the upstream and `lo` is the tunnel (as in test_server.py). Covers
`status` (JSON and text), `flush`, `tunnel-changed`, `reload` (good and rejected), hostile
input on the socket, the socket's mode and life cycle, and the CLI without a daemon.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from testkit.ports import free_port
from testkit.unbound import Unbound

from .stub_process import REPO, StubProcess, listen_port, run_cli, run_stub, write_config
from .upstream_servers import run_unbound

# 127.0.50.0/24 belongs to the control-socket tests (contracts: unique loopback ranges).
STUB_ADDR = "127.0.50.2"


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    with run_unbound(tmp_path_factory.mktemp("unbound")) as server:
        yield server


def make_config(tmp: Path, upstream: Unbound, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": [f"{STUB_ADDR}:{free_port(STUB_ADDR)}"],
        "tunnel": {"interfaces": ["lo"]},
        "upstreams": [f"udp://{upstream.addr}:{upstream.port}"],
        "control_socket": str(tmp / "run" / "control.sock"),
        "logging": {"level": "debug"},
    }
    config.update(overrides)
    return config


def control_path(stub: StubProcess) -> Path:
    loaded = yaml.safe_load(stub.config.read_text())
    assert isinstance(loaded, dict)
    return Path(loaded["control_socket"])


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory, unbound: Unbound) -> Iterator[StubProcess]:
    tmp = tmp_path_factory.mktemp("stub")
    config = make_config(tmp, unbound)
    path = write_config(tmp / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        yield proc
    assert proc.proc.returncode == 0
    assert "Traceback" not in proc.stderr
    assert not Path(config["control_socket"]).exists(), "socket left behind at shutdown"


def status(stub: StubProcess) -> dict[str, Any]:
    proc = run_cli("status", "--json", "--socket", str(control_path(stub)))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return result


def raw(path: Path, data: bytes, *, shutdown: bool = False, timeout: float = 5.0) -> bytes:
    """Send ``data`` as is and return everything the daemon sends back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            if data:
                sock.sendall(data)
            if shutdown:
                sock.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # the daemon stopped reading an oversized request; its answer is queued
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def a_records(msg: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in msg.answer for r in rrset if rrset.rdtype == dns.rdatatype.A]


# --- status ---------------------------------------------------------------------------------


def test_status_json_after_a_query(stub: StubProcess, unbound: Unbound) -> None:
    before = status(stub)
    assert a_records(stub.udp(dns.message.make_query("a.example", "A"))) == ["192.0.2.1"]
    after = status(stub)
    assert after["ok"] is True
    assert after["pid"] == stub.proc.pid
    assert after["listen"] == [f"{stub.host}:{stub.port}"]
    assert after["config"] == str(stub.config)
    tunnel = after["tunnel"]
    assert tunnel["up"] is True
    assert tunnel["ifname"] == "lo"
    assert tunnel["ifindex"] == socket.if_nametoindex("lo")
    assert "127.0.0.1" in tunnel["addresses"]
    assert tunnel["epoch"] >= 1
    [upstream] = after["upstreams"]
    assert upstream["url"] == f"udp://{unbound.addr}:{unbound.port}"
    assert upstream["healthy"] is True
    assert upstream["answers"] >= 1
    assert upstream["srtt_ms"] is not None and upstream["srtt_ms"] >= 0
    assert upstream["failures"] == 0
    assert upstream["last_error"] is None
    assert "open_connections" not in upstream  # plain UDP keeps no transport counters
    outcomes = after["outcomes"]
    assert outcomes["forwarded"] == before["outcomes"]["forwarded"] + 1
    assert set(outcomes) >= {"cached", "forwarded", "local", "refused-tunnel-down"}
    assert after["cache"]["enabled"] is True
    assert after["cache"]["entries"] >= 1
    assert after["cache"]["bytes"] > 0
    # The same question again is a cache hit, and status counts it.
    stub.udp(dns.message.make_query("a.example", "A"))
    again = status(stub)
    assert again["outcomes"]["cached"] == outcomes["cached"] + 1
    assert again["cache"]["hits"] == after["cache"]["hits"] + 1
    assert again["uptime"] >= after["uptime"]


def test_status_human_summary(stub: StubProcess) -> None:
    stub.udp(dns.message.make_query("b.example", "A"))
    proc = run_cli("status", "--socket", str(control_path(stub)))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "tunnel: up on lo" in text
    assert f"listening on {stub.host}:{stub.port}" in text
    assert "udp://" in text and "healthy" in text
    assert "forwarded" in text
    assert not text.lstrip().startswith("{")


def test_status_socket_from_config(stub: StubProcess) -> None:
    proc = run_cli("status", "--json", "--config", str(stub.config))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pid"] == stub.proc.pid


# --- flush, tunnel-changed ------------------------------------------------------------------


def test_flush_empties_the_cache(stub: StubProcess) -> None:
    for name in ("a.example", "b.example"):
        stub.udp(dns.message.make_query(name, "A"))
    assert status(stub)["cache"]["entries"] >= 2
    proc = run_cli("flush", "--socket", str(control_path(stub)))
    assert proc.returncode == 0, proc.stderr
    assert "flushed" in proc.stdout
    after = status(stub)
    assert after["cache"]["entries"] == 0
    assert after["cache"]["bytes"] == 0
    # Nothing cached: the next query goes upstream again.
    assert a_records(stub.udp(dns.message.make_query("a.example", "A"))) == ["192.0.2.1"]
    assert status(stub)["outcomes"]["forwarded"] == after["outcomes"]["forwarded"] + 1


def test_tunnel_changed_reports_the_state(stub: StubProcess) -> None:
    epoch = status(stub)["tunnel"]["epoch"]
    proc = run_cli("tunnel-changed", "--socket", str(control_path(stub)))
    assert proc.returncode == 0, proc.stderr
    assert "up on lo" in proc.stdout
    response = json.loads(raw(control_path(stub), b'{"cmd": "tunnel-changed"}\n'))
    assert response["ok"] is True
    assert response["changed"] is False  # nothing changed on lo: no new epoch, no flush
    assert response["tunnel"]["ifname"] == "lo"
    assert response["tunnel"]["up"] is True
    assert response["tunnel"]["epoch"] == epoch
    assert a_records(stub.udp(dns.message.make_query("b.example", "A"))) == ["192.0.2.2"]


# --- hostile input ------------------------------------------------------------------------


BAD_REQUESTS = [
    pytest.param(b"not json\n", "not JSON", id="not-json"),
    pytest.param(b"\xff\xfe\x00\n", "not JSON", id="binary"),
    pytest.param(b"[1, 2]\n", "JSON object", id="array"),
    pytest.param(b'"status"\n', "JSON object", id="bare-string"),
    pytest.param(b"{}\n", '"cmd"', id="no-cmd"),
    pytest.param(b'{"cmd": 5}\n', '"cmd"', id="cmd-not-string"),
    pytest.param(b'{"cmd": "rm -rf /"}\n', "unknown command", id="unknown"),
    pytest.param(b"\n", "empty request", id="empty-line"),
    pytest.param(b"x" * 5000 + b"\n", "longer than 4096", id="oversized"),
    pytest.param(b"x" * 100_000, "longer than 4096", id="oversized-no-newline"),
    pytest.param(b'{"cmd": "status"', "not JSON", id="half-line-then-eof"),
    pytest.param(b"[" * 4000 + b"\n", "nested too deeply", id="deep-array"),
    pytest.param(b'{"cmd": "status", "x": ' + b"[" * 4000 + b"\n", "nested", id="deep-in-object"),
]


@pytest.mark.parametrize(("data", "message"), BAD_REQUESTS)
def test_bad_requests_get_an_error_line(stub: StubProcess, data: bytes, message: str) -> None:
    out = raw(control_path(stub), data, shutdown=True)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    response = json.loads(out)
    assert response["ok"] is False
    assert message in response["error"]
    assert stub.alive()
    assert a_records(stub.udp(dns.message.make_query("a.example", "A"))) == ["192.0.2.1"]


def test_silent_client_is_timed_out_and_others_are_served(stub: StubProcess) -> None:
    path = control_path(stub)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.settimeout(10)
        idle.connect(str(path))
        # While one client says nothing, others are served and DNS answers.
        assert status(stub)["ok"] is True
        assert stub.udp(dns.message.make_query("a.example", "A")).rcode() == dns.rcode.NOERROR
        started = time.monotonic()
        response = json.loads(idle.recv(4096))
        assert 1.0 < time.monotonic() - started < 5.0
    assert response == {"ok": False, "error": "no request line within 2 s"}


def test_connect_and_leave_does_no_harm(stub: StubProcess) -> None:
    path = control_path(stub)
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
    assert status(stub)["ok"] is True
    assert stub.alive()


def test_socket_mode_is_root_only(stub: StubProcess) -> None:
    path = control_path(stub)
    info = os.lstat(path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755


# --- life cycle, reload -------------------------------------------------------------------


def test_reload_rejects_a_bad_config_and_keeps_serving(tmp_path: Path, unbound: Unbound) -> None:
    config = make_config(tmp_path, unbound)
    path = write_config(tmp_path / "config.yaml", config)
    sock = config["control_socket"]
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        path.write_text("upstreams: [udp://dns.example.com]\n")  # a name: rejected
        bad = run_cli("reload", "--socket", sock)
        assert bad.returncode == 2
        assert "upstreams[0]" in bad.stderr and "never a name" in bad.stderr
        assert proc.alive()
        assert a_records(proc.udp(dns.message.make_query("a.example", "A"))) == ["192.0.2.1"]
        assert "reload rejected" in proc.stderr
        # A good config is applied: a tunnel pattern that matches nothing refuses queries.
        gone = {"interfaces": ["nosuchtun*"]}  # a loopback upstream needs tunnel lo
        write_config(path, {**config, "tunnel": gone, "upstreams": ["udp://192.0.2.53"]})
        good = run_cli("reload", "--socket", sock)
        assert good.returncode == 0, good.stderr
        assert "reloaded" in good.stdout
        assert proc.udp(dns.message.make_query("c.example", "A")).rcode() == dns.rcode.REFUSED
        down = run_cli("status", "--socket", sock)
        assert down.returncode == 0
        assert "tunnel: down" in down.stdout
    assert proc.proc.returncode == 0
    assert "Traceback" not in proc.stderr
    assert not Path(sock).exists()


def test_stale_socket_is_replaced_and_removed_at_shutdown(tmp_path: Path, unbound: Unbound) -> None:
    config = make_config(tmp_path, unbound)
    sock_path = Path(config["control_socket"])
    sock_path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(sock_path))  # a socket file nobody listens on: a crashed daemon's
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        assert run_cli("status", "--socket", str(sock_path)).returncode == 0
        assert "removed stale control socket" in proc.stderr
    assert proc.proc.returncode == 0
    assert not sock_path.exists()


def test_socket_failure_is_a_warning_and_dns_keeps_working(
    tmp_path: Path, unbound: Unbound
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the socket's directory should be\n")
    config = make_config(tmp_path, unbound, control_socket=str(blocker / "control.sock"))
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        assert a_records(proc.udp(dns.message.make_query("a.example", "A"))) == ["192.0.2.1"]
        assert "control socket" in proc.stderr and "unavailable" in proc.stderr
    assert proc.proc.returncode == 0
    assert "Traceback" not in proc.stderr
    assert blocker.read_text().startswith("a file")


def test_control_socket_off(tmp_path: Path, unbound: Unbound) -> None:
    config = make_config(tmp_path, unbound, control_socket="")
    path = write_config(tmp_path / "config.yaml", config)
    with run_stub(path, STUB_ADDR, listen_port(config)) as proc:
        assert a_records(proc.udp(dns.message.make_query("a.example", "A"))) == ["192.0.2.1"]
        off = run_cli("status", "--config", str(path))
        assert off.returncode == 2
        assert "control_socket" in off.stderr
    assert not (tmp_path / "run").exists()


# --- the CLI without a daemon -------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "flush", "tunnel-changed", "reload"])
def test_no_daemon_exits_1_with_a_message(tmp_path: Path, command: str) -> None:
    proc = run_cli(command, "--socket", str(tmp_path / "missing.sock"))
    assert proc.returncode == 1
    assert "cannot reach the daemon" in proc.stderr
    assert proc.stdout == ""


def test_stale_socket_without_daemon_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    proc = run_cli("status", "--socket", str(path))
    assert proc.returncode == 1
    assert "nothing listens" in proc.stderr


def test_config_key_is_validated(tmp_path: Path) -> None:
    base = "upstreams: [udp://10.8.0.1]\n"
    for value, text in (
        ("relative/control.sock", "absolute path"),
        ("/" + "x" * 120, "at most 107 bytes"),
        ("[1]", "must be a string"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(base + f"control_socket: {value}\n")
        proc = run_cli("check-config", "--config", str(path))
        assert proc.returncode == 2, value
        assert "control_socket" in proc.stderr and text in proc.stderr, proc.stderr


# --- the VPN hooks in packaging/hooks (run with /bin/sh, as the VPN clients do) -----------

HOOKS = REPO / "packaging" / "hooks"


def hook_env(tmp: Path, socket_path: Path) -> dict[str, str]:
    """A `stubresolver` command for the hooks: this checkout, this interpreter."""
    wrapper = tmp / "stubresolver-cmd"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m stubresolver "$@"\n')
    wrapper.chmod(0o755)
    return dict(os.environ, STUBRESOLVER=str(wrapper), STUBRESOLVER_SOCKET=str(socket_path))


def run_hook(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_hooks_are_executable_posix_sh() -> None:
    for name in ("openvpn-updown.sh", "90-stubresolver"):
        path = HOOKS / name
        assert path.read_text().startswith("#!/bin/sh\n")
        assert os.stat(path).st_mode & 0o111 == 0o111, f"{name} is not executable"
        assert subprocess.run(["/bin/sh", "-n", str(path)], check=False).returncode == 0


def test_hooks_reach_the_daemon(stub: StubProcess, tmp_path: Path) -> None:
    env = hook_env(tmp_path, control_path(stub))
    openvpn = str(HOOKS / "openvpn-updown.sh")
    nm = str(HOOKS / "90-stubresolver")
    pushed = {
        "script_type": "up",
        "dev": "lo",
        "foreign_option_1": "dhcp-option DNS 127.0.0.53",
        "foreign_option_2": "dhcp-option DOMAIN corp.test",
        "foreign_option_3": "dhcp-option DNS6 ::1",
        "foreign_option_4": "dhcp-option DOMAIN-SEARCH lab.test",
        "foreign_option_6": "dhcp-option DNS 127.0.0.99",  # after a gap: not OpenVPN's
    }
    nm_vpn = {"VPN_IP_IFACE": "lo", "VPN_IP4_NAMESERVERS": "127.0.0.2 127.0.0.3"}
    steps: list[tuple[list[str], dict[str, str], Any]] = [
        # No server pushed: only "the tunnel changed".
        ([openvpn, "lo", "1500", "1500", "127.0.0.1", "", "init"], {"script_type": "up"}, None),
        ([openvpn, "lo", "1500", "1500"], pushed, ["127.0.0.53", "::1"]),
        ([openvpn, "lo", "1500", "1500"], {"script_type": "down", "dev": "lo"}, "down"),
        ([nm, "lo", "vpn-up"], nm_vpn, ["127.0.0.2", "127.0.0.3"]),
        ([nm, "lo", "vpn-down"], nm_vpn, "down"),
        ([nm, "lo", "vpn-up"], {"VPN_IP4_NAMESERVERS": "127.0.0.4"}, ["127.0.0.4"]),
        ([nm, "lo", "down"], {}, ["127.0.0.4"]),  # another interface's up/down: no change
    ]
    for args, extra, expect in steps:
        for _ in range(2):  # idempotent: running twice is the same as once
            proc = run_hook(args, {**env, **extra})
            assert proc.returncode == 0
            assert proc.stderr == "", proc.stderr
        info = status(stub)
        if expect == "down":  # tunnel-down: forgotten, and lo reads as down until tunnel-up
            assert info["vpn"] is None and info["tunnel"]["up"] is False, args
        elif expect is not None:
            assert info["vpn"]["servers"] == expect, (args, info["vpn"])
            assert info["tunnel"]["up"] is True
    assert status(stub)["vpn"]["domains"] == []
    proc = run_hook([openvpn, "lo"], {**env, **pushed})
    assert status(stub)["vpn"]["domains"] == ["corp.test", "lab.test"]
    assert "Traceback" not in stub.stderr
    assert status(stub)["tunnel"]["up"] is True


def test_hooks_exit_0_and_log_when_the_daemon_is_down(tmp_path: Path) -> None:
    env = hook_env(tmp_path, tmp_path / "missing.sock")
    proc = run_hook([str(HOOKS / "openvpn-updown.sh")], {**env, "script_type": "up", "dev": "tun0"})
    assert proc.returncode == 0
    assert "stubresolver hook (up tun0)" in proc.stderr
    assert "cannot reach the daemon" in proc.stderr
    proc = run_hook([str(HOOKS / "90-stubresolver"), "tun0", "vpn-down"], env)
    assert proc.returncode == 0
    assert "stubresolver hook (vpn-down tun0)" in proc.stderr
    # A missing command is logged too, and still not a failure.
    gone = {**env, "STUBRESOLVER": str(tmp_path / "no-such-command")}
    proc = run_hook([str(HOOKS / "90-stubresolver"), "tun0", "up"], gone)
    assert proc.returncode == 0
    assert proc.stderr


def test_networkmanager_hook_ignores_other_actions(tmp_path: Path) -> None:
    marker = tmp_path / "called"
    wrapper = tmp_path / "must-not-run"
    wrapper.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    wrapper.chmod(0o755)
    env = dict(os.environ, STUBRESOLVER=str(wrapper))
    for action in ("pre-up", "dhcp4-change", "hostname", "connectivity-change", "", "vpn-pre-up"):
        proc = run_hook([str(HOOKS / "90-stubresolver"), "eth0", action], env)
        assert proc.returncode == 0
        assert proc.stderr == ""
    assert not marker.exists(), "the hook acted on an action it should ignore"
