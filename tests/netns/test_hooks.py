"""The OpenVPN hook in packaging/hooks, run by a real OpenVPN client in the client namespace.

The stub runs with a control socket; the world's OpenVPN client is replaced by one started
with ``--script-security 2 --up/--down packaging/hooks/openvpn-updown.sh``. OpenVPN runs the
hook after configuring the tun and after closing it; the stub's log shows each call reach
the control socket, and `stubresolver status` in the namespace agrees with the tunnel.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.processes import Process

from .probe import query
from .world import C_TUN_ADDR, REPO_ROOT, WWW_ADDR, WWW_NAME, World

pytestmark = pytest.mark.root

HOOK = REPO_ROOT / "packaging" / "hooks" / "openvpn-updown.sh"


@pytest.mark.parametrize("world", ["openvpn"], indirect=True)
class TestOpenVpnHook:
    @pytest.fixture
    def control(self, world: World) -> Iterator[tuple[Process, Path]]:
        world.ensure_tunnel_up()
        world.wait_tunnel_passes()
        home = world.tmp / "hook-stub"
        home.mkdir(exist_ok=True)
        sock = home / "run" / "control.sock"
        config = {
            "listen": ["127.0.0.1:53"],
            "tunnel": {"interfaces": [world.tun_c]},
            "upstreams": ["udp://100.66.0.1"],
            "control_socket": str(sock),
            "logging": {"level": "debug"},
        }
        path = home / "config.yaml"
        path.write_text(json.dumps(config) + "\n")  # JSON is YAML
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        stub = world.spawn(
            "hook-stub",
            world.ns_c,
            [sys.executable, "-m", "stubresolver", "run", "--config", str(path)],
            env=env,
            cwd=REPO_ROOT,
        )
        try:
            deadline = time.monotonic() + 20
            while not sock.exists():
                assert stub.alive(), stub.log_tail()
                assert time.monotonic() < deadline, stub.log_tail()
                time.sleep(0.05)
            yield stub, sock
        finally:
            code = stub.stop(signal.SIGTERM, grace=10)
            assert code == 0, stub.log_tail()
            assert not sock.exists()
            world.ensure_tunnel_up()  # the world's own client again, for later modules

    def status(self, world: World, sock: Path) -> dict[str, Any]:
        proc = world.ns_run(
            world.ns_c,
            [sys.executable, "-m", "stubresolver", "status", "--json", "--socket", str(sock)],
        )
        result = json.loads(proc.stdout)
        assert isinstance(result, dict)
        return result

    def test_openvpn_runs_the_hook_on_up_and_down(
        self, world: World, control: tuple[Process, Path]
    ) -> None:
        stub, sock = control
        wrapper = world.tmp / "stubresolver-cmd"
        wrapper.write_text(
            f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {sys.executable} -m stubresolver "$@"\n'
        )
        wrapper.chmod(0o755)
        # Replace the world's client with one that runs the hook. OpenVPN gives scripts
        # only its own environment, hence --setenv.
        assert world.vpn_client is not None
        world.vpn_client.stop(signal.SIGTERM, grace=5)
        client = world._openvpn(  # the world's own way to start a client
            world.ns_c,
            "hook-openvpn-client",
            ["--secret", str(world.tmp / "ovpn.key"), "1", "--nobind",
             "--remote", "198.18.2.2", "1194",
             "--script-security", "2", "--up", str(HOOK), "--down", str(HOOK),
             "--setenv", "STUBRESOLVER", str(wrapper),
             "--setenv", "STUBRESOLVER_SOCKET", str(sock)],
        )  # fmt: skip
        world.vpn_client = client
        world.wait_tunnel_passes()

        deadline = time.monotonic() + 10
        while 'control request b\'{"cmd": "tunnel-changed"}\'' not in stub.log_tail(400):
            assert time.monotonic() < deadline, f"--up hook never called in:\n{client.log_tail()}"
            time.sleep(0.05)
        up = self.status(world, sock)["tunnel"]
        assert up["up"] is True and up["ifname"] == world.tun_c
        assert C_TUN_ADDR in up["addresses"]
        with world.c_socket() as s:
            assert WWW_ADDR in query(s, WWW_NAME, timeout=2.0).addresses

        assert client.stop(signal.SIGTERM, grace=10) == 0
        deadline = time.monotonic() + 10
        while '"cmd": "tunnel-down"' not in stub.log_tail(1000):
            assert time.monotonic() < deadline, f"--down hook never called:\n{client.log_tail()}"
            time.sleep(0.05)
        down = self.status(world, sock)["tunnel"]
        assert down["up"] is False
        with world.c_socket() as s:
            assert query(s, WWW_NAME, timeout=2.0).rcode == "REFUSED"
        log = client.log_path.read_text(errors="replace")
        assert "stubresolver hook" not in log, log  # the hook reached the stub both times
        assert "Traceback" not in stub.log_tail(1000)
