"""File descriptors the daemon may need at once, and raising the soft limit to fit.

Every bound in the config is a count of sockets in the end: a forward may hold a socket (a
tcp:// connection, the TCP retry after a truncated UDP answer, a UDP socket on its last
query), each client TCP connection is one, and each plain UDP upstream keeps a pool.
Running out of descriptors would turn into SERVFAIL for everyone, so the limit is sized
from the config, not left at the usual 1024.
"""

from __future__ import annotations

import logging
import resource

from stubresolver.config import Config
from stubresolver.upstream.plain import POOL_SIZE

log = logging.getLogger("stubresolver.fdlimit")

# Listeners are counted per address; this covers stdio, epoll, netlink, the control socket,
# a TLS/DoH connection per upstream and sockets still closing.
_OVERHEAD = 64


def fd_budget(config: Config) -> int:
    """Descriptors needed when every bound in ``config`` is reached at once."""
    return (
        # A forward holds at most one socket of its own: a TCP connection, the TCP retry
        # after TC, or a spent UDP socket waiting for its last answer.
        config.server.max_forwards
        + config.server.tcp_max_connections
        + 2
        * POOL_SIZE
        * len(config.all_upstreams())  # UDP sockets in rotation, and an epoch's before
        + 2 * len(config.listen)
        + _OVERHEAD
    )


def ensure_fd_limit(config: Config) -> None:
    """Raise RLIMIT_NOFILE's soft limit to the budget (up to the hard limit); warn if short."""
    need = fd_budget(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "open-file limit %d is below the %d that server.max_forwards, "
            "server.tcp_max_connections and the upstream pools may need; under load some "
            "queries will fail (raise LimitNOFILE or lower those keys)",
            soft,
            need,
        )
