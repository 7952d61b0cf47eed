"""The ``vpn`` upstream: the DNS servers the VPN client announced for the current tunnel.

A hook hands them over (`stubresolver tunnel-up --interface IF --dns IP ...`, announce.py).
Each announced server is asked as plain ``udp://IP:53`` through the tunnel, with the TCP
retry on truncation, exactly like a configured ``udp://`` upstream: the same pool, the same
device binding (netbind), the same answer checks.

What makes it safe to follow an announcement:

- With nothing announced there is no server: the exchange fails at once (``connect``), it
  never falls back to anything.
- An announcement is bound to its interface. When the tunnel that is up now is another
  device than the one the servers were announced for, they are not asked (``tunnel``):
  a server of one VPN is never asked through another.
- The servers are tried in the order announced; the one that answered last is asked
  first next time. A server that fails or times out hands the query to the next, each
  with the upstream's own ``timeout``.
"""

from __future__ import annotations

import dataclasses
import logging

from stubresolver.announce import Announced
from stubresolver.config import UpstreamConfig
from stubresolver.errors import UpstreamError
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.base import Done, Withdraw
from stubresolver.upstream.plain import UdpUpstream

log = logging.getLogger(__name__)

#: The port of an announced server: OpenVPN, wg-quick and NetworkManager announce addresses
#: only, and DNS is port 53 (RFC 1035 4.2).
ANNOUNCED_PORT = 53


def _nothing() -> None:
    """The withdraw function of a query that already completed."""


class _Attempt:
    """One query walked through the announced servers; withdrawn as a whole."""

    __slots__ = ("done", "withdraw_current")

    def __init__(self, done: Done) -> None:
        self.done: Done | None = done
        self.withdraw_current: Withdraw = _nothing

    def withdraw(self) -> None:
        self.done = None
        self.withdraw_current()


class VpnUpstream:
    """``vpn``: plain DNS to the servers announced for the tunnel that is up now."""

    def __init__(self, cfg: UpstreamConfig, announced: Announced) -> None:
        self.url = cfg.url
        self.cfg = cfg
        self.announced = announced
        self._servers: dict[str, UdpUpstream] = {}
        self._preferred: str | None = None

    def _server(self, ip: str) -> UdpUpstream:
        server = self._servers.get(ip)
        if server is None:
            host = f"[{ip}]" if ":" in ip else ip
            cfg = dataclasses.replace(
                self.cfg,
                url=f"udp://{host}:{ANNOUNCED_PORT}",
                scheme="udp",
                host=ip,
                port=ANNOUNCED_PORT,
            )
            server = self._servers[ip] = UdpUpstream(cfg)
        return server

    def servers_now(self, state: TunnelState) -> list[str]:
        """The announced servers in the order a query would try them under ``state`` (the
        last one that answered first). Raises UpstreamError when none may be asked. Pure,
        so `explain` reads the same order the exchange uses."""
        announcement = self.announced.current
        if announcement is None or not announcement.servers:
            raise UpstreamError("connect", self.url, "the VPN announced no DNS server")
        if state.ifname != announcement.interface:
            raise UpstreamError(
                "tunnel",
                self.url,
                f"its servers were announced for {announcement.interface}, "
                f"the tunnel is {state.ifname or 'absent'}",
            )
        servers = list(announcement.servers)
        if self._preferred in servers:
            servers.remove(self._preferred)
            servers.insert(0, self._preferred)
        return servers

    def exchange_cb(self, query: bytes, state: TunnelState, done: Done, key: bytes) -> Withdraw:
        try:
            servers = self.servers_now(state)
        except UpstreamError as exc:
            done(None, exc)
            return _nothing
        attempt = _Attempt(done)
        self._try(attempt, servers, query, state, key, None)
        return attempt.withdraw

    def _try(
        self,
        attempt: _Attempt,
        servers: list[str],
        query: bytes,
        state: TunnelState,
        key: bytes,
        last: UpstreamError | None,
    ) -> None:
        if attempt.done is None:
            return
        if not servers:
            done, attempt.done = attempt.done, None
            assert last is not None
            done(None, UpstreamError(last.kind, self.url, last.message))
            return
        ip = servers.pop(0)

        def answered(msg: bytes | None, error: UpstreamError | None) -> None:
            if attempt.done is None:
                return
            if msg is not None:
                self._preferred = ip
                done, attempt.done = attempt.done, None
                done(msg, None)
                return
            assert error is not None
            if error.kind in ("epoch", "tunnel"):
                servers.clear()  # the tunnel's state, not this server's: no next server
            self._try(attempt, servers, query, state, key, error)

        attempt.withdraw_current = self._server(ip).exchange_cb(query, state, answered, key)

    async def close(self) -> None:
        """Close every server's pool; the resolver calls this on every epoch and when the
        announcement changes, so the next query opens pools for the servers of now."""
        servers, self._servers = self._servers, {}
        self._preferred = None
        for server in servers.values():
            await server.close()

    def counters(self) -> dict[str, int]:
        announcement = self.announced.current
        return {
            "announced_servers": len(announcement.servers) if announcement else 0,
            "open_sockets": sum(s.pool.open_sockets for s in self._servers.values()),
        }
