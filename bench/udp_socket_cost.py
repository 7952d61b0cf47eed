"""What a UDP upstream socket costs over its life, in CPU per socket (issue 7, RFC 5452).

Each plain-UDP socket is made by netbind (socket, SO_BINDTODEVICE, bind, connect), watched
with add_reader, and closed; `upstream/plain.py` spreads that cost over MAX_USES queries.
Runs on loopback only (`lo` as the tunnel); nothing is sent.

    python bench/udp_socket_cost.py [--count 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from stubresolver import netbind
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.plain import MAX_USES

LO = TunnelState(up=True, ifname="lo", ifindex=1, addresses=("127.0.0.1",), epoch=1)
DEST = ("127.0.40.9", 53)  # connect() on UDP sends nothing


def _nothing() -> None:
    """The reader callback: never called, nothing arrives."""


async def lifecycle_cost(count: int) -> float:
    """CPU seconds per socket: make, watch, unwatch, close."""
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for _ in range(count):
        sock = netbind.udp_socket(LO, DEST)
        loop.add_reader(sock.fileno(), _nothing)
        loop.remove_reader(sock.fileno())
        sock.close()
    return (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    loops: list[tuple[str, object]] = [("asyncio", asyncio.run)]
    try:
        import uvloop

        loops.insert(0, ("uvloop", uvloop.run))
    except ImportError:
        pass
    for name, run in loops:
        cost = run(lifecycle_cost(args.count))  # type: ignore[operator]
        print(
            f"{name:8} {cost * 1e6:6.1f} us CPU per socket; "
            f"{cost * 1e6 / MAX_USES:5.1f} us per query at MAX_USES={MAX_USES}"
        )


if __name__ == "__main__":
    main()
