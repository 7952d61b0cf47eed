"""What DNS-over-TLS and DNS-over-HTTPS share: the TLS context, SPKI pins, a sans-IO TLS
stream over a tunnel-bound socket, per-upstream stats, and the pooled-connection driver.

Strict privacy profile (RFC 8310 5): the server is authenticated by its name (``#auth-name``
in the URL, checked against the certificate with the system CAs or ``ca_file``) and, when
``spki_pins`` are configured, also by the SHA-256 of its SubjectPublicKeyInfo (RFC 7858 4.2,
RFC 7469 2.4). Any failure is a hard failure: never an unauthenticated or cleartext retry.

TLS runs over ``ssl.MemoryBIO`` + ``ssl.SSLObject`` (sans-IO, STYLE.md 1), driven with the
loop's ``sock_recv`` / ``sock_sendall`` on a socket that only ``netbind.tcp_connect`` made:
device and address are bound before the SYN, and asyncio never touches socket options.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stubresolver import netbind
from stubresolver.errors import ConfigError, UpstreamError
from stubresolver.tunnel_state import TunnelState

if TYPE_CHECKING:
    from stubresolver.config import UpstreamConfig

log = logging.getLogger("stubresolver.upstream")

_READ_SIZE = 65536
_SRTT_GAIN = 0.125  # RFC 6298 2.3 alpha: srtt = 7/8 srtt + 1/8 sample
# Failures that say nothing about the upstream itself: the tunnel changed or is down.
_NOT_THE_UPSTREAMS_FAULT = frozenset({"epoch", "tunnel"})


# --- per-upstream state, readable by the resolver and the status command ----------------


@dataclass(slots=True)
class UpstreamStats:
    """Health and counters of one upstream (read by selection and ``status``).

    ``healthy`` flips to False on a failure of the upstream (not on tunnel events) and back
    on the next answer; ``srtt`` is the smoothed round-trip time in seconds (RFC 6298
    weights), ``None`` before the first answer; ``last_error`` is the last failure's text.
    """

    healthy: bool = True
    srtt: float | None = None
    last_error: str | None = None
    open_connections: int = 0
    queries: int = 0
    failures: int = 0
    handshakes: int = 0
    resumed: int = 0  # handshakes that resumed an earlier TLS session

    def record_success(self, rtt: float) -> bool:
        """Count an answer after ``rtt`` seconds; True when the upstream just recovered."""
        self.queries += 1
        self.srtt = rtt if self.srtt is None else self.srtt + _SRTT_GAIN * (rtt - self.srtt)
        recovered = not self.healthy
        self.healthy = True
        return recovered

    def record_failure(self, error: UpstreamError) -> bool:
        """Count a failure; True when the upstream's state or failure reason changed."""
        self.queries += 1
        self.failures += 1
        if error.kind in _NOT_THE_UPSTREAMS_FAULT:
            return False
        changed = self.healthy or self.last_error != error.message
        self.healthy = False
        self.last_error = error.message
        return changed


# --- TLS context and SPKI pins -----------------------------------------------------------


def make_context(ca_file: str | None, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A client context: certificate and host name checked, TLS 1.2 minimum (RFC 8310 9).

    With ``ca_file`` only that bundle is trusted, otherwise the system's CAs. Raises
    ConfigError when the bundle cannot be loaded.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("upstreams.ca_file", f"cannot load {ca_file!r}: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _der_element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos`` (X.690 8.1)."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER element")
    tag = der[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tag")  # never used by X.509 at these levels
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(der):
        raise ValueError("DER element runs past the data")
    return tag, pos, end


def spki_der(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 4.1).

    Certificate = SEQUENCE { tbsCertificate, ... }; tbsCertificate = SEQUENCE { [0] version
    OPTIONAL, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...}.
    Raises ValueError on anything that is not shaped like that.
    """
    tag, start, _ = _der_element(cert_der, 0)
    if tag != 0x30:
        raise ValueError("certificate is not a SEQUENCE")
    tag, pos, tbs_end = _der_element(cert_der, start)
    if tag != 0x30:
        raise ValueError("tbsCertificate is not a SEQUENCE")
    tag, _, end = _der_element(cert_der, pos)
    if tag == 0xA0:  # [0] EXPLICIT version
        pos = end
    # serialNumber INTEGER, signature SEQ, issuer SEQ, validity SEQ, subject SEQ
    for expected in (0x02, 0x30, 0x30, 0x30, 0x30):
        tag, _, end = _der_element(cert_der, pos)
        if tag != expected or end > tbs_end:
            raise ValueError("unexpected element in tbsCertificate")
        pos = end
    tag, _, end = _der_element(cert_der, pos)
    if tag != 0x30 or end > tbs_end:
        raise ValueError("subjectPublicKeyInfo is not a SEQUENCE")
    return cert_der[pos:end]


def spki_pin(cert_der: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): the pin format of RFC 7858 4.2 / RFC 7469."""
    return base64.b64encode(hashlib.sha256(spki_der(cert_der)).digest()).decode("ascii")


# --- a TLS stream over a tunnel-bound socket ---------------------------------------------


class TlsStream:
    """TLS over a connected non-blocking socket with MemoryBIOs; one reader at a time.

    ``write`` may be called by many tasks at once: each call encrypts synchronously (so the
    records keep the order of the calls) and the send lock keeps the socket writes in the
    same order. A write cut short by cancellation leaves a partial record on the wire, so the
    stream is then closed.
    """

    def __init__(
        self, sock: socket.socket, sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:  # fmt: skip
        self._sock = sock
        self._ssl = sslobj
        self._in = incoming
        self._out = outgoing
        self._send_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self.closed = False

    @property
    def resumed(self) -> bool:
        return self._ssl.session_reused

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._ssl.session

    @property
    def version(self) -> str | None:
        return self._ssl.version()

    def alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    async def _flush(self) -> None:
        async with self._send_lock:
            # Yield once so every query started in this loop pass adds its TLS record first:
            # one send for all of them instead of one syscall per query (pipelining,
            # RFC 7858 3.3), for one loop pass of latency.
            await asyncio.sleep(0)
            data = self._out.read()
            if not data or self.closed:
                return
            try:
                await self._loop.sock_sendall(self._sock, data)
            except BaseException:
                self.close()
                raise

    async def handshake(self) -> None:
        """Run the handshake; foreign errors are left for ``open_tls`` to translate."""
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            await self._flush()
            data = await self._loop.sock_recv(self._sock, _READ_SIZE)
            if not data:
                raise ConnectionAbortedError("connection closed during the TLS handshake")
            self._in.write(data)
        await self._flush()

    async def write(self, data: bytes) -> None:
        """Encrypt and send ``data``. Raises OSError / ssl.SSLError."""
        if self.closed:
            raise ConnectionAbortedError("TLS stream closed")
        self._ssl.write(data)
        await self._flush()

    async def read(self) -> bytes:
        """Decrypted bytes; b"" when the server closed. Raises OSError / ssl.SSLError."""
        while True:
            try:
                data = self._ssl.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                if self.closed:
                    return b""
                received = await self._loop.sock_recv(self._sock, _READ_SIZE)
                if not received:
                    self._in.write_eof()
                    continue
                self._in.write(received)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            if self._out.pending:  # e.g. a KeyUpdate answer (RFC 8446 4.6.3)
                await self._flush()
            return data

    def close(self) -> None:
        """Send close_notify if possible, then close the socket. Idempotent; never raises."""
        if self.closed:
            return
        self.closed = True
        fd = self._sock.fileno()
        # SSLWantReadError: close_notify is written, the peer's is not awaited.
        with contextlib.suppress(ssl.SSLError, ValueError, OSError):
            self._ssl.unwrap()
        try:
            pending = self._out.read()
            if pending:
                self._sock.send(pending)
        except OSError:
            pass
        if fd >= 0:
            # Unregister before close so a waiting sock_recv/sock_sendall cannot act on a
            # reused descriptor (its done-callback sees the handle cancelled and does nothing).
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self._sock.close()


async def open_tls(
    sock: socket.socket,
    ctx: ssl.SSLContext,
    server_name: str,
    session: ssl.SSLSession | None,
    pins: frozenset[str],
    label: str,
) -> TlsStream:
    """Handshake on ``sock``, verify the name (and pins); the stream or UpstreamError.

    Closes ``sock`` on any failure, including cancellation.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        sslobj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name, session=session)
    except (ssl.SSLError, ValueError) as exc:
        sock.close()
        raise UpstreamError("tls", label, f"TLS setup failed: {exc}") from exc
    stream = TlsStream(sock, sslobj, incoming, outgoing)
    try:
        await stream.handshake()
        der = sslobj.getpeercert(binary_form=True)
        if der is None:
            raise UpstreamError("tls", label, "server sent no certificate")
        if pins:
            try:
                pin = spki_pin(der)
            except ValueError as exc:
                raise UpstreamError("tls", label, f"cannot read the server key: {exc}") from None
            if pin not in pins:
                raise UpstreamError(
                    "tls", label, f"SPKI pin mismatch: server key {pin} is not in spki_pins"
                )
    except ssl.SSLCertVerificationError as exc:
        stream.close()
        reason = exc.verify_message or exc.reason or str(exc)
        raise UpstreamError("tls", label, f"certificate verify failed: {reason}") from None
    except ssl.SSLError as exc:
        stream.close()
        raise UpstreamError("tls", label, f"TLS handshake failed: {exc.reason or exc}") from None
    except ConnectionAbortedError as exc:
        stream.close()
        raise UpstreamError("tls", label, f"TLS handshake failed: {exc}") from None
    except OSError as exc:
        stream.close()
        raise UpstreamError("connect", label, f"TLS handshake: {netbind.errno_name(exc)}") from None
    except BaseException:
        stream.close()
        raise
    return stream


# --- pooled connection driver --------------------------------------------------------------


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
        stats: UpstreamStats, on_close: Callable[[PooledConnection], None],
    ) -> None:  # fmt: skip
        self.stream = stream
        self._stats = stats
        stats.open_connections += 1
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

    async def _after_received(self) -> None:  # noqa: B027 (optional hook)
        """Hook run after ``_received`` (e.g. to flush protocol output)."""

    # waiters: futures resolved by the reader
    def _add_waiter(self, key: int) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters[key] = fut
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
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

    def _arm_idle(self) -> None:
        if self._waiters or self.error is not None or self._idle is not None:
            return
        self._idle = self._loop.call_later(self._idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        if not self._waiters:
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
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(UpstreamError(error.kind, error.upstream, error.message))
        if self._reader is not asyncio.current_task():
            self._reader.cancel()
        self.stream.close()
        self._stats.open_connections -= 1
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
    - TLS sessions are resumed (RFC 8310 9: session resumption keeps reconnects cheap).
    - The failure reason is logged once per change of the upstream's state, not per query.
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
        self.stats = UpstreamStats()
        # RFC 8310 strict: without an auth name the IP itself must be in the certificate.
        self.server_name = cfg.auth_name or cfg.host
        self.idle_timeout = idle_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._ctx = make_context(cfg.ca_file, self.alpn)
        self._pins = frozenset(pin.strip() for pin in cfg.spki_pins)
        self._conn: PooledConnection | None = None
        self._lock = asyncio.Lock()
        self._session: ssl.SSLSession | None = None
        self._connect_failures = 0
        self._retry_at = 0.0
        self._connect_error: UpstreamError | None = None
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

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            answer = await self._exchange(query, state, start + self.timeout)
        except UpstreamError as exc:
            # Health is the resolver's (selection.py) and logged there, once.
            self.stats.record_failure(exc)
            raise
        self.stats.record_success(loop.time() - start)
        return answer

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
                continue
            if not conn.session_saved:
                # After the first answer: TLS 1.3 tickets arrive after the handshake.
                conn.session_saved = True
                self._session = conn.stream.session
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
                return conn, False
            loop = asyncio.get_running_loop()
            if self._backoff_epoch != state.epoch:
                self._backoff_epoch = state.epoch
                self._connect_failures = 0
                self._connect_error = None
            failed = self._connect_error
            if failed is not None and loop.time() < self._retry_at:
                raise UpstreamError(failed.kind, failed.upstream, failed.message)
            try:
                conn = await self._connect(state, deadline)
            except UpstreamError as exc:
                if exc.kind not in _NOT_THE_UPSTREAMS_FAULT:
                    self._connect_failures += 1
                    delay = self.backoff_initial * 2 ** (self._connect_failures - 1)
                    self._retry_at = loop.time() + min(delay, self.backoff_max)
                    self._connect_error = exc
                raise
            self._connect_failures = 0
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
        sock = await netbind.tcp_connect(state, self.dest, remaining, upstream=self.url)
        try:
            async with asyncio.timeout_at(deadline):
                stream = await open_tls(
                    sock, self._ctx, self.server_name, self._session, self._pins, self.url
                )
        except TimeoutError:
            raise timeout_error(self.url, self.timeout, "TLS handshake") from None
        self.stats.handshakes += 1
        if stream.resumed:
            self.stats.resumed += 1
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

    def counters(self) -> dict[str, int]:
        stats = self.stats
        return {
            "open_connections": stats.open_connections,
            "handshakes": stats.handshakes,
            "resumed": stats.resumed,
        }

    async def close(self) -> None:
        """Close the pooled connection; queries on it fail. The upstream stays usable."""
        self._drop(UpstreamError("epoch", self.url, "upstream closed"))
