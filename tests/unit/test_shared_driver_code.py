"""Shared-driver sessions without Java: what the server sends the host and an attaching kernel, the keys the
host accepts, and a shared session's refusal of Scala."""

from __future__ import annotations

import ast
import json

import pytest

from dli_kernel.driver import runtime, scala_repl, shared
from dli_kernel.protocol import shared_job_tag
from dli_kernel.server import driver_code

HOSTILE = "x'); import os; os.system('echo pwned'); ('\"\\\n"
KEY = "0123456789abcdef"


def call_of(code: str) -> ast.Call:
    (statement,) = ast.parse(code).body
    assert isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
    return statement.value


@pytest.mark.parametrize(
    ("snippet", "function"),
    [
        (driver_code.open_shared, "_dli_shared.open_session"),
        (driver_code.release_shared, "_dli_shared.release_session"),
    ],
)
def test_a_key_reaches_the_host_as_one_string_literal(snippet: object, function: str) -> None:
    assert callable(snippet)
    call = call_of(snippet(HOSTILE))
    assert ast.unparse(call.func) == function
    assert [ast.literal_eval(argument) for argument in call.args] == [HOSTILE]


def test_the_host_snippets_need_only_the_shared_import() -> None:
    namespace: dict[str, object] = {}
    exec(driver_code.SHARED_IMPORT, namespace)
    assert namespace["_dli_shared"] is shared
    assert ast.unparse(call_of(driver_code.open_shared_count())) == "_dli_shared.open_sessions()"


def test_attach_carries_its_settings_as_one_json_literal() -> None:
    settings = {"gateway": {"port": 4321, "secret": HOSTILE}, "key": HOSTILE}
    call = call_of(driver_code.attach(settings))
    assert ast.unparse(call.func) == "_dli.attach"
    assert json.loads(ast.literal_eval(call.args[0])) == settings


@pytest.mark.parametrize("key", ["", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", HOSTILE, 7])
def test_the_host_takes_only_keys_the_server_makes(key: object) -> None:
    with pytest.raises(ValueError, match="16 lowercase hex digits"):
        shared.open_session(key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="16 lowercase hex digits"):
        shared.release_session(key)  # type: ignore[arg-type]


def test_an_unknown_session_is_not_released() -> None:
    assert json.loads(shared.release_session(KEY)) == {"released": False, "uncached": 0}
    assert shared.open_sessions() == 0


def test_the_job_tag_names_the_session() -> None:
    assert shared_job_tag(KEY) == f"dli-session-{KEY}"


def test_a_shared_session_refuses_scala_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_shared", True)
    with pytest.raises(scala_repl.ScalaUnavailable) as refused:
        runtime._scala_interpreter()
    message = str(refused.value)
    assert message.startswith("Scala needs a session with a driver of its own")
    assert message.count(". ") == 0 and message.endswith(".")
