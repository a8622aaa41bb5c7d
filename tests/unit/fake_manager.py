"""A fake SessionManager for the HTTP layer's tests: the part of the real one's API the routes call, over
the real ManagedSession and Statement records, with no driver, no Spark and no threads of its own.

It keeps the real manager's rules that decide a status code (unknown ids, ended sessions, Arrow results)
and notes every call, and whether it came on the event loop, where no route may call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dli_kernel.protocol import ENDED_STATES, SESSION_STATES, result_path
from dli_kernel.server.manager import (
    Invalid,
    ManagedSession,
    Statement,
    UnknownId,
    WrongState,
)
from dli_kernel.server.principal import Principal
from dli_kernel.server.settings import ServerSettings
from dli_kernel.spec import SessionSpec, normalize_kind, parse_number

LOG_LINES = 25


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Calls:
    """What was called, in order, and which of the calls came on an event loop."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.on_loop: list[str] = []
        self._lock = threading.Lock()

    def note(self, name: str) -> None:
        with self._lock:
            self.names.append(name)
            if on_event_loop():
                self.on_loop.append(name)


class FakeSession(ManagedSession):
    """A real session record whose log reads are noted, since they read a file."""

    calls: Calls

    def log_lines(self, start: int | None = None, size: int = 100) -> tuple[int, int, list[str]]:
        self.calls.note("log_lines")
        return super().log_lines(start, size)


class FakePool:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def status(self) -> dict[str, int]:
        self.calls.note("pool.status")
        return {"size": 2, "ready": 1, "starting": 1}


class FakeManager:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = ServerSettings(root / "state")  # the app reads its body limits here
        self.calls = Calls()
        self.sessions: list[FakeSession] = []
        self.pool: FakePool | None = FakePool(self.calls)
        self.closing = False
        self.touched: list[int] = []
        self.submitted: list[tuple[str, str | None, int, str]] = []
        self.listed: list[dict[str, Any]] = []
        self.completed: list[tuple[str, str | None, int]] = []
        self.cancelled: list[tuple[int, int]] = []
        self.watchers: dict[tuple[int, int | None], set[Callable[[], None]]] = {}
        self.watching = threading.Event()  # set when a request starts to watch
        # Called as a watch is registered, before the request looks at the state: a change made here is
        # one that lands between the request's first look and its watch.
        self.while_registering: Callable[[], None] | None = None
        self.fail: Exception | None = None  # raised by get(): an unexpected error
        self._lock = threading.Lock()

    # -- building the registry -----------------------------------------------------------------

    def add_session(
        self, spec: SessionSpec | None = None, state: str = "idle", project_id: str | None = None
    ) -> FakeSession:
        session_id = len(self.sessions)
        workdir = self.root / "sessions" / str(session_id)
        workdir.mkdir(parents=True)
        session = FakeSession(
            id=session_id,
            uuid=str(uuid.uuid4()),
            spec=spec or SessionSpec(kind="pyspark"),
            owner="alice",
            project_id=project_id,
            workdir=workdir,
            state=state,
            app_id=f"local-{session_id}",
            ui_url="http://127.0.0.1:4040",
        )
        session.calls = self.calls
        session.log_path.write_text("".join(f"line {n}\n" for n in range(LOG_LINES)))
        self.sessions.append(session)
        return session

    def add_statement(
        self, session: ManagedSession, state: str = "available", result_format: str = "json"
    ) -> Statement:
        statement = Statement(
            id=len(session.statements), code="1 + 1", kind="pyspark", state=state, result_format=result_format
        )
        if state == "available":
            statement.output = {"status": "ok", "execution_count": statement.id, "data": {"text/plain": "2"}}
            if result_format == "arrow":
                path = session.workdir / result_path(statement.id)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"ARROW1 stream of statement %d" % statement.id)
        session.statements.append(statement)
        return statement

    def change(self, thing: ManagedSession | Statement, state: str, session: ManagedSession) -> None:
        """Change a state as the manager's threads do: then wake whoever watches it."""
        thing.state = state
        key = (session.id, None if isinstance(thing, ManagedSession) else thing.id)
        with self._lock:
            wakes = list(self.watchers.get(key, ()))
        for wake in wakes:
            wake()

    # -- the manager's API, as the routes call it ----------------------------------------------

    def get(self, key: str, viewer: Principal | None = None) -> ManagedSession:
        self.calls.note("get")
        if self.fail is not None:
            raise self.fail
        for session in self.sessions:
            if viewer is not None and not viewer.sees(session.owner):
                continue
            if key in (str(session.id), session.uuid, session.spec.name):
                return session
        raise UnknownId(f"session {key!r} does not exist; list sessions to see the ids there are.")

    def touch(self, session: ManagedSession) -> None:
        self.calls.note("touch")
        self.touched.append(session.id)

    def list(
        self,
        states: list[str] | tuple[str, ...] = (),
        kind: str | None = None,
        name: str | None = None,
        cluster: str | None = None,
        owner: str | None = None,
        viewer: Principal | None = None,
    ) -> list[ManagedSession]:
        self.calls.note("list")
        self.listed.append(
            {"states": list(states), "kind": kind, "name": name, "cluster": cluster, "owner": owner}
        )
        unknown = set(states) - set(SESSION_STATES)
        if unknown:
            raise Invalid(f"unknown session state {sorted(unknown)[0]!r}.")
        visible = [s for s in self.sessions if viewer is None or viewer.sees(s.owner)]
        if states:
            return [s for s in visible if s.state in states]
        return [s for s in visible if not s.ended]

    def create(
        self, spec: SessionSpec, project_id: str | None = None, owner: Principal | None = None
    ) -> ManagedSession:
        self.calls.note("create")
        if self.closing:
            raise WrongState("the server is shutting down; no new sessions are started.")
        session = self.add_session(spec, state="not_started", project_id=project_id)
        if owner is not None:
            session.owner = owner.name
        return session

    def delete(self, session: ManagedSession) -> None:
        self.calls.note("delete")
        if session.ended:
            raise UnknownId(f"session {session.id} has already ended ({session.state}).")
        session.state = "killed"

    def submit(
        self, session: ManagedSession, code: str, kind: str | None, max_rows: int, result_format: str = "json"
    ) -> Statement:
        self.calls.note("submit")
        self.submitted.append((code, kind, max_rows, result_format))
        kind = normalize_kind(kind, "kind") if kind else session.spec.kind
        if session.state in ENDED_STATES:
            raise WrongState(f"session {session.id} is {session.state} and cannot run statements.")
        statement = self.add_statement(session, state="waiting", result_format=result_format)
        statement.code, statement.kind, statement.max_rows = code, kind, max_rows
        return statement

    def statement(self, session: ManagedSession, statement_id: str) -> Statement:
        self.calls.note("statement")
        number = parse_number(statement_id)
        if number is not None and number < len(session.statements):
            return session.statements[number]
        raise UnknownId(f"statement {statement_id!r} does not exist in session {session.id}.")

    def cancel(self, session: ManagedSession, statement: Statement) -> None:
        self.calls.note("cancel")
        self.cancelled.append((session.id, statement.id))

    def arrow_result(self, session: ManagedSession, statement: Statement) -> Path:
        self.calls.note("arrow_result")
        if statement.result_format != "arrow":
            raise UnknownId(f"statement {statement.id} has no Arrow result.")
        if statement.state != "available":
            raise WrongState(f"statement {statement.id} is {statement.state} and has no result to fetch.")
        return session.workdir / result_path(statement.id)

    def output(self, session: ManagedSession, statement: Statement) -> dict[str, Any]:
        self.calls.note("output")
        if statement.output is None:
            raise WrongState(f"statement {statement.id} is {statement.state} and has no output.")
        return statement.output

    @contextlib.contextmanager
    def watch(
        self, session: ManagedSession, statement: Statement | None, wake: Callable[[], None]
    ) -> Iterator[None]:
        key = (session.id, None if statement is None else statement.id)
        self.calls.note("watch")
        with self._lock:
            self.watchers.setdefault(key, set()).add(wake)
        if self.while_registering is not None:
            self.while_registering()
        self.watching.set()
        try:
            yield
        finally:
            self.calls.note("unwatch")
            with self._lock:
                self.watchers[key].discard(wake)
                if not self.watchers[key]:
                    del self.watchers[key]

    def log_size(self, session: ManagedSession) -> int:
        self.calls.note("log_size")
        return session.log_path.stat().st_size

    def completion(self, session: ManagedSession, code: str, kind: str | None, cursor: int) -> list[str]:
        self.calls.note("completion")
        self.completed.append((code, kind, cursor))
        return ["spark", "sparkContext"]
