"""A real validating unbound serving a DNSSEC-signed test zone, for the differential test.

The zone is signed at test time with dnspython (`dns.dnssec.sign_zone`, dnspython >= 2.6) and
served by the same unbound that validates it: `auth-zone` with `for-upstream: yes` makes the
iterator take its answers from the zone file, and the validator checks them against a
`trust-anchor` for the zone (no auto-trust-anchor, no root, no network). An unsigned child
zone, delegated without a DS record, is the insecure name; one RRset whose signature we
corrupt after signing is the bogus name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.RRSIG
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

from testkit.unbound import Unbound, run_unbound, validating_config

ZONE = "difftest."
INSECURE = f"insecure.{ZONE}"
ADDR = "127.0.20.53"

# 7 strings of 250 bytes: the TXT RRset alone is over 1232 bytes (the flag-day cap).
_BIG_TXT = " ".join('"' + f"{i}" * 250 + '"' for i in range(7))
_MANY_A = "\n".join(f"many 300 IN A 192.0.2.{i}" for i in range(1, 101))

ZONE_TEXT = f"""\
$ORIGIN {ZONE}
$TTL 300
@ 300 IN SOA ns.{ZONE} host.{ZONE} 1 3600 600 86400 300
@ 300 IN NS ns.{ZONE}
ns 300 IN A {ADDR}
www 300 IN A 192.0.2.1
www 300 IN AAAA 2001:db8::1
alias 300 IN CNAME alias2.{ZONE}
alias2 300 IN CNAME www.{ZONE}
*.wild 300 IN A 192.0.2.7
big 300 IN TXT {_BIG_TXT}
{_MANY_A}
bogus 300 IN A 192.0.2.66
insecure 300 IN NS ns.insecure.{ZONE}
ns.insecure 300 IN A {ADDR}
"""

INSECURE_TEXT = f"""\
$ORIGIN {INSECURE}
$TTL 300
@ 300 IN SOA ns.{INSECURE} host.{INSECURE} 1 3600 600 86400 300
@ 300 IN NS ns.{INSECURE}
ns 300 IN A {ADDR}
host 300 IN A 192.0.2.9
"""


def _sign(tmp: Path) -> str:
    """Sign the zone into tmp/zone.signed; return the DS of its key (the trust anchor)."""
    origin = dns.name.from_text(ZONE)
    zone = dns.zone.from_text(ZONE_TEXT, origin=origin, relativize=False)
    private = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(
        private.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257
    )
    with zone.writer() as txn:
        dns.dnssec.sign_zone(
            zone,
            txn=txn,
            keys=[(private, dnskey)],
            lifetime=86400,
            add_dnskey=True,
        )
    _corrupt(zone, dns.name.from_text(f"bogus.{ZONE}"))
    (tmp / "zone.signed").write_text(zone.to_text(relativize=False))
    ds = dns.dnssec.make_ds(origin, dnskey, "SHA256")
    return f"{ZONE} IN DS {ds.to_text()}\n"


def _corrupt(zone: dns.zone.Zone, name: dns.name.Name) -> None:
    """Flip one byte of the RRSIG over name's A RRset: a bad signature, so bogus."""
    with zone.writer() as txn:
        sigs = txn.get(name, dns.rdatatype.RRSIG, dns.rdatatype.A)
        sig = next(iter(sigs))
        bad = bytearray(sig.signature)
        bad[0] ^= 0xFF
        txn.replace(name, sigs.ttl, sig.replace(signature=bytes(bad)))


@contextmanager
def run_validating_unbound(tmp: Path) -> Iterator[Unbound]:
    (tmp / "anchor.ds").write_text(_sign(tmp))
    (tmp / "insecure.zone").write_text(INSECURE_TEXT)
    with run_unbound(
        tmp,
        ADDR,
        lambda port: validating_config(ADDR, port, tmp, ZONE, INSECURE),
        dns.message.make_query(f"www.{ZONE}", "A", want_dnssec=True),
    ) as server:
        yield server
