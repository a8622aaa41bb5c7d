"""Ids and numbers from requests are ASCII digits of bounded length: '²' (a digit to str.isdigit, not to
int), Arabic-Indic '٢' (int reads it as 2) and 5000-digit strings (beyond int's parsing limit) name
nothing; they are answered as unknown ids, never with a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dli_kernel.server.app import create_app
from dli_kernel.server.manager import SessionManager, UnknownId
from dli_kernel.spec import SessionSpec, parse_number
from tests.unit.manager_fakes import FakeLauncher, make_manager, wait_state

TOKEN = "numbers-token"
NOT_IDS = ["\u00b2", "\u0662", "\uff12", "9" * 5000, "9" * 19, "-1", "+1", " 1", "1 ", "", "0x1"]


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("17", 17), ("0042", 42), ("9" * 18, 10**18 - 1)])
def test_ascii_digits_are_numbers(text: str, number: int) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize("text", NOT_IDS)
def test_anything_else_is_not_a_number(text: str) -> None:
    assert parse_number(text) is None


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[SessionManager]:
    manager = make_manager(tmp_path, FakeLauncher())
    try:
        yield manager
    finally:
        manager.close()


@pytest.mark.parametrize("key", NOT_IDS)
def test_the_manager_finds_no_session_or_statement_by_them(manager: SessionManager, key: str) -> None:
    sessions = [manager.create(SessionSpec(kind="pyspark")) for _ in range(3)]
    wait_state(manager, sessions[2], "idle")
    manager.submit(sessions[2], "1", None, 10)
    with pytest.raises(UnknownId) as caught:
        manager.get(key)
    assert len(str(caught.value)) < 300
    with pytest.raises(UnknownId):
        manager.statement(sessions[2], key.replace("2", "0"))
    assert manager.get(str(sessions[2].id)) is sessions[2] and manager.statement(sessions[2], "0").code == "1"


@pytest.mark.parametrize(
    "path",
    [
        "/sessions/%C2%B2",
        "/sessions/%D9%A2",
        "/sessions/" + "9" * 5000,
        "/v2.0/local/sessions/" + "9" * 5000,
        "/v2.0/local/sessions/%C2%B2",
        "/sessions/0/statements/%C2%B2",
        "/sessions/0/statements/" + "9" * 5000,
        "/v2.0/local/sessions/0/statements/%D9%A0",
    ],
)
def test_the_rest_paths_answer_404(manager: SessionManager, path: str) -> None:
    manager.create(SessionSpec(kind="pyspark"))
    with TestClient(create_app(manager, TOKEN, "http://127.0.0.1:8998"), raise_server_exceptions=False) as c:
        reply = c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 404, reply.text
    assert "does not exist" in reply.json()["msg"] and len(reply.text) < 400


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000])
def test_query_numbers_are_refused_with_400(manager: SessionManager, value: str) -> None:
    with TestClient(create_app(manager, TOKEN, "http://127.0.0.1:8998"), raise_server_exceptions=False) as c:
        reply = c.get("/sessions", params={"from": value}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 400 and "'from'" in reply.json()["msg"]
