"""The package's one-way layers, checked on the source: each folder is one process or one layer, and a
module that reaches "up" (or across processes) fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dli_kernel"

# What each part of the package may import of dli_kernel itself ("dli_kernel" alone is __version__).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "processes": set(),
    "spec": {"protocol"},
    "client": {"client", "protocol", "spec"},
    "config": {"client", "protocol", "spec", "processes"},
    "embedded": {"config", "client", "protocol", "spec", "processes"},
    "kernel": {"kernel", "client", "config", "embedded", "protocol", "spec", "dli_kernel"},
    "server": {"server", "protocol", "spec", "processes", "dli_kernel"},
    "driver": {"driver", "protocol", "processes"},
    "install": set(),
    "demo": {"protocol", "install", "embedded"},
    # the command line and the package root sit above every layer
    "cli": None,
    "sessions_cli": None,
    "__init__": None,
    "__main__": None,
}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported(path: Path) -> set[str]:
    """The dli_kernel parts a module imports, at any depth (lazy imports in functions count too)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module == "dli_kernel"
            names = [f"dli_kernel.{a.name}" for a in node.names] if root else [node.module]
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "dli_kernel":
                parts.add(pieces[1] if len(pieces) > 1 else "dli_kernel")
    # `from dli_kernel import __version__` names the root, not a part
    return {"dli_kernel" if part == "__version__" else part for part in parts}


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_rule() -> None:
    assert {_part(path) for path in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path: Path) -> None:
    allowed = ALLOWED.get(_part(path), set())
    if allowed is None:
        return
    wrong = _imported(path) - allowed - {_part(path)}
    where = path.relative_to(PACKAGE)
    assert not wrong, f"{where} imports {sorted(wrong)}; its layer may import {sorted(allowed)}"


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dli_kernel.server.manager import SessionManager\n")
    assert _imported(module) == {"server"}
