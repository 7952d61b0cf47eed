"""leftovers.sweep: the next demo removes what a SIGKILLed one left, and nothing else.

Records are written into a directory of the test's own (not /tmp), with real processes the
test started standing in for a world's children; no namespace is named that exists.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stubresolver.demo.leftovers import RECORD, sweep, write_record


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid  # reaped: no process has it now (until the PID is reused)


def _world(base: Path, name: str) -> Path:
    tmp = base / name
    tmp.mkdir()
    (tmp / "some.log").write_text("x")
    return tmp


def test_a_world_whose_demo_is_gone_is_removed(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    tmp = _world(tmp_path, "sr12d-abc")
    extra = tmp_path / "etc-netns-sr12d-c"
    extra.mkdir()
    write_record(tmp, ["sr12d-nosuchns"], [extra], [child.pid])
    record = json.loads((tmp / RECORD).read_text())
    record["pid"] = _dead_pid()
    (tmp / RECORD).write_text(json.dumps(record))
    [line] = sweep(tmp_path)
    assert f"earlier demo (pid {record['pid']}, gone)" in line
    assert "1 processes" in line
    assert child.wait(10) == -9
    assert not tmp.exists() and not extra.exists()


def test_a_running_demo_is_left_alone(tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    tmp = _world(tmp_path, "sr12e-abc")
    write_record(tmp, [], [], [child.pid])  # owned by this very process, alive
    assert sweep(tmp_path) == []
    assert child.poll() is None and tmp.exists()


def test_a_reused_pid_is_never_signalled(tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    tmp = _world(tmp_path, "sr12d-def")
    write_record(tmp, [], [], [child.pid])
    record = json.loads((tmp / RECORD).read_text())
    record["pid"] = _dead_pid()
    record["children"] = [[child.pid, record["children"][0][1] - 1]]  # another start time
    (tmp / RECORD).write_text(json.dumps(record))
    [line] = sweep(tmp_path)
    assert "0 processes" in line
    assert child.poll() is None
    assert not tmp.exists()


def test_directories_without_a_record_are_not_demo_worlds(tmp_path: Path) -> None:
    test_world = _world(tmp_path, "sr12a-xyz")  # a test's world: no record
    other = _world(tmp_path, "something-else")
    (other / RECORD).write_text(json.dumps({"pid": _dead_pid()}))  # not a world's name
    assert sweep(tmp_path) == []
    assert test_world.exists() and other.exists()
    assert os.listdir(test_world) == ["some.log"]
