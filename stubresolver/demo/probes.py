"""What a client in the demo's client namespace sees: `dig` for the DNS view (status, the
Extended DNS Error, the answers) and glibc's `getent hosts` for what programs get.

`parse_dig` is pure; the runners are thin.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .topology import run

_STATUS = re.compile(r"status: ([A-Z]+)")
_EDE = re.compile(r"^; EDE: (.*)$", re.M)


@dataclass(frozen=True)
class DigResult:
    status: str  # NOERROR, REFUSED, ... or "NO ANSWER" when dig got none
    ede: str  # dig's rendering of the Extended DNS Error, "" when there is none
    answers: tuple[str, ...]  # the A/AAAA addresses in the answer section

    def summary(self) -> str:
        parts = [f"status {self.status}"]
        if self.answers:
            parts.append("answer " + ", ".join(self.answers))
        if self.ede:
            parts.append(f"EDE {self.ede}")
        return "; ".join(parts)


def parse_dig(text: str) -> DigResult:
    status = _STATUS.search(text)
    ede = _EDE.search(text)
    answers: list[str] = []
    in_answer = False
    for line in text.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            in_answer = True
            continue
        if in_answer:
            fields = line.split()
            if not fields or line.startswith(";"):
                in_answer = False
                continue
            if len(fields) >= 5 and fields[3] in ("A", "AAAA"):
                answers.append(fields[4])
    return DigResult(
        status.group(1) if status else "NO ANSWER",
        ede.group(1).strip() if ede else "",
        tuple(answers),
    )


def dig(ns: str, server: str, name: str) -> DigResult:
    proc = run(
        ["ip", "netns", "exec", ns, "dig", "+time=2", "+tries=1", f"@{server}", name, "A"],
        check=False,
    )
    return parse_dig(proc.stdout)


def dig_until(
    ns: str, server: str, name: str, done: Callable[[DigResult], bool], timeout: float = 10.0
) -> DigResult:
    """Ask until `done` (the stub sees a tunnel change within moments; this only waits for
    that moment, it never accepts an outcome `done` rejects)."""
    deadline = time.monotonic() + timeout
    while True:
        result = dig(ns, server, name)
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def getent(ns: str, name: str) -> tuple[int, list[str]]:
    """glibc's view (`getent hosts`, through /etc/netns/NS/resolv.conf): status, addresses."""
    proc = run(["ip", "netns", "exec", ns, "getent", "hosts", name], check=False)
    return proc.returncode, [line.split()[0] for line in proc.stdout.splitlines() if line.split()]
