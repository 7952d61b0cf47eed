"""`stubresolver demo`: check, build the world, run the steps, tear everything down.

Exit status: 0 every step passed (a skipped step is not a failure), 1 a step failed or the
world broke, 2 the demo cannot run here (not root, a tool missing), 130 interrupted.
"""

from __future__ import annotations

import os
import shutil
import traceback

from stubresolver.errors import StubError

from .leftovers import DemoWorld, sweep
from .preflight import problems
from .show import Show, Verdicts, say
from .teardown import Teardown
from .topology import NETNS_RUN_DIR, run
from .world import World

EXIT_CANNOT_RUN = 2
EXIT_INTERRUPTED = 130


def _leftovers(world: World, pids: list[int]) -> list[str]:
    """What of the world still exists after close(): must be nothing."""
    left = [f"namespace {ns}" for ns in (world.ns_c, world.ns_isp, world.ns_vpn)
            if (NETNS_RUN_DIR / ns).exists()]  # fmt: skip
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        left.append(f"process {pid}")
    left += [str(p) for p in (world.tmp, world.etc_netns) if p.exists()]
    return left


def _clean_up(world: World, verdicts: Verdicts) -> None:
    pids = [proc.pid for proc in world.processes]
    trouble = ""
    try:
        world.close()  # first: nothing (not even the output failing) may come before it
    except StubError as exc:
        trouble = str(exc)
    say("\n== Step 6/6: everything cleaned up")
    if trouble:
        say(f"  teardown trouble: {trouble}")
    left = _leftovers(world, pids)
    say(f"  stopped the {len(pids)} processes it started; removed the namespaces {world.ns_c}, "
        f"{world.ns_isp}, {world.ns_vpn},\n  {world.tmp} and {world.etc_netns}")  # fmt: skip
    if left:
        say("  still there: " + ", ".join(left))
    verdicts.add("6 cleanup", not left, "nothing left behind" if not left else "leftovers")


def main(tag: str = "d") -> int:
    found = problems(os.geteuid(), shutil.which)
    if found:
        for problem in found:
            say(f"stubresolver demo: {problem}")
        return EXIT_CANNOT_RUN
    # Namespaces need the kernel's support, not only the `ip` binary.
    probe = run(["ip", "netns", "list"], check=False)
    if probe.returncode != 0:
        say(f"stubresolver demo: network namespaces unavailable here: {probe.stderr.strip()}")
        return EXIT_CANNOT_RUN
    for line in sweep():
        say(line)
    verdicts = Verdicts()
    world = DemoWorld(tag)
    show = Show(world, verdicts)
    code = 0
    with Teardown(lambda: _clean_up(world, verdicts)) as teardown:
        try:
            show.setup()
            show.through_the_tunnel()
            show.tunnel_down()
            show.plain_forwarder()
            show.tunnel_back()
            show.leaktest()
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP by teardown.py
            say(f"\ninterrupted ({exc}): cleaning up")
            code = EXIT_INTERRUPTED
        except Exception:  # a broken world: say what broke, then still clean up
            say("\nthe demo broke:\n" + traceback.format_exc())
            code = 1
        finally:
            teardown.run()
    if code == 0 and verdicts.failed:
        code = 1
    say("")
    for step, word in verdicts.results:
        say(f"  {word:4}  {step}")
    say(f"Verdict: {'every step passed' if code == 0 else 'NOT all steps passed'}")
    return code
