"""Processes the netns world (tests, bench, `stubresolver demo`) starts: start one with its
output in a log file, wait until it is ready, stop it by its own PID with a timeout.

Only processes started through here are ever signalled, and only by the PID ``Popen``
returned: nothing is looked up by name, so nothing else on the machine can be hit.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stubresolver.errors import ProcessError


@dataclass
class Process:
    """A process we started (PID known), with the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] | None = None  # our handle on the log; closed by stop()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 3.0) -> int | None:
        """Signal our own PID, wait ``grace`` seconds, escalate to SIGKILL; the exit status."""
        code = stop_popen(self.popen, sig, grace)
        if self.log_file is not None:
            self.log_file.close()
        return code

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


# A demo interrupt (teardown.py) that arrives while a child is being started and recorded
# waits until it is recorded: raised between Popen and the caller's list, it would leave
# that child running with nobody to stop it (seen in CI: a Ctrl-C during step 3 left the
# plain forwarder's dnsmasq behind).
_recording = 0
_held: list[int] = []


@contextlib.contextmanager
def recording() -> Iterator[None]:
    """Start and record a child inside this; a signal held meanwhile is raised after."""
    global _recording  # noqa: PLW0603 - one process-wide signal state, like the handler
    _recording += 1
    try:
        yield
    finally:
        _recording -= 1
    if not _recording and _held:
        signum = _held[0]
        _held.clear()
        raise KeyboardInterrupt(signal.Signals(signum).name)


def hold_signal(signum: int) -> bool:
    """True when ``signum`` is held for the end of `recording` instead of raised now."""
    if _recording:
        _held.append(signum)
        return True
    return False


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = None,
    keep_log_open: bool = True,
    new_session: bool = False,
) -> Process:
    """Start ``argv`` with stderr (and stdout unless given) appended to ``log_path``.

    With ``keep_log_open`` false our handle is closed at once (the child keeps its own).
    ``new_session`` keeps the child out of the terminal's process group, so a Ctrl-C reaches
    only us and we stop our children in order.
    """
    log_file = log_path.open("ab")
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=log_file if stdout is None else stdout,
            stderr=log_file,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=new_session,
        )
    except BaseException:
        log_file.close()
        raise
    if not keep_log_open:
        log_file.close()
        return Process(name, popen, log_path)
    return Process(name, popen, log_path, log_file)


def stop_popen(
    popen: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 3.0
) -> int | None:
    """Signal ``popen``'s PID (if it still runs), wait ``grace`` s, then SIGKILL and reap."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(sig)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait(5)
    return popen.returncode


def wait_until(
    ready: Callable[[], bool],
    proc: Process,
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    error: type[Exception] = ProcessError,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll ``ready()`` until true; ``error`` with the log tail when ``proc`` exits first or
    ``timeout`` seconds pass. ``details`` adds more to say (another log, say)."""

    def say() -> str:
        extra = details() if details is not None else ""
        return f"{proc.log_tail()}\n{extra}" if extra else proc.log_tail()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise error(f"{what} exited with status {proc.popen.returncode}:\n{say()}")
        if ready():
            return
        time.sleep(interval)
    raise error(f"{what} not ready within {timeout:g}s:\n{say()}")


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (a note instead when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])
