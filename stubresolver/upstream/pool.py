"""The pooled-connection driver shared by DoT and DoH: one persistent TLS connection per
upstream, its epochs, reconnect backoff, idle timeout and session resumption.

``PooledConnection`` is one connection carrying many queries (the protocol subclasses do
the framing); ``PooledTlsUpstream`` owns it, makes a new one when needed and drops it when
the tunnel changes (STYLE.md 11).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from stubresolver import netbind
from stubresolver.backoff import Backoff
from stubresolver.errors import UpstreamError
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.counters import NOT_THE_UPSTREAMS_FAULT, TransportCounters
from stubresolver.upstream.tlscontext import make_context
from stubresolver.upstream.tlsstream import TlsStream, open_tls

if TYPE_CHECKING:
    from stubresolver.config import UpstreamConfig

log = logging.getLogger("stubresolver.upstream")


def timeout_error(label: str, timeout: float, what: str = "answer") -> UpstreamError:
    return UpstreamError("timeout", label, f"no {what} within {timeout:.2f}s")


class PooledConnection(abc.ABC):
    """One TLS connection carrying many queries at once; a reader task dispatches answers.

    Subclasses implement ``request`` and ``_received``. The connection fails as a whole
    (every waiting query gets the same UpstreamError) when the stream ends or breaks. It
    closes itself after ``idle_timeout`` seconds without a query in flight.
    """

    def __init__(
        self, stream: TlsStream, epoch: int, label: str, idle_timeout: float,
        counters: TransportCounters, on_close: Callable[[PooledConnection], None],
    ) -> None:  # fmt: skip
        self.stream = stream
        self._counters = counters
        counters.open_connections += 1
        self.epoch = epoch
        self.label = label
        self.session_saved = False
        self._loop = asyncio.get_running_loop()
        self._idle_timeout = idle_timeout
        self._on_close = on_close
        self._waiters: dict[int, asyncio.Future[bytes]] = {}
        self._idle: asyncio.TimerHandle | None = None
        self.error: UpstreamError | None = None
        self.last_rx = self._loop.time()
        self._reader = asyncio.create_task(self._read_loop(), name=f"reader {label}")
        self._arm_idle()

    def usable(self) -> bool:
        """True while new queries may be sent on this connection."""
        return self.error is None

    @abc.abstractmethod
    async def request(self, query: bytes, deadline: float, timeout: float) -> bytes:
        """Send ``query`` and return its answer (wire format); UpstreamError on failure."""

    @abc.abstractmethod
    def _received(self, data: bytes) -> None:
        """Handle decrypted bytes from the server (may call ``fail``)."""

    def _failed(self, error: UpstreamError) -> None:  # noqa: B027 (optional hook)
        """Hook run once when the connection fails: queries a subclass tracks itself."""

    async def _after_received(self) -> None:  # noqa: B027 (optional hook)
        """Hook run after ``_received`` (e.g. to flush protocol output)."""

    # waiters: futures resolved by the reader
    def _add_waiter(self, key: int) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters[key] = fut
        self._disarm_idle()
        return fut

    def _remove_waiter(self, key: int, fut: asyncio.Future[bytes]) -> None:
        if self._waiters.get(key) is fut:
            del self._waiters[key]
        if fut.done() and not fut.cancelled():
            fut.exception()  # mark retrieved: the caller has its own error in hand
        else:
            fut.cancel()
        self._arm_idle()

    def _resolve(self, key: int, answer: bytes) -> bool:
        fut = self._waiters.get(key)
        if fut is None or fut.done():
            return False
        fut.set_result(answer)
        return True

    def _reject(self, key: int, error: UpstreamError) -> None:
        fut = self._waiters.get(key)
        if fut is not None and not fut.done():
            fut.set_exception(error)

    def _busy(self) -> bool:
        """A query awaits an answer on this connection (a subclass may track more)."""
        return bool(self._waiters)

    def _arm_idle(self) -> None:
        if self._busy() or self.error is not None or self._idle is not None:
            return
        self._idle = self._loop.call_later(self._idle_timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        self._idle = None
        if not self._busy():
            log.debug("%s: closing idle connection", self.label)
            self.fail(UpstreamError("connect", self.label, "idle connection closed"))

    async def _send_and_wait(
        self, send: Callable[[], Awaitable[None]], fut: asyncio.Future[bytes], deadline: float,
        timeout: float,
    ) -> bytes:  # fmt: skip
        """Run ``send`` and wait for ``fut``, both before ``deadline``.

        A send that fails or is cut short breaks the stream, so it fails the connection. A
        timeout with nothing at all received since the query went out means the path is dead
        (blackholed tunnel): the connection is closed so the next query does not queue
        behind it.
        """
        sent_at = self._loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    await send()
                except (OSError, ssl.SSLError) as exc:
                    reason = netbind.errno_name(exc) if isinstance(exc, OSError) else exc.reason
                    self.fail(UpstreamError("connect", self.label, f"send failed: {reason}"))
                except BaseException:
                    if self.stream.closed:
                        self.fail(UpstreamError("connect", self.label, "send interrupted"))
                    raise
                if self.error is not None and not fut.done():
                    raise self._error_copy()
                return await fut
        except TimeoutError:
            if self.last_rx < sent_at:
                self.fail(UpstreamError("connect", self.label, "server silent; connection dropped"))
            raise timeout_error(self.label, timeout) from None

    def _error_copy(self) -> UpstreamError:
        error = self.error
        assert error is not None
        return UpstreamError(error.kind, error.upstream, error.message)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.stream.read()
                if not data:
                    self.fail(UpstreamError("connect", self.label, "connection closed by server"))
                    return
                self.last_rx = self._loop.time()
                self._received(data)
                if self.error is not None:
                    return
                await self._after_received()
        except asyncio.CancelledError:
            raise
        except UpstreamError as exc:
            self.fail(exc)
        except ssl.SSLError as exc:
            self.fail(UpstreamError("connect", self.label, f"TLS error: {exc.reason or exc}"))
        except OSError as exc:
            self.fail(
                UpstreamError("connect", self.label, f"connection lost: {netbind.errno_name(exc)}")
            )
        except Exception as exc:  # a bug must not leave queries hanging until their deadline
            log.exception("%s: reader failed", self.label)
            self.fail(UpstreamError("protocol", self.label, f"reader failed: {exc!r}"))

    def fail(self, error: UpstreamError) -> None:
        """Close the connection; every waiting query gets ``error``. Idempotent."""
        if self.error is not None:
            return
        self.error = error
        self._disarm_idle()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(UpstreamError(error.kind, error.upstream, error.message))
        self._failed(error)
        if self._reader is not asyncio.current_task():
            self._reader.cancel()
        self.stream.close()
        self._counters.open_connections -= 1
        self._on_close(self)


class PooledTlsUpstream(abc.ABC):
    """Connection management shared by DoT and DoH: one persistent connection per upstream.

    - The connection is made under the tunnel epoch of the query that needed it and dropped
      (its queries failing with kind ``epoch``) as soon as a query carries another epoch.
    - A query on a reused connection that dies before the answer is retried once on a fresh
      connection (RFC 7766 6.2.1: servers may close idle connections at any time).
    - Connect failures back off exponentially (``backoff_initial`` doubling up to
      ``backoff_max``); meanwhile queries fail at once with the last error. A new tunnel
      epoch resets the backoff: the path changed, so try again at once.
    - TLS sessions are resumed (RFC 8310 9: session resumption keeps reconnects cheap), but
      only within the tunnel epoch they came from (issue 7: no linking across a change).
    - Only transport counters are kept (``counters()``); health and its log are the
      resolver's.
    """

    alpn: tuple[str, ...] = ()

    def __init__(
        self,
        cfg: UpstreamConfig,
        *,
        idle_timeout: float = 30.0,
        backoff_initial: float = 0.25,
        backoff_max: float = 8.0,
    ) -> None:
        self.url = cfg.url
        self.cfg = cfg
        self.dest = (cfg.host, cfg.port)
        self.timeout = cfg.timeout
        self.transport = TransportCounters()
        # RFC 8310 strict: without an auth name the IP itself must be in the certificate.
        self.server_name = cfg.auth_name or cfg.host
        self.idle_timeout = idle_timeout
        self._ctx = make_context(cfg.ca_file, self.alpn)
        self._pins = frozenset(pin.strip() for pin in cfg.spki_pins)
        self._conn: PooledConnection | None = None
        self._lock = asyncio.Lock()
        # Issue 7: a session is resumed only in the tunnel epoch it was obtained in.
        # Resumption (RFC 8446 2.2) lets the server link the connections that use it, so a
        # ticket from before a tunnel change would tie the new path to the old one.
        self._session: ssl.SSLSession | None = None
        self._session_epoch = -1
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._connect_error: UpstreamError | None = None  # the last one, while backing off
        self._backoff_epoch = -1

    @property
    def connection(self) -> PooledConnection | None:
        """The pooled connection (for status and tests)."""
        return self._conn

    @abc.abstractmethod
    async def _start(
        self, stream: TlsStream, state: TunnelState, deadline: float
    ) -> PooledConnection:
        """Wrap a handshaken stream into this protocol's connection."""

    def counters(self) -> dict[str, int]:
        """The transport counters (``TransportCounters``) by name, for ``status``."""
        return self.transport.as_dict()

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        # No health or RTT here, and no "upstream failed" log: the resolver keeps that
        # ledger and logs each change once (STYLE.md 13).
        deadline = asyncio.get_running_loop().time() + self.timeout
        return await self._exchange(query, state, deadline)

    async def _exchange(self, query: bytes, state: TunnelState, deadline: float) -> bytes:
        if not state.up:
            self._drop(UpstreamError("epoch", self.url, f"tunnel {state.label} down"))
            raise UpstreamError("tunnel", self.url, f"tunnel {state.label} down")
        for attempt in range(2):
            conn, fresh = await self._acquire(state, deadline)
            try:
                answer = await conn.request(query, deadline, self.timeout)
            except UpstreamError as exc:
                if exc.kind != "connect" or fresh or attempt:
                    raise
                log.debug("%s: reused connection lost (%s); retrying", self.url, exc.message)
                self.transport.retries += 1
                continue
            if not conn.session_saved:
                # After the first answer: TLS 1.3 tickets arrive after the handshake.
                conn.session_saved = True
                self._session = conn.stream.session
                self._session_epoch = conn.epoch
            return answer
        raise AssertionError("unreachable")

    def _drop(self, error: UpstreamError) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(error)

    def _connection_closed(self, conn: PooledConnection) -> None:
        if self._conn is conn:
            self._conn = None

    async def _acquire(self, state: TunnelState, deadline: float) -> tuple[PooledConnection, bool]:
        """The pooled connection for ``state`` or a new one: (connection, is_new)."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise timeout_error(self.url, self.timeout, "connection") from None
        try:
            conn = self._conn
            if conn is not None and conn.epoch > state.epoch:
                # A query from before the tunnel changed: it must not cross the epoch.
                raise UpstreamError("epoch", self.url, f"tunnel changed (epoch {state.epoch})")
            if conn is not None and conn.epoch != state.epoch:
                self._drop(
                    UpstreamError(
                        "epoch", self.url, f"tunnel changed (epoch {conn.epoch} -> {state.epoch})"
                    )
                )
                conn = None
            if conn is not None and conn.usable():
                self.transport.reused += 1
                return conn, False
            loop = asyncio.get_running_loop()
            if self._backoff_epoch != state.epoch:
                self._backoff_epoch = state.epoch
                self._backoff.reset()
                self._connect_error = None
            failed = self._connect_error
            if failed is not None and self._backoff.next_delay(loop.time()) > 0:
                raise UpstreamError(failed.kind, failed.upstream, failed.message)
            try:
                conn = await self._connect(state, deadline)
            except UpstreamError as exc:
                if exc.kind not in NOT_THE_UPSTREAMS_FAULT:
                    self._backoff.failed(loop.time())
                    self.transport.connect_failures += 1
                    self._connect_error = exc
                raise
            self._backoff.reset()
            self._connect_error = None
            self._conn = conn
            return conn, True
        finally:
            self._lock.release()

    async def _connect(self, state: TunnelState, deadline: float) -> PooledConnection:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise timeout_error(self.url, self.timeout, "connection")
        if self._session_epoch != state.epoch:
            self._session = None  # obtained under another epoch: never offered again
        sock = await netbind.tcp_connect(state, self.dest, remaining, upstream=self.url)
        try:
            async with asyncio.timeout_at(deadline):
                stream = await open_tls(
                    sock, self._ctx, self.server_name, self._session, self._pins, self.url
                )
        except TimeoutError:
            raise timeout_error(self.url, self.timeout, "TLS handshake") from None
        self.transport.handshakes += 1
        if stream.resumed:
            self.transport.resumed += 1
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._start(stream, state, deadline)
        except TimeoutError:
            stream.close()
            raise timeout_error(self.url, self.timeout, "connection setup") from None
        except BaseException:
            stream.close()
            raise
        log.debug(
            "%s: connected (%s%s)", self.url, stream.version, ", resumed" if stream.resumed else ""
        )
        return conn

    async def close(self) -> None:
        """Close the pooled connection; queries on it fail. The upstream stays usable."""
        self._drop(UpstreamError("epoch", self.url, "upstream closed"))
