"""The guard's I/O: `nft -f -` transactions for the table `ruleset.py` renders, and its
counters read back as JSON. Each change is one transaction, so the kernel applies all of it
or none (nft(8) "-f": a file is one atomic batch)."""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import subprocess
from collections.abc import Sequence

from stubresolver.config import GuardConfig, ListenAddress
from stubresolver.errors import GuardError
from stubresolver.guard import ruleset
from stubresolver.guard.ruleset import GuardPlan

log = logging.getLogger("stubresolver.guard")

NFT_TIMEOUT_S = 10.0


def nft_path() -> str:
    path = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if path is None:
        raise GuardError("guard.enabled needs nft (Debian/Ubuntu: apt-get install nftables)")
    return path


def run_nft(script: str, *, args: Sequence[str] = ("-f", "-")) -> str:
    try:
        done = subprocess.run(
            [nft_path(), *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuardError(f"nft could not run: {exc}") from None
    if done.returncode != 0:
        raise GuardError(f"nft rejected the guard: {done.stderr.strip() or done.returncode}")
    return done.stdout


def table_exists() -> bool:
    try:
        run_nft("", args=("list", "table", ruleset.FAMILY, ruleset.TABLE))
    except GuardError:
        return False
    return True


def remove_table() -> bool:
    """Delete our table if it is there; True when one was removed. Nothing else is touched."""
    if not table_exists():
        return False
    run_nft(ruleset.REMOVE)
    return True


def remove_if_there() -> bool:
    """`restore` and `uninstall`: our table goes too (a lockdown's, or a crashed daemon's).
    False, doing nothing, where nft is not installed: then no guard can be loaded here."""
    try:
        nft_path()
    except GuardError:
        return False
    return remove_table()


def redirect_targets(
    listen: Sequence[ListenAddress],
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The first loopback IPv4 and IPv6 addresses the stub listens on: where stray DNS goes
    (a local program's packet can be redirected only to a loopback address of this host)."""
    v4 = v6 = None
    for addr in listen:
        ip = ipaddress.ip_address(addr.host)
        if not ip.is_loopback:
            continue
        if ip.version == 4 and v4 is None:
            v4 = (addr.host, addr.port)
        elif ip.version == 6 and v6 is None:
            v6 = (addr.host, addr.port)
    return v4, v6


class Guard:
    """The table while the daemon runs: applied once, pointed at each new tunnel, removed
    on a clean stop unless ``lockdown`` keeps it (then only `stubresolver guard off` or
    `restore` removes it)."""

    def __init__(self, config: GuardConfig, listen: Sequence[ListenAddress]) -> None:
        self.config = config
        v4, v6 = redirect_targets(listen) if config.redirect_stray_dns else (None, None)
        self._redirect = (v4, v6)
        self.tunnel: str | None = None
        self.applied = False
        self.update_failures = 0

    @property
    def redirects(self) -> bool:
        return any(self._redirect)

    def plan(self, tunnel: str | None) -> GuardPlan:
        v4, v6 = self._redirect
        return GuardPlan(tunnel, self.config.extra_ports, v4, v6)

    def apply(self, tunnel: str | None) -> None:
        run_nft(ruleset.render(self.plan(tunnel)))
        self.tunnel = tunnel
        self.applied = True
        v4, v6 = self._redirect
        log.info(
            "guard: table inet %s in place; DNS leaves only by %s%s",
            ruleset.TABLE,
            f"tunnel {tunnel} and loopback" if tunnel else "loopback (no tunnel yet)",
            "; stray DNS redirected to the stub" if (v4 or v6) else "",
        )

    def follow(self, tunnel: str | None) -> None:
        """The tunnel changed name (or went): one transaction swaps the set's element, so the
        rules never pass a moment without a tunnel entry or with two."""
        if not self.applied or tunnel == self.tunnel:
            return
        try:
            run_nft(ruleset.tunnel_update(tunnel))
        except GuardError as exc:
            # The old name stays allowed; a new device of that name is the same tunnel
            # config. Counted and shown in status.
            self.update_failures += 1
            log.error("guard: could not follow the tunnel to %s: %s", tunnel or "none", exc)
            return
        log.info("guard: follows the tunnel to %s", tunnel or "none (loopback only)")
        self.tunnel = tunnel

    def stop(self) -> None:
        if not self.applied:
            return
        if self.config.lockdown:
            log.info("guard: lockdown keeps the table; `stubresolver guard off` removes it")
            return
        try:
            run_nft(ruleset.REMOVE)
        except GuardError as exc:
            log.error("guard: %s; remove it with `stubresolver guard off`", exc)
            return
        self.applied = False
        log.info("guard: table removed")

    def counters(self) -> dict[str, int]:
        """Packets dropped and redirected since the table was made (nft's JSON output)."""
        try:
            text = run_nft("", args=("-j", "list", "counters", "table", ruleset.FAMILY,
                                     ruleset.TABLE))  # fmt: skip
            items = json.loads(text).get("nftables", [])
        except (GuardError, ValueError, AttributeError):
            return {}
        found: dict[str, int] = {}
        for item in items:
            counter = item.get("counter") if isinstance(item, dict) else None
            if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
                found[str(counter.get("name"))] = counter["packets"]
        return found

    def status(self) -> dict[str, object]:
        counters = self.counters() if self.applied else {}
        return {
            "enabled": True,
            "active": self.applied,
            "lockdown": self.config.lockdown,
            "redirect": self.redirects,
            "tunnel": self.tunnel,
            "dropped": counters.get("dropped"),
            "redirected": counters.get("redirected"),
            "update_failures": self.update_failures,
        }
