"""asyncio listeners: I/O and framing only; every decision is the resolver's (DESIGN.md).

UDP: a non-blocking socket drained from ``loop.add_reader`` into one preallocated buffer, so
a burst costs one wake-up and no 64 KiB allocation per packet (DESIGN.md test-world notes:
1.8x cheaper than ``create_datagram_endpoint``). Answers the resolver can give at once are
sent inline; only forwards become tasks.

TCP (RFC 7766): length-prefixed messages reassembled across any split, pipelined queries
answered as each completes (6.2.1.1), an idle timeout (6.2.3), a cap on connections and on
queries in flight per connection (6.2.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
from collections.abc import Callable
from typing import cast

from stubresolver import mmsg, wire
from stubresolver.access import ClientFilter
from stubresolver.config import ListenAddress, ServerConfig
from stubresolver.decide import AnswerNow, Forward
from stubresolver.errors import ListenError
from stubresolver.resolver import Resolver

log = logging.getLogger("stubresolver.server")

# Packets handled per readiness callback before yielding to the loop, so one flood cannot
# starve TCP clients and timers.
_UDP_BATCH = 64
_MAX_UDP = 65535
_UDP_RCVBUF = 4 * 1024 * 1024


def _bind_socket(addr: ListenAddress, kind: socket.SocketKind) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # TCP only: a restart must not wait out TIME_WAIT. On UDP, SO_REUSEADDR would let
            # any other local program bind the same address too (if it sets the option) and
            # receive part of the queries; without it that bind fails with EADDRINUSE.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            _grow_receive_buffer(sock)
        sock.bind((addr.host, addr.port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        no_ipv6 = addr.host == "::1" and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
        message = f"cannot listen on {addr} ({proto}): {exc.strerror or exc}"
        raise ListenError(message, no_ipv6=no_ipv6) from None
    return sock


def _grow_receive_buffer(sock: socket.socket) -> None:
    """A burst of queries arrives faster than one loop pass drains; the default ~200 KiB
    queue holds only ~160 small datagrams on Linux (truesize), so later ones are dropped."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, _UDP_RCVBUF)  # root: past rmem_max
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)


class UdpListener:
    """One UDP socket drained in batches."""

    def __init__(
        self,
        sock: socket.socket,
        resolver_ref: Callable[[], Resolver],
        clients: ClientFilter,
        max_payload: int = wire.OUR_UDP_PAYLOAD,
        *,
        batch: bool = True,
    ) -> None:
        self.sock = sock
        # server.udp_max_payload: no UDP reply is larger, whatever the client advertises.
        self._cap = max_payload
        self._resolver = resolver_ref
        self._permits = clients.permits
        self._buf = bytearray(_MAX_UDP)
        self._view = memoryview(self._buf)
        self._closed = False
        self._loop = asyncio.get_running_loop()
        # server.udp_batch: recvmmsg/sendmmsg where the platform has them (mmsg.py).
        self._batch = mmsg.Batch(sock) if batch and mmsg.available else None
        drain = self._drain if self._batch is None else self._drain_batched
        self._loop.add_reader(sock.fileno(), drain)

    def _drain_batched(self) -> None:
        """One recvmmsg (up to 64 datagrams, the same budget per wake as `_drain`), the
        decisions, then one sendmmsg for every answer given at once."""
        batch = self._batch
        assert batch is not None
        count = batch.receive()
        if count <= 0:
            if count < 0 and -count not in (errno.EAGAIN, errno.EINTR):
                log.debug("udp receive error: %s", errno.errorcode.get(-count, count))
            return
        resolver = self._resolver()
        handle = self._handle
        for i in range(count):
            response = handle(resolver, batch.datagram(i), batch.address(i))
            if response is not None:
                batch.queue_reply(i, response)
        batch.flush()

    def _drain(self) -> None:
        sock = self.sock
        view = self._view
        resolver = self._resolver()
        handle = self._handle
        for _ in range(_UDP_BATCH):
            try:
                size, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors from earlier sends surface here (ECONNREFUSED); never fatal.
                log.debug("udp receive error: %s", errno.errorcode.get(exc.errno or 0, exc))
                continue
            response = handle(resolver, bytes(view[:size]), addr)
            if response is not None:
                self._send(response, addr)

    def _handle(self, resolver: Resolver, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """The answer to send at once, or None: a forward answers later through `_reply`,
        a drop never."""
        decision = (
            resolver.answer_now(data) if self._permits(addr[0]) else resolver.refuse_client(data)
        )
        cap = self._cap
        if type(decision) is AnswerNow:
            response = decision.response
            query = decision.query
            if query is not None and len(response) > 512:
                # RFC 1035 4.2.1 / RFC 6891 6.2.3, 7: never exceed what the client can
                # take, nor our own cap (DNS flag day 2020: no fragments in the tunnel).
                size = query.udp_size
                response = wire.truncate(response, size if size < cap else cap)
            return response
        if type(decision) is Forward:
            size = decision.query.udp_size
            limit = size if size < cap else cap
            resolver.forward_cb(decision, functools.partial(self._reply, limit, addr))
        return None

    def _reply(self, limit: int, addr: tuple[str, int], response: bytes) -> None:
        if self._closed:
            return
        # RFC 1035 4.2.1 / RFC 6891 6.2.3, 7: min(client's size, server.udp_max_payload).
        self._send(wire.truncate(response, limit), addr)

    def _send(self, response: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(response, addr)
        except (BlockingIOError, InterruptedError):
            pass  # UDP: the client retries
        except OSError as exc:
            log.debug("udp send error: %s", errno.errorcode.get(exc.errno or 0, exc))

    async def close(self) -> None:
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


# Output queued for one TCP client above which we stop reading its queries (RFC 7766 6.2.2:
# protect the server): a client that pipelines without reading gets no further than this.
_TCP_WRITE_HIGH = 64 * 1024
_TCP_WRITE_LOW = 16 * 1024


class _TcpConnection(asyncio.Protocol):
    def __init__(self, server: TcpListener) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._deframer = wire.TcpDeframer()
        self._inflight = 0
        self._write_blocked = False
        self._reading = True
        self._idle: asyncio.TimerHandle | None = None
        self._frame_deadline: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        #: Loop time of the last complete query (or of the connect): who is quietest.
        self.last_query = self._loop.time()

    @property
    def evictable(self) -> bool:
        """No query of this connection awaits an answer: closing it loses nothing."""
        return self._inflight == 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if not peer or not self._server.clients.permits(peer[0]):
            # server.allow: no answer at all on TCP, the connection is closed (issue 7).
            transport.abort()
            return
        if not self._server.make_room():
            # RFC 7766 6.2.2: a server may close connections to protect itself.
            transport.abort()
            return
        self._server.connections.add(self)
        transport.set_write_buffer_limits(high=_TCP_WRITE_HIGH, low=_TCP_WRITE_LOW)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        for timer in (self._idle, self._frame_deadline):
            if timer is not None:
                timer.cancel()
        self._idle = self._frame_deadline = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        messages = self._deframer.feed(data)
        resolver = self._server.resolver()
        for msg in messages:
            decision = resolver.answer_now(msg)
            if type(decision) is AnswerNow:
                self._write(decision.response)
            elif type(decision) is Forward:
                self._inflight += 1
                resolver.forward_cb(decision, self._answered)
            elif len(msg) < wire.HEADER_LEN:
                # No header to answer to, and the stream may be out of step: close.
                self.close()
                return
            # else a response (QR=1) sent to us: dropped
        if messages:
            # Only a complete query counts as activity: bytes trickled one at a time must not
            # keep a connection (and its slot) forever (slowloris).
            self.last_query = self._loop.time()
            self._arm_idle()
            self._cancel_frame_deadline()
        if self._deframer.pending and self._frame_deadline is None:
            self._frame_deadline = self._loop.call_later(
                self._server.config.tcp_frame_timeout, self.close
            )
        self._update_reading()

    def _answered(self, response: bytes) -> None:
        # RFC 7766 6.2.1.1: answers go out as they complete, in any order.
        self._write(response)
        self._inflight -= 1
        self._update_reading()
        self._arm_idle()

    # asyncio calls these when the transport's write buffer crosses the limits above.
    def pause_writing(self) -> None:
        self._write_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_blocked = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read only while answers can leave and the pipeline has room (RFC 7766 6.2.2)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        want = not self._write_blocked and self._inflight < self._server.config.tcp_max_inflight
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _write(self, response: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(wire.tcp_frame(response))

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._inflight == 0 and self._transport is not None:
            self._idle = self._loop.call_later(self._server.config.tcp_idle_timeout, self.close)

    def _cancel_frame_deadline(self) -> None:
        if self._frame_deadline is not None:
            self._frame_deadline.cancel()
            self._frame_deadline = None

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class TcpListener:
    def __init__(
        self, resolver_ref: Callable[[], Resolver], config: ServerConfig, clients: ClientFilter
    ) -> None:
        self.resolver = resolver_ref
        self.config = config
        self.clients = clients
        self.connections: set[_TcpConnection] = set()
        self._server: asyncio.Server | None = None

    def make_room(self) -> bool:
        """True when a new connection may stay. At the cap, the connection that has been
        quiet longest with nothing in flight is closed for it (RFC 7766 6.2.2 lets a server
        close idle connections), so connections that hold slots without asking cannot lock
        new clients out."""
        if len(self.connections) < self.config.tcp_max_connections:
            return True
        idle = [conn for conn in self.connections if conn.evictable]
        if not idle:
            return False
        victim = min(idle, key=lambda conn: conn.last_query)
        self.connections.discard(victim)
        victim.close()
        return True

    async def start(self, sock: socket.socket) -> None:
        sock.listen(128)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _TcpConnection(self), sock=sock)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


class DnsServer:
    """Every listener for the configured addresses; the resolver can be swapped on reload."""

    def __init__(self, resolver: Resolver, config: ServerConfig) -> None:
        self.resolver = resolver
        self.config = config
        self._clients = ClientFilter(config.allow)
        self.clients = self._clients  # the guard widens it to this host's own addresses
        self._udp: list[UdpListener] = []
        self._tcp: list[TcpListener] = []
        #: The addresses actually served (an IPv6 address skipped on a host without IPv6 is
        #: not among them): what the takeover names in resolv.conf.
        self.bound: tuple[ListenAddress, ...] = ()

    async def start(self, addresses: tuple[ListenAddress, ...]) -> None:
        """Bind everything first, so a failure leaves nothing half-open."""
        socks: list[tuple[socket.socket, socket.socket]] = []
        bound: list[ListenAddress] = []
        try:
            for addr in addresses:
                try:
                    udp = _bind_socket(addr, socket.SOCK_DGRAM)
                except ListenError as exc:
                    if exc.no_ipv6 and len(addresses) > 1:
                        # The default config lists [::1]:53 too; a host with IPv6 off
                        # cannot reach it, so serve the other addresses (and say so).
                        log.warning("%s; IPv6 seems off, skipping it", exc)
                        continue
                    raise
                try:
                    tcp = _bind_socket(addr, socket.SOCK_STREAM)
                except ListenError:
                    udp.close()
                    raise
                socks.append((udp, tcp))
                bound.append(addr)
            if not socks:
                raise ListenError("no listen address could be bound")
        except ListenError:
            for udp, tcp in socks:
                udp.close()
                tcp.close()
            raise
        self.bound = tuple(bound)
        for udp, tcp in socks:
            self._udp.append(
                UdpListener(
                    udp,
                    self._current,
                    self._clients,
                    self.config.udp_max_payload,
                    batch=self.config.udp_batch,
                )
            )
            listener = TcpListener(self._current, self.config, self._clients)
            await listener.start(tcp)
            self._tcp.append(listener)

    def _current(self) -> Resolver:
        return self.resolver

    async def close(self) -> None:
        for udp in self._udp:
            await udp.close()
        for tcp in self._tcp:
            await tcp.close()
