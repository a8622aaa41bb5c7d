"""Two users and an admin on one server, over every Livy and DLI route of the app's own route table: no
route crosses between users. Another user's session answers exactly as a session that does not exist
(404, the same sentence), shows nothing of itself and is not touched; its owner and an admin use it.

The server is the real SessionManager over fake drivers (tests/unit/team_fakes.py), so the rule under
test is the manager's own. DLC's actions: tests/unit/test_team_dlc.py; limits and body sizes:
tests/unit/test_team_limits.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dli_kernel.protocol import ARROW_STREAM_MIME, SESSION_STATES
from dli_kernel.server.auth import REFUSED
from tests.unit.team_fakes import (
    DLC_KEYS,
    PROJECT,
    SERVER_TOKEN,
    TOKENS,
    Owned,
    Team,
    team_server,
)
from tests.unit.test_links import forged, link_value, with_value
from tests.unit.test_routes import ROUTES, SESSION_ROUTES, WAIT_ROUTES, is_dli, route_id, sample_body

if TYPE_CHECKING:  # the TestClient's response: httpx2's, or httpx's with an older Starlette
    from httpx2 import Response

ALL_STATES = ",".join(SESSION_STATES)
# (who asks, whose session): each non-admin against the other, and against an admin's session.
CROSSINGS = [("bob", "alice"), ("alice", "bob"), ("alice", "root"), ("bob", "root")]
WRONG_HEADERS = [
    {},
    {"Authorization": "Bearer nobodys-token"},
    {"Authorization": f"Bearer {TOKENS['alice']}x"},
    {"Authorization": f"Bearer {TOKENS['alice'][:-1]}"},
    {"Authorization": f"Basic {TOKENS['alice']}"},
    {"Authorization": f"Bearer {DLC_KEYS['alice']}"},  # a DLC SecretKey is no bearer token
    {"Authorization": f"Bearer {SERVER_TOKEN}"},  # with a users file, the app's own token opens nothing
    {"X-Auth-Token": "nobodys-token"},
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """One server for the tests that only look: a session of alice (made on the Livy paths), of bob (on
    the DLI paths) and of root, each with results."""
    with team_server(tmp_path_factory.mktemp("team")) as team:
        team.populate("alice", "alice-secret-nb")
        team.populate("bob", "bob-private-nb", dli=True)
        team.populate("root", "root-admin-nb")
        yield team


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    """A server of its own for a test that changes things: alice's session, with results."""
    with team_server(tmp_path) as team:
        team.populate("alice", "alice-secret-nb")
        yield team


def url(template: str, session_key: str = "", statement_id: str = "0") -> str:
    return template.format(project_id=PROJECT, session_id=session_key, statement_id=statement_id)


def assert_no_trace(reply: Response, owned: Owned, asked: str = "") -> None:
    """Nothing of ``owned``'s session is in the reply, but the key the request itself named."""
    text = reply.text.replace(asked, "<asked>") if asked else reply.text
    for marker in owned.markers:
        assert marker not in text, f"{marker!r} of {owned.user}'s session leaked: {reply.text}"


def missing_key(template: str) -> str:
    return str(uuid.uuid4()) if is_dli(template) else "987"


# The routes that name no session, each checked here on its own: a new one (a listing of statements across
# sessions, say) fails the test below until it is.
NOT_ON_A_SESSION = {
    ("GET", "/version"),
    ("GET", "/pool"),
    ("GET", "/openapi.json"),  # the same document for every user: it describes routes, no sessions
    ("GET", "/sessions"),  # test_a_list_shows_only_the_sessions_its_user_sees
    ("POST", "/sessions"),  # test_a_session_belongs_to_who_made_it
    ("GET", "/v2.0/{project_id}/sessions"),
    ("POST", "/v2.0/{project_id}/sessions"),
}


def test_every_route_is_on_a_session_or_checked_on_its_own() -> None:
    assert set(ROUTES) - set(SESSION_ROUTES) == NOT_ON_A_SESSION


def test_the_pool_status_is_for_admins_only(shared: Team) -> None:
    """Its counts move when anyone takes a pooled driver: they would tell of other users' sessions."""
    for user in ("alice", "bob"):
        reply = shared.request(user, "GET", "/pool")
        assert reply.status_code == 403
        assert reply.json() == {"msg": "the warm pool's status is for the server's admins."}
    assert set(shared.request("root", "GET", "/pool").json()) == {"size", "ready", "starting"}


# -- no token, a wrong one ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", WRONG_HEADERS, ids=repr)
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_a_request_without_a_users_token_is_401(shared: Team, route: tuple[str, str], headers: dict) -> None:
    method, template = route
    owned = shared.owned["alice"]
    before = owned.fingerprint()
    reply = shared.request(
        None, method, url(template, owned.key(template)), json=sample_body(route), headers=headers
    )
    assert reply.status_code == 401
    assert reply.json() == {"msg": REFUSED}
    assert_no_trace(reply, owned, owned.key(template))
    assert owned.fingerprint() == before


# -- another user's session ------------------------------------------------------------------------


@pytest.mark.parametrize(("viewer", "owner"), CROSSINGS)
@pytest.mark.parametrize("route", SESSION_ROUTES, ids=route_id)
def test_another_users_session_is_exactly_a_session_that_does_not_exist(
    shared: Team, route: tuple[str, str], viewer: str, owner: str
) -> None:
    method, template = route
    owned = shared.owned[owner]
    before = owned.fingerprint()
    key, missing = owned.key(template), missing_key(template)
    for named in (key, owned.session.spec.name or ""):  # by id (or uuid) and by name
        reply = shared.request(viewer, method, url(template, named), json=sample_body(route))
        absent = shared.request(viewer, method, url(template, missing), json=sample_body(route))
        assert reply.status_code == absent.status_code == 404, reply.text
        assert reply.headers["content-type"] == absent.headers["content-type"]
        assert reply.json()["msg"].replace(repr(named), "<key>") == absent.json()["msg"].replace(
            repr(missing), "<key>"
        )
        assert_no_trace(reply, owned, named)
    assert owned.fingerprint() == before, "another user's request touched the session"


@pytest.mark.parametrize(("viewer", "owner"), CROSSINGS)
@pytest.mark.parametrize("route", WAIT_ROUTES, ids=route_id)
def test_a_long_poll_on_another_users_session_is_404_at_once(
    shared: Team, route: tuple[str, str], viewer: str, owner: str
) -> None:
    method, template = route
    owned = shared.owned[owner]
    reply = shared.request(viewer, method, url(template, owned.key(template)) + "?wait=30")
    assert reply.status_code == 404
    assert_no_trace(reply, owned, owned.key(template))


@pytest.mark.parametrize("prefix", ["", f"/v2.0/{PROJECT}"])
@pytest.mark.parametrize("viewer", ["alice", "bob", "root"])
def test_a_list_shows_only_the_sessions_its_user_sees(shared: Team, prefix: str, viewer: str) -> None:
    visible = ["alice", "bob", "root"] if viewer == "root" else [viewer]  # oldest first
    for query, page in (("", None), (f"?state={ALL_STATES}", None), ("?size=1", 1)):
        reply = shared.request(viewer, "GET", f"{prefix}/sessions{query}")
        assert reply.status_code == 200
        body = reply.json()
        assert body["total"] == len(visible)  # the count too: only what the user sees
        assert [s["owner"] for s in body["sessions"]] == visible[:page]
        for other in set(shared.owned) - set(visible):
            assert_no_trace(reply, shared.owned[other])


@pytest.mark.parametrize("prefix", ["", f"/v2.0/{PROJECT}"])
def test_filtering_a_list_by_another_user_or_their_names_finds_nothing(shared: Team, prefix: str) -> None:
    for query in ("?owner=alice", "?name=alice-secret", "?name=secret", f"?owner=alice&state={ALL_STATES}"):
        reply = shared.request("bob", "GET", f"{prefix}/sessions{query}")
        assert reply.json() == {"from": 0, "total": 0, "sessions": []}, query


# -- the owner and an admin ---------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice", "root"])
@pytest.mark.parametrize("route", [r for r in ROUTES if r != ("GET", "/pool")], ids=route_id)
def test_the_owner_and_an_admin_use_every_route(team: Team, route: tuple[str, str], user: str) -> None:
    method, template = route
    owned = team.owned["alice"]
    session = owned.session
    reply = team.request(user, method, url(template, owned.key(template)), json=sample_body(route))
    assert 200 <= reply.status_code < 300, reply.text
    path = template.removeprefix("/v2.0/{project_id}")
    public_id = session.uuid if is_dli(template) else session.id
    if (method, path) == ("POST", "/sessions"):
        assert team.manager.get(str(reply.json()["id"])).owner == user
    elif (method, path) == ("GET", "/sessions"):
        assert public_id in [s["id"] for s in reply.json()["sessions"]]
    elif (method, path) == ("DELETE", "/sessions/{session_id}"):
        assert session.state == "killed"
    elif path.endswith("/result"):
        assert reply.headers["content-type"] == ARROW_STREAM_MIME
        assert reply.content == b"alice-ARROW-MARKER"
    elif path in ("/sessions/{session_id}", "/sessions/{session_id}/state", "/sessions/{session_id}/log"):
        assert reply.json()["id"] == public_id
    elif path == "/sessions/{session_id}/statements" and method == "GET":
        assert reply.json()["total_statements"] == 2
    elif path == "/sessions/{session_id}/statements/{statement_id}":
        assert "alice-RESULT-MARKER" in reply.text


def test_a_session_belongs_to_who_made_it(team: Team) -> None:
    bobs = team.create("bob", "bobs", dli=True)
    roots = team.create("root", "roots")
    assert (team.owned["alice"].session.owner, bobs.owner, roots.owner) == ("alice", "bob", "root")
    shown = team.request("bob", "GET", f"/v2.0/{PROJECT}/sessions/{bobs.uuid}").json()
    assert shown["owner"] == "bob"


def test_session_names_are_unique_per_user_and_found_among_the_users_own(team: Team) -> None:
    alices = team.owned["alice"].session
    bobs = team.create("bob", "alice-secret-nb")  # the same name as alice's: no clash, nothing told
    again = team.request("alice", "POST", "/sessions", json={"kind": "pyspark", "name": "alice-secret-nb"})
    assert again.status_code == 400 and "among yours" in again.json()["msg"]
    assert "bob" not in again.text and bobs.uuid not in again.text
    for user, expected in (("alice", alices), ("bob", bobs)):
        reply = team.request(user, "GET", "/sessions/alice-secret-nb/state")
        assert reply.json() == {"id": expected.id, "state": "idle"}, user
    # An admin who sees both and has none of that name gets the newest live one; their own comes first.
    assert team.request("root", "GET", "/sessions/alice-secret-nb/state").json()["id"] == bobs.id
    roots = team.create("root", "alice-secret-nb")
    assert team.request("root", "GET", "/sessions/alice-secret-nb/state").json()["id"] == roots.id
    assert team.request("root", "DELETE", f"/sessions/{roots.id}").status_code == 200
    assert team.request("root", "GET", "/sessions/alice-secret-nb/state").json()["id"] == roots.id
    assert team.request("root", "GET", "/sessions/alice-secret-nb").json()["state"] == "killed"


# -- proxyUser ------------------------------------------------------------------------------------------


def test_a_user_may_proxy_only_as_themselves(team: Team) -> None:
    """On Livy's paths (DLI's create request has no proxyUser; DLC's: tests/unit/test_team_dlc.py)."""
    body = {"kind": "pyspark", "proxyUser": "alice"}
    before = len(team.manager.list(states=SESSION_STATES))
    drivers = len(team.launcher.drivers)
    reply = team.request("bob", "POST", "/sessions", json=body)
    assert reply.status_code == 400
    assert reply.json() == {
        "msg": "proxyUser may only be your own user name ('bob') or left out; only an admin may run a "
        "session as another user (got 'alice')."
    }
    assert len(team.manager.list(states=SESSION_STATES)) == before  # nothing was made
    assert len(team.launcher.drivers) == drivers
    own = team.request("bob", "POST", "/sessions", json={**body, "proxyUser": "bob"})
    assert own.status_code == 201 and own.json()["proxyUser"] == "bob"
    anyone = team.request("root", "POST", "/sessions", json={**body, "proxyUser": "carol"})
    assert anyone.status_code == 201 and anyone.json()["proxyUser"] == "carol"


# -- browser links (tests/unit/test_links.py: the links themselves) -----------------------------------


def test_a_users_links_open_only_their_own_session_as_themselves(tmp_path: Path) -> None:
    """Bob gets no link to alice's session, his own opens nothing of hers, and changing it breaks it."""
    with team_server(tmp_path) as team:
        alice, bob = team.populate("alice", "alice-secret-nb"), team.populate("bob", "bob-private-nb")
        assert team.request("bob", "POST", f"/sessions/{alice.session.id}/links").status_code == 404
        bobs = team.request("bob", "POST", f"/sessions/{bob.session.id}/links").json()["driverLogUrl"]
        value = link_value(bobs)
        alices_log = f"/sessions/{alice.session.id}/driver-log"
        for url, status in [
            (with_value(alices_log, value), 403),
            (with_value(alices_log, forged(value, user="alice")), 401),
            (with_value(alices_log, forged(value, session_id=alice.session.id, path=alices_log)), 401),
        ]:
            reply = team.client.get(url, follow_redirects=False)
            assert reply.status_code == status and "%session ui" in reply.text
            assert "set-cookie" not in reply.headers
            assert_no_trace(reply, alice)
        # Opened, his link shows his log as him; its cookie is no key to hers.
        opened = team.client.get(with_value(f"/sessions/{bob.session.id}/driver-log", value))
        assert opened.status_code == 200 and "bob-LOG-MARKER" in opened.text
        assert_no_trace(opened, alice)
        (cookie,) = [c.value for c in team.client.cookies.jar]
        theirs = team.client.get(alices_log, headers={"Cookie": f"dli_link={cookie}"})
        assert theirs.status_code == 403
        assert_no_trace(theirs, alice)
        team.client.cookies.clear()
        # An admin's link opens alice's log, as the admin.
        roots = team.request("root", "POST", f"/sessions/{alice.session.id}/links").json()["driverLogUrl"]
        assert "alice-LOG-MARKER" in team.client.get(with_value(alices_log, link_value(roots))).text
