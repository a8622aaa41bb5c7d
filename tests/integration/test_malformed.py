"""Malformed requests on the real server (issue 15, items 1, 2, 5 and 8): each is refused with 400 and one
sentence before anything is made, the session they were aimed at goes on running statements, and no
statement runs twice."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.integration.conftest import Server

NAME = "测试"
COUNT = "counter = globals().get('counter', 0) + 1\ncounter"  # how many times it ran, in this driver


def refused(reply: object, status: int = 400) -> str:
    assert getattr(reply, "status_code", None) == status, getattr(reply, "text", reply)
    message: str = reply.json()["msg"]  # type: ignore[attr-defined]
    assert "\n" not in message and message.endswith("."), message
    return message


@pytest.fixture(scope="module")
def named(server: Server) -> Iterator[int]:
    """A session named in Chinese, idle."""
    session = server.create(kind="pyspark", name=NAME, heartbeatTimeoutInSecond=0)
    try:
        server.wait_state(session["id"], ("idle",))
        yield session["id"]
    finally:
        assert server.delete(f"/sessions/{session['id']}").status_code == 200


def statements(server: Server, session_id: int) -> int:
    reply = server.get(f"/sessions/{session_id}/statements")
    assert reply.status_code == 200, reply.text
    total: int = reply.json()["total_statements"]
    return total


def test_a_lone_surrogate_in_a_name_is_refused_and_nothing_is_made(server: Server) -> None:
    before = {s["id"] for s in server.live_sessions()}
    raw = b'{"kind": "pyspark", "name": "nb\\ud800"}'
    message = refused(server.post("/sessions", data=raw, headers={"Content-Type": "application/json"}))
    assert "surrogate" in message
    listed = server.get("/sessions")
    assert listed.status_code == 200 and {s["id"] for s in listed.json()["sessions"]} == before


def test_malformed_statements_are_refused_and_the_session_runs_each_good_one_once(
    server: Server, named: int
) -> None:
    path = f"/sessions/{quote(NAME)}/statements"
    json_type = {"Content-Type": "application/json"}
    surrogate = server.post(path, data=b'{"code": "x = \\"\\ud800\\""}', headers=json_type)
    assert "surrogate" in refused(surrogate)
    deep = server.post(path, data=b'{"code": ' + b"[" * 5000 + b"]" * 5000 + b"}", headers=json_type)
    assert "nested" in refused(deep)
    assert statements(server, named) == 0

    # By its name, in a path that is no Latin-1: made once, with a Location in ASCII.
    reply = server.post(path, json={"code": COUNT})
    assert reply.status_code == 201, reply.text
    assert reply.headers["Location"] == f"{path}/{reply.json()['id']}"
    first = server.wait_statement(named, reply.json()["id"])
    assert first["state"] == "available" and first["output"]["data"]["text/plain"] == "1"

    assert refused(server.get(f"/sessions/0{named}"), 404).startswith("session")
    assert refused(server.get(f"/sessions/{named}/statements/00"), 404).startswith("statement")
    assert server.run(named, COUNT)["data"]["text/plain"] == "2"
    assert statements(server, named) == 2
    assert server.get(f"/sessions/{named}").json()["state"] == "idle"


def test_a_project_id_beyond_ascii_is_refused_before_a_session_is_made(server: Server) -> None:
    before = {s["id"] for s in server.live_sessions()}
    reply = server.post(f"/v2.0/{quote('项')}/sessions", json={"kind": "pyspark", "cluster_name": "c"})
    assert "project id" in refused(reply)
    assert {s["id"] for s in server.live_sessions()} == before
