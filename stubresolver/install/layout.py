"""Where the installed service lives. One place for every path, so the plans, the probe
and the docs cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = Path("/opt/stubresolver")
UNIT_NAME = "stubresolver"
HOOKS = ("openvpn-updown.sh", "90-stubresolver")
NM_DISPATCHER_HOOK = "90-stubresolver"


@dataclass(frozen=True, slots=True)
class Layout:
    prefix: Path = DEFAULT_PREFIX  # the virtualenv the service runs from
    config: Path = Path("/etc/stubresolver/config.yaml")
    unit: Path = Path("/etc/systemd/system/stubresolver.service")
    hooks_dir: Path = Path("/usr/local/lib/stubresolver")  # OpenVPN up/down, wg-quick
    network_manager: Path = Path("/etc/NetworkManager")  # the dispatcher hook only if present
    command_link: Path = Path("/usr/local/bin/stubresolver")  # so `sudo stubresolver` works
    manifest: Path = Path("/var/lib/stubresolver/install.json")
    account: str = "stubresolver"  # the system user and group the service runs as

    @property
    def dispatcher(self) -> Path:
        return self.network_manager / "dispatcher.d" / NM_DISPATCHER_HOOK

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def command(self) -> Path:
        return self.prefix / "bin" / "stubresolver"
