"""``RemoteSession`` against a fake ``SessionsClient``: how a wait ends, and what a cancel means."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dli_kernel.client import SessionInfo, StatementInfo
from dli_kernel.kernel.magics.runner import RemoteError, StatementRunner
from dli_kernel.kernel.remote_session import RemoteSession, SessionFailed
from dli_kernel.protocol import EXT_WAIT
from dli_kernel.spec import SessionSpec

DONE = {"status": "ok", "execution_count": 0, "data": {"text/plain": "42"}}


class FakeClient:
    """The part of SessionsClient a RemoteSession uses; answers come from the lists a test gives."""

    def __init__(
        self,
        sessions: list[SessionInfo] | None = None,
        statements: list[StatementInfo] | None = None,
        extensions: frozenset[str] = frozenset(),
    ) -> None:
        self.sessions = list(sessions or [])
        self.statements = list(statements or [])
        self.extensions = extensions
        self.calls: list[tuple[Any, ...]] = []
        self.cancel_hook: Any = None

    def server_extensions(self) -> frozenset[str]:
        return self.extensions

    def _next_session(self) -> SessionInfo:
        """The next answer; the last one repeats."""
        return self.sessions.pop(0) if len(self.sessions) > 1 else self.sessions[0]

    def create_session(self, spec: SessionSpec) -> SessionInfo:
        self.calls.append(("create",))
        return self._next_session()

    def get_session(self, session_id: str, wait: float | None = None) -> SessionInfo:
        self.calls.append(("get_session", session_id, wait))
        return self._next_session()

    def track(self, session_id: str) -> None:
        self.calls.append(("track", session_id))

    def submit(
        self, session_id: str, code: str, kind: str | None = None, max_rows: int | None = None
    ) -> StatementInfo:
        self.calls.append(("submit", code))
        return StatementInfo(id=0, state="waiting", code=code)

    def get_statement(self, session_id: str, statement_id: int, wait: float | None = None) -> StatementInfo:
        self.calls.append(("get_statement", statement_id, wait))
        return self.statements.pop(0)

    def cancel(self, session_id: str, statement_id: int) -> None:
        self.calls.append(("cancel", statement_id))
        if self.cancel_hook:
            self.cancel_hook()

    def delete_session(self, session_id: str) -> None:
        self.calls.append(("delete", session_id))

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


@pytest.fixture
def interrupted() -> Iterator[threading.Event]:
    event = threading.Event()
    event.set()  # Ctrl-C came before the first look at the statement
    yield event


def attached(client: FakeClient, state: str = "idle") -> RemoteSession:
    session = RemoteSession.attach(client, SessionInfo(id="5", state=state), SessionSpec())  # type: ignore[arg-type]
    session._closing.set()  # no heartbeat thread in a unit test
    return session


# -- a cancel that comes too late ------------------------------------------------------------------


def test_a_statement_that_finished_before_its_cancel_landed_keeps_its_output(
    interrupted: threading.Event,
) -> None:
    client = FakeClient(
        sessions=[SessionInfo(id="5", state="idle")],
        statements=[StatementInfo(id=0, state="available", output=DONE)],
    )
    statement, cancelled = attached(client).run("6 * 7", interrupted=interrupted)
    assert ("cancel", 0) in client.calls  # the cancel went out...
    assert not cancelled and statement.output == DONE  # ...but the statement had finished


def test_a_cancelled_statement_is_reported_cancelled(interrupted: threading.Event) -> None:
    client = FakeClient(
        sessions=[SessionInfo(id="5", state="idle")],
        statements=[
            StatementInfo(id=0, state="cancelling"),
            StatementInfo(id=0, state="cancelled"),
        ],
    )
    statement, cancelled = attached(client).run("while True: pass", interrupted=interrupted)
    assert cancelled and statement.state == "cancelled"
    assert client.names().count("cancel") == 1  # sent once, however long the cancel takes


def test_the_magics_show_a_late_cancels_output_and_raise_only_for_a_real_cancel(
    interrupted: threading.Event,
) -> None:
    def runner(final: StatementInfo) -> StatementRunner:
        client = FakeClient(sessions=[SessionInfo(id="5", state="idle")], statements=[final])
        holder: Any = type("Holder", (), {})()
        holder.session = attached(client)
        holder.replaced_note = ""
        holder.log_level = "warn"
        holder.ready = lambda on_state=None: holder.session
        return StatementRunner(holder)

    def start(session: RemoteSession, **follow: Any) -> tuple[StatementInfo, bool]:
        return session.run("x", interrupted=interrupted, on_progress=follow["on_progress"])

    assert runner(StatementInfo(id=0, state="available", output=DONE)).follow(start) == DONE
    with pytest.raises(RemoteError) as caught:
        runner(StatementInfo(id=0, state="cancelled")).follow(start)
    assert type(caught.value).__name__ == "KeyboardInterrupt"


# -- how a wait for the session ends --------------------------------------------------------------


def test_an_attached_session_that_ended_is_said_to_have_ended() -> None:
    client = FakeClient(sessions=[SessionInfo(id="5", state="dead", log=("oom",))])
    session = attached(client)
    with pytest.raises(SessionFailed) as caught:
        session.wait_ready()
    assert str(caught.value) == "session 5 ended (state dead). Its last log lines:\noom"


def test_a_session_that_never_became_ready_failed_to_start() -> None:
    client = FakeClient(
        sessions=[
            SessionInfo(id="6", state="starting"),  # the create answer
            SessionInfo(id="6", state="starting"),
            SessionInfo(id="6", state="error"),
        ]
    )
    session = RemoteSession(client, SessionSpec())  # type: ignore[arg-type]
    session._closing.set()
    session.start()
    with pytest.raises(SessionFailed, match=r"^session 6 failed to start \(state error\)\.$"):
        session.wait_ready()
    assert not session.ever_ready


def test_a_session_ready_in_its_create_answer_that_then_died_ended() -> None:
    client = FakeClient(sessions=[SessionInfo(id="7", state="idle"), SessionInfo(id="7", state="dead")])
    session = RemoteSession(client, SessionSpec())  # type: ignore[arg-type]
    session._closing.set()
    session.start()
    with pytest.raises(SessionFailed, match=r"^session 7 ended \(state dead\)\.$"):
        session.wait_ready()


def test_once_ready_the_session_is_trusted_without_a_get() -> None:
    client = FakeClient(sessions=[SessionInfo(id="5", state="idle")])
    session = attached(client)
    session.wait_ready()
    before = len(client.calls)
    assert session.wait_ready().id == "5" and len(client.calls) == before


def test_waiting_for_a_start_long_polls_where_the_server_can() -> None:
    states = ["starting", "starting", "idle"]
    client = FakeClient(
        sessions=[SessionInfo(id="8", state=state) for state in ["not_started", *states]],
        extensions=frozenset({EXT_WAIT}),
    )
    session = RemoteSession(client, SessionSpec())  # type: ignore[arg-type]
    session._closing.set()
    session.start()
    seen: list[str] = []
    session.wait_ready(on_state=lambda p: seen.append(p.state))
    waits = [call[2] for call in client.calls if call[0] == "get_session"]
    assert waits == [None, 1.0, 1.0] and seen == states


def test_a_start_that_outlasts_its_timeout_says_so() -> None:
    client = FakeClient(sessions=[SessionInfo(id="9", state="starting")])
    session = RemoteSession(client, SessionSpec())  # type: ignore[arg-type]
    session._closing.set()
    session.start()
    with pytest.raises(SessionFailed, match=r"^session 9 is still starting after 0 s\.$"):
        session.wait_ready(timeout=0.05)
