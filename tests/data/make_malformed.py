"""Write the hostile-input corpus in tests/data/malformed/ (STYLE.md 10).

Deterministic: run `python tests/data/make_malformed.py` to regenerate; the files are
committed so a reader can inspect them with a hex viewer.
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent / "malformed"
QUESTION = b"\x03www\x07example\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


def header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0xBEEF, flags, qd, an, ns, ar)


CASES: dict[str, bytes] = {
    "empty": b"",
    "one_byte": b"\x01",
    "short_header": header()[:11],
    "header_only": header(),
    "response_qr1": header(0x8180) + QUESTION,
    "opcode_notify": header(0x2000) + QUESTION,
    "opcode_update": header(0x2800) + QUESTION,
    "qdcount_zero": header(qd=0),
    "qdcount_two": header(qd=2) + QUESTION + QUESTION,
    "qdcount_max": header(qd=0xFFFF) + QUESTION,
    "label_64": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "name_256": header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
    # 256 octets counting the root label: one over RFC 1035's limit (an off-by-one once).
    "name_256_octets": header()
    + (b"\x3f" + b"a" * 63) * 3
    + b"\x3e"
    + b"a" * 62
    + b"\x00\x00\x01\x00\x01",
    "pointer_self": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "pointer_forward": header() + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 20,
    "name_unterminated": header() + b"\x03www\x07exampl",
    "question_no_type": header() + b"\x03www\x07example\x00",
    "question_half_type": header() + b"\x03www\x07example\x00\x00",
    "arcount_no_rr": header(ar=1) + QUESTION,
    "opt_truncated": header(ar=1) + QUESTION + OPT[:5],
    "opt_rdlen_past_end": header(ar=1) + QUESTION + OPT[:-2] + b"\x00\x40",
    "two_opts": header(ar=2) + QUESTION + OPT + OPT,
    "opt_not_root": header(ar=1) + QUESTION + b"\x01a" + OPT[1:],
    "edns_version_1": header(ar=1) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x00",
    "opt_option_overrun": header(ar=1)
    + QUESTION
    + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x06\x00\x08\x00\x20\x00\x01",
    "ancount_garbage": header(an=3) + QUESTION + b"\xff" * 7,
    "arcount_huge": header(ar=0xFFFF) + QUESTION + OPT,
    "all_ones": b"\xff" * 64,
    "reserved_label_type": header() + b"\x80abc\x00\x00\x01\x00\x01",
}


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for name, data in CASES.items():
        (HERE / f"{name}.bin").write_bytes(data)


if __name__ == "__main__":
    main()
