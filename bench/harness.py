"""The bench's process handling: every server it starts (via testkit.processes), waited for
until it answers, stopped by PID; and what every bench command shares around its body (temp
dir, SIGTERM handling, the report printed and written as JSON)."""

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

from testkit.dnsprobe import wait_first_answer
from testkit.processes import start, stop_popen
from testkit.zones import hit_name

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    name: str
    ip: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    start_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid


class Harness:
    """Owns every process it starts and stops them, by PID, in ``close``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, ip: str, port: int, argv: list[str]) -> Server:
        log = self.workdir / f"{name}.log"
        t0 = time.monotonic()
        proc = start(name, argv, log, cwd=REPO_ROOT, keep_log_open=False).popen
        self.procs.append(proc)
        try:
            start_s = wait_first_answer(ip, port, proc, t0, hit_name(0))
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name}: {exc}\n--- {log} (tail) ---\n{tail}") from None
        return Server(name, ip, port, proc, log, start_s)

    def stop(self, server: Server) -> None:
        stop_popen(server.proc, grace=5)

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop_popen(proc, grace=5)


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class _Report(Protocol):
    settings: dict[str, float | int | str]


R = TypeVar("R", bound=_Report)


def run_and_report(
    *,
    tools: Sequence[str],
    prefix: str,
    keep_tmp: bool,
    json_path: Path | None,
    body: Callable[[Path, Harness], R],
    render_report: Callable[[R], str],
) -> int:
    """What every bench command shares: check the tools, make a temp dir, run ``body``,
    stop what it started (also on SIGTERM), print the report and write it as JSON."""
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"missing tool: {tool}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _raise_exit)  # so `finally` stops what we started
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    harness = Harness(workdir)
    t0 = time.monotonic()
    try:
        report = body(workdir, harness)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        harness.close()
        if keep_tmp:
            print(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.settings["elapsed_s"] = round(time.monotonic() - t0, 1)
    print()
    print(render_report(report))
    print(f"\nelapsed {report.settings['elapsed_s']} s")
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")  # type: ignore[call-overload]
        print(f"JSON written to {json_path}")
    return 0
