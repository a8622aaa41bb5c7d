"""Two users and an admin on one server, over every DLC action: each SecretId signs with its own
SecretKey and acts as its user, who sees only their own sessions; another user's session is DLC's
SessionNotFound, worded as for a session that does not exist, and is not touched.

The Livy and DLI paths: tests/unit/test_team_routes.py; the helpers: tests/unit/team_fakes.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dli_kernel.server.dlc_actions import ACTIONS
from tests.unit.team_fakes import DLC_IDS, DLC_KEYS, Owned, Team, team_server

# Actions on a session (all but these two name one)
NOT_ON_A_SESSION = ("CreateNotebookSession", "DescribeNotebookSessions")
CREATE = {"Name": "nb-new", "Kind": "pyspark", "DataEngineName": "engine-a"}
CROSSINGS = [("bob", "alice"), ("alice", "bob"), ("alice", "root")]


def sample(action: str, session_id: str) -> dict[str, Any]:
    """A request of each action on the session ``session_id`` (statement 0: Arrow, 1: SQL); a new action
    has none and fails here until it has one."""
    return {
        "CreateNotebookSession": CREATE,
        "DescribeNotebookSession": {"SessionId": session_id},
        "DescribeNotebookSessions": {},
        "DeleteNotebookSession": {"SessionId": session_id},
        "DescribeNotebookSessionLog": {"SessionId": session_id},
        "CreateNotebookSessionStatement": {"SessionId": session_id, "Code": "1 + 1"},
        "DescribeNotebookSessionStatement": {"SessionId": session_id, "StatementId": "1"},
        "DescribeNotebookSessionStatements": {"SessionId": session_id},
        "CancelNotebookSessionStatement": {"SessionId": session_id, "StatementId": "1"},
        "DescribeNotebookSessionStatementSqlResult": {"TaskId": f"{session_id}.1"},
    }[action]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    with team_server(tmp_path_factory.mktemp("team-dlc")) as team:
        team.populate("alice", "alice-secret-nb")
        team.populate("bob", "bob-private-nb")
        team.populate("root", "root-admin-nb")
        yield team


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    with team_server(tmp_path) as team:
        team.populate("alice", "alice-secret-nb")
        yield team


def assert_no_trace(answer: dict[str, Any], owned: Owned, asked: str = "") -> None:
    text = str(answer).replace(asked, "<asked>") if asked else str(answer)
    for marker in owned.markers:
        assert marker not in text, f"{marker!r} of {owned.user}'s session leaked: {answer}"


def error_code(answer: dict[str, Any]) -> str:
    assert set(answer) == {"Error", "RequestId"}, answer
    return answer["Error"]["Code"]


@pytest.mark.parametrize(
    ("secret_id", "key"),
    [
        (None, ""),  # unsigned
        (DLC_IDS["alice"], "not-alices-key"),
        (DLC_IDS["alice"], DLC_KEYS["bob"]),  # a key of another user
        ("AKIDnobody", DLC_KEYS["alice"]),  # a SecretId nobody has, with a real key
        ("AKIDnobody", "whatever"),
    ],
    ids=["unsigned", "wrong-key", "others-key", "unknown-id-real-key", "unknown-id"],
)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_request_not_signed_by_a_user_is_an_auth_failure(
    shared: Team, action: str, secret_id: str | None, key: str
) -> None:
    owned = shared.owned["alice"]
    before = owned.fingerprint()
    answer = shared.dlc(action, sample(action, owned.session.uuid), secret_id, key)
    assert error_code(answer).startswith("AuthFailure")
    assert_no_trace(answer, owned, owned.session.uuid)
    assert owned.fingerprint() == before


@pytest.mark.parametrize(
    "headers",
    [None, {"x-tc-timestamp": "1"}, {"x-tc-version": "1999-01-01"}],
    ids=["signed", "expired", "other-version"],
)
def test_an_unknown_secret_id_is_refused_as_a_wrong_signature_is(
    shared: Team, headers: dict[str, str] | None
) -> None:
    """Whatever else is wrong with the request, the answer does not tell whether the SecretId exists."""
    unknown = shared.dlc("DescribeNotebookSessions", {}, "AKIDnobody", "k", headers)
    wrong = shared.dlc("DescribeNotebookSessions", {}, DLC_IDS["alice"], "k", headers)
    assert error_code(unknown).startswith("AuthFailure")
    assert unknown["Error"] == wrong["Error"]


@pytest.mark.parametrize(("viewer", "owner"), CROSSINGS)
@pytest.mark.parametrize("action", sorted(set(ACTIONS) - set(NOT_ON_A_SESSION)))
def test_another_users_session_is_exactly_a_session_that_does_not_exist(
    shared: Team, action: str, viewer: str, owner: str
) -> None:
    owned = shared.owned[owner]
    before = owned.fingerprint()
    missing = str(uuid.uuid4())
    for named in (owned.session.uuid, owned.session.spec.name or ""):
        answer = shared.dlc_as(viewer, action, sample(action, named))
        absent = shared.dlc_as(viewer, action, sample(action, missing))
        assert error_code(answer) == error_code(absent) == "ResourceNotFound.SessionNotFound"
        assert answer["Error"]["Message"].replace(repr(named), "<key>") == absent["Error"]["Message"].replace(
            repr(missing), "<key>"
        )
        assert_no_trace(answer, owned, named)
    assert owned.fingerprint() == before


@pytest.mark.parametrize("viewer", ["alice", "bob", "root"])
def test_the_list_shows_only_the_sessions_its_user_sees(shared: Team, viewer: str) -> None:
    visible = {"alice", "bob", "root"} if viewer == "root" else {viewer}
    answer = shared.dlc_as(viewer, "DescribeNotebookSessions", {"Limit": 100})
    assert answer["TotalElements"] == len(visible)
    assert {s["Creator"] for s in answer["Sessions"]} == visible
    for other in set(shared.owned) - visible:
        assert_no_trace(answer, shared.owned[other])
    searched = shared.dlc_as(
        "bob", "DescribeNotebookSessions", {"Filters": [{"Name": "notebook-keyword", "Values": ["alice"]}]}
    )
    assert (searched["TotalElements"], searched["Sessions"]) == (0, [])


@pytest.mark.parametrize("user", ["alice", "root"])
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_the_owner_and_an_admin_run_every_action(team: Team, action: str, user: str) -> None:
    session = team.owned["alice"].session
    answer = team.dlc_as(user, action, sample(action, session.uuid))
    assert "Error" not in answer, answer
    if action == "CreateNotebookSession":
        assert team.manager.get(answer["SessionId"]).owner == user
    elif action == "DescribeNotebookSession":
        assert answer["Session"]["SessionId"] == session.uuid
    elif action == "DeleteNotebookSession":
        assert session.state == "killed"
    elif action == "DescribeNotebookSessionStatementSqlResult":
        assert "alice-SQL-MARKER" in answer["ResultSet"]


def test_a_user_may_proxy_only_as_themselves(team: Team) -> None:
    refused = team.dlc_as("bob", "CreateNotebookSession", {**CREATE, "ProxyUser": "alice"})
    assert error_code(refused).startswith("InvalidParameter")
    assert "proxyUser may only be your own user name ('bob')" in refused["Error"]["Message"]
    assert "Error" not in team.dlc_as("bob", "CreateNotebookSession", {**CREATE, "ProxyUser": "bob"})
    assert "Error" not in team.dlc_as(
        "root", "CreateNotebookSession", {**CREATE, "Name": "r", "ProxyUser": "x"}
    )
