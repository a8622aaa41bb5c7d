"""Unit tests for dli_kernel.server.store: the SQLite record store (a file under tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dli_kernel.server.store import Store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    store = Store(db)
    yield store
    store.close()


def session_record(session_id: int, state: str = "idle") -> dict:
    return {"id": session_id, "state": state, "spec": {"kind": "pyspark", "jars": ["a.jar"]}, "app_id": None}


def statement_record(statement_id: int, state: str = "available") -> dict:
    return {"id": statement_id, "code": f"x = {statement_id}", "state": state, "output": {"status": "ok"}}


def test_load_on_an_empty_database(store: Store, db: Path) -> None:
    assert store.load() == []
    assert db.exists()


def test_save_and_load_a_session_with_statements(store: Store) -> None:
    store.save_session(0, session_record(0))
    store.save_statement(0, 0, statement_record(0))
    store.save_statement(0, 1, statement_record(1))
    assert store.load() == [(session_record(0), [statement_record(0), statement_record(1)])]


def test_a_session_without_statements(store: Store) -> None:
    store.save_session(3, session_record(3))
    assert store.load() == [(session_record(3), [])]


def test_saving_again_replaces(store: Store) -> None:
    store.save_session(0, session_record(0, "starting"))
    store.save_statement(0, 0, statement_record(0, "waiting"))
    store.save_session(0, session_record(0, "idle"))
    store.save_statement(0, 0, statement_record(0, "available"))
    assert store.load() == [(session_record(0, "idle"), [statement_record(0, "available")])]


def test_load_groups_statements_by_session_and_orders_them(store: Store) -> None:
    # Saved out of order, and ids past 9 so that a text sort would put 10 before 2.
    for session_id in (11, 2, 5):
        store.save_session(session_id, session_record(session_id))
    for session_id, statement_id in [(5, 10), (2, 1), (5, 2), (11, 0), (2, 0), (5, 0)]:
        store.save_statement(session_id, statement_id, {"session": session_id, "id": statement_id})
    loaded = store.load()
    assert [record["id"] for record, _ in loaded] == [2, 5, 11]
    assert [[(s["session"], s["id"]) for s in statements] for _, statements in loaded] == [
        [(2, 0), (2, 1)],
        [(5, 0), (5, 2), (5, 10)],
        [(11, 0)],
    ]


def test_statements_of_an_unknown_session_are_not_loaded(store: Store) -> None:
    store.save_statement(9, 0, statement_record(0))
    assert store.load() == []


def test_delete_session_removes_it_and_its_statements(store: Store) -> None:
    for session_id in (0, 1):
        store.save_session(session_id, session_record(session_id))
        store.save_statement(session_id, 0, statement_record(0))
    store.delete_session(0)
    assert store.load() == [(session_record(1), [statement_record(0)])]
    # A session saved again under the deleted id starts with no statements.
    store.save_session(0, session_record(0, "starting"))
    assert store.load()[0] == (session_record(0, "starting"), [])


def test_delete_an_unknown_session_is_harmless(store: Store) -> None:
    store.save_session(1, session_record(1))
    store.delete_session(42)
    assert store.load() == [(session_record(1), [])]


def test_records_keep_json_types(store: Store) -> None:
    record = {"id": 0, "n": 1.5, "none": None, "flag": True, "nested": {"list": [1, "two", None]}, "ü": "✓"}
    store.save_session(0, record)
    assert store.load() == [(record, [])]


def test_a_second_store_sees_what_the_first_wrote(db: Path) -> None:
    first = Store(db)
    first.save_session(0, session_record(0))
    first.save_statement(0, 0, statement_record(0))
    # While the first is still open (a server restarting over a live file) ...
    second = Store(db)
    assert second.load() == [(session_record(0), [statement_record(0)])]
    second.close()
    first.save_session(1, session_record(1, "dead"))
    first.close()
    # ... and after it closed (a restart).
    third = Store(db)
    try:
        assert third.load() == [(session_record(0), [statement_record(0)]), (session_record(1, "dead"), [])]
        third.delete_session(0)
    finally:
        third.close()
    fourth = Store(db)
    try:
        assert fourth.load() == [(session_record(1, "dead"), [])]
    finally:
        fourth.close()
