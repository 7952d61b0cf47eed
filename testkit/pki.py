"""A throwaway PKI made with the openssl CLI, for the DoT/DoH tests and the benchmark.

EC P-256 keys (fast to make), valid two days: a CA, a server leaf for one name and some IPs
signed by it (written as a chain file, leaf then CA, as servers want it), plus an unrelated
CA ("untrusted CA" cases) and an unrelated key ("wrong pin" cases).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    """Run the openssl CLI; RuntimeError with its stderr when it fails."""
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl is not installed (Debian package openssl)")
    done = subprocess.run([exe, *args], input=stdin, capture_output=True, check=False, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path  # the server's leaf, then the CA
    key: Path
    other_ca: Path
    other_key: Path  # a second key: pins of it must not match the server

    def pin(self, key: Path | None = None) -> str:
        """base64 SHA-256 of the SubjectPublicKeyInfo of ``key`` (default the server's)."""
        der = openssl("pkey", "-in", str(key or self.key), "-pubout", "-outform", "DER")
        return base64.b64encode(openssl("dgst", "-sha256", "-binary", stdin=der)).decode()


def make_pki(tmp: Path, auth_name: str, ips: Sequence[str], label: str = "test") -> Pki:
    """Write the PKI under ``tmp`` (created if missing); the leaf is for ``auth_name`` and
    every address in ``ips``."""
    tmp.mkdir(parents=True, exist_ok=True)

    def key(name: str) -> Path:
        path = tmp / f"{name}.key"
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", str(path))  # fmt: skip
        return path

    def ca(name: str) -> tuple[Path, Path]:
        k = key(name)
        cert = tmp / f"{name}.pem"
        openssl("req", "-x509", "-new", "-key", str(k), "-days", "2",
                "-subj", f"/CN=stubresolver {label} {name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(cert))  # fmt: skip
        return cert, k

    ca_cert, ca_key = ca("ca")
    other_ca, _ = ca("otherca")
    leaf_key = key("server")
    csr = tmp / "server.csr"
    openssl("req", "-new", "-key", str(leaf_key), "-subj", f"/CN={auth_name}", "-out", str(csr))
    ext = tmp / "server.ext"
    names = ",".join([f"DNS:{auth_name}", *(f"IP:{ip}" for ip in ips)])
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={names}\n"
    )
    leaf = tmp / "server-leaf.pem"
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(leaf))  # fmt: skip
    chain = tmp / "server.pem"
    chain.write_bytes(leaf.read_bytes() + ca_cert.read_bytes())
    return Pki(ca=ca_cert, cert=chain, key=leaf_key, other_ca=other_ca, other_key=key("other"))


def make_client_cert(tmp: Path, name: str) -> tuple[Path, Path]:
    """A TLS client leaf (extendedKeyUsage clientAuth) for ``name``, signed by the CA that
    `make_pki` wrote under ``tmp``; returns (certificate, key). For peers that verify
    their clients' purpose, as an OpenVPN TLS server does."""
    key = tmp / f"{name}.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(key))  # fmt: skip
    csr = tmp / f"{name}.csr"
    openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
    ext = tmp / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n"
    )
    cert = tmp / f"{name}.pem"
    openssl("x509", "-req", "-in", str(csr), "-CA", str(tmp / "ca.pem"),
            "-CAkey", str(tmp / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key
