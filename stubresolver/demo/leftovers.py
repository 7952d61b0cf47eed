"""What a demo killed with SIGKILL (no handler runs) leaves behind, found and removed by the
next `stubresolver demo`.

Every demo world keeps a record of itself in its own temporary directory
(``demo-owner.json``): the demo's PID and start time, its namespaces, files and every child
it started, each child by PID *and* start time. The next demo removes a world only when the
demo that recorded it is gone, and signals a recorded child only while that same process
(same start time) still runs, so a reused PID is never hit. The tests' worlds keep no
record and are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .processes import Process
from .topology import NETNS_RUN_DIR, WG_RUN_DIR, run
from .world import World

RECORD = "demo-owner.json"
_WORLD_DIR = re.compile(r"^sr\d+[a-z]-")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (proc(5) stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _same_process(pid: int, started: int | None) -> bool:
    return started is not None and start_time(pid) == started


def write_record(
    tmp: Path,
    namespaces: Sequence[str],
    paths: Sequence[Path],
    children: Sequence[int],
) -> None:
    """(Re)write the record, atomically: a kill at any moment leaves the old or the new."""
    me = os.getpid()
    record = {
        "pid": me,
        "start": start_time(me),
        "namespaces": list(namespaces),
        "paths": [str(p) for p in paths],
        "children": [[pid, start_time(pid)] for pid in children],
    }
    part = tmp / f"{RECORD}.part"
    part.write_text(json.dumps(record) + "\n")
    part.replace(tmp / RECORD)


def _records(base: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for entry in sorted(base.iterdir()):
        if not (_WORLD_DIR.match(entry.name) and entry.is_dir()):
            continue
        try:
            found.append((entry, json.loads((entry / RECORD).read_text())))
        except (OSError, ValueError):
            continue  # not a demo world (a test's), or one still being made
    return found


def sweep(base: Path | None = None) -> list[str]:
    """Remove the worlds of demos that are gone; one line per world removed."""
    removed = []
    for tmp, record in _records(base or Path(tempfile.gettempdir())):
        if _same_process(int(record["pid"]), record.get("start")):
            continue  # that demo still runs: its world is its own business
        killed = 0
        for pid, started in record.get("children", []):
            if _same_process(int(pid), started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
        for ns in record.get("namespaces", []):
            if (NETNS_RUN_DIR / ns).exists():
                run(["ip", "netns", "del", ns], check=False)
        for path in map(Path, record.get("paths", [])):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(
            f"removed what an earlier demo (pid {record['pid']}, gone) left behind: "
            f"{killed} processes, namespaces {', '.join(record.get('namespaces', []))}, {tmp}"
        )
    return removed


class DemoWorld(World):
    """The demo's world: children in sessions of their own (Ctrl-C reaches only the demo,
    which stops them in order), and a record of itself kept current for `sweep`."""

    own_session = True

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self._write_record()  # before anything else exists: nothing made goes unrecorded

    def _write_record(self) -> None:
        write_record(
            self.tmp,
            [self.ns_c, self.ns_isp, self.ns_vpn],
            [
                self.etc_netns,
                *(WG_RUN_DIR / f"{ifname}.sock" for ifname in (self.tun_c, self.tun_v)),
            ],
            [proc.pid for proc in self.processes],
        )

    def spawn(self, *args: Any, **kwargs: Any) -> Process:
        proc = super().spawn(*args, **kwargs)
        self._write_record()
        return proc
