"""The demo's steps, each printing what it does and ending in a verdict a person can read.

Every verdict comes from a real observation: dig and glibc in the client namespace, the ISP
resolver's own query log, and nftables counters on the ISP side (see services.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import resolvers
from .probes import DigResult, dig, dig_until, getent
from .processes import Process
from .topology import (
    ISP_C_ADDR,
    ISP_FORGED_ANSWER,
    LOAD_ZONE,
    VPN_TUN_ADDR,
    WWW_ADDR,
    WWW_NAME,
    run,
)
from .world import World

# Names a curious ISP would love to see; the plain forwarder hands every one of them over.
CONTRAST_NAMES = ("mail.example.", "my-bank.example.", "clinic.example.", "dating.example.")


def say(text: str = "") -> None:
    """Print one progress line. A reader that went away (`demo | head`) must not stop the
    demo half way, least of all its cleanup: from then on the output goes nowhere."""
    try:
        print(text, flush=True)
    except OSError:  # BrokenPipeError, or a closed terminal (EIO)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@dataclass
class Verdicts:
    results: list[tuple[str, str]] = field(default_factory=list)  # (step, PASS|FAIL|SKIP)

    def add(self, step: str, ok: bool | None, why: str) -> None:
        word = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        self.results.append((step, word))
        say(f"  => {word}: {why}")

    @property
    def failed(self) -> bool:
        return any(word == "FAIL" for _, word in self.results)


class Show:
    """Drives the world through the steps; `world.close()` (the caller's) undoes it all."""

    def __init__(self, world: World, verdicts: Verdicts) -> None:
        self.world = world
        self.verdicts = verdicts
        self.stub: Process | None = None
        self.stub_runs = 0

    # ------------------------------------------------------------------ helpers

    def _step(self, number: int, title: str) -> None:
        say(f"\n== Step {number}/6: {title}")

    def _dig(
        self, name: str = WWW_NAME, done: Callable[[DigResult], bool] | None = None
    ) -> DigResult:
        say(f"  $ dig @127.0.0.1 {name}")
        if done is None:
            result = dig(self.world.ns_c, "127.0.0.1", name)
            say(f"    {result.summary()}")
            return result
        # Asked again until the stub has seen the tunnel change; how long that took is shown.
        started = time.monotonic()
        result = dig_until(self.world.ns_c, "127.0.0.1", name, done)
        say(f"    {result.summary()}   [{time.monotonic() - started:.1f} s after the change]")
        return result

    def _getent(self, name: str = WWW_NAME) -> tuple[int, list[str]]:
        say(f"  $ getent hosts {name.rstrip('.')}      (glibc: resolv.conf says 127.0.0.1)")
        started = time.monotonic()
        code, addrs = getent(self.world.ns_c, name.rstrip("."))
        took = time.monotonic() - started
        shown = ", ".join(addrs) if addrs else f"no address (exit status {code})"
        say(f"    {shown}   [{took:.1f} s]")
        return code, addrs

    def _isp_saw(self) -> int:
        figures = self.world.leak_figures()
        queries = figures["isp_log_queries"]
        packets = figures["isp_packets_from_client"]
        say(f"  ISP resolver saw {queries} queries ({packets} DNS packets from the client)")
        return queries + packets

    def _start_stub(self) -> None:
        self.stub_runs += 1
        say("  starting stubresolver on 127.0.0.1:53 in the client namespace ...")
        self.stub = resolvers.start_stub(self.world, self.stub_runs)
        say(f"  stubresolver (pid {self.stub.pid}) answers; upstream udp://{VPN_TUN_ADDR} "
            f"through {self.world.tun_c} only")  # fmt: skip

    # ------------------------------------------------------------------ the steps

    def setup(self) -> None:
        w = self.world
        say(f"Building a throwaway world: namespaces {w.ns_c} (you), {w.ns_isp}, {w.ns_vpn};")
        say(f"  WireGuard ({w.tun_c}, wireguard-go) from you to the VPN across the ISP;")
        say(f"  the ISP's resolver (dnsmasq, logs every query) at {ISP_C_ADDR};")
        say(f"  the VPN's DNS (unbound) at {VPN_TUN_ADDR}, inside the tunnel")
        started = time.monotonic()
        w.build()
        say(f"  world built in {time.monotonic() - started:.1f} s; the tunnel carries DNS")
        self._start_stub()

    def through_the_tunnel(self) -> None:
        self._step(1, "answers come through the tunnel")
        before = self.world.vpn_log_queries()
        result = self._dig()
        _, addrs = self._getent()
        vpn = self.world.vpn_log_queries() - before
        say(f"  the VPN's resolver logged {vpn} queries from the tunnel address for these two")
        isp = self._isp_saw()
        ok = WWW_ADDR in result.answers and WWW_ADDR in addrs and vpn > 0 and isp == 0
        self.verdicts.add("1 tunnel answers", ok, f"{WWW_NAME} = {WWW_ADDR} from the VPN's DNS")

    def tunnel_down(self) -> None:
        self._step(2, "the tunnel is pulled down")
        say(f"  $ ip link set {self.world.tun_c} down")
        self.world.take_down("link-down")
        result = self._dig(done=lambda r: r.status == "REFUSED")
        _, addrs = self._getent()
        isp = self._isp_saw()
        ok = result.status == "REFUSED" and "down" in result.ede and not addrs and isp == 0
        self.verdicts.add(
            "2 tunnel down", ok, "REFUSED at once with the reason, and nothing went to the ISP"
        )

    def plain_forwarder(self) -> None:
        self._step(3, "for contrast: a plain forwarder in the stub's place (tunnel still down)")
        assert self.stub is not None
        resolvers.stop(self.stub)
        self.stub = None
        say("  stubresolver stopped; dnsmasq now listens on 127.0.0.1:53 and forwards to the")
        say(f"  servers resolv.conf named before the stub took over: the ISP's, {ISP_C_ADDR}")
        before = self.world.isp_log_queries()
        forwarder = resolvers.start_plain_forwarder(self.world)
        forged = 0
        for name in (WWW_NAME, *CONTRAST_NAMES):
            forged += ISP_FORGED_ANSWER in self._dig(name).answers
        self._getent()
        resolvers.stop(forwarder)
        say("  the ISP resolver's log now reads:")
        lines = [ln for ln in self.world.isp_log.read_text(errors="replace").splitlines()
                 if " query[" in ln]  # fmt: skip
        for line in lines[before:]:
            say("    " + line.split(": ", 1)[-1])
        seen = len(lines) - before
        say(f"  ISP resolver saw {seen} queries; {forged} answers were the ISP's forgery "
            f"{ISP_FORGED_ANSWER}")  # fmt: skip
        self.verdicts.add("3 plain forwarder", seen > 0, "every name went to the ISP: the leak")

    def tunnel_back(self) -> None:
        self._step(4, "the tunnel comes back, and stubresolver with it")
        say(f"  $ ip link set {self.world.tun_c} up")
        self.world.restore("link-down")
        before = self.world.leak_figures()
        self._start_stub()
        result = self._dig(done=lambda r: WWW_ADDR in r.answers)
        _, addrs = self._getent()
        after = self.world.leak_figures()
        new = after["isp_log_queries"] - before["isp_log_queries"]
        say(f"  ISP resolver saw {new} new queries since the stub is back")
        ok = WWW_ADDR in result.answers and WWW_ADDR in addrs and new == 0
        self.verdicts.add("4 tunnel back", ok, "answers through the tunnel again")

    # ---------------------------------------------------------------- HOOK: leaktest
    def leaktest(self) -> None:
        """HOOK for `stubresolver leaktest`: run inside the world, clean and then with a
        planted leak (resolv.conf naming the ISP). A build without the subcommand skips
        this step with a note (the demo and leaktest were written in parallel)."""
        self._step(5, "stubresolver leaktest inside the world")
        base = ["ip", "netns", "exec", self.world.ns_c, "env",
                f"PYTHONPATH={resolvers.PACKAGE_PARENT}",
                sys.executable, "-m", "stubresolver", "leaktest"]  # fmt: skip
        if run([*base, "--help"], check=False).returncode != 0:
            say("  this build has no `stubresolver leaktest`; skipped")
            self.verdicts.add("5 leaktest", None, "leaktest not in this build")
            return
        # Probes under the zone the VPN's DNS answers every name of; a short sniff window.
        argv = [*base, "--config", str(resolvers.stub_config(self.world)),
                "--probe-domain", LOAD_ZONE.rstrip("."), "--window", "1.5"]  # fmt: skip
        say("  $ stubresolver leaktest                (the setup as it is)")
        clean = run(argv, check=False, timeout=60)
        _indented(clean.stdout, keep=lambda line: not line.startswith("What this test"))
        resolv = self.world.etc_netns / "resolv.conf"
        good = resolv.read_text()
        say(f"  planting a leak: resolv.conf now names the ISP, {ISP_C_ADDR}")
        resolv.write_text(f"nameserver {ISP_C_ADDR}\n")
        try:
            say("  $ stubresolver leaktest                (with the planted leak)")
            leaky = run(argv, check=False, timeout=60)
        finally:
            resolv.write_text(good)
        _indented(leaky.stdout, keep=lambda line: any(w in line for w in _LEAK_WORDS))
        ok = clean.returncode == 0 and leaky.returncode == 1
        self.verdicts.add(
            "5 leaktest",
            ok,
            f"exit {clean.returncode} (clean) as it is, {leaky.returncode} (leak) when planted",
        )


# The lines of a failing leaktest report a newcomer needs to see.
_LEAK_WORDS = ("MISCONFIGURED", "NOT the stub", "LEAK", "SEEN", "verdict")


def _indented(text: str, keep: Callable[[str], bool]) -> None:
    for line in text.strip().splitlines():
        if line.strip() and keep(line.strip()):
            say("    " + line.rstrip())
