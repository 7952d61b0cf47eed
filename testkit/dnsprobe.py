"""A readiness probe for DNS servers the bench starts: a minimal query built by hand, and the
time until the first good answer (no dnspython, so the probe costs next to nothing)."""

from __future__ import annotations

import secrets
import socket
import struct
import subprocess
import time


def build_query(name: str, msg_id: int, qtype: int = 1) -> bytes:
    """A minimal RD query (RFC 1035 4.1) for the readiness probe."""
    qname = b"".join(
        bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split(".")
    )
    return (
        struct.pack("!HHHHHH", msg_id, 0x0100, 1, 0, 0, 0)
        + qname
        + b"\x00"
        + struct.pack("!HH", qtype, 1)
    )


def answer_ok(response: bytes, msg_id: int) -> bool:
    """True for a NOERROR response to ``msg_id`` carrying at least one answer."""
    if len(response) < 12:
        return False
    rid, flags, _qd, ancount = struct.unpack("!HHHH", response[:8])
    return rid == msg_id and bool(flags & 0x8000) and (flags & 0x000F) == 0 and ancount > 0


def wait_first_answer(
    ip: str, port: int, proc: subprocess.Popen[bytes], t0: float, name: str, limit: float = 20.0
) -> float:
    """Seconds from ``t0`` (just before exec) to the first NOERROR answer with records for
    ``name``, polling every 2 ms."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.002)
        while time.monotonic() - t0 < limit:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with status {proc.returncode} before answering")
            msg_id = secrets.randbelow(65536)
            try:
                sock.sendto(build_query(name, msg_id), (ip, port))
                deadline = time.monotonic() + 0.002
                while time.monotonic() < deadline:
                    data = sock.recv(4096)
                    if answer_ok(data, msg_id):
                        return time.monotonic() - t0
            except (TimeoutError, ConnectionRefusedError):
                pass
            except OSError:
                time.sleep(0.002)
        raise RuntimeError(f"no answer on {ip}:{port} within {limit:.0f} s")
