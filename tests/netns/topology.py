"""The tests' name for `stubresolver.demo.topology` (the world moved into the package so that
`stubresolver demo` ships it), plus the repository root the tests run the stub from."""

from pathlib import Path
from typing import Final

from stubresolver.demo.topology import *  # noqa: F403 - every name, as before the move
from stubresolver.errors import WorldError as WorldError  # noqa: PLC0414 - re-exported

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
