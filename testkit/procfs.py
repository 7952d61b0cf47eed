"""What /proc says about a process we started: CPU time, resident memory, and the TCP
connections it holds (Linux proc(5))."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime+stime, plus cutime+cstime (dnsmasq forks a child per TCP connection)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    return sum(int(x) for x in fields[11:15])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tcp_inodes_to(proc_net_tcp: str, ip: str, port: int) -> set[int]:
    """Socket inodes of ESTABLISHED IPv4 connections to ``ip:port`` in /proc/net/tcp text."""
    octets = [int(x) for x in ip.split(".")]
    want = f"{bytes(reversed(octets)).hex().upper()}:{port:04X}"
    out: set[int] = set()
    for line in proc_net_tcp.splitlines()[1:]:
        f = line.split()
        if len(f) >= 10 and f[2] == want and f[3] == "01":
            out.add(int(f[9]))
    return out


def upstream_connections(pid: int, ip: str, port: int) -> int:
    """Established TCP connections that process ``pid`` holds to ``ip:port`` right now."""
    try:
        inodes = tcp_inodes_to(Path(f"/proc/{pid}/net/tcp").read_text(), ip, port)
        mine = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                mine += 1
        return mine
    except OSError:
        return -1
