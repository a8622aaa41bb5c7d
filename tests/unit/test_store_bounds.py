"""What the server keeps stays bounded: sessions.db and its log after many large outputs, the ended sessions
it remembers (by count and by age, directories and records removed), and an earlier version's database."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dli_kernel.server import store as store_module
from dli_kernel.server.manager import ManagedSession, SessionManager
from dli_kernel.server.outputs import SpilledOutput
from dli_kernel.server.records import now_ms
from dli_kernel.server.store import Store
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import FakeLauncher, make_manager, wait_state

MB = 1_000_000


def db_bytes(db: Path) -> int:
    """sessions.db with its write-ahead log and shared-memory index: what the store takes on disk."""
    return sum(
        p.stat().st_size
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
        if p.exists()
    )


def stored_session_ids(db: Path) -> set[int]:
    connection = sqlite3.connect(db)
    try:
        sessions = {row[0] for row in connection.execute("SELECT id FROM sessions")}
        statements = {row[0] for row in connection.execute("SELECT session_id FROM statements")}
    finally:
        connection.close()
    assert statements <= sessions
    return sessions


def started(manager: SessionManager) -> ManagedSession:
    session = manager.create(SessionSpec())
    wait_state(manager, session, "idle")
    return session


def print_in(manager: SessionManager, launcher: FakeLauncher, session: ManagedSession, text: str) -> None:
    statement = manager.submit(session, "print(big)", None, 1000)
    driver = next(d for d in launcher.drivers if d.workdir == session.workdir)
    driver.next_run().finish(text=text)
    wait_state(manager, session, "available", statement=statement)


# -- the database ------------------------------------------------------------------------------------


def test_sessions_db_stays_small_after_many_large_outputs(tmp_path: Path, launcher: FakeLauncher) -> None:
    manager = make_manager(tmp_path, launcher)  # the default threshold
    db = tmp_path / "state" / "sessions.db"
    try:
        sessions = [started(manager) for _ in range(3)]
        for n in range(30):  # 30 outputs of 3 MB: 90 MB that used to go into the records
            print_in(manager, launcher, sessions[n % 3], chr(ord("a") + n % 26) * (3 * MB))
        held = [s.output for session in sessions for s in session.statements]
        assert all(isinstance(output, SpilledOutput) for output in held)
        assert db_bytes(db) < 2 * MB
    finally:
        manager.close()
    assert db_bytes(db) < 2 * MB


def test_a_large_delete_empties_the_log_and_gives_the_space_back(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    store = Store(db)
    try:
        for session_id in (1, 2):
            store.save_session(session_id, {"id": session_id, "state": "idle"})
            for statement_id in range(6):
                store.save_statement(session_id, statement_id, {"output": "x" * MB})
        assert db_bytes(db) > 10 * MB
        store.delete_session(1)
        store.delete_session(2)
        assert not db.with_name("sessions.db-wal").stat().st_size  # checkpointed and truncated
        assert db.stat().st_size < MB  # auto_vacuum gave the pages back
        assert store.load() == []
    finally:
        store.close()


def test_a_database_of_an_earlier_version_is_compacted_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    old = sqlite3.connect(db, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(store_module._SCHEMA)
    old.execute("INSERT INTO sessions VALUES (1, ?)", (json.dumps({"id": 1, "created": 1}),))
    for statement_id in range(5):
        old.execute("INSERT INTO statements VALUES (1, ?, ?)", (statement_id, json.dumps({"o": "y" * MB})))
    old.execute("DELETE FROM statements WHERE id > 0")  # an earlier version never gave space back
    old.close()
    assert db.stat().st_size > 4 * MB
    store = Store(db)
    try:
        assert db.stat().st_size < 2 * MB
        assert store.load() == [({"id": 1, "created": 1}, [{"o": "y" * MB}])]
    finally:
        store.close()
    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA auto_vacuum").fetchone()[0] == 1  # FULL from now on
    finally:
        check.close()


# -- ended sessions ------------------------------------------------------------------------------------


def test_ended_sessions_beyond_the_count_are_forgotten_with_their_directories_and_records(
    tmp_path: Path, launcher: FakeLauncher
) -> None:
    manager = make_manager(tmp_path, launcher, keep_ended_sessions=2, output_spill_bytes=1000)
    db = tmp_path / "state" / "sessions.db"
    try:
        ended = []
        for _ in range(4):
            session = started(manager)
            print_in(manager, launcher, session, "o" * 5000)  # a spilled output in its directory
            manager.delete(session)
            ended.append(session)
        live = started(manager)  # a new session is when the registry is pruned
        kept = {s.id for s in manager.list(states=("killed",))}
        assert kept == {ended[2].id, ended[3].id}
        for session in ended[:2]:
            assert not session.workdir.exists()
        for session in ended[2:]:
            assert (session.workdir / "outputs" / "0.json").is_file()
        assert stored_session_ids(db) == {*kept, live.id}
    finally:
        manager.close()


def test_ended_sessions_older_than_the_age_are_forgotten_however_few(
    tmp_path: Path, launcher: FakeLauncher
) -> None:
    manager = make_manager(tmp_path, launcher, keep_ended_for=3600.0)
    try:
        old, recent = started(manager), started(manager)
        manager.delete(old)
        manager.delete(recent)
        old.updated = now_ms() - 3601 * 1000  # it ended over an hour ago
        live = started(manager)
        assert {s.id for s in manager.list(states=("killed",))} == {recent.id}
        assert not old.workdir.exists() and recent.workdir.exists()
        assert stored_session_ids(tmp_path / "state" / "sessions.db") == {recent.id, live.id}
    finally:
        manager.close()


def test_live_sessions_are_never_pruned(tmp_path: Path, launcher: FakeLauncher) -> None:
    manager = make_manager(tmp_path, launcher, keep_ended_sessions=0, keep_ended_for=0.0)
    try:
        first = started(manager)
        first.updated = 0  # as old as can be, but live
        second = started(manager)
        assert {s.id for s in manager.list()} == {first.id, second.id}
        assert first.workdir.exists()
    finally:
        manager.close()


@pytest.fixture
def no_checkpoint_threshold(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(store_module, "CHECKPOINT_AFTER", 0)
    yield


def test_pruning_checkpoints_the_log(
    tmp_path: Path, launcher: FakeLauncher, no_checkpoint_threshold: None
) -> None:
    manager = make_manager(tmp_path, launcher, keep_ended_sessions=0)
    try:
        manager.delete(started(manager))
        started(manager)
        wal = tmp_path / "state" / "sessions.db-wal"
        # Pruned at the second create, then that session's own records (a few KB) came after the checkpoint.
        assert wal.stat().st_size < 100_000
    finally:
        manager.close()
