"""EDNS(0) padding of queries for encrypted transports (RFC 7830, RFC 8467), sans-IO.

RFC 8467 4.1 recommends Block-Length Padding: a client pads every query to the closest
multiple of 128 octets, so the length of the ciphertext does not tell an observer which name
was asked for. Only the DoT and DoH upstreams use this; a plain upstream must not pad (the
padding would be visible and useless).

The padding lives in the OPT pseudo-RR (RFC 6891). A query without one gets one; the upstream
then removes the OPT record from the answer again (``strip_opt``), because RFC 6891 7 says a
responder must not send OPT to a requestor that did not send one, and the client did not.
"""

from __future__ import annotations

import struct

from stubresolver.errors import WireError
from stubresolver.wire import FORMERR, HEADER_LEN, OPT_PADDING, TYPE_OPT, skip_name

BLOCK_LENGTH = 128  # RFC 8467 4.1: "pad to the closest multiple of 128 octets"
# The requestor's UDP payload size we announce in an OPT we add ourselves (RFC 6891 6.2.5;
# irrelevant over a stream, but 1232 is the value everything else here announces).
ADDED_OPT_UDP_SIZE = 1232
_MAX_MESSAGE = 0xFFFF  # RFC 1035 4.2.2: a TCP frame length is 16 bits

_H = struct.Struct("!H")
_OPT_OPTION = struct.Struct("!HH")


def _find_opt(msg: bytes) -> tuple[int, int, int, bool]:
    """Locate the OPT RR: (rr start, rdata start, rdata end, is last RR); start -1 if none.

    Raises WireError on a message that cannot be walked.
    """
    if len(msg) < HEADER_LEN:
        raise WireError(FORMERR, "message shorter than a header")
    qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", msg, 4)
    pos = HEADER_LEN
    for _ in range(qdcount):
        pos = skip_name(msg, pos) + 4
        if pos > len(msg):
            raise WireError(FORMERR, "question truncated")
    found = (-1, -1, -1, False)
    total = ancount + nscount + arcount
    for index in range(total):
        start = pos
        pos = skip_name(msg, pos)
        if pos + 10 > len(msg):
            raise WireError(FORMERR, "truncated resource record")
        rtype = _H.unpack_from(msg, pos)[0]
        rdlen = _H.unpack_from(msg, pos + 8)[0]
        rdata = pos + 10
        pos = rdata + rdlen
        if pos > len(msg):
            raise WireError(FORMERR, "resource record data runs past the packet")
        if rtype == TYPE_OPT and index >= ancount + nscount:
            if found[0] >= 0:
                raise WireError(FORMERR, "more than one OPT record")  # RFC 6891 6.1.1
            found = (start, rdata, pos, index == total - 1)
    if pos != len(msg):
        raise WireError(FORMERR, "trailing bytes after the last record")
    return found


def _options_without_padding(rdata: bytes) -> bytes:
    """The OPT RDATA with every padding option removed (we put in our own)."""
    out = bytearray()
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            raise WireError(FORMERR, "truncated EDNS option")
        code, length = _OPT_OPTION.unpack_from(rdata, pos)
        end = pos + 4 + length
        if end > len(rdata):
            raise WireError(FORMERR, "EDNS option runs past the OPT record")
        if code != OPT_PADDING:
            out += rdata[pos:end]
        pos = end
    return bytes(out)


def _padding_option(unpadded_len: int, block: int) -> bytes:
    """A padding option that makes a message of ``unpadded_len`` a multiple of ``block``."""
    pad = -(unpadded_len + 4) % block
    return _OPT_OPTION.pack(OPT_PADDING, pad) + bytes(pad)


def pad_query(msg: bytes, block: int = BLOCK_LENGTH) -> tuple[bytes, bool]:
    """Pad ``msg`` to a multiple of ``block`` octets with an RFC 7830 padding option.

    Returns ``(padded, added_opt)``; ``added_opt`` tells the caller to ``strip_opt`` the
    answer. A client's own padding option is replaced. A query whose OPT is followed by
    another record (TSIG or SIG(0), RFC 8945 / RFC 2931, which sign the bytes and must stay
    last) is returned unchanged: padding it would break the signature.
    Raises WireError on a message that cannot be walked.
    """
    start, rdata_start, rdata_end, is_last = _find_opt(msg)
    if start < 0:
        # No OPT: append one (root owner, type 41, class = UDP size, TTL 0: version 0, DO=0).
        arcount = _H.unpack_from(msg, 10)[0]
        if arcount == 0xFFFF:
            raise WireError(FORMERR, "no room for an OPT record")
        head = msg[:10] + _H.pack(arcount + 1) + msg[12:]
        fixed = b"\x00" + struct.pack("!HHI", TYPE_OPT, ADDED_OPT_UDP_SIZE, 0)
        options = _padding_option(len(head) + len(fixed) + 2, block)
        padded = head + fixed + _H.pack(len(options)) + options
        added = True
    else:
        if not is_last:
            return msg, False
        kept = _options_without_padding(msg[rdata_start:rdata_end])
        head = msg[: rdata_start - 2]
        options = kept + _padding_option(len(head) + 2 + len(kept), block)
        padded = head + _H.pack(len(options)) + options
        added = False
    if len(padded) > _MAX_MESSAGE:
        return msg, False
    return padded, added


def strip_opt(msg: bytes) -> bytes:
    """Remove the OPT record from an answer to a query that had none (RFC 6891 7).

    Only an OPT that is the last record is removed: nothing after it can then hold a
    compression pointer into it. Otherwise the answer is returned unchanged. The extended
    RCODE bits in the OPT TTL (RFC 6891 6.1.3) cannot be expressed without OPT; a server
    only sets them for EDNS-specific errors that a query without EDNS does not provoke.
    Raises WireError on a message that cannot be walked.
    """
    start, _rdata_start, _rdata_end, is_last = _find_opt(msg)
    if start < 0 or not is_last:
        return msg
    arcount = _H.unpack_from(msg, 10)[0]
    return msg[:10] + _H.pack(arcount - 1) + msg[12:start]
