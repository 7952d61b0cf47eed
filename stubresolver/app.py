"""The running service: monitor + resolver + listeners, signals, reload.

Start-up order matters for the promise: the config is validated before anything is bound,
the tunnel monitor reads the state before the first query is served (so a query that arrives
while the tunnel is absent is refused, never forwarded on a guess), and the listeners are
bound all-or-nothing. The system's DNS is taken over only after the listeners are bound,
so it never points at a stub that cannot answer, and it is given back before they close.
With ``server.user`` set, privileges are dropped once everything that needs root is done
(listeners, takeover, control socket, netlink) and before the drift watchdog starts its
worker thread (privilege.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from stubresolver import __version__, privilege
from stubresolver.access import HostAddresses
from stubresolver.announce import Announced, parse_announcement
from stubresolver.cache import Cache
from stubresolver.config import Config, load_config
from stubresolver.control import ControlServer, render_status, tunnel_dict
from stubresolver.errors import ConfigError, StubError, TakeoverError
from stubresolver.fdlimit import ensure_fd_limit
from stubresolver.guard.nftables import Guard
from stubresolver.learned import learned_ipv6_servers
from stubresolver.policy import LocalPolicy
from stubresolver.resolver import Resolver
from stubresolver.routes import Router
from stubresolver.server import DnsServer
from stubresolver.takeover import session as takeover
from stubresolver.takeover.watchdog import DriftWatchdog
from stubresolver.tunnel import DEFAULT_KINDS, TunnelMonitor, matches
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.factory import make_upstream

log = logging.getLogger("stubresolver")


def build_resolver(config: Config, monitor: TunnelMonitor, announced: Announced) -> Resolver:
    """Everything config-derived that a reload may replace. Raises ConfigError only.
    ``announced`` is the service's: what the VPN said outlives a reload."""
    configs = config.all_upstreams()
    upstreams = [make_upstream(u, announced) for u in configs]
    return Resolver(
        upstreams=upstreams,
        router=Router(configs, config.upstreams, config.routes, announced),
        tunnel_state=lambda: monitor.state,
        refresh_tunnel=monitor.refresh,
        tunnel_label=",".join(config.tunnel.interfaces),
        cache=Cache(config.cache.limits) if config.cache.enabled else None,
        policy=LocalPolicy(
            config.local.reverse_via_vpn,
            single_label_nxdomain=config.local.single_label == "nxdomain",
            records=config.local.records + config.bootstrap_hosts,
            blocked=config.policy.blocked,
        ),
        aaaa=config.policy.aaaa,
        flush_on_tunnel_change=config.cache.flush_on_tunnel_change,
        log_queries=config.logging.queries,
        max_forwards=config.server.max_forwards,
        udp_max_payload=config.server.udp_max_payload,
    )


def configure_logging(level: str) -> None:
    """stderr lines journald reads well: syslog priority prefixes under systemd
    (sd-daemon(3) ``<N>``), timestamps otherwise."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler = logging.StreamHandler()
    if under_journal:
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # asyncio's own debug lines (selector choice) are noise in a service log.
    logging.getLogger("asyncio").setLevel(max(logging.WARNING, root.level))


_SYSLOG_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


def _sd_notify(message: str) -> None:
    """Tell systemd we are ready (Type=notify), if it asked; harmless otherwise."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


class Service:
    def __init__(self, config: Config, config_path: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self.monitor = TunnelMonitor(
            config.tunnel.interfaces,
            poll_interval=config.tunnel.poll_interval,
            kinds=DEFAULT_KINDS | frozenset(config.tunnel.kinds),
        )
        #: What the VPN client announced (tunnel-up); shared with the vpn upstream and the
        #: router, kept across reloads, forgotten on tunnel-down or when the tunnel goes.
        self.announced = Announced()
        self.resolver = build_resolver(config, self.monitor, self.announced)
        self.server = DnsServer(self.resolver, config.server)
        self._unsubscribe = self.monitor.subscribe(self._on_tunnel)
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._control: ControlServer | None = None
        self._started = time.monotonic()
        #: Set once a takeover began: its state_dir and restore_on_exit, as started (a
        #: reload does not move them).
        self._taken: tuple[Path, bool] | None = None
        self._takeover: takeover.Plan | None = None
        self._taken_config = config  # the config the takeover applied (its bound listeners)
        self._watchdog: DriftWatchdog | None = None
        self._guard: Guard | None = None
        #: server.user / server.group looked up now: a name that does not exist is a
        #: ConfigError before anything is bound.
        self.accounts = privilege.resolve(config.server)
        privilege.check_can_drop(self.accounts)
        #: Why the service kept running as root although server.user is set, or None.
        self._kept_root: str | None = None

    def _on_tunnel(self, old: TunnelState, new: TunnelState) -> None:
        current = self.announced.current
        if current is not None and (new.ifname != current.interface or (old.up and not new.up)):
            # An epoch that loses the interface: its servers are never asked through the
            # next tunnel (announce.py).
            log.info(
                "tunnel %s went: forgetting the DNS servers its VPN announced", current.interface
            )
            self.announced.set(None)
        if self._guard is not None:
            self._guard.follow(new.ifname)
        self.resolver.tunnel_changed(old, new)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # From the first moment: a SIGTERM that arrives while starting (in the middle of a
        # takeover, say) stops the service once the start is complete, with the restore,
        # instead of killing it with the system's DNS half taken over.
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        try:
            await self._run(loop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        ensure_fd_limit(self.config)
        await self.monitor.start()
        try:
            await self.server.start(self.config.listen)
        except BaseException:
            await self.monitor.stop()
            raise
        self._warn_learned_servers()
        try:
            self._start_guard()
            await self._take_over()
            await self._start_control()
            self._drop_privileges()
            if self._takeover is not None:
                self._watchdog = DriftWatchdog(self._takeover, self._taken_config)
                await self._watchdog.start()
        except BaseException:
            # Undo what a failed takeover may have done (the journal says what).
            await self._restore(always=True)
            self._stop_guard()
            if self._control is not None:
                await self._control.close()
            await self.server.close()
            await self.resolver.close()
            await self.monitor.stop()
            raise
        self._started = time.monotonic()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        state = self.monitor.state
        log.info(
            "serving on %s; tunnel %s is %s; %d upstream(s)",
            ", ".join(str(a) for a in self.config.listen),
            state.ifname or ",".join(self.config.tunnel.interfaces),
            "up" if state.up else "down (refusing every query)",
            len(self.config.upstreams),
        )
        _sd_notify("READY=1")
        try:
            await self._stop.wait()
        finally:
            _sd_notify("STOPPING=1")
            log.info("shutting down")
            # Restore while the listeners still answer: the system never points at a stub
            # that has stopped, except after a crash (fail-closed, see takeover/session.py).
            await self._restore()
            self._stop_guard()
            if self._control is not None:
                await self._control.close()
            await self.server.close()
            await self.resolver.close()
            await self.monitor.stop()

    def _warn_learned_servers(self) -> None:
        """IPv6 DNS servers other links learned (router advertisements): a program that asks
        them directly goes around the stub; named at start (issue 10)."""
        for link, server in learned_ipv6_servers():
            log.warning(
                "link %s learned the IPv6 DNS server %s (router advertisement?): %s",
                link,
                server,
                "the guard blocks it"
                if self.config.guard.enabled
                else "a program asking it directly leaks; guard.enabled blocks that",
            )

    def _start_guard(self) -> None:
        """The nftables guard (guard/), before the takeover points the system at us: from
        here no other program's DNS leaves outside the tunnel."""
        if not self.config.guard.enabled:
            return
        guard = Guard(self.config.guard, self.server.bound)
        if guard.redirects:
            # A redirected query keeps its outside source address (access.HostAddresses).
            self.server.clients.host = HostAddresses()
        guard.apply(self.monitor.state.ifname)
        self._guard = guard

    def _stop_guard(self) -> None:
        if self._guard is not None:
            self._guard.stop()
            self._guard = None

    async def _take_over(self) -> None:
        settings = self.config.takeover
        if settings.mode == "off":
            return
        # Name only the addresses that really bound (an IPv6 one may have been skipped).
        bound = dataclasses.replace(self.config, listen=self.server.bound)
        # From here a journal may exist, even if a step fails.
        self._taken = (self.config.state_dir, settings.restore_on_exit)
        chosen = takeover.take_over(bound)
        for line in chosen.describe():
            log.info("%s", line)
        self._takeover = chosen
        # The watchdog starts after the privilege drop (run): its checks run in a thread.
        self._taken_config = bound

    def _drop_privileges(self) -> None:
        """server.user set: become it, keeping only what the running service needs. A
        manager backend that trusts only root keeps the service root, loudly."""
        if self.accounts.uid is None:
            return
        manager = self._takeover.manager if self._takeover is not None else None
        reason = privilege.KEEPS_ROOT.get(manager or "")
        if reason is not None:
            self._kept_root = f"takeover backend {manager}: {reason}"
            log.warning(
                "server.user: NOT dropping privileges, running as root: %s", self._kept_root
            )
            return
        keep = privilege.kept(self.config)
        privilege.drop(self.accounts, keep)
        log.info(
            "running as %s:%s (uid %d, gid %d) with %s only",
            self.accounts.user,
            self.accounts.group,
            os.getuid(),
            os.getgid(),
            ", ".join(privilege.names(keep)),
        )

    async def _restore(self, *, always: bool = False) -> None:
        """On a clean stop with restore_on_exit, or after a failed takeover (``always``).
        The watchdog stops first, or it would take the system back from the restore."""
        if self._watchdog is not None:
            await self._watchdog.stop()
            self._watchdog = None
        if self._taken is None or not (self._taken[1] or always):
            return
        try:
            done = takeover.restore(self._taken[0])
        except TakeoverError as exc:
            log.error("%s; the journal stays: run `stubresolver restore`", exc)
            return
        for line in done or ["nothing to restore"]:
            log.info("restore: %s", line)

    def takeover_status(self) -> dict[str, Any]:
        if self._takeover is None:
            return {"mode": self.config.takeover.mode, "active": False}
        assert self._watchdog is not None
        return {
            "mode": self.config.takeover.mode,
            "active": True,
            "backend": self._takeover.manager,
            "resumed": self._takeover.resumed,
            "paths": [str(o.path) for o in self._takeover.found.originals],
            "state_dir": str(self.config.state_dir),
            **self._watchdog.counters(),
        }

    async def _start_control(self) -> None:
        """The control socket is a convenience, not part of the leak promise: when it cannot
        be made, say so and keep serving DNS."""
        path = self.config.control_socket
        if path is None:
            return
        control = ControlServer(
            path, self, group=self.accounts.gid if self.config.server.group else None
        )
        try:
            await control.start()
        except (OSError, StubError) as exc:
            log.warning("control socket %s unavailable (%s); serving DNS without it", path, exc)
            return
        self._control = control

    def stop(self) -> None:
        self._stop.set()

    # --- what the control socket drives (stubresolver.control.Controlled) -----------------

    def control_status(self) -> dict[str, Any]:
        status = render_status(
            version=__version__,
            uptime=time.monotonic() - self._started,
            listen=self.config.listen,
            tunnel=self.monitor.state,
            netlink=self.monitor.netlink_active,
            resolver=self.resolver,
            config_path=self.config_path,
        )
        status["takeover"] = self.takeover_status()
        status["vpn"] = self.announced.status()
        status["guard"] = self._guard.status() if self._guard is not None else {"enabled": False}
        status["privileges"] = self.privilege_status()
        return status

    def privilege_status(self) -> dict[str, Any]:
        sets = privilege.read_sets("self")
        return {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "user": self.accounts.user,
            "group": self.accounts.group,
            "dropped": self.accounts.uid is not None and self._kept_root is None,
            "kept_root": self._kept_root,
            "capabilities": privilege.names(
                cap for cap in range(64) if sets.get("CapEff", 0) >> cap & 1
            ),
        }

    def announce(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``tunnel-up`` from a VPN hook: its servers become the ``vpn`` upstream and its
        domains route there. Only for an interface ``tunnel.interfaces`` names; a loopback
        server only in the loopback test setup (``tunnel.interfaces: [lo]``)."""
        patterns = self.config.tunnel.interfaces
        announcement = parse_announcement(request, allow_loopback=patterns == ("lo",))
        if not matches(announcement.interface, patterns):
            raise ValueError(
                f"interface {announcement.interface} is not one tunnel.interfaces names "
                f"({', '.join(patterns)}); not taking DNS servers for it"
            )
        changed = announcement != self.announced.current
        self.announced.set(announcement)
        if changed:
            self.resolver.announcement_changed()
        self.monitor.release(announcement.interface)
        state = self.monitor.refresh()
        log.info(
            "the VPN on %s announced %d DNS server(s) and %d domain(s)",
            announcement.interface,
            len(announcement.servers),
            len(announcement.domains),
        )
        return {"ok": True, "vpn": announcement.as_dict(), "tunnel": tunnel_dict(state)}

    def withdraw(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``tunnel-down`` from a VPN hook: forget what the VPN announced, and treat its
        interface as down at once even while the device still exists (wg-quick PreDown),
        so every query is REFUSED from now, not after the device is gone."""
        name = request.get("interface")
        current = self.announced.current
        if name is None:
            name = current.interface if current is not None else self.monitor.state.ifname
        if name is not None and not isinstance(name, str):
            raise ValueError('"interface" must be a device name')
        if current is not None and current.interface == name:
            self.announced.set(None)
            self.resolver.announcement_changed()
            log.info("the VPN on %s withdrew its DNS servers", name)
        before = self.monitor.state
        state = self.monitor.hold_down(name) if name else self.monitor.refresh()
        return {"ok": True, "changed": state.epoch != before.epoch, "tunnel": tunnel_dict(state)}

    def flush_cache(self) -> int:
        cache = self.resolver.cache
        count = cache.flush() if cache is not None else 0
        log.info("cache flushed on request (%d entries)", count)
        return count

    def refresh_tunnel(self) -> tuple[TunnelState, TunnelState]:
        """A VPN hook says the tunnel changed: look now instead of waiting for netlink or
        the poll. A change is published (epoch, flush, pools) by the monitor as usual."""
        before = self.monitor.state
        return before, self.monitor.refresh()

    def reload(self) -> str | None:
        """SIGHUP or `stubresolver reload`: re-read the config; a bad one is rejected and the
        old one keeps serving. Returns None when applied, else the reason it was rejected."""
        if self.config_path is None:
            return "no config file to reload (started without --config)"
        try:
            new = load_config(self.config_path)
            resolver = build_resolver(new, self.monitor, self.announced)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            return str(exc)
        if new.listen != self.config.listen or new.server != self.config.server:
            log.warning("listen/server changes take effect only after a restart")
        if new.takeover != self.config.takeover or new.state_dir != self.config.state_dir:
            log.warning("takeover and state_dir changes take effect only after a restart")
        if new.guard != self.config.guard:
            log.warning("guard changes take effect only after a restart")
        if new.control_socket != self.config.control_socket:
            log.warning("control_socket changes take effect only after a restart")
        if new.tunnel != self.config.tunnel:
            self.monitor.patterns = new.tunnel.interfaces
            self.monitor.poll_interval = new.tunnel.poll_interval
            self.monitor.kinds = DEFAULT_KINDS | frozenset(new.tunnel.kinds)
        old_resolver = self.resolver
        self.resolver = resolver
        self.server.resolver = resolver
        self.config = new
        configure_logging(new.logging.level)
        # Every flight of the old resolver ends now and its pools close: nothing is sent
        # under the old upstreams or tunnel rules once this returns (issue 7).
        old_resolver.retire()
        # The patterns may have changed: look at the interfaces again under the new rules.
        self.monitor.refresh()
        log.info("config reloaded from %s", self.config_path)
        return None


def serve(config: Config, config_path: Path | None) -> None:
    """Run until SIGTERM/SIGINT. uvloop is used when installed (optional extra)."""
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, never required

        runner = uvloop.run
    except ImportError:
        pass

    async def main() -> None:
        await Service(config, config_path).run()

    runner(main())
