"""The README's install command works on a machine without a compiler (issue 12).

A throwaway venv installs the checkout with ``--only-binary=:all:``: every dependency, the
``speed`` and ``test`` extras included, must come as a wheel, so a package that would need gcc
and the Python headers (as ``netifaces`` 0.11 did) fails this test instead of a newcomer's
install. Only the checkout itself is built, and that is pure Python. It needs the package
index this machine's pip is configured for; CI has it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_only_install_runs_version_and_check_config(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    # Build from a copy of the checkout, so nothing (build/, *.egg-info) lands in the tree.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "stubresolver", src / "stubresolver")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _run(
        [py, "-m", "pip", "install", "--quiet", "--only-binary=:all:", f"{src}[speed,test]"],
        tmp_path,
    )
    bindir = env_dir / "bin"
    version = _run([str(bindir / "stubresolver"), "--version"], tmp_path)
    assert version.stdout.startswith("stubresolver ")
    checked = _run(
        [
            str(bindir / "stubresolver"),
            "check-config",
            "--config",
            str(ROOT / "config.example.yaml"),
        ],
        tmp_path,
    )
    assert "ok" in checked.stdout
    # The wheel of netifaces-plus keeps `import netifaces` and its API: the tunnel probe reads
    # the loopback interface through it.
    probe = _run(
        [
            py,
            "-c",
            "from stubresolver.tunnel import read_interfaces; "
            "print([i.name for i in read_interfaces(['lo'])])",
        ],
        tmp_path,
    )
    assert "'lo'" in probe.stdout
    # uvloop (the speed extra) came as a wheel too.
    _run([py, "-c", "import uvloop"], tmp_path)
    # The netns world ships in the wheel and imports nothing from tests/ or testkit/: the
    # installed `stubresolver demo` runs end to end from outside the checkout (it needs root;
    # CI is root, and tests/netns/test_demo.py checks its every verdict from the checkout).
    _run([py, "-c", "import stubresolver.demo.main, stubresolver.demo.world"], tmp_path)
    if os.geteuid() == 0:
        demo = _run([str(bindir / "stubresolver"), "demo"], tmp_path)
        assert "Verdict: every step passed" in demo.stdout, demo.stdout
