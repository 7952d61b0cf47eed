"""The ``networkmanager`` backend: a conf.d drop-in with ``[main] dns=none`` (and
``rc-manager=unmanaged``) and a reload, so NetworkManager stops writing resolv.conf
(NetworkManager.conf(5)); then resolv.conf is ours as in the ``file`` backend. Restore puts
resolv.conf back, removes the drop-in and reloads, so NetworkManager manages DNS again."""

from __future__ import annotations

from pathlib import Path

from stubresolver.config import Config
from stubresolver.takeover import resolv_conf
from stubresolver.takeover.backends import Found
from stubresolver.takeover.backends.file import holds_file
from stubresolver.takeover.steps import Run, Step, WriteFile, restore_original

DROP_IN = Path("/etc/NetworkManager/conf.d/90-stubresolver.conf")
DROP_IN_TEXT = (
    b"# Written by stubresolver (takeover.mode: networkmanager); `stubresolver restore`\n"
    b"# removes it. NetworkManager leaves resolv.conf alone while it is here.\n"
    b"[main]\ndns=none\nrc-manager=unmanaged\n"
)
# `nmcli general reload conf` re-reads NetworkManager.conf without touching connections.
RELOAD = Run(("nmcli", "general", "reload", "conf"))


class NetworkManagerBackend:
    name = "networkmanager"

    def paths(self, config: Config) -> tuple[Path, ...]:
        return (config.takeover.resolv_conf, DROP_IN)

    def probe(self, config: Config) -> tuple[tuple[str, str], ...]:
        return ()

    def refresh(self, found: Found, config: Config) -> Found:
        return found

    def apply(self, found: Found, config: Config) -> tuple[Step, ...]:
        ours = resolv_conf.render(config.listen)
        return (
            WriteFile(DROP_IN, DROP_IN_TEXT, 0o644),
            RELOAD,  # before resolv.conf: NetworkManager must stop writing it first
            WriteFile(config.takeover.resolv_conf, ours, resolv_conf.OUR_MODE),
        )

    def restore(self, found: Found) -> tuple[Step, ...]:
        # Files first, then the reload: NetworkManager then finds its own settings again.
        # The reload may fail when NetworkManager is stopped meanwhile; nothing to tell it.
        files = tuple(restore_original(o) for o in found.originals)
        return (*files, Run(RELOAD.argv, may_fail=True))

    def repair(self, found: Found, config: Config) -> tuple[Step, ...]:
        return self.apply(found, config)

    def watch(self, config: Config) -> tuple[Path, ...]:
        return (config.takeover.resolv_conf, DROP_IN)

    def holds(self, found: Found, config: Config) -> bool:
        ours = resolv_conf.render(config.listen)
        return holds_file(DROP_IN, DROP_IN_TEXT) and holds_file(config.takeover.resolv_conf, ours)
