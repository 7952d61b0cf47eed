"""The tests' name for `stubresolver.demo.world` (moved into the package so that
`stubresolver demo` ships it); every name the tests import from here still is."""

from stubresolver.demo.world import *  # noqa: F403 - every name, as before the move

from .topology import REPO_ROOT as REPO_ROOT  # noqa: PLC0414 - re-exported
