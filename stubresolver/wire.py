"""DNS wire format on raw bytes, without I/O (DESIGN.md "wire").

The hot path reads only the header, the single question and the OPT record of a query with a
small byte reader; it never builds a message object. Full walks over resource records happen
only on the cold path: once per response inserted into the cache (to find the TTL offsets) and
when a response must be truncated. Synthesized responses (errors, local answers) are built here
too, so every synthetic answer comes from one constructor (STYLE.md 6).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from stubresolver.errors import WireError

HEADER_LEN = 12
MAX_NAME_LEN = 255  # RFC 1035 2.3.4
MAX_LABEL_LEN = 63

# RCODEs (RFC 1035 4.1.1, RFC 6891 9)
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

# RR types and classes we need by number
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_OPT = 41  # RFC 6891
CLASS_IN = 1

# EDNS option codes
OPT_ECS = 8  # RFC 7871 client subnet
OPT_COOKIE = 10  # RFC 7873 DNS cookies
OPT_PADDING = 12  # RFC 7830
OPT_EDE = 15  # RFC 8914 extended DNS error

# RFC 8914 4: INFO-CODEs used here
EDE_OTHER = 0
EDE_NETWORK_ERROR = 23
EDE_NOT_READY = 14
EDE_PROHIBITED = 18
EDE_NO_REACHABLE_AUTHORITY = 22

_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_FLAG_RD = 0x0100
_FLAG_RA = 0x0080
_FLAG_AD = 0x0020
_FLAG_CD = 0x0010
_OPCODE_MASK = 0x7800
_EDNS_DO = 0x8000

# The default UDP payload size we offer clients in our OPT records and cap UDP replies at
# (RFC 6891 6.2.5; 1232 is the DNS flag day 2020 value that avoids IP fragmentation);
# `server.udp_max_payload` overrides it.
OUR_UDP_PAYLOAD = 1232

# Bits of the cache and single-flight key (the last four bytes of `Query.key`). Every query
# bit that changes what the upstream answers is one of them, so an entry or a flight is only
# shared by queries the upstream would answer alike: DO and CD (RFC 4035 3.2), EDNS presence
# (RFC 6891 7: OPT only to a client that sent one), AD (RFC 6840 5.7: AD=1 asks for the AD
# bit without DO) and RD (RFC 1035 4.1.1: RD=0 gets no recursion, RFC 1034 4.3.1).
KEY_DO = 1
KEY_CD = 2
KEY_EDNS = 4
KEY_AD = 8
KEY_RD = 16
KEY_ALL = KEY_DO | KEY_CD | KEY_EDNS | KEY_AD | KEY_RD

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_HHI = struct.Struct("!HHI")
_HEADER = struct.Struct("!HHHHHH")
_I = struct.Struct("!I")
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


@dataclass(slots=True)
class Query:
    """What the hot path needs from a query, read once from the raw bytes."""

    msg_id: int
    flags: int
    qname: bytes  # wire form, the client's case
    qtype: int
    qclass: int
    question_end: int  # offset just past QCLASS
    has_edns: bool
    udp_size: int  # the client's UDP limit: 512 without EDNS (RFC 1035 4.2.1)
    do: bool  # DNSSEC OK (RFC 3225)
    has_ecs: bool  # an EDNS client subnet option is present (RFC 7871)
    has_cookie: bool  # a DNS COOKIE option is present (RFC 7873)
    opt_at: int  # offset of the OPT record's CLASS field (the UDP size); 0 without EDNS
    qname_lower: bytes  # the name lower-cased (names compare case-insensitively, RFC 4343)
    key: bytes  # see cache_key(); computed once here because every layer needs it

    @property
    def cd(self) -> bool:
        return bool(self.flags & _FLAG_CD)

    @property
    def rd(self) -> bool:
        return bool(self.flags & _FLAG_RD)

    def cache_key(self) -> bytes:
        """Lower-cased question plus the DO, CD, AD and RD bits and EDNS presence (KEY_*).

        Answers differ on DO and CD, on AD (RFC 6840 5.7) and on RD; and a client that sent
        EDNS must get an OPT record back (RFC 6891 7) while one that did not must not, so the
        two never share an entry.
        """
        return self.key

    def question_key(self) -> bytes:
        return self.qname_lower + _HH.pack(self.qtype, self.qclass)


def cache_key_with(query: Query, bits: int) -> bytes:
    """The cache key of this question asked with other KEY_* bits (``explain`` looks up
    every form); `parse_query` builds the same layout inline."""
    return query.qname_lower + _HHI.pack(query.qtype, query.qclass, bits)


def _read_name_uncompressed(data: bytes, pos: int) -> int:
    """Return the offset past a name that must not use compression (a query's QNAME).

    RFC 1035 4.1.4 allows pointers, but a question is the first name in a message, so a
    pointer can only point forwards or at itself: always malformed in a query.
    """
    end = len(data)
    total = 0
    while True:
        if pos >= end:
            raise WireError(FORMERR, "question name runs past the packet")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length > MAX_LABEL_LEN:
            raise WireError(FORMERR, "compressed or invalid label in question")
        total += length + 1
        if total >= MAX_NAME_LEN:  # plus the root's zero octet: at most 255 in all
            raise WireError(FORMERR, "question name longer than 255 octets")
        pos += length + 1


def skip_name(data: bytes, pos: int) -> int:
    """Return the offset past a possibly compressed name (RFC 1035 4.1.4)."""
    end = len(data)
    while True:
        if pos >= end:
            raise WireError(FORMERR, "name runs past the packet")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise WireError(FORMERR, "truncated compression pointer")
            return pos + 2
        if length > MAX_LABEL_LEN:
            raise WireError(FORMERR, "invalid label type")
        pos += length + 1


def _skip_rr(data: bytes, pos: int) -> tuple[int, int, int]:
    """Skip one RR; return (type, offset of its TTL field, offset past the RR)."""
    pos = skip_name(data, pos)
    if pos + 10 > len(data):
        raise WireError(FORMERR, "truncated resource record")
    rtype = _H.unpack_from(data, pos)[0]
    rdlen = _H.unpack_from(data, pos + 8)[0]
    end = pos + 10 + rdlen
    if end > len(data):
        raise WireError(FORMERR, "resource record data runs past the packet")
    return rtype, pos + 4, end


def parse_query(data: bytes) -> Query:
    """Validate a query from a client and read what the hot path needs.

    Raises WireError with the RCODE to answer (FORMERR, NOTIMP, BADVERS) or ``None`` to drop.
    """
    if len(data) < HEADER_LEN:
        raise WireError(None, "packet shorter than a DNS header")
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & _FLAG_QR:
        # A response sent to our listener: answering it could start a reflection loop.
        raise WireError(None, "QR=1: not a query")
    if flags & _OPCODE_MASK:
        raise WireError(NOTIMP, "opcode not supported")
    if qdcount != 1:
        # RFC 9619: QDCOUNT must be 1 for QUERY.
        raise WireError(FORMERR, "QDCOUNT is not 1")
    qend = _read_name_uncompressed(data, HEADER_LEN)
    if qend + 4 > len(data):
        raise WireError(FORMERR, "question truncated")
    qtype, qclass = _HH.unpack_from(data, qend)
    question_end = qend + 4
    has_edns = False
    udp_size = 512
    do = False
    has_ecs = False
    has_cookie = False
    opt_at = 0
    if ancount or nscount:
        # A query carries no answer or authority records (RFC 1035 4.1.1); unbound answers
        # such a "query" FORMERR too, and forwarding it would let one client's odd packet
        # decide the answer every client of the flight gets.
        raise WireError(FORMERR, "answer or authority records in a query")
    pos = question_end
    if arcount:
        for _ in range(arcount):
            name_at = pos
            rtype, ttl_at, pos = _skip_rr(data, pos)
            if rtype != TYPE_OPT:
                continue
            if has_edns:
                raise WireError(FORMERR, "more than one OPT record")  # RFC 6891 6.1.1
            if data[name_at] != 0:
                raise WireError(FORMERR, "OPT owner is not the root")
            has_edns = True
            opt_at = ttl_at - 2
            udp_size = max(512, _H.unpack_from(data, opt_at)[0])
            ext = _I.unpack_from(data, ttl_at)[0]
            do = bool(ext & _EDNS_DO)
            if (ext >> 16) & 0xFF != 0:
                raise WireError(BADVERS, "EDNS version not supported")  # RFC 6891 6.1.3
            if pos > ttl_at + 6:  # options present: one scan for the two we strip
                has_ecs, has_cookie = _find_stripped(data, ttl_at + 6, pos)
    if pos != len(data):
        # Bytes after the last record: not a DNS message (BIND says "trailing garbage").
        # Forwarded, they would reach the upstream under every waiting client's question.
        raise WireError(FORMERR, "bytes after the last record")
    qname = data[HEADER_LEN:qend]
    lower = qname.translate(_LOWER)
    bits = (
        (KEY_DO if do else 0)
        | (KEY_CD if flags & _FLAG_CD else 0)
        | (KEY_EDNS if has_edns else 0)
        | (KEY_AD if flags & _FLAG_AD else 0)
        | (KEY_RD if flags & _FLAG_RD else 0)
    )
    key = lower + _HHI.pack(qtype, qclass, bits)
    # Positional: this runs for every packet, and keyword binding costs measurably.
    return Query(
        msg_id,
        flags,
        qname,
        qtype,
        qclass,
        question_end,
        has_edns,
        udp_size,
        do,
        has_ecs,
        has_cookie,
        opt_at,
        lower,
        key,
    )


def _find_stripped(data: bytes, pos: int, end: int) -> tuple[bool, bool]:
    """Whether the options from ``pos`` to ``end`` hold ECS, and a COOKIE.

    The options must fill the OPT RDATA exactly (RFC 6891 6.1.2: {code, length, data}
    triples); one that runs past it is FORMERR, never forwarded."""
    ecs = cookie = False
    while pos + 4 <= end:
        opt_code, opt_len = _HH.unpack_from(data, pos)
        if opt_code == OPT_ECS:
            ecs = True
        elif opt_code == OPT_COOKIE:
            cookie = True
        pos += 4 + opt_len
    if pos != end:
        raise WireError(FORMERR, "EDNS option runs past the OPT record")
    return ecs, cookie


def get_id(msg: bytes) -> int:
    if len(msg) < 2:
        raise WireError(None, "message shorter than an ID")
    return int(_H.unpack_from(msg)[0])


def with_id(msg: bytes, msg_id: int) -> bytes:
    return _H.pack(msg_id) + msg[2:]


def is_truncated(msg: bytes) -> bool:
    return len(msg) >= 4 and bool(msg[2] & 0x02)


def is_response(msg: bytes) -> bool:
    return len(msg) >= 4 and bool(msg[2] & 0x80)


def has_question(msg: bytes, key: bytes) -> bool:
    """True when ``msg`` carries exactly one question equal to ``key`` (a `question_key`).

    Hot path for matching answers: compares bytes in place instead of parsing. Only label
    bytes are lower-cased (length octets are below 64, so case folding cannot touch them);
    QTYPE and QCLASS compare raw, since their bytes are numbers, not letters.
    """
    name_len = len(key) - 4
    end = HEADER_LEN + name_len
    return (
        len(msg) >= end + 4
        and msg[4] == 0
        and msg[5] == 1
        and msg[HEADER_LEN:end].translate(_LOWER) == key[:name_len]
        and msg[end : end + 4] == key[name_len:]
    )


def question_key(msg: bytes) -> bytes:
    """Lower-cased QNAME + QTYPE + QCLASS of the first question (matching and keys)."""
    if len(msg) < HEADER_LEN:
        raise WireError(FORMERR, "message shorter than a header")
    if _H.unpack_from(msg, 4)[0] < 1:
        raise WireError(FORMERR, "no question")
    qend = _read_name_uncompressed(msg, HEADER_LEN)
    if qend + 4 > len(msg):
        raise WireError(FORMERR, "question truncated")
    return msg[HEADER_LEN:qend].translate(_LOWER) + msg[qend : qend + 4]


# --- responses -------------------------------------------------------------------------


def _opt_rr(udp_size: int, do: bool, options: bytes = b"", ext_rcode: int = 0) -> bytes:
    """An OPT pseudo-RR (RFC 6891 6.1.2): root owner, type 41, class = UDP size."""
    ttl = (ext_rcode << 24) | (_EDNS_DO if do else 0)
    return b"\x00" + _HHI.pack(TYPE_OPT, udp_size, ttl) + _H.pack(len(options)) + options


def ede_option(info_code: int, text: str) -> bytes:
    """An Extended DNS Error option (RFC 8914 2): INFO-CODE then UTF-8 EXTRA-TEXT."""
    body = _H.pack(info_code) + text.encode("utf-8")
    return _HH.pack(OPT_EDE, len(body)) + body


def build_response(
    query: Query,
    data: bytes,
    rcode: int,
    *,
    answers: bytes = b"",
    ancount: int = 0,
    authority: bytes = b"",
    nscount: int = 0,
    ede: tuple[int, str] | None = None,
    aa: bool = False,
    payload: int = OUR_UDP_PAYLOAD,
) -> bytes:
    """Build a response to ``query`` (whose raw bytes are ``data``).

    The question is echoed as the client sent it. An OPT record is added only when the client
    sent one (RFC 6891 7); the EDE option rides in it (RFC 8914 3: EDE needs EDNS). It
    advertises ``payload``, our UDP cap (RFC 6891 6.2.3).
    """
    flags = _FLAG_QR | _FLAG_RA | (query.flags & (_FLAG_RD | _FLAG_CD))
    if aa:
        flags |= _FLAG_AA
    extended = rcode >> 4
    flags |= rcode & 0x0F
    additional = b""
    arcount = 0
    if query.has_edns:
        options = ede_option(*ede) if ede is not None else b""
        additional = _opt_rr(payload, query.do, options, extended)
        arcount = 1
    header = _HEADER.pack(query.msg_id, flags, 1, ancount, nscount, arcount)
    return header + data[HEADER_LEN : query.question_end] + answers + authority + additional


def _readable_question(data: bytes) -> bytes:
    """The single question of a rejected packet when it can be read, else empty."""
    if _H.unpack_from(data, 4)[0] != 1:
        return b""
    try:
        qend = _read_name_uncompressed(data, HEADER_LEN)
    except WireError:
        return b""
    return data[HEADER_LEN : qend + 4] if qend + 4 <= len(data) else b""


def error_response(data: bytes, error: WireError, payload: int = OUR_UDP_PAYLOAD) -> bytes | None:
    """The answer to a query ``parse_query`` rejected, or None when it must be dropped.

    The ID, opcode and RD bit are echoed (RFC 1035 4.1.1), and the question when it can be
    read so the client can match the answer; otherwise just the header. BADVERS needs an
    OPT record to carry the upper RCODE bits (RFC 6891 6.1.3). NOTIMP is shaped as unbound
    answers an opcode it does not implement: RA clear (we offer no recursion for it), and an
    OPT with the query's DO bit when the query had one (RFC 6891 7).
    """
    if error.rcode is None or len(data) < HEADER_LEN:
        return None
    msg_id, flags = _HH.unpack_from(data)
    question = _readable_question(data)
    out_flags = _FLAG_QR | (flags & (_OPCODE_MASK | _FLAG_RD)) | (error.rcode & 0x0F)
    opt = b""
    if error.rcode == NOTIMP:
        query_opt = _query_opt_ttl(data, len(question)) if question else None
        if query_opt is not None:
            opt = _opt_rr(payload, bool(query_opt & _EDNS_DO))
    else:
        out_flags |= _FLAG_RA
        if error.rcode > 15:
            opt = _opt_rr(payload, False, b"", error.rcode >> 4)
    header = _HEADER.pack(msg_id, out_flags, 1 if question else 0, 0, 0, 1 if opt else 0)
    return header + question + opt


def _query_opt_ttl(data: bytes, question_len: int) -> int | None:
    """The TTL field (extended flags) of a rejected query's OPT record, None if it has none
    or its records cannot be read (then it gets no OPT back: best effort, cold path)."""
    _, _, _, ancount, nscount, arcount = _HEADER.unpack_from(data)
    pos = HEADER_LEN + question_len
    try:
        for index in range(ancount + nscount + arcount):
            rtype, ttl_at, pos = _skip_rr(data, pos)
            if rtype == TYPE_OPT and index >= ancount + nscount:
                return int(_I.unpack_from(data, ttl_at)[0])
    except WireError:
        return None
    return None


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = CLASS_IN) -> bytes:
    """One resource record in wire form; ``owner`` is a wire-form name or a pointer."""
    return owner + _HHI.pack(rtype, rclass, ttl) + _H.pack(len(rdata)) + rdata


QUESTION_POINTER = b"\xc0\x0c"  # compression pointer to the question name at offset 12


def encode_name(name: str) -> bytes:
    """Presentation-form name -> wire form (ASCII labels only; for our own synthetic data)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


# Label bytes printed as themselves in presentation form; everything else is escaped.
_PLAIN_LABEL = re.compile(rb"[!-\[\]-~]*")  # 0x21-0x7E except "\\"; "." handled below


def decode_name(wire_name: bytes) -> str:
    """Wire-form uncompressed name -> lower-case presentation form with trailing dot.

    A label may hold any byte (RFC 2181 11), so a crafted name could carry a newline or an
    escape sequence into the query log and forge lines there. Bytes outside printable ASCII,
    and "." and "\\" inside a label, are written as RFC 1035 5.1 escapes (``\\DDD``, ``\\.``).
    """
    labels: list[str] = []
    pos = 0
    while pos < len(wire_name) and wire_name[pos]:
        length = wire_name[pos]
        label = wire_name[pos + 1 : pos + 1 + length].lower()
        if _PLAIN_LABEL.fullmatch(label) and b"." not in label:
            labels.append(label.decode("ascii"))
        else:
            labels.append("".join(_escape_byte(b) for b in label))
        pos += length + 1
    return ".".join(labels) + "."


def _escape_byte(value: int) -> str:
    if value in (0x2E, 0x5C):  # "." and "\\"
        return "\\" + chr(value)
    if 0x21 <= value <= 0x7E:
        return chr(value)
    return f"\\{value:03d}"


# --- responses from upstreams: TTLs, truncation ------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """Found once per response on insert into the cache (cold path)."""

    rcode: int
    ttl_offsets: tuple[int, ...]  # offsets of every TTL field except OPT's
    ttl: int  # how long the whole response may be cached
    ancount: int
    negative: bool  # NXDOMAIN, or NOERROR with no answer (NODATA, RFC 2308 2.2)


def scan_response(msg: bytes, negative_max_ttl: int = 3600) -> ResponseInfo:
    """Walk a response once: TTL field offsets, the cacheable TTL, RFC 2308 negativity.

    For a negative answer the TTL is min(SOA TTL, SOA MINIMUM) of the authority SOA
    (RFC 2308 5); a negative answer without a SOA is not cacheable (TTL 0, RFC 2308 5).
    """
    if len(msg) < HEADER_LEN:
        raise WireError(FORMERR, "response shorter than a header")
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    rcode = flags & 0x0F
    pos = HEADER_LEN
    for _ in range(qdcount):
        pos = skip_name(msg, pos) + 4
        if pos > len(msg):
            raise WireError(FORMERR, "question truncated")
    offsets: list[int] = []
    min_ttl: int | None = None
    soa_ttl: int | None = None
    for index in range(ancount + nscount + arcount):
        rtype, ttl_at, end = _skip_rr(msg, pos)
        if rtype != TYPE_OPT:
            offsets.append(ttl_at)
            ttl = _I.unpack_from(msg, ttl_at)[0] & 0x7FFFFFFF  # RFC 2181 8: top bit -> 0
            if index < ancount:
                min_ttl = ttl if min_ttl is None else min(min_ttl, ttl)
            elif index < ancount + nscount and rtype == TYPE_SOA and end - 4 >= ttl_at + 6:
                minimum = _I.unpack_from(msg, end - 4)[0]
                soa_ttl = min(ttl, minimum)
        pos = end
    negative = rcode == NXDOMAIN or (rcode == NOERROR and ancount == 0)
    if negative:
        cache_ttl = min(soa_ttl, negative_max_ttl) if soa_ttl is not None else 0
    else:
        cache_ttl = min_ttl if min_ttl is not None else 0
    return ResponseInfo(rcode, tuple(offsets), cache_ttl, ancount, negative)


def patch_response(
    msg: bytes, msg_id: int, qname: bytes, ttl_offsets: tuple[int, ...], elapsed: int
) -> bytes:
    """A cached response made ready for one client: its ID, its question's case, TTLs aged.

    The question name is replaced with the client's spelling (same length, only case differs)
    so clients that check 0x20 case randomisation accept it.
    """
    out = bytearray(msg)
    _H.pack_into(out, 0, msg_id)
    out[HEADER_LEN : HEADER_LEN + len(qname)] = qname
    if elapsed:
        for at in ttl_offsets:
            ttl = _I.unpack_from(out, at)[0] & 0x7FFFFFFF
            _I.pack_into(out, at, ttl - elapsed if ttl > elapsed else 0)
    return bytes(out)


def truncate(msg: bytes, limit: int) -> bytes:
    """Fit a response into ``limit`` bytes for UDP, setting TC (RFC 2181 9, RFC 6891 7).

    We drop every record rather than send a partial RRset, keep the question so the client can
    match the answer, and keep the OPT record so the client still sees EDNS and the rcode bits.
    """
    if len(msg) <= limit:
        return msg
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    # Upstream answers are checked only for ID and question, so the records may not parse:
    # the client still gets a TC answer (and retries over TCP), never nothing.
    try:
        pos = HEADER_LEN
        for _ in range(qdcount):
            pos = skip_name(msg, pos) + 4
        if pos > len(msg):
            raise WireError(FORMERR, "question truncated")
    except WireError:
        return _HEADER.pack(get_id(msg), flags | _FLAG_TC, 0, 0, 0, 0)
    question = msg[HEADER_LEN:pos]
    opt = b""
    rr_pos = pos
    try:
        for index in range(ancount + nscount + arcount):
            start = rr_pos
            rtype, _, rr_pos = _skip_rr(msg, rr_pos)
            if rtype == TYPE_OPT and index >= ancount + nscount:
                opt = msg[start:rr_pos]
    except WireError:
        opt = b""
    out = _HEADER.pack(get_id(msg), flags | _FLAG_TC, qdcount, 0, 0, 1 if opt else 0)
    out = out + question + opt
    return out if len(out) <= limit else out[:10] + b"\x00\x00" + question  # ARCOUNT 0


def outgoing_query(data: bytes, query: Query, payload: int) -> bytes:
    """The query as we send it upstream: our UDP size, without ECS or COOKIE options.

    - The OPT advertises ``payload``, our own UDP cap, not the client's size: one upstream
      answer serves every client of the flight and the cache whatever they advertised, a
      truncated UDP answer is retried over TCP anyway, and a tunnel fragments what is larger
      (DNS flag day 2020). So the upstream is asked as we would answer: at most our cap.
    - ECS: the client's subnet never leaves the machine (RFC 7871 7.1.2: a stub may strip).
    - COOKIE: a cookie is bound to one client-server pair (RFC 7873 5.1); we talk to the
      upstream as ourselves, so the client's cookie is never forwarded.

    Hot path: a query without EDNS goes as it is; one with EDNS costs a two-byte patch. Only
    queries carrying ECS or a cookie pay for the rewrite.
    """
    if not query.has_edns:
        return data
    at = query.opt_at
    if query.has_ecs or query.has_cookie:
        data = _strip_options(data, query, (OPT_ECS, OPT_COOKIE))
    if _H.unpack_from(data, at)[0] == payload:
        return data
    out = bytearray(data)
    _H.pack_into(out, at, payload)
    return bytes(out)


def strip_ecs(data: bytes, query: Query) -> bytes:
    """Remove EDNS Client Subnet options from a query (RFC 7871 7.1.2: a stub may strip)."""
    return _strip_options(data, query, (OPT_ECS,)) if query.has_ecs else data


def _strip_options(data: bytes, query: Query, codes: tuple[int, ...]) -> bytes:
    """Remove the EDNS options with these codes from a query (cold path). The OPT record
    keeps its place, so `Query.opt_at` stays valid."""
    _, _, _, ancount, nscount, arcount = _HEADER.unpack_from(data)
    pos = query.question_end
    for _ in range(ancount + nscount):
        pos = _skip_rr(data, pos)[2]
    out = bytearray(data[:pos])
    for _ in range(arcount):
        start = pos
        rtype, ttl_at, pos = _skip_rr(data, pos)
        if rtype != TYPE_OPT:
            out += data[start:pos]
            continue
        options = bytearray()
        opt_pos = ttl_at + 6
        while opt_pos + 4 <= pos:
            code, length = _HH.unpack_from(data, opt_pos)
            if code not in codes:
                options += data[opt_pos : opt_pos + 4 + length]
            opt_pos += 4 + length
        out += data[start : ttl_at + 4] + _H.pack(len(options)) + options
    return bytes(out)


def shape_answer(msg: bytes, key: bytes, payload: int) -> bytes:
    """An upstream answer made fit for the clients of ``key`` (a `Query.key`), once per
    forward before it is cached; raises WireError when its records cannot be read.

    - AD only when the query had AD or DO set (RFC 6840 5.7, 5.8) and the upstream set it.
    - No OPT to a client that sent none (RFC 6891 7), whatever the upstream added (an OPT
      added for padding, a SERVFAIL that carries one).
    - The OPT we pass on advertises our UDP cap, as our own answers do (RFC 6891 6.2.3).
    The caller has checked the question (`has_question`), so QDCOUNT is 1.
    """
    bits = key[-1]
    out = bytearray(msg)
    if not bits & (KEY_AD | KEY_DO):
        out[3] &= ~_FLAG_AD & 0xFF
    if not bits & KEY_EDNS and not msg[10] and not msg[11]:
        return bytes(out)  # no additional records: nothing to find
    _, _, _, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    pos = skip_name(msg, HEADER_LEN) + 4
    for _ in range(ancount + nscount):
        pos = _skip_rr(msg, pos)[2]
    for _ in range(arcount):
        start = pos
        rtype, ttl_at, pos = _skip_rr(msg, pos)
        if rtype != TYPE_OPT:
            continue
        if bits & KEY_EDNS:
            _H.pack_into(out, ttl_at - 2, payload)
            return bytes(out)
        del out[start:pos]
        _H.pack_into(out, 10, arcount - 1)
        return bytes(out)
    return bytes(out)


def set_opt_payload(msg: bytes, payload: int) -> bytes:
    """``msg`` with its OPT record advertising ``payload`` (our own answers, cold path)."""
    _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    pos = HEADER_LEN
    for _ in range(qdcount):
        pos = skip_name(msg, pos) + 4
    for index in range(ancount + nscount + arcount):
        rtype, ttl_at, pos = _skip_rr(msg, pos)
        if rtype == TYPE_OPT and index >= ancount + nscount:
            out = bytearray(msg)
            _H.pack_into(out, ttl_at - 2, payload)
            return bytes(out)
    return msg


# --- TCP framing (RFC 1035 4.2.2, RFC 7766 8) --------------------------------------------


def tcp_frame(msg: bytes) -> bytes:
    return _H.pack(len(msg)) + msg


class TcpDeframer:
    """Reassembles length-prefixed messages from a byte stream split at any boundary."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            length = (buf[pos] << 8) | buf[pos + 1]
            if len(buf) - pos - 2 < length:
                break
            out.append(bytes(buf[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete message."""
        return len(self._buf)
