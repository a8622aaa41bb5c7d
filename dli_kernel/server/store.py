"""Session and statement records in SQLite, so a restarted server knows what it had."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS statements (
    session_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (session_id, id)
);
"""


class Store:
    """A tiny JSON-record store; the manager decides what a record holds."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a crash of this process (what recovery is for), and skipping the
        # fsync per commit keeps several milliseconds off every statement.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def save_session(self, session_id: int, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sessions (id, record) VALUES (?, ?)", (session_id, json.dumps(record))
            )

    def save_statement(self, session_id: int, statement_id: int, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO statements (session_id, id, record) VALUES (?, ?, ?)",
                (session_id, statement_id, json.dumps(record)),
            )

    def delete_session(self, session_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM statements WHERE session_id = ?", (session_id,))
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def load(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Every session record with its statement records, oldest first."""
        with self._lock:
            sessions = self._db.execute("SELECT id, record FROM sessions ORDER BY id").fetchall()
            statements = self._db.execute("SELECT session_id, record FROM statements ORDER BY session_id, id")
            by_session: dict[int, list[dict[str, Any]]] = {}
            for session_id, record in statements:
                by_session.setdefault(session_id, []).append(json.loads(record))
        loaded = [(json.loads(record), by_session.get(sid, [])) for sid, record in sessions]
        # Session ids are random, so the order sessions were made in is that of their creation times.
        return sorted(loaded, key=lambda item: item[0].get("created", 0))

    def close(self) -> None:
        with self._lock:
            self._db.close()
