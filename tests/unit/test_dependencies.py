"""pyproject.toml: every runtime dependency has a job in stubresolver/, and stubresolver/
imports no third-party package it does not declare (issue 8)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "stubresolver"
# Distribution name -> the name it is imported by, where they differ.
IMPORT_NAMES = {"netifaces-plus": "netifaces", "pyyaml": "yaml", "dnspython": "dns"}


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _import_name(requirement: str) -> str:
    dist = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert dist is not None, requirement
    name = dist.group().lower()
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def _imported() -> dict[str, list[str]]:
    """Top-level module -> the files under stubresolver/ importing it (lazy imports too)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


def test_import_names_map() -> None:
    assert _import_name("netifaces-plus>=0.12.5") == "netifaces"
    assert _import_name("PyYAML>=6.0") == "yaml"
    assert _import_name("dnspython>=2.4") == "dns"
    assert _import_name("dnslib>=0.9.23") == "dnslib"
    assert _import_name("h2>=4.1") == "h2"


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list) and dependencies
    imported = _imported()
    unused = [req for req in dependencies if _import_name(req) not in imported]
    assert not unused, f"declared but imported nowhere under stubresolver/: {unused}"


def test_the_package_imports_nothing_undeclared() -> None:
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    # Runtime dependencies, plus the optional `speed` extra (uvloop, imported when present).
    declared = {_import_name(req) for req in [*project["dependencies"], *extras["speed"]]}  # type: ignore[misc]
    undeclared = {
        name: files
        for name, files in _imported().items()
        if name not in declared and name != "stubresolver" and name not in sys.stdlib_module_names
    }
    assert not undeclared, f"imported by stubresolver/ but not a runtime dependency: {undeclared}"
