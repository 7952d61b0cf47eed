"""The backends this build has, by the name takeover.mode uses."""

from __future__ import annotations

from stubresolver.takeover.backends import Backend
from stubresolver.takeover.backends.file import FileBackend
from stubresolver.takeover.backends.networkmanager import NetworkManagerBackend
from stubresolver.takeover.backends.resolvconf import ResolvconfBackend
from stubresolver.takeover.backends.resolved import ResolvedBackend

BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (FileBackend(), ResolvedBackend(), NetworkManagerBackend(), ResolvconfBackend())
}


def get(name: str) -> Backend:
    return BACKENDS[name]
