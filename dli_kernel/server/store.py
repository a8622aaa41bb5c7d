"""Session and statement records in SQLite, so a restarted server knows what it had.

The file stays small: records hold no large outputs (they are spilled to files, see ``outputs``), the
manager deletes the records of the ended sessions it forgets, freed pages go back to the file system at
once (auto_vacuum), and the write-ahead log is cut back after checkpoints (journal_size_limit) and emptied
after a large delete.
"""

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
# Bytes the write-ahead log is cut back to after a checkpoint: SQLite checkpoints at 1,000 pages (4 MB), and
# the log would otherwise keep the size of the largest transaction it ever held.
WAL_LIMIT = 4 * 1024 * 1024
# Bytes of records deleted after which the log is checkpointed and emptied at once, rather than at SQLite's
# next automatic checkpoint.
CHECKPOINT_AFTER = 1024 * 1024


class Store:
    """A tiny JSON-record store; the manager decides what a record holds."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._deleted = 0  # bytes of records deleted since the last checkpoint
        # Before WAL mode and the tables: a new file takes auto_vacuum as it is made; a file of an earlier
        # version (which kept large outputs in its records) takes it with one VACUUM, which also returns
        # the space those left.
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 1:
            self._db.execute("PRAGMA auto_vacuum=FULL")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a file in WAL mode shrinks only then
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
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
        """Forget a session and its statements."""
        with self._lock:
            sizes = self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(record)), 0) FROM statements WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            self._db.execute("BEGIN")  # both or neither: no statements left without their session
            try:
                self._db.execute("DELETE FROM statements WHERE session_id = ?", (session_id,))
                self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._deleted += sizes
            if self._deleted >= CHECKPOINT_AFTER:
                self._checkpoint()

    def _checkpoint(self) -> None:
        # TRUNCATE: the pages go into the file (already shrunk by auto_vacuum) and the log to zero bytes.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._deleted = 0

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
