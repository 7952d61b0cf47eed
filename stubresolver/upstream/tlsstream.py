"""A sans-IO TLS stream over a tunnel-bound socket, and the authenticated handshake.

TLS runs over ``ssl.MemoryBIO`` + ``ssl.SSLObject`` (sans-IO, STYLE.md 1), driven with the
loop's ``sock_recv`` / ``sock_sendall`` on a socket that only ``netbind.tcp_connect`` made:
device and address are bound before the SYN, and asyncio never touches socket options.
``open_tls`` checks the name (through the context) and the SPKI pins (``pins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from stubresolver import netbind
from stubresolver.errors import UpstreamError
from stubresolver.upstream.pins import spki_pin

_READ_SIZE = 65536


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
        # write_nowait: a flush is scheduled (one task per loop pass, not per query).
        self._flush_pending = False
        self._flusher: asyncio.Task[None] | None = None

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
            self._flush_pending = False  # a write from here on schedules its own flush
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

    def write_nowait(self, data: bytes, on_error: Callable[[BaseException], None]) -> None:
        """Encrypt ``data`` now and send it with the next flush (one task for every write
        of this loop pass): the callback path of DoT, with no task per query. The records
        keep the order of the calls, with ``write``'s too: both go through the same BIO and
        the same locked flush. A send that fails calls ``on_error``. Raises OSError /
        ssl.SSLError when the stream is closed or the record cannot be made."""
        if self.closed:
            raise ConnectionAbortedError("TLS stream closed")
        self._ssl.write(data)
        if self._flush_pending:
            return
        self._flush_pending = True
        self._flusher = self._loop.create_task(self._flush_for(on_error))

    async def _flush_for(self, on_error: Callable[[BaseException], None]) -> None:
        try:
            await self._flush()
        except (OSError, ssl.SSLError) as exc:
            on_error(exc)
        except asyncio.CancelledError:
            self._flush_pending = False
            raise

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
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
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
