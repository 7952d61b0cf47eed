"""`stubresolver leaktest`, the I/O: read the system's DNS settings, ask the daemon for its
state, sniff while probing, and hand every result to the pure checks and the report."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stubresolver.leaktest import systemcheck
from stubresolver.leaktest.probes import run_probes
from stubresolver.leaktest.report import (
    COULD_NOT_RUN,
    LEAK,
    MISCONFIGURED,
    OK,
    SKIPPED,
    Step,
)
from stubresolver.leaktest.sniff import Sniffer
from stubresolver.learned import tool_output

#: Names whose answer is the address the asking resolver comes from (Akamai's and
#: Google's), so the egress the world sees can be compared with the VPN provider's.
WHOAMI = (("whoami.akamai.net", "A"), ("o-o.myaddr.l.google.com", "TXT"))


@dataclass
class Options:
    probe_domain: str = "example.com"
    window: float = 3.0  # seconds of sniffing, probes included
    whoami: bool = False
    resolv_conf: Path = Path("/etc/resolv.conf")
    whoami_names: tuple[tuple[str, str], ...] = WHOAMI


def _listen(status: dict[str, Any]) -> list[tuple[str, int]]:
    found = []
    for text in status.get("listen") or []:
        host, _, port = str(text).rpartition(":")
        found.append((host.strip("[]"), int(port)))
    return found


def stub_step(status: dict[str, Any] | None, error: str | None, *, denied: bool) -> Step:
    step = Step("the stub is running", OK)
    if status is None and denied:
        step.verdict = COULD_NOT_RUN
        step.details.append(f"{error} (run leaktest as root)")
        return step
    if status is None:
        step.verdict = MISCONFIGURED
        step.details.append(error or "the daemon did not answer")
        step.details.append("nothing resolves (fail-closed), but the system is not protected")
        return step
    tunnel = status.get("tunnel") or {}
    step.details.append(f"listening on {', '.join(status.get('listen') or [])}")
    if tunnel.get("up"):
        step.details.append(f"tunnel {tunnel.get('ifname')} is up")
    else:
        step.details.append(
            f"tunnel {tunnel.get('ifname') or '-'} is down: the stub refuses, probes fail"
        )
    return step


def system_steps(status: dict[str, Any] | None, options: Options) -> list[Step]:
    if status is None:
        unknown = "the stub's addresses are unknown without its status"
        return [
            Step("resolv.conf names only the stub", COULD_NOT_RUN, [unknown]),
            Step("systemd-resolved asks only the stub", COULD_NOT_RUN, [unknown]),
        ]
    stub = [h for h, p in _listen(status) if p == 53]
    resolvectl = shutil.which("resolvectl")
    resolved_text = tool_output([resolvectl, "dns"]) if resolvectl else None
    resolved = systemcheck.check_resolved(resolved_text, stub)
    try:
        text: str | None = options.resolv_conf.read_text(errors="replace")
    except OSError:
        text = None
    resolv = systemcheck.check_resolv_conf(text, stub, via_resolved=resolved.verdict == OK)
    nmcli = shutil.which("nmcli")
    nm_text = None
    if (
        nmcli
        and (tool_output([nmcli, "-t", "-f", "RUNNING", "general"]) or "").strip() == "running"
    ):
        nm_text = tool_output(
            [nmcli, "-t", "-f", "GENERAL.DEVICE,IP4.DNS,IP6.DNS", "device", "show"]
        )
    networkmanager = systemcheck.check_networkmanager(nm_text, resolv.verdict == OK)
    return [resolv, resolved, networkmanager]


def sniff_step(status: dict[str, Any] | None, options: Options) -> Step:
    step = Step("probes while every other interface is sniffed", OK)
    tunnel = ((status or {}).get("tunnel") or {}).get("ifname")
    sniffer = Sniffer([tunnel] if tunnel else [])
    try:
        sniffer.start()
    except OSError as exc:
        step.verdict = COULD_NOT_RUN
        step.details.append(f"cannot sniff (needs root or CAP_NET_RAW): {exc}")
        return step
    started = time.monotonic()
    loopback = [(h, p) for h, p in _listen(status or {}) if h.startswith("127.") or h == "::1"]
    try:
        probes = run_probes(options.probe_domain, loopback[0] if loopback else None)
        rest = options.window - (time.monotonic() - started)
        if rest > 0:
            time.sleep(rest)
    finally:
        captures = sniffer.stop()
    skipped = ", ".join(["lo", *([tunnel] if tunnel else [])])
    step.details.append(
        f"sniffed {time.monotonic() - started:.1f} s on every interface but {skipped} "
        f"({sniffer.frames} frames)"
    )
    for probe in probes:
        step.details.append(f"probe {probe.rdtype} {probe.name} via {probe.path}: {probe.outcome}")
    names = {p.name.lower().rstrip(".") for p in probes}
    for capture in captures:
        step.verdict = LEAK
        seen = capture.seen
        ours = seen.qname is not None and seen.qname.rstrip(".") in names
        flag = " (a PROBE: the system resolver sent it outside the tunnel)" if ours else ""
        sender = f" from {capture.process}" if capture.process else ""
        step.details.append(f"SEEN {seen.describe()}{sender}{flag}")
    if not captures:
        step.details.append("no DNS, DoT or DoH packet left outside the tunnel")
    return step


def guard_step(status: dict[str, Any] | None) -> Step:
    step = Step("the guard is in place", OK)
    guard = (status or {}).get("guard") or {}
    if not guard.get("enabled"):
        step.verdict = SKIPPED
        step.details.append(
            "guard.enabled is false: other programs' own DNS (a hard-coded 8.8.8.8) is not stopped"
        )
        return step
    if not guard.get("active"):
        step.verdict = MISCONFIGURED
        step.details.append("guard.enabled is true but its table is not in place")
        return step
    step.details.append(
        f"table inet stubresolver: dropped {guard.get('dropped')}, "
        f"redirected {guard.get('redirected')}"
    )
    return step


def whoami_step(status: dict[str, Any] | None, options: Options) -> Step:
    step = Step("egress identity (whoami)", OK)
    loopback = [(h, p) for h, p in _listen(status or {}) if h.startswith("127.") or h == "::1"]
    if not loopback:
        step.verdict = SKIPPED
        step.details.append("no loopback listener to ask")
        return step
    host, port = loopback[0]
    import dns.message  # noqa: PLC0415
    import dns.query  # noqa: PLC0415

    for name, rdtype in options.whoami_names:
        try:
            reply = dns.query.udp(dns.message.make_query(name, rdtype), host, port=port, timeout=3)
        except Exception as exc:  # dnspython raises many kinds; this step only reports
            step.details.append(f"{name} {rdtype}: no answer ({exc or type(exc).__name__})")
            continue
        values = [r.to_text() for rrset in reply.answer for r in rrset]
        step.details.append(f"{name} {rdtype}: {', '.join(values) or 'no data'}")
    step.details.append("compare these resolver addresses with your VPN provider's")
    return step


def leaktest(
    status: dict[str, Any] | None, error: str | None, options: Options, *, denied: bool = False
) -> list[Step]:
    """Every step, in order. ``denied``: the daemon's status could not be read for lack of
    permission (the test could not run), not because no daemon answers (a misconfiguration)."""
    steps = [stub_step(status, error, denied=denied), *system_steps(status, options)]
    steps.append(sniff_step(status, options))
    steps.append(guard_step(status))
    if options.whoami:
        steps.append(whoami_step(status, options))
    return steps
