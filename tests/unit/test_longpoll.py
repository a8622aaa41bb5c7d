"""Long-polls (``?wait=``) in process over the fake manager: a held GET answers when the state changes, at
the end of its wait, at once when there is nothing to wait for, and when the server begins to stop."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from dli_kernel.server.app import create_app
from dli_kernel.server.longpoll import prepare_held_requests, release_held_requests
from dli_kernel.server.manager import ManagedSession, Statement
from tests.unit.fake_manager import FakeManager

TOKEN = "longpoll-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LONG = 20  # a wait no test sits out: each answers well before it, or fails on the time it took


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    prepare_held_requests(app)
    yield


@pytest.fixture
def manager(tmp_path: Path) -> FakeManager:
    return FakeManager(tmp_path)


@pytest.fixture
def app(manager: FakeManager) -> Starlette:
    return create_app(manager, TOKEN, "http://127.0.0.1:1", lifespan=lifespan)


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, headers=AUTH) as client:
        yield client


@pytest.fixture
def session(manager: FakeManager) -> ManagedSession:
    return manager.add_session(state="starting")


@pytest.fixture
def running(manager: FakeManager, session: ManagedSession) -> Statement:
    session.state = "busy"
    return manager.add_statement(session, state="running")


class Held:
    """A GET sent from another thread, so that the test can act while the server holds it."""

    def __init__(self, client: TestClient, path: str) -> None:
        self.reply: Any = None
        self.took = 0.0
        self._thread = threading.Thread(target=self._get, args=(client, path))
        self._thread.start()

    def _get(self, client: TestClient, path: str) -> None:
        began = time.monotonic()
        self.reply = client.get(path)
        self.took = time.monotonic() - began

    def join(self) -> Any:
        self._thread.join(timeout=LONG)
        assert not self._thread.is_alive(), "the held request never answered"
        return self.reply


def wait_until_watched(manager: FakeManager) -> None:
    assert manager.watching.wait(timeout=LONG), "the request never began to watch"


@pytest.mark.parametrize("path", ["/sessions/0", "/sessions/0/state", "/v2.0/p/sessions/{uuid}/state"])
def test_a_held_session_get_answers_when_the_session_changes(
    client: TestClient, manager: FakeManager, session: ManagedSession, path: str
) -> None:
    held = Held(client, path.format(uuid=session.uuid) + f"?wait={LONG}")
    wait_until_watched(manager)
    assert held.reply is None  # it is held
    manager.change(session, "idle", session)
    reply = held.join()
    assert reply.status_code == 200 and reply.json()["state"] == "idle"
    assert held.took < LONG / 2
    assert manager.watchers == {}  # no watch outlives its request


def test_a_held_statement_get_answers_when_the_statement_changes(
    client: TestClient, manager: FakeManager, session: ManagedSession, running: Statement
) -> None:
    held = Held(client, f"/sessions/0/statements/{running.id}?wait={LONG}")
    wait_until_watched(manager)
    manager.change(session, "idle", session)  # another thing changing wakes nobody
    time.sleep(0.05)
    assert held.reply is None
    running.output = {"status": "ok", "execution_count": running.id, "data": {"text/plain": "2"}}
    manager.change(running, "available", session)
    reply = held.join()
    body = reply.json()
    assert (body["state"], body["output"]["data"]) == ("available", {"text/plain": "2"})
    assert body["logSize"] == session.log_path.stat().st_size  # only a long-poll's answer has it
    # Looked up again after the wait: that is what refreshes a running statement's progress.
    assert manager.calls.names[-3:] == ["unwatch", "statement", "log_size"]
    assert held.took < LONG / 2
    assert manager.watchers == {}


def test_a_held_get_answers_at_the_end_of_its_wait(
    client: TestClient, manager: FakeManager, session: ManagedSession, running: Statement
) -> None:
    for path, wait in ((f"/sessions/0/statements/{running.id}", 0.3), ("/sessions/0/state", 0.2)):
        began = time.monotonic()
        reply = client.get(path, params={"wait": wait})
        took = time.monotonic() - began
        assert reply.status_code == 200 and reply.json()["state"] in ("running", "busy")
        assert wait <= took < LONG / 2
    assert manager.watchers == {}


def test_a_change_before_the_watch_began_is_not_missed(
    client: TestClient, manager: FakeManager, session: ManagedSession, running: Statement
) -> None:
    """The state the request first saw changed before its watch was registered: nobody will wake it, so
    it must see the change itself and answer at once."""
    manager.while_registering = lambda: setattr(running, "state", "available")
    began = time.monotonic()
    reply = client.get(f"/sessions/0/statements/{running.id}", params={"wait": LONG})
    assert reply.json()["state"] == "available"
    assert time.monotonic() - began < LONG / 2
    assert manager.watchers == {}


def test_nothing_to_wait_for_answers_at_once(
    client: TestClient, manager: FakeManager, session: ManagedSession
) -> None:
    done = manager.add_statement(session)  # available
    session.state = "dead"
    for path in ("/sessions/0", "/sessions/0/state", f"/sessions/0/statements/{done.id}"):
        assert client.get(path, params={"wait": LONG}).status_code == 200
    assert "watch" not in manager.calls.names


def test_without_wait_nothing_is_held_and_no_log_size_is_sent(
    client: TestClient, manager: FakeManager, session: ManagedSession, running: Statement
) -> None:
    for wait in ({}, {"wait": "0"}, {"wait": ""}):
        body = client.get(f"/sessions/0/statements/{running.id}", params=wait).json()
        assert body["state"] == "running" and "logSize" not in body
    assert "watch" not in manager.calls.names


def test_the_server_stopping_releases_held_requests(
    app: Starlette, client: TestClient, manager: FakeManager, session: ManagedSession, running: Statement
) -> None:
    held = [
        Held(client, "/sessions/0/state?wait=20"),
        Held(client, f"/sessions/0/statements/{running.id}?wait=20"),
    ]
    deadline = time.monotonic() + LONG
    while len(manager.watchers) < 2:
        assert time.monotonic() < deadline, "the requests never began to watch"
        time.sleep(0.01)
    release_held_requests(app)
    for request in held:
        reply = request.join()
        assert reply.status_code == 200 and request.took < LONG / 2
    assert [held[0].reply.json()["state"], held[1].reply.json()["state"]] == ["busy", "running"]
    assert manager.watchers == {}


def test_releasing_before_start_or_after_stop_is_harmless(app: Starlette) -> None:
    release_held_requests(app)  # never prepared: nothing to release
    with TestClient(app, headers=AUTH):
        pass
    release_held_requests(app)  # its loop is closed now
