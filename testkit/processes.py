"""The tests' name for `stubresolver.demo.processes` (it moved into the package with the
netns world, so `stubresolver demo` ships it)."""

from stubresolver.demo.processes import (
    Process,
    log_tail,
    start,
    stop_popen,
    wait_until,
)
from stubresolver.errors import ProcessError

__all__ = ["Process", "ProcessError", "log_tail", "start", "stop_popen", "wait_until"]
