"""Least privilege (issue 9): the daemon starts as root only to bind port 53, make the
control socket, take over the system's DNS and open netlink; then it runs as
``server.user`` / ``server.group`` with a handful of capabilities and nothing else.

Which capability buys what, and why nothing more is kept:

- ``CAP_NET_BIND_SERVICE``: binding a port below 1024. The listeners are bound before the
  drop; the capability is kept so a listener can be bound again without root (today a
  ``listen`` change still takes a restart).
- ``CAP_NET_RAW``: ``SO_BINDTODEVICE`` on every upstream socket (netbind.py). Linux 5.7 and
  later let an unprivileged socket bind a device once; older kernels need this capability.
- With a takeover (``takeover.mode`` not ``off``), what the drift watchdog's re-assert and
  the restore on a clean stop need to write root's files back byte for byte:
  ``CAP_DAC_OVERRIDE`` (create the temporary file in root-owned /etc and rename it over
  resolv.conf; remove the journal in ``state_dir``), ``CAP_CHOWN`` (give the file its
  recorded owner) and ``CAP_FOWNER`` (set the mode and the recorded mtime of a file that
  is not ours).
- With the guard (``guard.enabled``): ``CAP_NET_ADMIN``, which nftables asks of every
  change to a table (the netlink NFNL_SUBSYS_NFTABLES calls): the guard follows the tunnel
  into a new device, and removes its table on a clean stop, after the drop.
- Otherwise not ``CAP_NET_ADMIN``: the manager backends do not run unprivileged at all (see
  ``KEEPS_ROOT``). systemd-resolved accepted ``SetLinkDefaultRoute`` from a caller with
  CAP_NET_ADMIN only before systemd 255 (src/resolve/resolved-link-bus.c passed
  ``CAP_NET_ADMIN`` to ``bus_verify_polkit_async``); since then src/shared/bus-polkit.c
  asks ``sd_bus_query_sender_privilege(call, -1)``, which accepts uid 0 or polkit only. And
  restarting resolved (``systemctl try-restart``), which its re-assert and restore need,
  takes uid 0, CAP_SYS_ADMIN or polkit in every version.

The drop (`drop`) runs in-process: ``PR_SET_KEEPCAPS``, the bounding set reduced,
``setgroups``/``setresgid``/``setresuid``, then ``capset(2)`` sets the permitted,
effective and inheritable sets to exactly the kept ones and the ambient set is raised to
match (so the takeover's helper programs, if any, get the same and no more). Capabilities
are per thread: the drop refuses to run while the process has a second thread.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stubresolver.config import Config, ServerConfig
from stubresolver.errors import ConfigError, PrivilegeError

# linux/capability.h
CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_FOWNER = 3
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

#: Every capability's name by number (linux/capability.h, Linux 6.x), for logs and status.
_ALL_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip

#: Kept in every case: port 53 and the tunnel-bound upstream sockets.
SERVICE_CAPS = frozenset((CAP_NET_BIND_SERVICE, CAP_NET_RAW))
#: Kept too while a takeover is on: re-assert and byte-exact restore of root's files.
TAKEOVER_CAPS = frozenset((CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER))
#: Kept too with the guard: nft changes its table (the tunnel set, the removal).
GUARD_CAPS = frozenset((CAP_NET_ADMIN,))

#: Takeover backends whose re-assert or restore asks a manager that trusts only uid 0 (or
#: polkit): with one of these the service keeps running as root and says so.
KEEPS_ROOT = {
    "systemd-resolved": (
        "its re-assert and restore restart systemd-resolved (systemctl try-restart) and set "
        "link default routes (resolvectl), which systemd allows only to root or through polkit "
        "(before systemd 255 also to CAP_SYS_ADMIN and CAP_NET_ADMIN, which are not kept)"
    ),
    "networkmanager": (
        "its re-assert and restore reload NetworkManager (nmcli general reload), which "
        "NetworkManager allows only to root or through polkit"
    ),
    "resolvconf": (
        "resolvconf runs its update scripts, which may call anything; running them "
        "unprivileged is not verified yet"
    ),
}

# linux/prctl.h
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


@dataclass(frozen=True, slots=True)
class Accounts:
    """``server.user`` / ``server.group`` looked up: who to become, and the control
    socket's group."""

    user: str | None
    uid: int | None
    group: str | None
    gid: int | None


def resolve(server: ServerConfig) -> Accounts:
    """Look the names up (NSS: /etc/passwd, /etc/group, ...). Raises ConfigError naming
    the key; called before anything is bound, and by check-config."""
    uid = gid = None
    group: str | None = server.group or None
    if server.user:
        try:
            entry = pwd.getpwnam(server.user)
        except KeyError:
            raise ConfigError("server.user", f"no such user {server.user!r}") from None
        if entry.pw_uid == 0:
            raise ConfigError("server.user", f"{server.user!r} is root: leave it empty instead")
        uid, gid = entry.pw_uid, entry.pw_gid
        if group is None:
            try:
                group = grp.getgrgid(gid).gr_name
            except KeyError:  # a primary gid without a group entry: legal, if unusual
                group = str(gid)
    if server.group:
        try:
            gid = grp.getgrnam(server.group).gr_gid
        except KeyError:
            raise ConfigError("server.group", f"no such group {server.group!r}") from None
        if gid == 0 and server.user:
            raise ConfigError("server.group", f"{server.group!r} is gid 0: name another group")
    return Accounts(server.user or None, uid, group, gid)


def check_can_drop(accounts: Accounts) -> None:
    """Raises ConfigError when ``server.user`` is set but this process cannot switch."""
    if accounts.uid is not None and os.geteuid() != 0:
        raise ConfigError(
            "server.user", "switching to another user needs the daemon to start as root"
        )


def kept(config: Config) -> frozenset[int]:
    """The capabilities the running service keeps: pure, from the config."""
    caps = SERVICE_CAPS | (TAKEOVER_CAPS if config.takeover.mode != "off" else frozenset())
    return caps | (GUARD_CAPS if config.guard.enabled else frozenset())


def names(caps: Iterable[int]) -> list[str]:
    return [
        f"cap_{_ALL_NAMES[cap]}" if cap < len(_ALL_NAMES) else f"cap_{cap}" for cap in sorted(caps)
    ]


def mask(caps: Iterable[int]) -> int:
    return sum(1 << cap for cap in set(caps))


# --- the drop ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> int:
    result: int = _libc.prctl(
        ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3),
        ctypes.c_ulong(0), ctypes.c_ulong(0),
    )  # fmt: skip
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}, {arg}): {os.strerror(code)}")
    return result


def _capset(caps: frozenset[int]) -> None:
    """capset(2), version 3: two 32-bit words per set; effective = permitted = inheritable."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    bits = mask(caps)
    for word in (0, 1):
        part = (bits >> (32 * word)) & 0xFFFFFFFF
        data[word].effective = data[word].permitted = data[word].inheritable = part
    if _libc.capset(ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"capset: {os.strerror(code)}")


def last_cap() -> int:
    return int(Path("/proc/sys/kernel/cap_last_cap").read_text())


def drop(accounts: Accounts, keep: frozenset[int]) -> None:
    """Become ``accounts``' uid/gid keeping exactly ``keep``. Raises PrivilegeError; the
    caller stops the service then (a half-dropped process must not serve)."""
    assert accounts.uid is not None and accounts.gid is not None
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        # Another thread would keep every capability (they are per thread).
        raise PrivilegeError(f"cannot drop privileges with {threads} threads running")
    try:
        for cap in range(last_cap() + 1):
            if cap not in keep and _prctl(_PR_CAPBSET_READ, cap) == 1:
                _prctl(_PR_CAPBSET_DROP, cap)
        # Keep the permitted set across the uid change (capabilities(7), SECBIT_KEEP_CAPS);
        # the effective and ambient sets are cleared by it and set again below.
        _prctl(_PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(accounts.gid, accounts.gid, accounts.gid)
        os.setresuid(accounts.uid, accounts.uid, accounts.uid)
        _capset(keep)
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
        for cap in sorted(keep):
            _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap)
        _prctl(_PR_SET_KEEPCAPS, 0)
    except OSError as exc:
        # EPERM here usually means the start lacked CAP_SETUID, CAP_SETGID or CAP_SETPCAP
        # (a unit whose CapabilityBoundingSet= leaves them out).
        raise PrivilegeError(
            f"dropping privileges to {accounts.user}: {exc} (the start needs CAP_SETUID, "
            "CAP_SETGID and CAP_SETPCAP)"
        ) from None
    found = read_sets("self")
    want = mask(keep)
    if any(value != want for value in found.values()) or os.getuid() == 0:
        raise PrivilegeError(f"after dropping privileges the sets are {found}, not {want:#x}")


def read_sets(pid: int | str) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process, from /proc/PID/status."""
    sets: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise PrivilegeError(f"reading /proc/{pid}/status: {exc.strerror}") from None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            sets[key] = int(value.strip(), 16)
    return sets
