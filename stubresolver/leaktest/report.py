"""Pure: the verdict of each step, the overall verdict and the exit status, as text or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK = "ok"
LEAK = "leak"
MISCONFIGURED = "misconfigured"
COULD_NOT_RUN = "could not run"
SKIPPED = "skipped"

EXIT_CLEAN = 0
EXIT_FOUND = 1  # a leak or a misconfiguration
EXIT_COULD_NOT_RUN = 2

#: What no DNS tool can see, said every time (issue 10).
LIMITS = (
    "What this test cannot see: WebRTC can expose your addresses to a web page whatever DNS "
    "does (a browser setting); a browser or app with its own DNS-over-HTTPS bypasses the "
    "system resolver, unless the canary names (Firefox), the block list or the guard stop "
    "it; HTTPS to a DoH server not on the built-in list looks like any other HTTPS."
)


@dataclass
class Step:
    name: str
    verdict: str
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "verdict": self.verdict, "details": self.details}


def overall(steps: list[Step]) -> tuple[str, int]:
    verdicts = {s.verdict for s in steps}
    if LEAK in verdicts:
        return "LEAK", EXIT_FOUND
    if MISCONFIGURED in verdicts:
        return "MISCONFIGURED", EXIT_FOUND
    if COULD_NOT_RUN in verdicts:
        return "INCOMPLETE: the test could not run every step", EXIT_COULD_NOT_RUN
    return "CLEAN: no DNS left outside the tunnel", EXIT_CLEAN


def as_json(steps: list[Step]) -> dict[str, Any]:
    verdict, code = overall(steps)
    return {
        "verdict": verdict,
        "exit_status": code,
        "steps": [s.as_dict() for s in steps],
        "limits": LIMITS,
    }


def as_text(steps: list[Step]) -> str:
    lines: list[str] = []
    for index, step in enumerate(steps, 1):
        lines.append(f"{index}. {step.name}: {step.verdict.upper()}")
        lines.extend(f"     {detail}" for detail in step.details)
    verdict, _ = overall(steps)
    lines += ["", f"verdict: {verdict}", "", LIMITS]
    return "\n".join(lines)
