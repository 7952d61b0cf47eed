"""Watch every interface but loopback and the tunnel for DNS-like packets leaving, with an
AF_PACKET socket (packet(7); needs CAP_NET_RAW, no new dependency), and name the process
that sent each one when /proc can tell."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from stubresolver.leaktest.frames import Seen, parse_frame

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # linux/if_packet.h: a packet this host sent


@dataclass(frozen=True, slots=True)
class Capture:
    seen: Seen
    process: str | None  # "dig (pid 123)", when /proc names the socket's owner


class Sniffer:
    """Open with `start` (raises PermissionError without CAP_NET_RAW), read until `stop`."""

    def __init__(self, skip: Collection[str], proc: Path = Path("/proc")) -> None:
        self.skip = frozenset(skip) | {"lo"}
        self.proc = proc
        self.captures: list[Capture] = []
        self.frames = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setblocking(False)
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name="leaktest-sniff", daemon=True)
        self._thread.start()

    def stop(self) -> list[Capture]:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
        return self.captures

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            ready, _, _ = select.select([sock], [], [], 0.1)
            if not ready:
                continue
            while True:
                try:
                    frame, address = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    return
                self.frames += 1
                interface, _proto, pkttype, hatype = address[:4]
                if pkttype != PACKET_OUTGOING or interface in self.skip:
                    continue
                seen = parse_frame(frame, interface, hatype)
                if seen is not None:
                    # Now, while the sending socket most likely still exists.
                    self.captures.append(Capture(seen, owner(seen, self.proc)))


def owner(seen: Seen, proc: Path = Path("/proc")) -> str | None:
    """The process whose socket has the packet's source port (/proc/net/{udp,tcp}[6] give
    the socket inode; /proc/PID/fd links name it). None when it is gone or unreadable."""
    inode = _inode(seen, proc)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) == target:
                    comm = (pid_dir / "comm").read_text().strip()
                    return f"{comm} (pid {pid_dir.name})"
        except OSError:
            continue
    return None


def _inode(seen: Seen, proc: Path) -> str | None:
    suffix = "6" if ":" in seen.src else ""
    try:
        text = (proc / "net" / f"{seen.proto}{suffix}").read_text()
    except OSError:
        return None
    want = f":{seen.sport:04X}"
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[1].endswith(want):
            return fields[9]
    return None
