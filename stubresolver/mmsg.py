"""recvmmsg(2) and sendmmsg(2) through ctypes, on arrays made once (issue 11).

One recvmmsg moves up to ``BATCH`` queued datagrams into preallocated slots; the answers the
resolver gives at once are copied into send slots and leave in one sendmmsg, addressed to
the very sockaddr the kernel wrote on receive (nothing is parsed for the reply). Under low
load one call returns one datagram and, with fewer than ``BATCH`` returned, the drain stops
there: the socket is level-triggered, so a datagram that came meanwhile wakes the loop
again, and no call is spent on EAGAIN. Nothing waits to fill a batch.

The layouts are Linux x86-64/aarch64 glibc's (LP64): ``struct mmsghdr`` is a ``struct
msghdr`` (56 bytes) plus ``unsigned int msg_len`` and padding, 64 bytes. `available` checks
the sizes at import, so another ABI falls back to the plain path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import struct

BATCH = 64
SLOT = 4096  # bytes per datagram slot: above server.udp_max_payload's 4096 ceiling
MSG_DONTWAIT = 0x40
_SOCKADDR = 28  # sizeof(struct sockaddr_in6), the larger of the two families


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


_MMSG = ctypes.sizeof(_Mmsghdr)
_OFF_NAME = _Msghdr.name.offset
_OFF_NAMELEN = _Msghdr.namelen.offset
_OFF_LEN = _Mmsghdr.len.offset
_OFF_IOV_LEN = _Iovec.len.offset
_U32 = struct.Struct("=I")
_PTR = struct.Struct("=Q")

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _recvmmsg = _libc.recvmmsg
    _sendmmsg = _libc.sendmmsg
    _recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                          ctypes.c_void_p)  # fmt: skip
    _recvmmsg.restype = ctypes.c_int
    _sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    _sendmmsg.restype = ctypes.c_int
    available = _MMSG == 64 and ctypes.sizeof(ctypes.c_void_p) == 8
except (OSError, AttributeError):
    available = False


class Batch:
    """The receive and send arrays of one UDP socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.fileno()
        self.namelen = 16 if sock.family == socket.AF_INET else _SOCKADDR
        # Receive side: BATCH slots, their sockaddrs, one iovec each, the mmsghdrs.
        self._rbuf = (ctypes.c_char * (SLOT * BATCH))()
        self._names = (ctypes.c_char * (_SOCKADDR * BATCH))()
        self._riov = (_Iovec * BATCH)()
        self._rmsgs = (_Mmsghdr * BATCH)()
        self._rview = memoryview(self._rbuf).cast("B")
        self._nview = memoryview(self._names).cast("B")
        self._rmview = memoryview(self._rmsgs).cast("B")
        rbase, nbase = ctypes.addressof(self._rbuf), ctypes.addressof(self._names)
        for i in range(BATCH):
            self._riov[i].base = rbase + i * SLOT
            self._riov[i].len = SLOT
            hdr = self._rmsgs[i].hdr
            hdr.name = nbase + i * _SOCKADDR
            # A socket of one family always gets a sockaddr of that length back, so the
            # length never needs resetting between calls.
            hdr.namelen = self.namelen
            hdr.iov = ctypes.addressof(self._riov[i])
            hdr.iovlen = 1
        self._names_base = nbase
        # Send side: BATCH slots, one iovec each; each message's name points at a receive
        # sockaddr, set per reply.
        self._sbuf = (ctypes.c_char * (SLOT * BATCH))()
        self._siov = (_Iovec * BATCH)()
        self._smsgs = (_Mmsghdr * BATCH)()
        self._sview = memoryview(self._sbuf).cast("B")
        self._siview = memoryview(self._siov).cast("B")
        self._smview = memoryview(self._smsgs).cast("B")
        sbase = ctypes.addressof(self._sbuf)
        for i in range(BATCH):
            self._siov[i].base = sbase + i * SLOT
            hdr = self._smsgs[i].hdr
            hdr.namelen = self.namelen
            hdr.iov = ctypes.addressof(self._siov[i])
            hdr.iovlen = 1
        self._pending = 0
        # Raw sockaddr bytes -> (host, port): clients reuse their source ports, and the
        # resolver's client filter and replies want the tuple. Bounded.
        self._addrs: dict[bytes, tuple[str, int]] = {}

    def receive(self) -> int:
        """Datagrams now in the slots (0 when none are queued); -errno on an error."""
        n: int = _recvmmsg(self.fd, self._rmsgs, BATCH, MSG_DONTWAIT, None)
        if n < 0:
            return -ctypes.get_errno()
        return n

    def datagram(self, i: int) -> bytes:
        """Slot ``i``'s bytes. One larger than a slot comes cut to the slot (MSG_TRUNC); no
        query is that large, and its header is there for the FORMERR it gets."""
        size = _U32.unpack_from(self._rmview, i * _MMSG + _OFF_LEN)[0]
        start = i * SLOT
        return bytes(self._rview[start : start + (size if size < SLOT else SLOT)])

    def address(self, i: int) -> tuple[str, int]:
        start = i * _SOCKADDR
        raw = bytes(self._nview[start : start + self.namelen])
        addr = self._addrs.get(raw)
        if addr is None:
            port = (raw[2] << 8) | raw[3]
            if self.namelen == 16:
                addr = (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
            else:
                addr = (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port)
            if len(self._addrs) >= 4096:
                self._addrs.clear()
            self._addrs[raw] = addr
        return addr

    def queue_reply(self, i: int, response: bytes) -> None:
        """Send ``response`` to slot ``i``'s sender with the next `flush`."""
        j = self._pending
        size = len(response)
        if j == BATCH or size > SLOT:
            return  # cannot happen: one reply per received slot, replies capped at 4096
        start = j * SLOT
        self._sview[start : start + size] = response
        _PTR.pack_into(self._siview, j * ctypes.sizeof(_Iovec) + _OFF_IOV_LEN, size)
        _PTR.pack_into(self._smview, j * _MMSG + _OFF_NAME, self._names_base + i * _SOCKADDR)
        self._pending = j + 1

    def flush(self) -> int:
        """Send every queued reply in one sendmmsg; returns how many were handled (a
        full send buffer drops the rest: UDP, the client retries)."""
        count = self._pending
        if not count:
            return 0
        self._pending = 0
        sent = 0
        while sent < count:
            n: int = _sendmmsg(self.fd, ctypes.byref(self._smsgs, sent * _MMSG),
                               count - sent, MSG_DONTWAIT)  # fmt: skip
            if n < 0:
                if ctypes.get_errno() in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    break  # the send buffer is full: drop the rest (UDP, the client retries)
                sent += 1  # an error for this one destination: skip it, send the rest
                continue
            sent += n
        return sent
