"""Test-side helpers: the stub under test as a process, and the figures we report."""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testkit.processes import Process

from .probe import query
from .world import REPO_ROOT, World


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    # nearest-rank percentiles: small samples, no interpolation to hide the tail
    p95 = ordered[max(0, -(-95 * len(ordered) // 100) - 1)]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 4),
        "p95": round(p95, 4),
        "max": round(ordered[-1], 4),
    }


@dataclass
class Figures:
    """Timings and counts gathered across the module, reported at its end."""

    refuse: list[float] = field(default_factory=list)
    recover: list[float] = field(default_factory=list)
    refuse_by_way: dict[str, list[float]] = field(default_factory=dict)
    flaps: int = 0
    load: dict[str, Any] = field(default_factory=dict)
    leaks: dict[str, int] = field(default_factory=dict)
    vpn_queries: int = 0

    def add_refuse(self, way: str, seconds: float) -> None:
        self.refuse.append(seconds)
        self.refuse_by_way.setdefault(way, []).append(seconds)

    def report(self) -> dict[str, Any]:
        return {
            "flaps": self.flaps,
            "leaked_packets": self.leaks.get("isp_packets_from_client"),
            "leaks": self.leaks,
            "time_to_refuse_s": _percentiles(self.refuse),
            "time_to_refuse_by_way_s": {k: _percentiles(v) for k, v in self.refuse_by_way.items()},
            "time_to_recover_s": _percentiles(self.recover),
            "load": self.load,
            "vpn_resolver_queries": self.vpn_queries,
        }


class Stub:
    """`python -m stubresolver run` inside the client namespace, started on demand."""

    def __init__(
        self, world: World, upstreams: list[Any] | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        self.world = world
        self.extra = extra or {}  # more top-level config keys (guard, policy, ...)
        # URL strings or mappings, as in the config; by default the VPN's plain DNS.
        self.upstreams: list[Any] = upstreams or ["udp://100.66.0.1"]
        self.proc: Process | None = None
        self.runs = 0
        self.home: Path | None = None
        self.sock = world.c_socket()

    def start(self, *, wait_ready: bool = True) -> None:
        assert self.proc is None, "stub already running"
        self.runs += 1
        home = Path(tempfile.mkdtemp(prefix="stub-", dir=self.world.tmp))
        self.home = home
        (home / "state").mkdir()
        config = {
            "listen": ["127.0.0.1:53"],
            "tunnel": {"interfaces": [self.world.tun_c]},
            "upstreams": self.upstreams,
            "control_socket": str(home / "control.sock"),  # not the machine-wide default
            "logging": {"level": "debug"},
            **self.extra,
        }
        cfg_path = home / "config.yaml"
        cfg_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        self.proc = self.world.spawn(
            home.name,
            self.world.ns_c,
            [sys.executable, "-m", "stubresolver", "run", "--config", str(cfg_path)],
            env=env,
            cwd=REPO_ROOT,
        )
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Answers at all: `localhost` is answered locally whatever the tunnel state."""
        deadline = time.monotonic() + timeout
        last = "nothing"
        proc = self.proc
        assert proc is not None
        while time.monotonic() < deadline:
            if not proc.alive():
                pytest.fail(
                    f"stub exited with {proc.popen.returncode} before answering:\n"
                    f"{proc.log_tail()}",
                    pytrace=False,
                )
            ans = query(self.sock, "localhost.", timeout=0.3)
            last = ans.rcode
            if ans.rcode == "NOERROR":
                return
            time.sleep(0.05)
        pytest.fail(
            f"stub did not answer `localhost` within {timeout}s (last: {last}):\n{proc.log_tail()}",
            pytrace=False,
        )

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        code = proc.stop(signal.SIGTERM, grace=10)
        assert code == 0, f"stub exit status {code} after SIGTERM:\n{proc.log_tail()}"
        return code

    def log_tail(self) -> str:
        return "" if self.proc is None else self.proc.log_tail()


def start_stub(world: World, stubs: list[Stub], **extra: Any) -> Stub:
    """A stub with more config keys (``extra``), started on a working tunnel; ``stubs`` (the
    conftest fixture) stops it at the end."""
    stub = Stub(world, extra=extra)
    stubs.append(stub)
    world.ensure_tunnel_up()
    stub.start()
    return stub
