"""A private "system" for takeover tests: a mount namespace whose /etc is a copy of the
host's (bind-mounted over /etc) and a network namespace with only loopback. A holder
process keeps both alive, so a stub inside can be killed with SIGKILL and the system it
left behind looked at, restored or started again; every command enters them with nsenter.

The host's /etc/resolv.conf is never touched: the copy is a directory under the test's
tmp path, and the test reads and writes the very files the namespace sees as /etc.

With ``private_run`` the world also gets its own tmpfs on /run (with /run/dbus and
/run/systemd made), for daemons that keep their sockets and state there (a private system
bus, systemd-resolved): the host's /run, and its system bus, stay out of reach.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from testkit.processes import Process, start, stop_popen


class PrivateSystem:
    """``private``: more directories (say /opt, /var/lib, /run) that the namespace sees as
    empty ones of its own, each a directory under ``tmp`` (``root(path)`` names it), so a
    test may write there as the installed service would, and the host's stay as they are.
    ``private_run``: a tmpfs on /run with /run/dbus and /run/systemd made, for a world that
    runs its own bus and systemd-resolved."""

    def __init__(
        self, tmp: Path, private: Sequence[str] = (), *, private_run: bool = False
    ) -> None:
        self.tmp = tmp
        self.etc = tmp / "etc"  # what the namespace sees as /etc
        self.private = tuple(private)
        self.private_run = private_run
        self._holder: subprocess.Popen[bytes] | None = None

    def root(self, path: str) -> Path:
        """The test's view of ``path`` in the namespace: /etc or one of ``private``."""
        for top in ("/etc", *self.private):
            if path == top or path.startswith(top + "/"):
                base = self.etc if top == "/etc" else self.tmp / "root" / top.lstrip("/")
                return base / path[len(top) :].lstrip("/")
        raise ValueError(f"{path} is the host's own in this private system")

    def __enter__(self) -> PrivateSystem:
        subprocess.run(["cp", "-a", "/etc/.", str(self.etc) + "/"], check=True, timeout=60)
        # The host's resolv.conf may be a link into /run: the copy starts as a plain file.
        (self.etc / "resolv.conf").unlink(missing_ok=True)
        binds: list[str] = []
        for top in self.private:
            mine = self.root(top)
            mine.mkdir(parents=True)
            binds += [str(mine), top]
        script = (
            'ip link set lo up && mount --bind "$0" /etc && '
            'while [ "$#" -gt 0 ]; do mount --bind "$1" "$2" || exit 1; shift 2; done && '
        )
        if self.private_run:
            script += "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/dbus /run/systemd && "
        script += "echo ready && exec sleep 1800"
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--",
             "sh", "-c", script, str(self.etc), *binds],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line.strip() != b"ready":
            err = self._holder.stderr.read() if self._holder.stderr else b""
            stop_popen(self._holder)
            raise RuntimeError(f"private system did not start: {line!r} {err!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._holder is not None:
            stop_popen(self._holder)
            for stream in (self._holder.stdout, self._holder.stderr):
                if stream is not None:
                    stream.close()
            self._holder = None

    @property
    def holder_pid(self) -> int:
        assert self._holder is not None
        return self._holder.pid

    def argv(self, command: Sequence[str]) -> list[str]:
        # nsenter without --fork execs the command: its PID is the command's own.
        return ["nsenter", "-t", str(self.holder_pid), "-m", "-n", "--", *command]

    def path(self, inside: str | Path) -> Path:
        """Where the host sees the world's ``inside`` path (an absolute path as seen in the
        namespace): through the holder's root, which shows its mounts (/etc, a private
        /run)."""
        return Path(f"/proc/{self.holder_pid}/root") / Path(inside).relative_to("/")

    def run(
        self,
        command: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``env`` replaces the environment (None: ours)."""
        return subprocess.run(
            self.argv(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=None if env is None else dict(env),
        )

    def open_path(self, path: Path) -> None:
        """Let every uid inside the namespace reach ``path`` (a test's unprivileged process
        running this Python, whose interpreter may live under root's 0700 home): each
        ancestor others may not search is covered, inside the namespace only, by an empty
        0755 tmpfs into which the next component is bind-mounted back."""
        parts = path.resolve().parts  # ("/", "root", ".pyenv", ...)
        for depth in range(2, len(parts)):
            ancestor, child = Path(*parts[:depth]), Path(*parts[: depth + 1])
            if os.stat(ancestor).st_mode & stat.S_IXOTH:
                continue
            stage = self.tmp / f"open-{depth}"
            stage.mkdir(exist_ok=True)
            script = (
                'mount --bind "$1" "$2" && mount -t tmpfs -o mode=0755 tmpfs "$0" '
                '&& mkdir "$1" && mount --bind "$2" "$1" && umount "$2"'
            )
            self.run(["sh", "-c", script, str(ancestor), str(child), str(stage)], check=True)

    def start(
        self, name: str, command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None
    ) -> Process:
        return start(name, self.argv(command), log, env=dict(os.environ if env is None else env))


def tools_missing() -> str | None:
    """None when this machine can build a private system, else what is missing."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("unshare", "nsenter", "ip", "getent", "dnsmasq", "cp"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None
