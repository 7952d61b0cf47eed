"""systemd-resolved's binaries for the tests, unpacked, never installed.

``apt-get install systemd-resolved`` would run its install script on the test host, and that
replaces the host's /etc/resolv.conf (every later download breaks). So the package and its
shared library are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a
scratch directory; nothing reaches dpkg's database. The version is pinned to the host's
``systemd`` package: libsystemd-shared must match the binaries exactly (it is versioned in
its file name), and the host's one matches its own systemd. The .debs are cached under
/var/cache/stubresolver-tests/debs, so later runs need no network.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE = Path("/var/cache/stubresolver-tests/debs")
PACKAGES = ("systemd-resolved", "libsystemd-shared")


class PackageError(RuntimeError):
    """The package could not be fetched or unpacked (the message says why)."""


@dataclass(frozen=True, slots=True)
class ResolvedPackage:
    """An unpacked systemd-resolved: where its daemon, resolvectl and library are."""

    root: Path

    @property
    def daemon(self) -> Path:
        return self.root / "lib/systemd/systemd-resolved"

    @property
    def resolvectl(self) -> Path:
        return self.root / "usr/bin/resolvectl"

    @property
    def library_dir(self) -> Path:
        """libsystemd-shared-NNN.so, for LD_LIBRARY_PATH (the binaries' RUNPATH names the
        installed location, which need not hold this version)."""
        return self.root / "usr/lib/x86_64-linux-gnu/systemd"


def host_systemd_version() -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "systemd"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise PackageError(f"no systemd package on this host: {done.stderr.strip()}")
    return done.stdout.strip()


def _cached(package: str, version: str) -> Path | None:
    # apt-get download names the file NAME_VERSION_ARCH.deb, with ':' in VERSION as %3a.
    quoted = version.replace(":", "%3a")
    for deb in sorted(CACHE.glob(f"{package}_{quoted}_*.deb")):
        return deb
    return None


def fetch(version: str) -> list[Path]:
    """The .debs of PACKAGES at ``version``, from the cache or downloaded into it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    debs: list[Path] = []
    for package in PACKAGES:
        deb = _cached(package, version)
        if deb is None:
            # apt-get download writes into the working directory; as root into a directory
            # _apt cannot enter it downloads unsandboxed (a warning, not an error).
            done = subprocess.run(
                ["apt-get", "download", f"{package}={version}"],
                cwd=CACHE,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            deb = _cached(package, version)
            if done.returncode != 0 or deb is None:
                said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                raise PackageError(f"apt-get download {package}={version}: {said}")
        debs.append(deb)
    return debs


def unpack(into: Path) -> ResolvedPackage:
    """Unpack the host-matching systemd-resolved into ``into`` (made if absent)."""
    for tool in ("apt-get", "dpkg", "dpkg-query"):
        if shutil.which(tool) is None:
            raise PackageError(f"{tool} not installed (the resolved tests need Debian's tools)")
    into.mkdir(parents=True, exist_ok=True)
    for deb in fetch(host_systemd_version()):
        subprocess.run(["dpkg", "-x", str(deb), str(into)], check=True, timeout=120)
    package = ResolvedPackage(into)
    for needed in (package.daemon, package.resolvectl):
        if not needed.exists():
            raise PackageError(f"{needed} missing after unpacking")
    return package
