"""takeover on real files in a scratch directory (takeover.resolv_conf points there, so the
host's /etc/resolv.conf is never touched): journal first, atomic replace, byte-exact restore,
the journal kept after a crash and never fed our own file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stubresolver.config import Config, parse_config
from stubresolver.errors import ConfigError, TakeoverError
from stubresolver.takeover import journal, runner, session
from stubresolver.takeover.resolv_conf import is_ours
from stubresolver.takeover.steps import WriteFile

ORIGINAL = b"# from the ISP\nnameserver 192.0.2.53\nsearch example.net\n"


def make_config(tmp: Path, mode: str = "file") -> Config:
    return parse_config(
        {
            "listen": ["127.0.0.1:53", "[::1]:53"],
            "upstreams": ["udp://10.8.0.1"],
            "takeover": {"mode": mode, "resolv_conf": str(tmp / "etc" / "resolv.conf")},
            "state_dir": str(tmp / "state"),
        }
    )


def facts(path: Path) -> tuple[object, ...]:
    info = os.lstat(path)
    body = os.readlink(path) if stat.S_ISLNK(info.st_mode) else path.read_bytes()
    return body, stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "resolv.conf"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return path


def test_plain_file_taken_over_and_restored_exactly(tmp_path: Path, plain: Path) -> None:
    config = make_config(tmp_path)
    before = facts(plain)
    mtime = os.lstat(plain).st_mtime_ns
    session.take_over(config)
    assert is_ours(plain.read_bytes())
    assert b"nameserver 127.0.0.1\nnameserver ::1\noptions edns0 trust-ad\n" in plain.read_bytes()
    assert stat.S_IMODE(os.lstat(plain).st_mode) == 0o644
    recorded = journal.read(config.state_dir)
    assert recorded is not None and recorded.found.originals[0].data == ORIGINAL
    assert recorded.done == len(recorded.apply) == 1
    assert stat.S_IMODE(os.stat(config.state_dir / "takeover.json").st_mode) == 0o600
    done = session.restore(config.state_dir)
    assert done == [f"write {plain} ({len(ORIGINAL)} bytes, mode 0640)"]
    assert facts(plain) == before and os.lstat(plain).st_mtime_ns == mtime
    assert journal.read(config.state_dir) is None
    assert session.restore(config.state_dir) is None  # idempotent
    # No temporary file is left next to it.
    assert sorted(p.name for p in plain.parent.iterdir()) == ["resolv.conf"]


def test_symlink_replaced_and_the_link_restored(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    target = tmp_path / "run" / "resolv.conf"
    target.write_bytes(ORIGINAL)
    link = tmp_path / "etc" / "resolv.conf"
    link.symlink_to("../run/resolv.conf")
    config = make_config(tmp_path, "auto")
    before = facts(link)
    session.take_over(config)
    assert not link.is_symlink() and is_ours(link.read_bytes())
    assert target.read_bytes() == ORIGINAL  # the link's target is never written
    session.restore(config.state_dir)
    assert facts(link) == before and target.read_bytes() == ORIGINAL


def test_absent_resolv_conf_is_removed_again(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    config = make_config(tmp_path)
    session.take_over(config)
    assert is_ours(config.takeover.resolv_conf.read_bytes())
    assert session.restore(config.state_dir) == [f"remove {config.takeover.resolv_conf}"]
    assert not config.takeover.resolv_conf.exists()


def test_restart_after_crash_keeps_the_original(tmp_path: Path, plain: Path) -> None:
    config = make_config(tmp_path)
    session.take_over(config)
    # A crash: no restore. The next run finds the journal and continues from it; our own
    # file is never recorded as the original.
    again = session.take_over(config)
    assert again.resumed and again.found.originals[0].data == ORIGINAL
    recorded = journal.read(config.state_dir)
    assert recorded is not None and recorded.found.originals[0].data == ORIGINAL
    session.restore(config.state_dir)
    assert plain.read_bytes() == ORIGINAL


def test_our_file_without_journal_is_never_the_original(tmp_path: Path, plain: Path) -> None:
    config = make_config(tmp_path)
    session.take_over(config)
    (config.state_dir / "takeover.json").unlink()
    ours = plain.read_bytes()
    with pytest.raises(TakeoverError) as info:
        session.take_over(config)
    assert "own file" in str(info.value) and "no journal" in str(info.value)
    assert plain.read_bytes() == ours
    assert journal.read(config.state_dir) is None


def test_a_config_that_cannot_apply_changes_nothing(tmp_path: Path, plain: Path) -> None:
    config = parse_config(
        {
            "listen": ["127.0.0.1:5353"],  # resolv.conf(5) cannot name a port
            "upstreams": ["udp://10.8.0.1"],
            "takeover": {"mode": "auto", "resolv_conf": str(plain)},
            "state_dir": str(tmp_path / "state"),
        }
    )
    with pytest.raises(ConfigError) as info:
        session.take_over(config)
    assert info.value.path == "takeover.mode" and "port 53" in info.value.message
    assert plain.read_bytes() == ORIGINAL
    assert not config.state_dir.exists()  # not even a journal


def test_journal_for_another_path_is_refused(tmp_path: Path, plain: Path) -> None:
    config = make_config(tmp_path)
    session.take_over(config)
    other = parse_config(
        {
            "upstreams": ["udp://10.8.0.1"],
            "takeover": {"mode": "file", "resolv_conf": str(tmp_path / "other.conf")},
            "state_dir": str(config.state_dir),
        }
    )
    with pytest.raises(TakeoverError, match=r"journal .* is for"):
        session.plan(other)


def test_failed_write_leaves_the_file_and_names_the_step(tmp_path: Path, plain: Path) -> None:
    step = WriteFile(tmp_path / "missing-dir" / "resolv.conf", b"x", 0o644)
    with pytest.raises(TakeoverError) as info:
        runner.execute(step)
    assert str(info.value).startswith(f"write {step.path} (1 bytes, mode 0644): ")
    assert plain.read_bytes() == ORIGINAL


def test_plan_only_reads(tmp_path: Path, plain: Path) -> None:
    config = make_config(tmp_path)
    lines = session.plan(config).describe()
    assert lines[0] == "takeover: backend file"
    assert lines[1].startswith(f"  found at {plain}: a file (")
    assert any(line.startswith("  apply: write") for line in lines)
    assert any(line.startswith("  restore: write") for line in lines)
    assert plain.read_bytes() == ORIGINAL and not config.state_dir.exists()
