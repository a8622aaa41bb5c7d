"""Unit tests for the public surface of dli_kernel.client: what README's "The sessions client" shows works,
and the error hierarchy is the one it describes."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import dli_kernel.client as client
from dli_kernel.client.errors import rejection_for

README = Path(__file__).resolve().parents[2] / "README.md"


def _client_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The sessions client")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_exported_name_exists() -> None:
    for name in client.__all__:
        assert getattr(client, name) is not None, name


def test_the_imports_readme_shows_work() -> None:
    imports = re.findall(r"^from (dli_kernel[\w.]*) import (.+)$", _client_section(), re.MULTILINE)
    assert imports, "README's client section shows no import"
    for module_name, names in imports:
        module = importlib.import_module(module_name)
        for name in names.split(","):
            assert hasattr(module, name.strip()), f"from {module_name} import {name.strip()}"


def test_the_error_hierarchy_readme_describes() -> None:
    sentence = re.search(r"`ClientError` → (.+?)\)", _client_section(), re.DOTALL)
    assert sentence is not None
    names = re.findall(r"`(\w+)`", sentence.group(1))
    assert set(names) == {
        "ConnectionFailed",
        "TlsFailed",
        "ServerError",
        "BadRequest",
        "Unauthorized",
        "NotFound",
        "Conflict",
        "ConfigError",
    }
    for name in names:
        assert issubclass(getattr(client, name), client.ClientError), name


def test_config_errors_are_value_errors_and_missing_packages_import_errors() -> None:
    # Callers that know nothing of the client (argparse-style code, `except ImportError`) still catch them.
    assert issubclass(client.ConfigError, ValueError)
    assert issubclass(client.MissingDependency, ImportError)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, client.BadRequest),
        (401, client.Unauthorized),
        (403, client.Unauthorized),
        (404, client.NotFound),
        (409, client.Conflict),
        (422, client.RequestRejected),
    ],
)
def test_each_refusal_status_has_its_error(status: int, error: type[client.RequestRejected]) -> None:
    kind = rejection_for(status)
    assert kind is error
    raised = kind("GET /sessions/1: refused", status)
    assert raised.status == status and str(raised) == "GET /sessions/1: refused"
    assert isinstance(raised, client.RequestRejected)
