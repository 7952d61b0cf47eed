"""SPKI pins (RFC 7858 4.2, RFC 7469 2.4): the SHA-256 of a certificate's
SubjectPublicKeyInfo, found with a small DER reader of our own (no ASN.1 library).

Strict privacy profile (RFC 8310 5): when ``spki_pins`` are configured, the server must
present a key whose pin is among them, in addition to a certificate valid for its name.
"""

from __future__ import annotations

import base64
import hashlib


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
