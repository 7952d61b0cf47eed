"""The backends this build has, by the name takeover.mode uses."""

from __future__ import annotations

from stubresolver.takeover.backends import Backend
from stubresolver.takeover.backends.file import FileBackend

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (FileBackend(),)}


def get(name: str) -> Backend:
    return BACKENDS[name]
