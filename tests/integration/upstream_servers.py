"""Real servers for the upstream tests: unbound on a private loopback address, and a small
scripted UDP server that can misbehave (spoofing) on demand."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.message

import testkit.unbound
from testkit.unbound import Unbound, loopback_config

# 127.0.10.0/24 belongs to the upstream/tunnel tests (contracts: unique loopback ranges).
UNBOUND_ADDR = "127.0.10.1"
SCRIPT_ADDR = "127.0.10.2"

BIG_TXT_COUNT = 12
BIG_TXT_STRING = "x" * 90  # 12 x ~100 bytes: far over 512, so TC without EDNS


def _big_txt() -> list[str]:
    return [
        f"  local-data: 'big.example. 300 IN TXT \"{i:02d}{BIG_TXT_STRING}\"'"
        for i in range(BIG_TXT_COUNT)
    ]


@contextmanager
def run_unbound(tmp: Path) -> Iterator[Unbound]:
    """unbound on UNBOUND_ADDR serving the example. zone plus big.example. (TXT over 512)."""
    with testkit.unbound.run_unbound(
        tmp,
        UNBOUND_ADDR,
        lambda port: loopback_config(UNBOUND_ADDR, port, tmp, _big_txt()),
        dns.message.make_query("a.example.", "A"),
    ) as server:
        yield server


Script = Callable[["ScriptedUdpServer", bytes, tuple[str, int]], None]


@dataclass
class ScriptedUdpServer:
    """A UDP server on loopback that runs ``script`` for each datagram it receives.

    ``other`` is a second socket on the same address but another port, to send answers
    from the wrong source port.
    """

    addr: str = SCRIPT_ADDR
    script: Script | None = None
    received: list[bytes] = field(default_factory=list)
    sock: socket.socket = field(init=False)
    other: socket.socket = field(init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.addr, 0))
        self.sock.settimeout(0.05)
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind((self.addr, 0))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def __enter__(self) -> ScriptedUdpServer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()
        self.other.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(data)
            if self.script is not None:
                self.script(self, data, peer)
