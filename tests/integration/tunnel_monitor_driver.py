"""Runs a real TunnelMonitor (inside a test's network namespace) and reports every state.

Usage: python tunnel_monitor_driver.py PATTERN[,PATTERN...] POLL_INTERVAL [KIND,...]
(KINDs widen the accepted device kinds, as tunnel.kinds does.)
Prints one JSON line per state change ("change") and one after start ("ready"); a line
"refresh" on stdin re-probes; EOF on stdin stops the monitor and exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

from stubresolver.tunnel import DEFAULT_KINDS, TunnelMonitor
from stubresolver.tunnel_state import TunnelState


def emit(event: str, state: TunnelState, monitor: TunnelMonitor) -> None:
    line = {
        "event": event,
        "t": time.monotonic(),
        "up": state.up,
        "ifname": state.ifname,
        "ifindex": state.ifindex,
        "addresses": list(state.addresses),
        "epoch": state.epoch,
        "netlink": monitor.netlink_active,
    }
    print(json.dumps(line), flush=True)


async def main(patterns: list[str], poll_interval: float, kinds: frozenset[str]) -> None:
    loop = asyncio.get_running_loop()
    monitor = TunnelMonitor(patterns, poll_interval=poll_interval, kinds=kinds)
    monitor.subscribe(lambda old, new: emit("change", new, monitor))
    await monitor.start()
    emit("ready", monitor.state, monitor)
    done = asyncio.Event()

    def on_stdin() -> None:
        line = sys.stdin.readline()
        if not line:
            loop.remove_reader(sys.stdin.fileno())
            done.set()
        elif line.strip() == "refresh":
            emit("refreshed", monitor.refresh(), monitor)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await done.wait()
    await monitor.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    extra = frozenset(sys.argv[3].split(",")) if len(sys.argv) > 3 else frozenset()
    asyncio.run(main(sys.argv[1].split(","), float(sys.argv[2]), DEFAULT_KINDS | extra))
