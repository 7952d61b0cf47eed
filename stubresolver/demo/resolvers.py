"""What listens on 127.0.0.1:53 in the demo's client namespace: stubresolver itself, or for
contrast a plain forwarder (dnsmasq) sending every query to the servers resolv.conf named
before the stub took over, which here are the ISP's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import stubresolver
from stubresolver.errors import WorldError

from .probes import DigResult, dig_until
from .processes import Process
from .topology import ISP_C_ADDR, VPN_TUN_ADDR
from .world import World

# Where this very stubresolver is importable from, so the child runs the same code.
PACKAGE_PARENT = str(Path(stubresolver.__file__).resolve().parents[1])


def _wait_answering(world: World, proc: Process, what: str, name: str) -> None:
    def ready(result: DigResult) -> bool:
        return result.status == "NOERROR" or not proc.alive()

    result = dig_until(world.ns_c, "127.0.0.1", name, ready, timeout=20.0)
    if result.status != "NOERROR" or not proc.alive():
        raise WorldError(f"{what} did not start answering ({result.summary()}):\n{proc.log_tail()}")


def stub_config(world: World) -> Path:
    """The stub's config: the tunnel device, the VPN's DNS, everything under world.tmp."""
    home = world.tmp / "stub"
    (home / "state").mkdir(parents=True, exist_ok=True)
    config = {
        "listen": ["127.0.0.1:53"],
        "tunnel": {"interfaces": [world.tun_c]},
        "upstreams": [f"udp://{VPN_TUN_ADDR}"],
        "control_socket": str(home / "control.sock"),  # not the machine-wide default
        "state_dir": str(home / "state"),
        "logging": {"level": "info"},
    }
    path = home / "config.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return path


def start_stub(world: World, runs: int) -> Process:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, PYTHONUNBUFFERED="1")
    proc = world.spawn(
        f"stubresolver-{runs}",
        world.ns_c,
        [sys.executable, "-m", "stubresolver", "run", "--config", str(stub_config(world))],
        env=env,
    )
    # `localhost` is answered by the stub itself whatever the tunnel's state.
    _wait_answering(world, proc, "stubresolver", "localhost.")
    return proc


def start_plain_forwarder(world: World) -> Process:
    """dnsmasq on 127.0.0.1:53 forwarding to what resolv.conf said before: the ISP."""
    resolv = world.tmp / "resolv.conf.before-the-stub"
    resolv.write_text(f"nameserver {ISP_C_ADDR}\n")
    empty = world.tmp / "forwarder-empty.conf"
    empty.write_text("")
    proc = world.spawn(
        "plain-forwarder",
        world.ns_c,
        ["dnsmasq", f"--conf-file={empty}", "--keep-in-foreground", "--no-hosts",
         f"--resolv-file={resolv}", "--cache-size=0", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--port=53", "--user=root", "--pid-file="],
    )  # fmt: skip
    _wait_answering(world, proc, "the plain forwarder", "is-the-forwarder-up.example.")
    return proc


def stop(proc: Process) -> None:
    proc.stop(signal.SIGTERM, grace=10)
