"""`python -m stubresolver demo`, end to end as CI runs it (root): its verdicts, its exit
status, and that nothing of its world (namespaces, processes, temporary files, /etc/netns,
WireGuard control sockets) is left afterwards; also when SIGINT or SIGTERM arrives in the
middle. Its world is named sr<pid>d-* (sr<pid>e-* for the interrupted runs), apart from
every other test world's letters.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from stubresolver.demo.preflight import TOOLS

from .world import REPO_ROOT, WG_RUN_DIR

pytestmark = pytest.mark.root

DEMO_TIMEOUT = 120.0  # generous: the demo itself takes a few seconds (< 40 s promised)


def _demo(
    *args: str, env: dict[str, str] | None = None, new_session: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stubresolver", "demo", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)) if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )


def _prefix(pid: int, tag: str) -> str:
    return f"sr{pid % 10000}{tag}"  # Topology's naming


def _leftovers(prefix: str) -> list[str]:
    """Everything on this host that carries the demo world's prefix."""
    left: list[str] = []
    for where in (Path("/var/run/netns"), Path(tempfile.gettempdir()), Path("/etc/netns"),
                  WG_RUN_DIR):  # fmt: skip
        if where.is_dir():
            left += [str(p) for p in where.iterdir() if p.name.startswith(prefix)]
    # Every process of the world names the prefix in its argv (interface, config or log).
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if prefix in argv:
            left.append(f"pid {proc.name}: {argv}")
    return left


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The demo's output up to and including the line holding `marker`."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {marker!r} in the demo's output:\n{seen}", pytrace=False)
        if select.select([proc.stdout], [], [], min(left, 1.0))[0]:
            line = proc.stdout.readline()
            if not line:  # end of output: the demo has ended
                pytest.fail(f"demo ended before {marker!r}:\n{seen}", pytrace=False)
            seen += line
    return seen


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"demo did not finish within {DEMO_TIMEOUT}s:\n{out}", pytrace=False)
    return proc.returncode, out


def test_demo_runs_end_to_end_and_leaves_nothing(netns_ok: None) -> None:
    started = time.monotonic()
    proc = _demo()
    code, out = _finish(proc)
    took = time.monotonic() - started
    prefix = _prefix(proc.pid, "d")
    assert code == 0, out
    assert took < 40, f"the demo took {took:.1f} s"
    # 1: through the tunnel, dig and glibc alike, from the VPN's DNS.
    step1 = out.split("== Step 1/6")[1].split("== Step 2/6")[0]
    assert "status NOERROR; answer 192.0.2.10" in step1
    assert re.search(r"getent hosts www\.example .*\n    192\.0\.2\.10 ", step1), step1
    assert "ISP resolver saw 0 queries (0 DNS packets from the client)" in step1
    # 2: refused at once, the EDE text naming the tunnel, the ISP none the wiser.
    step2 = out.split("== Step 2/6")[1].split("== Step 3/6")[0]
    assert f"status REFUSED; EDE 23 (Network Error): (tunnel {prefix}wc down)" in step2
    assert "ISP resolver saw 0 queries (0 DNS packets from the client)" in step2
    assert "no address" in step2
    # 3: the plain forwarder hands every name to the ISP, which logs (and forges) them.
    step3 = out.split("== Step 3/6")[1].split("== Step 4/6")[0]
    for name in ("www.example", "mail.example", "my-bank.example", "clinic.example"):
        assert f"query[A] {name} from 198.18.1.2" in step3
    seen = re.search(r"ISP resolver saw (\d+) queries; 5 answers were the ISP's forgery", step3)
    assert seen is not None and int(seen.group(1)) >= 5, step3
    # 4: answers again, and nothing new at the ISP.
    step4 = out.split("== Step 4/6")[1].split("== Step 5/6")[0]
    assert "status NOERROR; answer 192.0.2.10" in step4
    assert "ISP resolver saw 0 new queries since the stub is back" in step4
    # 5: leaktest inside the world: clean as it is, a leak (on paper and on the wire) when
    # resolv.conf is made to name the ISP.
    step5 = out.split("== Step 5/6")[1].split("== Step 6/6")[0]
    clean, leaky = step5.split("planting a leak")
    assert "verdict: CLEAN" in clean and "no DNS, DoT or DoH packet left outside" in clean
    assert "nameserver 198.18.1.1: NOT the stub" in leaky
    assert re.search(r"SEEN DNS on \S+: udp 198\.18\.1\.2:\d+ -> 198\.18\.1\.1:53", leaky), leaky
    assert "verdict: LEAK" in leaky
    for step in ("1 tunnel answers", "2 tunnel down", "3 plain forwarder", "4 tunnel back",
                 "5 leaktest", "6 cleanup"):  # fmt: skip
        assert f"  PASS  {step}" in out, out
    assert "Verdict: every step passed" in out
    assert _leftovers(prefix) == []


@pytest.mark.parametrize(
    ("sig", "marker", "to_group"),
    [(signal.SIGINT, "== Step 3/6", True), (signal.SIGTERM, "== Step 1/6", False)],
    ids=["ctrl-c-during-step-3", "sigterm-during-step-1"],
)
def test_a_signal_in_the_middle_cleans_everything_up(
    netns_ok: None, sig: signal.Signals, marker: str, to_group: bool
) -> None:
    # Ctrl-C in a terminal signals the whole foreground process group: the demo and any
    # dig or ip it runs that moment. The demo runs in a session (and group) of its own here,
    # so that group holds only it and its children; SIGTERM goes to its PID alone.
    proc = _demo("--tag", "e", new_session=True)
    prefix = _prefix(proc.pid, "e")
    try:
        _read_until(proc, marker, DEMO_TIMEOUT)
        # The world really is there at this point: the leftover check below can see it.
        there = _leftovers(prefix)
        assert any("/var/run/netns/" in p for p in there), there
        assert any(p.startswith("pid ") for p in there), there
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        code, out = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, out
    assert f"interrupted ({sig.name}): cleaning up" in out
    assert "== Step 6/6: everything cleaned up" in out
    assert "  PASS  6 cleanup" in out
    assert _leftovers(prefix) == []


def test_missing_tool_names_the_package_and_exits_2(netns_ok: None, tmp_path: Path) -> None:
    # A PATH holding every tool but wireguard-go.
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        if tool != "wireguard-go":
            (tmp_path / tool).symlink_to(found)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PATH=str(tmp_path))
    proc = _demo(env=env)
    code, out = _finish(proc)
    assert code == 2, out
    assert "missing wireguard-go: apt-get install --no-install-recommends wireguard-go" in out
    assert _leftovers(_prefix(proc.pid, "d")) == []


def test_not_root_is_told_and_exits_2(netns_ok: None) -> None:
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run(
        [*setpriv, sys.executable, "-m", "stubresolver", "demo"],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "must run as root: sudo stubresolver demo" in proc.stdout


def test_a_crash_in_the_middle_cleans_everything_up(
    netns_ok: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in a step (here: step 3 raises) still tears the whole real world down."""
    from stubresolver.demo import main, show

    def broken(_self: show.Show) -> None:
        raise RuntimeError("a bug in step 3")

    monkeypatch.setattr(show.Show, "plain_forwarder", broken)
    code = main.main("e")  # in this process: the world is named after our PID
    out = capsys.readouterr().out
    assert code == 1, out
    assert "the demo broke:" in out and "RuntimeError: a bug in step 3" in out
    assert "  PASS  2 tunnel down" in out  # it really got that far
    assert "  PASS  6 cleanup" in out
    assert _leftovers(_prefix(os.getpid(), "e")) == []


def test_a_demo_killed_with_sigkill_is_cleaned_up_by_the_next(netns_ok: None) -> None:
    killed = _demo("--tag", "e")
    prefix = _prefix(killed.pid, "e")
    try:
        _read_until(killed, "== Step 2/6", DEMO_TIMEOUT)
        killed.kill()  # no handler runs: the world stays
        killed.communicate(timeout=30)
        there = _leftovers(prefix)
        assert any("/var/run/netns/" in p for p in there), there
        assert any(p.startswith("pid ") for p in there), there
        code, out = _finish(_demo())
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
    assert code == 0, out
    assert f"removed what an earlier demo (pid {killed.pid}, gone) left behind" in out
    assert _leftovers(prefix) == []


def test_a_reader_that_goes_away_does_not_stop_the_cleanup(netns_ok: None) -> None:
    """`stubresolver demo | head -3`: the pipe breaks mid-run; the world still goes away."""
    proc = _demo("--tag", "e")
    prefix = _prefix(proc.pid, "e")
    try:
        _read_until(proc, "world built in", DEMO_TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()
        code = proc.wait(DEMO_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert _leftovers(prefix) == []
