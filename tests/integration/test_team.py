"""Two users on the shared server (conftest's, started with a users file holding alice and bob): neither sees
nor touches the other's sessions, over HTTP or through a kernel's ``%session`` magics; the operator (the
token in server.json, an admin) sees both. Two real sessions: bob's, and the one alice's kernel starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dli_kernel.protocol import ENDED_STATES
from tests.integration.conftest import Server, wait_no_new_sessions, wait_until
from tests.integration.test_kernel import Kernel, text

PROJECT = "team-project"
TIMEOUT = 60


@pytest.fixture(scope="module")
def team(server: Server) -> Server:
    if not server.users:
        pytest.skip("the shared server runs without a users file: this dli-kernel has no 'dli-kernel users'")
    return server


@pytest.fixture(scope="module")
def bobs_session(team: Server) -> Iterator[dict[str, Any]]:
    """A session of bob's, left to start on its own: the tests need it live, not ready."""
    bob = team.as_user("bob")
    reply = bob.post(
        f"{team.url}/sessions", json={"kind": "pyspark", "name": "bob-private-nb"}, timeout=TIMEOUT
    )
    assert reply.status_code == 201, reply.text
    session = reply.json()
    yield session
    assert bob.delete(f"{team.url}/sessions/{session['id']}", timeout=TIMEOUT).status_code == 200


@pytest.fixture(scope="module")
def alices_kernel(team: Server, bobs_session: dict[str, Any], kernel_env: dict[str, Any]) -> Iterator[Kernel]:
    """A pyspark kernel with alice's token: the session it starts is alice's."""
    env = {**kernel_env["env"], "DLI_KERNEL_TOKEN": team.users["alice"]}
    kernel = Kernel({**kernel_env, "env": env}, "dli_pyspark", team)
    yield kernel
    kernel.shutdown()
    wait_no_new_sessions(team, kernel.before)


@pytest.fixture(scope="module")
def alices_session(alices_kernel: Kernel) -> dict[str, Any]:
    reply, outputs = alices_kernel.execute("print('alice-secret-' + str(6 * 7))")
    assert reply["status"] == "ok", outputs
    assert "alice-secret-42" in text(outputs)
    return alices_kernel.session()


def get(http: requests.Session, server: Server, method: str, path: str, **kwargs: Any) -> requests.Response:
    return http.request(method, server.url + path, timeout=TIMEOUT, **kwargs)


def test_sessions_belong_to_who_made_them(
    team: Server, alices_session: dict[str, Any], bobs_session: dict[str, Any]
) -> None:
    assert (alices_session["owner"], bobs_session["owner"]) == ("alice", "bob")


def test_bob_can_neither_see_nor_use_nor_kill_alices_session(
    team: Server, alices_session: dict[str, Any], bobs_session: dict[str, Any]
) -> None:
    bob = team.as_user("bob")
    number, uuid = alices_session["id"], alices_session["uuid"]
    requests_on_it = [
        ("GET", "/sessions/{}"),
        ("GET", "/sessions/{}/state"),
        ("GET", "/sessions/{}/log"),
        ("GET", "/sessions/{}/statements"),
        ("GET", "/sessions/{}/statements/0"),
        ("GET", "/sessions/{}/statements/0/result"),
        ("POST", "/sessions/{}/statements"),
        ("POST", "/sessions/{}/statements/0/cancel"),
        ("POST", "/sessions/{}/completion"),
        ("POST", "/sessions/{}/links"),
        ("GET", "/sessions/{}/driver-log"),
        ("DELETE", "/sessions/{}"),
        ("GET", f"/v2.0/{PROJECT}" + "/sessions/{}"),
        ("DELETE", f"/v2.0/{PROJECT}" + "/sessions/{}"),
    ]
    body = {"code": "print('bob was here')"}
    for method, template in requests_on_it:
        key = uuid if template.startswith("/v2.0/") else str(number)
        missing = "00000000-0000-4000-8000-000000000000" if template.startswith("/v2.0/") else "9999"
        reply = get(bob, team, method, template.format(key), json=body)
        absent = get(bob, team, method, template.format(missing), json=body)
        assert reply.status_code == absent.status_code == 404, (method, template, reply.text)
        assert reply.json()["msg"].replace(repr(key), "<key>") == absent.json()["msg"].replace(
            repr(missing), "<key>"
        )
        assert "alice" not in reply.text
    # Nothing happened to it: still alice's, live, with only her statements.
    seen = team.get(f"/sessions/{number}").json()
    assert seen["state"] not in ENDED_STATES
    statements = team.get(f"/sessions/{number}/statements").json()["statements"]
    assert all("bob was here" not in s["code"] for s in statements)


def test_each_user_lists_only_their_own_and_the_operator_lists_both(
    team: Server, alices_session: dict[str, Any], bobs_session: dict[str, Any]
) -> None:
    ids = {alices_session["id"], bobs_session["id"]}
    for user, own in (("alice", alices_session), ("bob", bobs_session)):
        http = team.as_user(user)
        for path in ("/sessions", f"/v2.0/{PROJECT}/sessions"):
            listed = get(http, team, "GET", path).json()
            assert {s["owner"] for s in listed["sessions"]} == {user}
            assert listed["total"] == len(listed["sessions"])
        mine = get(http, team, "GET", "/sessions").json()["sessions"]
        assert [s["id"] for s in mine if s["id"] in ids] == [own["id"]]
    everyone = {s["id"]: s["owner"] for s in team.live_sessions()}
    assert {everyone[alices_session["id"]], everyone[bobs_session["id"]]} == {"alice", "bob"}


def test_alices_kernel_lists_only_hers_and_cannot_kill_bobs(
    team: Server, alices_kernel: Kernel, alices_session: dict[str, Any], bobs_session: dict[str, Any]
) -> None:
    reply, outputs = alices_kernel.execute("%session list --state not_started,starting,idle,busy")
    assert reply["status"] == "ok", outputs
    shown = json.dumps([o["content"] for o in outputs])
    assert "alice" in shown and (alices_session["name"] or "") in shown
    assert "bob" not in shown and bobs_session["uuid"] not in shown

    reply, outputs = alices_kernel.execute(f"%session kill -f {bobs_session['id']}")
    said = json.dumps([o["content"] for o in outputs]) + json.dumps(reply)
    assert reply["status"] == "error" and "does not exist" in said, said
    assert team.get(f"/sessions/{bobs_session['id']}").json()["state"] not in ENDED_STATES

    # The kernel goes on: its session runs the next cell.
    reply, outputs = alices_kernel.execute("print(6 * 7)")
    assert reply["status"] == "ok" and text(outputs).strip() == "42"
    wait_until(
        lambda: team.get(f"/sessions/{alices_session['id']}").json()["state"] == "idle",
        "alice's session to be idle again",
        TIMEOUT,
    )
