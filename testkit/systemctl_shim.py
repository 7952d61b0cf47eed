"""A recording stand-in for systemctl where systemd is not PID 1 (a private namespace):
every call is appended to ``<state>/calls.log``; ``enable --now`` / ``start`` really start
the unit's ExecStartPre and ExecStart from /etc/systemd/system/<unit>.service, and, like
systemd for Type=notify, return only once the daemon sent READY=1 on NOTIFY_SOCKET;
``stop`` / ``disable --now`` send SIGTERM to that PID and wait until it is gone.
``is-enabled`` / ``is-active`` answer from that state. Run as
``python3 systemctl_shim.py STATE_DIR ARGS...`` (tests write a `systemctl` wrapper on PATH).
Only the PID this shim started is ever signalled."""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TIMEOUT = 30.0  # generous: readiness and stop are waited for, never assumed


def _unit(name: str) -> dict[str, str]:
    path = Path("/etc/systemd/system") / f"{name}.service"
    keys: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            keys.setdefault(key.strip(), value.strip())
    return keys


def _pid(state: Path, name: str) -> int | None:
    try:
        pid = int((state / f"{name}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else pid  # a zombie has stopped


def _start(state: Path, name: str) -> int:
    if _pid(state, name) is not None:
        return 0
    unit = _unit(name)
    if "ExecStartPre" in unit:
        pre = subprocess.run(shlex.split(unit["ExecStartPre"]), check=False)
        if pre.returncode != 0:
            print(f"shim: {name}: ExecStartPre failed ({pre.returncode})", file=sys.stderr)
            return 1
    notify = state / f"{name}.notify"
    notify.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        with (state / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                shlex.split(unit["ExecStart"]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "NOTIFY_SOCKET": str(notify)},
                start_new_session=True,
            )
        (state / f"{name}.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                print(f"shim: {name} exited {proc.returncode} before READY=1", file=sys.stderr)
                return 1
            ready, _, _ = select.select([sock], [], [], 0.1)
            if ready and b"READY=1" in sock.recv(4096).split(b"\n"):
                return 0
    print(f"shim: {name}: no READY=1 in {TIMEOUT:g} s", file=sys.stderr)
    return 1


def _stop(state: Path, name: str) -> int:
    pid = _pid(state, name)
    if pid is None:
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TIMEOUT
    while _pid(state, name) is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            print(f"shim: {name} ignored SIGTERM for {TIMEOUT:g} s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    (state / f"{name}.pid").unlink(missing_ok=True)
    return 0


def main(argv: list[str]) -> int:
    state = Path(argv[0])
    args = argv[1:]
    with (state / "calls.log").open("a") as calls:
        calls.write(" ".join(args) + "\n")
    words = [a for a in args if not a.startswith("-")]
    verb, units = (words[0], words[1:]) if words else ("", [])
    names = [u.removesuffix(".service") for u in units]
    now = "--now" in args
    code = 0
    for name in names:
        enabled = state / f"{name}.enabled"
        if verb == "is-enabled":
            code |= 0 if enabled.exists() else 1
        elif verb == "is-active":
            code |= 0 if _pid(state, name) is not None else 3
        elif verb == "enable":
            enabled.touch()
            code |= _start(state, name) if now else 0
        elif verb == "disable":
            enabled.unlink(missing_ok=True)
            code |= _stop(state, name) if now else 0
        elif verb == "start":
            code |= _start(state, name)
        elif verb == "stop":
            code |= _stop(state, name)
        elif verb == "restart":
            code |= _stop(state, name) or _start(state, name)
    return code


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main(sys.argv[1:]))
