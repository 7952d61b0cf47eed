"""Which backend takes over: ``takeover.mode`` against what was found. Pure.

Only the ``file`` backend exists so far. ``auto`` picks it only when resolv.conf is not
owned by a DNS manager that would rewrite it behind our back (a quiet leak): a symlink into
systemd-resolved's, NetworkManager's or resolvconf's run directory means that manager owns
it, and replacing the file would last only until its next write.
"""

from __future__ import annotations

from stubresolver.errors import ConfigError
from stubresolver.takeover.original import Original

# Where each manager keeps the resolv.conf it writes (resolved.8, NetworkManager.conf(5)
# rc-manager=symlink, resolvconf(8) on Debian and openresolv).
MANAGED_TARGETS = (
    ("/run/systemd/resolve/", "systemd-resolved"),
    ("/run/NetworkManager/", "NetworkManager"),
    ("/var/run/NetworkManager/", "NetworkManager"),
    ("/run/resolvconf/", "resolvconf"),
    ("/etc/resolvconf/run/", "resolvconf"),
)


def manager_of(original: Original) -> str | None:
    """The DNS manager a symlinked resolv.conf belongs to, or None."""
    target = original.link_target
    if original.kind != "symlink" or target is None:
        return None
    # A relative target (../run/systemd/resolve/stub-resolv.conf) is judged by its tail.
    for prefix, manager in MANAGED_TARGETS:
        if target.startswith(prefix) or f"/{prefix.strip('/')}/" in f"/{target}":
            return manager
    return None


def choose_backend(mode: str, original: Original) -> str:
    """ "file" for mode file, and for auto when no manager owns resolv.conf. Raises
    ConfigError naming takeover.mode before anything changes."""
    if mode == "file":
        return "file"
    if mode != "auto":
        raise ConfigError("takeover.mode", f"{mode!r} takes nothing over")
    manager = manager_of(original)
    if manager is not None:
        raise ConfigError(
            "takeover.mode",
            f"auto found {original.path} -> {original.link_target}, owned by {manager}; "
            f"the {manager} backend is not built yet (set takeover.mode: file to replace "
            "the link anyway, or off)",
        )
    return "file"
