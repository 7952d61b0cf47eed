"""The ``file`` backend: resolv.conf itself is replaced, atomically, by ours (a symlink
there is replaced by a file, and the link itself is restored later, so its target is never
written). For a host where no DNS manager rewrites resolv.conf, or where the user wants
the file owned outright."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from stubresolver.config import Config
from stubresolver.takeover import resolv_conf
from stubresolver.takeover.backends import Found
from stubresolver.takeover.steps import Step, WriteFile, restore_original


class FileBackend:
    name = "file"

    def paths(self, config: Config) -> tuple[Path, ...]:
        return (config.takeover.resolv_conf,)

    def probe(self, config: Config) -> tuple[tuple[str, str], ...]:
        return ()

    def refresh(self, found: Found, config: Config) -> Found:
        return found

    def apply(self, found: Found, config: Config) -> tuple[Step, ...]:
        path = config.takeover.resolv_conf
        return (WriteFile(path, resolv_conf.render(config.listen), resolv_conf.OUR_MODE),)

    def restore(self, found: Found) -> tuple[Step, ...]:
        return tuple(restore_original(o) for o in found.originals)

    def repair(self, found: Found, config: Config) -> tuple[Step, ...]:
        return self.apply(found, config)

    def watch(self, config: Config) -> tuple[Path, ...]:
        return (config.takeover.resolv_conf,)

    def holds(self, found: Found, config: Config) -> bool:
        return holds_file(config.takeover.resolv_conf, resolv_conf.render(config.listen))


def holds_file(path: Path, data: bytes) -> bool:
    """``path`` is a regular file (not a link to one) with exactly ``data``."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return path.read_bytes() == data
    except OSError:
        return False
