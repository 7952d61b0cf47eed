"""``https://IP[:port]/path#host``: DNS-over-HTTPS (RFC 8484) over HTTP/2 (RFC 9113).

HTTP/2 is the sans-IO ``h2`` state machine over our own TLS stream (``tlsstream``), whose
socket ``netbind`` made and bound to the tunnel before connect: no HTTP client library gets
to create a socket (httpcore sets options after connect, DESIGN.md "Kernel binding").

- POST with ``application/dns-message`` (RFC 8484 4.1); the DNS ID on the wire is 0 (RFC
  8484 4.1: "the DNS ID SHOULD be 0" so equal queries are equal requests); the caller's ID
  is put back into the answer.
- Queries are padded to 128 octets (RFC 8467 4.1; RFC 8484 8 recommends padding).
- Every query is its own stream, multiplexed on one reused connection (RFC 8484 5), within
  the server's SETTINGS_MAX_CONCURRENT_STREAMS.
- ``host`` (the name after ``#``) is used only for SNI, certificate verification and
  ``:authority``; the IP comes from the config and no name is ever looked up.
- ALPN must select ``h2``; there is no HTTP/1.1 fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from stubresolver import wire
from stubresolver.errors import UpstreamError
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.counters import TransportCounters
from stubresolver.upstream.framing import answers_question, finish_answer, read_query
from stubresolver.upstream.pool import PooledConnection, PooledTlsUpstream
from stubresolver.upstream.tlsstream import TlsStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from stubresolver.config import UpstreamConfig

log = logging.getLogger(__name__)

DNS_MESSAGE = b"application/dns-message"
_MAX_BODY = 0xFFFF  # a DNS message never exceeds 65535 octets


@dataclass(slots=True)
class _Stream:
    """What arrived so far on one request stream."""

    key: bytes
    status: int | None = None
    content_type: bytes | None = None
    body: bytearray = field(default_factory=bytearray)


def _header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class DohConnection(PooledConnection):
    """One HTTP/2 connection carrying DoH requests as concurrent streams."""

    def __init__(
        self, stream: TlsStream, epoch: int, label: str, idle_timeout: float,
        counters: TransportCounters, on_close: Callable[[PooledConnection], None],
        authority: bytes, path: bytes,
    ) -> None:  # fmt: skip
        self._authority = authority
        self._path = path
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.initiate_connection()
        # No server push for a DNS client (RFC 9113 6.5.2).
        self._h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self._streams: dict[int, _Stream] = {}
        self._slot_freed = asyncio.Event()
        self._goaway = False
        super().__init__(stream, epoch, label, idle_timeout, counters, on_close)

    def usable(self) -> bool:
        return super().usable() and not self._goaway

    async def flush(self) -> None:
        """Send what the h2 state machine has queued."""
        data = self._h2.data_to_send()
        if data:
            await self.stream.write(data)

    async def _after_received(self) -> None:
        await self.flush()  # SETTINGS ACKs, WINDOW_UPDATEs, PING ACKs

    def _protocol_error(self, message: str) -> UpstreamError:
        return UpstreamError("protocol", self.label, message)

    async def _wait_for_slot(self, deadline: float, timeout: float) -> None:
        """Wait until the server's SETTINGS_MAX_CONCURRENT_STREAMS allows another stream."""
        try:
            async with asyncio.timeout_at(deadline):
                while (
                    self._h2.open_outbound_streams
                    >= self._h2.remote_settings.max_concurrent_streams
                ):
                    if self.error is not None:
                        raise self._error_copy()
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
        except TimeoutError:
            raise UpstreamError(
                "timeout", self.label, f"no free HTTP/2 stream within {timeout:.2f}s"
            ) from None
        if self.error is not None:
            raise self._error_copy()

    async def request(self, query: bytes, deadline: float, timeout: float) -> bytes:
        if self.error is not None:
            raise self._error_copy()
        _, key, padded, added = read_query(wire.with_id(query, 0), self.label)
        orig_id = wire.get_id(query)
        await self._wait_for_slot(deadline, timeout)
        if not self.usable():
            # GOAWAY arrived while waiting: a new connection serves this query.
            raise UpstreamError("connect", self.label, "server is closing the connection")
        try:
            stream_id = self._h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self._goaway = True  # stream IDs used up (RFC 9113 5.1.1): open a new connection
            raise UpstreamError("connect", self.label, "HTTP/2 stream IDs exhausted") from None
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", self._authority),
            (b":path", self._path),
            (b"accept", DNS_MESSAGE),
            (b"content-type", DNS_MESSAGE),
            (b"content-length", str(len(padded)).encode()),
        ]
        fut = self._add_waiter(stream_id)
        self._streams[stream_id] = _Stream(key)
        try:
            self._h2.send_headers(stream_id, headers)
            if len(padded) > self._h2.local_flow_control_window(stream_id):
                raise self._protocol_error("query larger than the server's flow-control window")
            frame_size = self._h2.max_outbound_frame_size
            for start in range(0, len(padded), frame_size):
                chunk = padded[start : start + frame_size]
                self._h2.send_data(stream_id, chunk, end_stream=start + frame_size >= len(padded))
            answer = await self._send_and_wait(self.flush, fut, deadline, timeout)
        except h2.exceptions.ProtocolError as exc:
            raise self._protocol_error(f"HTTP/2: {exc}") from None
        finally:
            if self._streams.pop(stream_id, None) is not None and self.error is None:
                # Timed out or cancelled: tell the server we gave up (sent with the next flush).
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._remove_waiter(stream_id, fut)
        return finish_answer(answer, orig_id, added)

    def _received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.fail(self._protocol_error(f"HTTP/2 protocol error: {exc}"))
            return
        for event in events:
            self._handle(event)
        if self._goaway and not self._streams:
            # GOAWAY and nothing left in flight: close now rather than wait for the server.
            self.fail(UpstreamError("connect", self.label, "connection closed after GOAWAY"))

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            st = self._streams.get(event.stream_id or 0)
            if st is not None:
                headers = [(bytes(k), bytes(v)) for k, v in event.headers or []]
                status = _header_value(headers, b":status")
                st.status = int(status) if status and status.isdigit() else None
                st.content_type = _header_value(headers, b"content-type")
        elif isinstance(event, h2.events.DataReceived):
            stream_id = event.stream_id or 0
            length = event.flow_controlled_length or 0
            if length:
                self._h2.acknowledge_received_data(length, stream_id)
            st = self._streams.get(stream_id)
            if st is not None:
                st.body += event.data or b""
                if len(st.body) > _MAX_BODY:
                    self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                    self._streams.pop(stream_id, None)
                    self._reject(stream_id, self._protocol_error("answer larger than 65535"))
        elif isinstance(event, h2.events.StreamEnded):
            self._finish(event.stream_id or 0)
            self._slot_freed.set()
        elif isinstance(event, h2.events.StreamReset):
            stream_id = event.stream_id or 0
            if self._streams.pop(stream_id, None) is not None:
                code = event.error_code
                self._reject(stream_id, self._protocol_error(f"stream reset by server ({code})"))
            self._slot_freed.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._slot_freed.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway_received(event)

    def _goaway_received(self, event: h2.events.ConnectionTerminated) -> None:
        """GOAWAY (RFC 9113 6.8): streams above last_stream_id were not processed, so they
        fail as ``connect`` and are retried on a new connection; lower ones may finish."""
        self._goaway = True
        last = event.last_stream_id or 0
        code = event.error_code
        for stream_id in [s for s in self._streams if s > last]:
            del self._streams[stream_id]
            self._reject(
                stream_id, UpstreamError("connect", self.label, f"server sent GOAWAY ({code})")
            )
        if code != h2.errors.ErrorCodes.NO_ERROR or not self._streams:
            self.fail(UpstreamError("connect", self.label, f"server sent GOAWAY ({code})"))
        self._slot_freed.set()

    def _finish(self, stream_id: int) -> None:
        st = self._streams.pop(stream_id, None)
        if st is None:
            return
        if st.status != 200:
            self._reject(stream_id, self._protocol_error(f"HTTP status {st.status}"))
            return
        ctype = (st.content_type or b"").split(b";")[0].strip().lower()
        if ctype != DNS_MESSAGE:
            self._reject(stream_id, self._protocol_error(f"content-type {ctype!r}"))
            return
        body = bytes(st.body)
        if len(body) < wire.HEADER_LEN or wire.get_id(body) != 0:
            self._reject(stream_id, self._protocol_error("answer is not a DNS message for ID 0"))
            return
        if not answers_question(body, st.key):
            self._reject(stream_id, self._protocol_error("answer does not match the question"))
            return
        self._resolve(stream_id, body)


def _authority(host: str, port: int) -> bytes:
    """``:authority`` (RFC 9113 8.3.1): host, bracketed if IPv6, with a non-default port."""
    shown = f"[{host}]" if ":" in host else host
    return (shown if port == 443 else f"{shown}:{port}").encode("ascii")


class HttpsUpstream(PooledTlsUpstream):
    """``https://IP[:port]/path#host`` (see the module doc)."""

    alpn = ("h2",)

    def __init__(
        self,
        cfg: UpstreamConfig,
        *,
        idle_timeout: float = 30.0,
        backoff_initial: float = 0.25,
        backoff_max: float = 8.0,
    ) -> None:
        super().__init__(
            cfg,
            idle_timeout=idle_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self.authority = _authority(self.server_name, cfg.port)
        self.path = (cfg.path or "/dns-query").encode("ascii")

    async def _start(self, stream: TlsStream, state: TunnelState, deadline: float) -> DohConnection:
        if stream.alpn_protocol() != "h2":
            raise UpstreamError("tls", self.url, "server did not negotiate HTTP/2 (ALPN h2)")
        conn = DohConnection(
            stream, state.epoch, self.url, self.idle_timeout, self.transport,
            self._connection_closed, self.authority, self.path,
        )  # fmt: skip
        try:
            await conn.flush()  # connection preface + SETTINGS (RFC 9113 3.4)
        except (OSError, ValueError) as exc:
            error = UpstreamError("connect", self.url, f"sending the HTTP/2 preface: {exc}")
            conn.fail(error)
            raise error from None
        return conn
