"""The package is complete without the source tree: every package it imports is declared in pyproject.toml
(in the group the importing code is installed with), and every data file it reads ships in the wheel."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pytest

from dli_kernel.demo import QUICKSTART

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dli_kernel"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MODULES = sorted(PACKAGE.rglob("*.py"))

# Parts of the package that run only where the `server` extra is installed: the server process, the
# drivers it starts, and the demo (which starts an embedded server).
SERVER_SIDE = ("server/", "driver/", "demo.py")


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _group(requirements: list[str]) -> set[str]:
    """The distributions a dependency group brings, with ``dli-kernel[extra]`` expanded."""
    names: set[str] = set()
    for requirement in requirements:
        own = re.fullmatch(r"dli-kernel\[(\w+)\]", requirement.replace(" ", ""))
        if own:
            names |= _group(PYPROJECT["project"]["optional-dependencies"][own.group(1)])
        else:
            names.add(_name(requirement))
    return names


BASE = _group(PYPROJECT["project"]["dependencies"])
EXTRAS = {name: _group(reqs) for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}


def _third_party_imports(path: Path) -> dict[str, bool]:
    """Top-level modules of other distributions that ``path`` imports: name -> imported at module level
    (False: only inside a function, so only the code that needs it pays for it)."""
    tree = ast.parse(path.read_text())
    lazy = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
    }
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("__future__", "dli_kernel"):
                continue
            found[top] = found.get(top, False) or id(node) not in lazy
    return found


@cache
def _providers() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution(module: str) -> str:
    distributions = _providers().get(module)
    assert distributions, f"no installed distribution provides {module!r}"
    return _name(distributions[0])


def _where(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_where)
def test_every_import_is_declared_where_the_code_is_installed(path: Path) -> None:
    server_side = _where(path).startswith(SERVER_SIDE)
    for module, at_module_level in _third_party_imports(path).items():
        distribution = _distribution(module)
        if server_side:
            allowed, groups = BASE | EXTRAS["server"], "the base dependencies or the server extra"
        elif at_module_level:
            # Importing the kernel, the client or the CLI must work with the base dependencies alone.
            allowed, groups = BASE, "the base dependencies"
        else:
            allowed = BASE | EXTRAS["results"] | EXTRAS["dlc"] | EXTRAS["charts"]
            groups = "the base dependencies or the results, dlc or charts extra"
        assert distribution in allowed, f"{_where(path)} imports {module} ({distribution}), not in {groups}"


def test_the_import_check_sees_what_it_checks(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import json\nimport numpy as np\n\ndef f():\n    from pandas import DataFrame\n")
    assert _third_party_imports(module) == {"numpy": True, "pandas": False}
    assert _distribution("IPython") == "ipython"
    assert {"ipykernel", "requests"} <= BASE and "pyspark" not in BASE and "pyspark" in EXTRAS["server"]
    assert "pandas" in EXTRAS["server"]  # through dli-kernel[results]


def _shipped(relative: str) -> bool:
    """Whether [tool.setuptools.package-data] puts this file (relative to dli_kernel/) into the wheel.
    A glob names files relative to its package's directory, and `*` does not cross a `/`."""
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        prefix = package.replace(".", "/").removeprefix("dli_kernel").strip("/")
        if prefix and not relative.startswith(prefix + "/"):
            continue
        parts = relative.removeprefix(prefix + "/" if prefix else "").split("/")
        for pattern in patterns:
            globs = pattern.split("/")
            if len(globs) == len(parts) and all(map(fnmatch.fnmatchcase, parts, globs)):
                return True
    return False


DATA_FILES = sorted(
    path.relative_to(PACKAGE).as_posix()
    for path in PACKAGE.rglob("*")
    if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
)


@pytest.mark.parametrize("relative", DATA_FILES)
def test_every_data_file_ships_in_the_wheel(relative: str) -> None:
    assert _shipped(relative), f"dli_kernel/{relative} is not in [tool.setuptools.package-data]"


def test_the_data_file_check_sees_what_it_checks() -> None:
    assert {"notebooks/quickstart.ipynb", "driver/scala_repl.scala"} <= set(DATA_FILES)
    assert _shipped("driver/scala_repl.scala") and not _shipped("driver/other.txt")
    assert not _shipped("notebooks/deeper/x.ipynb")


def test_the_demo_notebook_is_inside_the_package() -> None:
    """`dli-kernel demo` runs from a wheel: its notebook is package data, not a file of the checkout."""
    assert QUICKSTART.is_relative_to(PACKAGE) and QUICKSTART.is_file()
