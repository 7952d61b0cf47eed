"""The systemd unit's LimitNOFILE covers what the config's bounds may open (issue 7)."""

from __future__ import annotations

import re
import resource
from pathlib import Path

from stubresolver.config import load_config, parse_config
from stubresolver.fdlimit import ensure_fd_limit, fd_budget
from stubresolver.upstream.plain import POOL_SIZE

REPO = Path(__file__).resolve().parents[2]


def unit_limit() -> int:
    unit = (REPO / "packaging" / "stubresolver.service").read_text()
    match = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert match, "the unit must set LimitNOFILE"
    return int(match.group(1))


def test_unit_limit_covers_the_shipped_config_and_four_upstreams() -> None:
    example = load_config(REPO / "config.example.yaml")
    assert fd_budget(example) >= example.server.max_forwards + example.server.tcp_max_connections
    assert unit_limit() >= fd_budget(example)
    four = parse_config({"upstreams": [f"udp://10.8.0.{i}" for i in range(1, 5)]})
    assert unit_limit() >= fd_budget(four)


def test_budget_follows_the_bounds() -> None:
    small = parse_config(
        {"upstreams": ["udp://10.8.0.1"], "server": {"max_forwards": 10, "tcp_max_connections": 5}}
    )
    big = parse_config({"upstreams": ["udp://10.8.0.1"], "server": {"max_forwards": 5000}})
    pools = 2 * POOL_SIZE  # one UDP upstream: its pool and an epoch's before
    assert fd_budget(small) < pools + 100 < fd_budget(big) - 5000


def test_soft_limit_is_raised_to_the_budget() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = parse_config({"upstreams": ["udp://10.8.0.1"]})
    need = fd_budget(config)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, soft), hard))
        ensure_fd_limit(config)
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised == (need if hard == resource.RLIM_INFINITY else min(need, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
