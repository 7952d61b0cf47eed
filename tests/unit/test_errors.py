"""errors: every error class lives in stubresolver/errors.py and each one is used (issue 8)."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import stubresolver.errors

PACKAGE = Path(stubresolver.errors.__file__).resolve().parent
ERRORS = PACKAGE / "errors.py"
_BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def _error_classes() -> list[str]:
    tree = ast.parse(ERRORS.read_text(encoding="utf-8"))
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)]


def test_no_exception_class_is_declared_outside_errors_py() -> None:
    known = set(_error_classes()) | _BUILTIN_EXCEPTIONS
    found = []
    for path, tree in _modules():
        if path == ERRORS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases}
                if bases & known:
                    found.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert not found


def test_every_error_class_is_used() -> None:
    used: set[str] = set()
    for path, tree in _modules():
        if path != ERRORS:
            used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            used |= {
                a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
            }
    unused = [name for name in _error_classes() if name not in used]
    assert not unused
