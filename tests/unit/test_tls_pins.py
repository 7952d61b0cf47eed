"""SPKI pins (RFC 7858 4.2, RFC 7469): our DER walk against pins openssl computed, and
hostile certificates as data; the TLS context."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from stubresolver.upstream.pins import spki_der, spki_pin
from stubresolver.upstream.tlscontext import make_context

# A P-256 leaf and a self-signed RSA-2048 certificate (long-form DER lengths). The pins are
# from `openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER |
# openssl dgst -sha256 -binary | base64`, not from our code.
EC_LEAF = """\
-----BEGIN CERTIFICATE-----
MIIB2zCCAYKgAwIBAgIUJIbvXIzoDNkeGfWWnqk7WoTUOQwwCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUc3R1YnJlc29sdmVyIHRlc3QgY2EwHhcNMjYxMTI1MjA1MjA0
WhcNMjYxMTI3MjA1MjA0WjAbMRkwFwYDVQQDDBBkbnMudGVzdC5leGFtcGxlMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdRaBreYcHcmmCkEBaXZMjfOjTpVi8yf+
nTxgYFo/EdsT8moaZ4Gyml0TA705cfii0y49J/TTuFGqjLA57ijVlqOBnzCBnDAM
BgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcD
ATAnBgNVHREEIDAeghBkbnMudGVzdC5leGFtcGxlhwR/AB4BhwR/AB4CMB0GA1Ud
DgQWBBRppxtbxwgz5rdsT70/KnDUWYGAwTAfBgNVHSMEGDAWgBT8pEndtGXbS8vb
hRuRIR9VoSvcGTAKBggqhkjOPQQDAgNHADBEAiBc7E+iu+o2V9B9GJH8Vz0L8Ntw
cjR0JyPXpam045VBewIgBf0PmWEg9sk8pp5QU9dY4S1UYcvED05zpgGiTp+s4YY=
-----END CERTIFICATE-----
"""
EC_LEAF_PIN = "OyxbsUjUUZbti3oMg73qfDX5HWSMOkUEUQTfaIOjjgE="
RSA_CERT = """\
-----BEGIN CERTIFICATE-----
MIIDDTCCAfWgAwIBAgIUVpx2EzjJp1Gf1/NLYKprYuazfY4wDQYJKoZIhvcNAQEL
BQAwFjEUMBIGA1UEAwwLcnNhLmV4YW1wbGUwHhcNMjYxMTI1MjA1MjIyWhcNMzYx
MTIyMjA1MjIyWjAWMRQwEgYDVQQDDAtyc2EuZXhhbXBsZTCCASIwDQYJKoZIhvcN
AQEBBQADggEPADCCAQoCggEBAL8yvzl1xE8na3GeEWCaGT146IvLC83gmSJXHI/j
7du5mIWCntunnLIUFmcXvPM9gD03+9dgZiqNlpgYeW0qXOh/sAst8JQ5DX2NAi4z
ZHeYyjs7T385YhI9Za2wwXviXy09ZJ7prlavm5lInF9GaHKo5WjMSEr8g+t1sBkH
fJC+UBm9qS3NAU5yR4wzA98a2F8LCvCREW4ODkviu4GdUKfjHr9CtqvxzHKV45RI
jMgz/X+G6451zfsself52pn0VzbKDiHAS1EWVaNOOnxDwPqe5m9xHU73b6Gw5LX5
41fYo2XTVDRRVJHftZW62RfI/f4Xi3Z1k82RbHdFlL6fkWMCAwEAAaNTMFEwHQYD
VR0OBBYEFETPlVkzCsLAe7jM6AMirBG0gqIkMB8GA1UdIwQYMBaAFETPlVkzCsLA
e7jM6AMirBG0gqIkMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEB
AFOOtkZqwK8D9MvCTI2rRmbBy6JJEd9hwZeyWwG098/de8K7mBReFcbCrdisSgx6
uDZdIZ0S+K5rFUO+fm3JLyhiiYQry+5LaB5WanIkaW2FcMRX02QZ/lxaTTbvcZ4e
RM00LKKsnztRn2nu/MOkgWjWmwLPB14f0QMs/sV1pseeF2Y5WlBWDJpYgouvNFwo
/jD6YrBG0mRfbRFk84Mz240dMHsp8EsTal3cI84WecVGPxFP67CvpvLYJrZk5j4o
4L0g8wx10mCjGLF7b4W24ZU/eLFcIqmQLmM4tiKK2tdk8XO2ha7dPmkHvFN78Hhc
uLwL1VPdQbuKS9KKteLD3DQ=
-----END CERTIFICATE-----
"""
RSA_CERT_PIN = "2PN6kCWAqBWQD2pMRjswORF9PTadx49UR3lA4lyNWpY="


def der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


@pytest.mark.parametrize(("pem", "pin"), [(EC_LEAF, EC_LEAF_PIN), (RSA_CERT, RSA_CERT_PIN)])
def test_pin_matches_openssl(pem: str, pin: str) -> None:
    assert spki_pin(der(pem)) == pin


def test_spki_is_a_sequence_inside_the_certificate() -> None:
    cert = der(RSA_CERT)
    spki = spki_der(cert)
    assert spki[0] == 0x30
    assert spki in cert
    assert b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01" in spki  # rsaEncryption OID


@pytest.mark.parametrize("pem", [EC_LEAF, RSA_CERT])
def test_truncated_certificates_raise_value_error(pem: str) -> None:
    # Hostile input: every truncation either raises ValueError or (once past the SPKI)
    # still finds the same SPKI; never another exception, never a wrong key.
    cert = der(pem)
    good = spki_der(cert)
    for cut in range(len(cert)):
        try:
            found = spki_der(cert[:cut])
        except ValueError:
            continue
        assert found == good


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x30", b"\x31\x00", b"\x30\x80", b"\x30\x85\x00\x00\x00\x00\x01", b"\x30\x02\x02\x00",
     b"\x1f\x00", b"\x30\x03\x30\x01\x00"],
)  # fmt: skip
def test_malformed_der_raises_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        spki_der(blob)


def test_wrong_tags_in_tbs_raise_value_error() -> None:
    cert = bytearray(der(EC_LEAF))
    # The serial number INTEGER follows the [0] version element; make it an OCTET STRING.
    idx = cert.index(b"\xa0\x03\x02\x01\x02") + 5
    assert cert[idx] == 0x02
    cert[idx] = 0x04
    with pytest.raises(ValueError):
        spki_der(bytes(cert))


def test_context_is_strict() -> None:
    ctx = make_context(None, ("h2",))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_context_with_ca_file_trusts_only_it(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(RSA_CERT)
    ctx = make_context(str(ca))
    assert len(ctx.get_ca_certs()) == 1
