"""Shared test helpers."""

from __future__ import annotations

import os

import pytest


def require_root() -> None:
    """Skip unless root; under CI=true a missing root is a failure, never a silent skip."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("this test needs root (CI=true: not skipping)")
    pytest.skip("needs root")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        require_root()
