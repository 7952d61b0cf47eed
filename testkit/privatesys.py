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
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from testkit.processes import Process, start, stop_popen


class PrivateSystem:
    def __init__(self, tmp: Path, *, private_run: bool = False) -> None:
        self.tmp = tmp
        self.etc = tmp / "etc"  # what the namespace sees as /etc
        self.private_run = private_run
        self._holder: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrivateSystem:
        subprocess.run(["cp", "-a", "/etc/.", str(self.etc) + "/"], check=True, timeout=60)
        # The host's resolv.conf may be a link into /run: the copy starts as a plain file.
        (self.etc / "resolv.conf").unlink(missing_ok=True)
        script = 'ip link set lo up && mount --bind "$0" /etc && '
        if self.private_run:
            script += "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/dbus /run/systemd && "
        script += "echo ready && exec sleep 1800"
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--",
             "sh", "-c", script, str(self.etc)],
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
