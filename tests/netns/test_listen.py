"""Listening on a host with IPv6 switched off (the default config lists [::1]:53)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.root
def test_ipv6_off_serves_ipv4_and_warns(tmp_path: Path) -> None:
    ns = f"srl{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        run = ["ip", "netns", "exec", ns]
        subprocess.run([*run, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=True)
        subprocess.run([*run, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        config = {
            "listen": ["127.0.0.1:53", "[::1]:53"],
            "tunnel": {"interfaces": ["lo"]},
            "upstreams": ["udp://127.0.0.1:5399"],
            "control_socket": str(tmp_path / "control.sock"),
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "stub.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*run, sys.executable, "-m", "stubresolver", "run", "--config", str(path)],
                cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        probe = (
            "import dns.message, dns.query;"
            "r = dns.query.udp(dns.message.make_query('localhost.', 'A'), '127.0.0.1', timeout=1);"
            "print(r.answer[0][0])"
        )
        deadline = time.monotonic() + 15
        answer = ""
        while time.monotonic() < deadline and proc.poll() is None:
            done = subprocess.run(
                [*run, sys.executable, "-c", probe], capture_output=True, text=True, check=False
            )
            if done.returncode == 0:
                answer = done.stdout.strip()
                break
            time.sleep(0.2)
        assert answer == "127.0.0.1", log.read_text()
        assert "IPv6 seems off, skipping it" in log.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert proc is not None and proc.returncode == 0
