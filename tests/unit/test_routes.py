"""Every route of the embedded server, in process (Starlette's TestClient) over a fake manager: what each
answers, every error status it can give, and that none does the manager's work on the event loop.

The tests that take a route are parametrized over the app's own route table, so a route added to the app
runs through them and fails until it has a sample request and a check here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from dli_kernel import __version__
from dli_kernel.protocol import ARROW_STREAM_MIME, DEFAULT_MAX_ROWS, DLC_PATH, EXTENSIONS, MAX_WAIT
from dli_kernel.server.app import create_app
from dli_kernel.server.manager import ManagedSession, SessionManager
from dli_kernel.server.views import LOG_LINES_IN_SESSION
from dli_kernel.spec import SessionSpec
from tests.unit.fake_manager import LOG_LINES, FakeManager

if TYPE_CHECKING:  # the TestClient's response: httpx2's, or httpx's with an older Starlette
    from httpx2 import Response

TOKEN = "route-test-token"
BASE_URL = "http://127.0.0.1:8998"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROJECT = "proj-1"


def route_table() -> list[tuple[str, str]]:
    """(method, path) of every route of the app, as it is built, but DLC's action endpoint: it answers in
    DLC's shape (HTTP 200 with an error code) and checks its own signature; tests/unit/test_dlc_server.py."""
    app = create_app(FakeManager(Path("unused")), TOKEN, BASE_URL)
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path != DLC_PATH
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds it to every GET
    )


ROUTES = route_table()
SESSION_ROUTES = [r for r in ROUTES if "{session_id}" in r[1]]
STATEMENT_ROUTES = [r for r in ROUTES if "{statement_id}" in r[1]]
# The routes that take ?wait=: a session, its state, a statement.
WAIT_ROUTES = [
    r for r in ROUTES if r[0] == "GET" and r[1].endswith(("{session_id}", "/state", "{statement_id}"))
]


def route_id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


@dataclass
class World:
    """A server with one idle session holding a finished JSON statement (0), a finished Arrow statement
    (1) and a running one (2)."""

    manager: FakeManager
    client: TestClient
    session: ManagedSession

    def public_id(self, template: str) -> str:
        return self.session.uuid if is_dli(template) else str(self.session.id)

    def url(self, template: str, statement_id: str = "1", session_id: str | None = None) -> str:
        return template.format(
            project_id=PROJECT,
            session_id=self.public_id(template) if session_id is None else session_id,
            statement_id=statement_id,
        )

    def call(self, route: tuple[str, str], **kwargs: Any) -> Response:
        method, template = route
        url = self.url(template, **kwargs)
        body = sample_body(route)
        return self.client.request(method, url, json=body)


def is_dli(template: str) -> bool:
    return template.startswith("/v2.0/")


def sample_body(route: tuple[str, str]) -> Any:
    """A valid body for each POST route; a new POST route has none and fails its tests until it has."""
    method, template = route
    if method != "POST":
        return None
    last = template.rsplit("/", 1)[-1]
    return {
        "sessions": {"kind": "pyspark", "cluster_name": "c1"} if is_dli(template) else {"kind": "pyspark"},
        "statements": {"code": "1 + 1"},
        "completion": {"code": "sp", "cursor": 2},
        "cancel": None,
        "links": None,
    }[last]


@pytest.fixture
def manager(tmp_path: Path) -> FakeManager:
    return FakeManager(tmp_path)


@pytest.fixture
def world(manager: FakeManager) -> Iterator[World]:
    session = manager.add_session(SessionSpec(kind="pyspark", name="shared"))
    manager.add_statement(session)
    manager.add_statement(session, result_format="arrow")
    manager.add_statement(session, state="running")
    with TestClient(create_app(manager, TOKEN, BASE_URL), headers=AUTH) as client:
        yield World(manager, client, session)


# -- what each route answers ----------------------------------------------------------------------


def check_openapi(reply: Response, world: World, template: str) -> None:
    body = reply.json()  # tests/unit/test_openapi.py checks the document itself
    assert body["openapi"].startswith("3.") and "/v2.0/{project_id}/sessions" in body["paths"]


def check_version(reply: Response, world: World, template: str) -> None:
    body = reply.json()
    assert body["extensions"] == list(EXTENSIONS)
    assert body["dli_kernel"] == __version__
    assert body["version"] >= "0.5"  # below it the `livy` PyPI client speaks a legacy protocol


def check_pool(reply: Response, world: World, template: str) -> None:
    assert reply.json() == {"size": 2, "ready": 1, "starting": 1}


def check_list_sessions(reply: Response, world: World, template: str) -> None:
    body = reply.json()
    assert (body["from"], body["total"]) == (0, 1)
    assert [s["id"] for s in body["sessions"]] == [json_id(world, template)]


def check_create_session(reply: Response, world: World, template: str) -> None:
    created = world.manager.sessions[-1]
    assert created is not world.session
    assert created.project_id == (PROJECT if is_dli(template) else None)
    new_id = created.uuid if is_dli(template) else created.id
    body = reply.json()
    assert body["id"] == new_id and body["state"] == "not_started"
    assert reply.headers["Location"] == f"{template}/{new_id}".format(project_id=PROJECT)


def check_get_session(reply: Response, world: World, template: str) -> None:
    body = reply.json()
    assert body["id"] == json_id(world, template) and body["state"] == "idle"
    assert body["log"] == [f"line {n}" for n in range(LOG_LINES - LOG_LINES_IN_SESSION, LOG_LINES)]


def check_delete_session(reply: Response, world: World, template: str) -> None:
    assert reply.json() == {"msg": "deleted"}
    assert world.session.state == "killed"


def check_session_state(reply: Response, world: World, template: str) -> None:
    assert reply.json() == {"id": json_id(world, template), "state": "idle"}


def check_session_log(reply: Response, world: World, template: str) -> None:
    lines = [f"line {n}" for n in range(LOG_LINES)]
    assert reply.json() == {"id": json_id(world, template), "from": 0, "total": LOG_LINES, "log": lines}


def check_list_statements(reply: Response, world: World, template: str) -> None:
    body = reply.json()
    assert body["total_statements"] == 3
    assert [(s["id"], s["state"]) for s in body["statements"]] == [
        (0, "available"),
        (1, "available"),
        (2, "running"),
    ]


def check_submit_statement(reply: Response, world: World, template: str) -> None:
    body = reply.json()
    assert (body["id"], body["state"], body["code"], body["output"]) == (3, "waiting", "1 + 1", None)
    assert world.manager.submitted == [("1 + 1", None, DEFAULT_MAX_ROWS, "json")]
    assert reply.headers["Location"] == world.url(template) + "/3"


def check_get_statement(reply: Response, world: World, template: str) -> None:
    body = reply.json()
    assert set(body) == {"id", "code", "kind", "state", "output", "progress", "started", "completed"}
    assert (body["id"], body["state"], body["output"]["data"]) == (1, "available", {"text/plain": "2"})


def check_statement_result(reply: Response, world: World, template: str) -> None:
    assert reply.headers["content-type"] == ARROW_STREAM_MIME
    assert reply.content == b"ARROW1 stream of statement 1"


def check_statement_output(reply: Response, world: World, template: str) -> None:
    assert reply.json() == {"status": "ok", "execution_count": 1, "data": {"text/plain": "2"}}


def check_cancel_statement(reply: Response, world: World, template: str) -> None:
    assert reply.json() == {"msg": "canceled"}
    assert world.manager.cancelled == [(world.session.id, 1)]


def check_completion(reply: Response, world: World, template: str) -> None:
    assert reply.json() == {"candidates": ["spark", "sparkContext"]}
    assert world.manager.completed == [("sp", None, 2)]


def check_links(reply: Response, world: World, template: str) -> None:
    body = reply.json()  # tests/unit/test_links.py opens them
    assert body["id"] == json_id(world, template) and body["expiresIn"] > 0
    assert body["sparkUiUrl"].startswith(f"{BASE_URL}/sessions/{world.session.id}/ui/?link=")
    assert body["driverLogUrl"].startswith(f"{BASE_URL}/sessions/{world.session.id}/driver-log?link=")


def check_driver_log(reply: Response, world: World, template: str) -> None:
    assert reply.headers["content-type"].startswith("text/plain")
    assert reply.text == "".join(f"line {n}\n" for n in range(LOG_LINES))


def json_id(world: World, template: str) -> int | str:
    return world.session.uuid if is_dli(template) else world.session.id


Check = Callable[["Response", World, str], None]
# (method, path under the family's prefix) -> (status, check)
SESSION_PATH_CHECKS: dict[tuple[str, str], tuple[int, Check]] = {
    ("GET", "/sessions"): (200, check_list_sessions),
    ("POST", "/sessions"): (201, check_create_session),
    ("GET", "/sessions/{session_id}"): (200, check_get_session),
    ("DELETE", "/sessions/{session_id}"): (200, check_delete_session),
    ("GET", "/sessions/{session_id}/state"): (200, check_session_state),
    ("GET", "/sessions/{session_id}/log"): (200, check_session_log),
    ("GET", "/sessions/{session_id}/statements"): (200, check_list_statements),
    ("POST", "/sessions/{session_id}/statements"): (201, check_submit_statement),
    ("GET", "/sessions/{session_id}/statements/{statement_id}"): (200, check_get_statement),
    ("GET", "/sessions/{session_id}/statements/{statement_id}/result"): (200, check_statement_result),
    ("GET", "/sessions/{session_id}/statements/{statement_id}/output"): (200, check_statement_output),
    ("POST", "/sessions/{session_id}/statements/{statement_id}/cancel"): (200, check_cancel_statement),
    ("POST", "/sessions/{session_id}/completion"): (200, check_completion),
    ("POST", "/sessions/{session_id}/links"): (200, check_links),
}
CHECKS: dict[tuple[str, str], tuple[int, Check]] = {
    ("GET", "/version"): (200, check_version),
    ("GET", "/pool"): (200, check_pool),
    ("GET", "/openapi.json"): (200, check_openapi),
    ("GET", "/sessions/{session_id}/driver-log"): (200, check_driver_log),  # the Livy path only
    **SESSION_PATH_CHECKS,
    **{(method, "/v2.0/{project_id}" + path): check for (method, path), check in SESSION_PATH_CHECKS.items()},
}


def test_the_app_has_exactly_the_routes_checked_here() -> None:
    assert sorted(CHECKS) == ROUTES


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_each_route_answers(world: World, route: tuple[str, str]) -> None:
    status, check = CHECKS[route]
    reply = world.call(route)
    assert reply.status_code == status, reply.text
    check(reply, world, route[1])


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_no_route_does_the_managers_work_on_the_event_loop(world: World, route: tuple[str, str]) -> None:
    assert world.call(route).status_code < 400
    assert world.manager.calls.on_loop == []


@pytest.mark.parametrize("route", WAIT_ROUTES, ids=route_id)
def test_a_long_poll_does_not_watch_on_the_event_loop(world: World, route: tuple[str, str]) -> None:
    """Registering and unregistering a watch take the manager's lock: they are no exception."""
    method, template = route
    reply = world.client.request(method, world.url(template, statement_id="2") + "?wait=0.01")
    assert reply.status_code == 200
    assert {"watch", "unwatch"} <= set(world.manager.calls.names)
    assert world.manager.calls.on_loop == []


@pytest.mark.parametrize("route", SESSION_ROUTES, ids=route_id)
def test_every_request_on_a_session_is_its_heartbeat(world: World, route: tuple[str, str]) -> None:
    world.call(route)
    assert world.manager.touched == [world.session.id]


def test_a_session_is_found_by_its_name_too(world: World) -> None:
    assert world.client.get("/sessions/shared/state").json() == {"id": world.session.id, "state": "idle"}


def test_the_pool_route_without_a_pool(world: World) -> None:
    world.manager.pool = None
    assert world.client.get("/pool").json() == {"size": 0, "ready": 0, "starting": 0}


# -- the JSON of a session ------------------------------------------------------------------------

SHARED_FIELDS = {
    "appId", "name", "owner", "proxyUser", "kind", "log", "state", "appInfo",
    "sc_type", "cluster_name", "driverMemory", "driverCores", "executorMemory", "executorCores",
    "numExecutors", "conf", "jars", "pyFiles", "files", "archives", "modules",
    "heartbeatTimeoutInSecond", "ttl", "idleTimeout", "sharedDriver", "create_time", "update_time",
}  # fmt: skip


@pytest.fixture
def customized(world: World) -> ManagedSession:
    spec = SessionSpec.from_dli(
        {
            "kind": "sql",
            "cluster_name": "cluster-c",
            "sc_type": "C",
            "driverMemory": "2048 MB",
            "numExecutors": 2,
            "conf": {"spark.sql.shuffle.partitions": "4"},
        }
    )
    return world.manager.add_session(spec, project_id=PROJECT)


def test_livy_session_json(world: World, customized: ManagedSession) -> None:
    body = world.client.get(f"/sessions/{customized.id}").json()
    assert set(body) == SHARED_FIELDS | {"id", "queue", "uuid"}
    assert (body["id"], body["uuid"], body["queue"]) == (customized.id, customized.uuid, "cluster-c")
    assert (body["kind"], body["owner"], body["appId"]) == ("sql", "alice", customized.app_id)
    # What the tier C with overrides amounts to, as DLI reports it.
    assert body["sc_type"] == "CUSTOMIZED"
    assert (body["driverMemory"], body["numExecutors"], body["executorMemory"]) == ("2 GB", 2, "8 GB")
    assert body["conf"] == {"spark.sql.shuffle.partitions": "4"}
    assert body["appInfo"] == {
        "driverLogUrl": f"{BASE_URL}/sessions/{customized.id}/driver-log",
        "sparkUiUrl": f"{BASE_URL}/sessions/{customized.id}/ui",
    }
    assert (body["create_time"], body["update_time"]) == (customized.created, customized.updated)


def test_dli_session_json(world: World, customized: ManagedSession) -> None:
    body = world.client.get(f"/v2.0/{PROJECT}/sessions/{customized.uuid}").json()
    assert set(body) == SHARED_FIELDS | {"id", "livy_id", "project_id"}
    assert (body["id"], body["livy_id"], body["project_id"]) == (customized.uuid, customized.id, PROJECT)
    assert (body["sc_type"], body["cluster_name"], body["driverMemory"]) == (
        "CUSTOMIZED",
        "cluster-c",
        "2 GB",
    )
    assert body["appInfo"]["driverLogUrl"] == f"{BASE_URL}/sessions/{customized.id}/driver-log"


# -- 404: unknown ids and paths, 405 ---------------------------------------------------------------


@pytest.mark.parametrize("route", SESSION_ROUTES, ids=route_id)
@pytest.mark.parametrize("unknown", ["999", "no-such-name"])
def test_an_unknown_session_is_404(world: World, route: tuple[str, str], unknown: str) -> None:
    reply = world.call(route, session_id=unknown)
    assert reply.status_code == 404
    assert reply.json() == {
        "msg": f"session {unknown!r} does not exist; list sessions to see the ids there are."
    }
    assert set(world.manager.calls.names) <= {"get"}  # nothing else was done


@pytest.mark.parametrize("route", STATEMENT_ROUTES, ids=route_id)
@pytest.mark.parametrize("unknown", ["99", "abc"])
def test_an_unknown_statement_is_404(world: World, route: tuple[str, str], unknown: str) -> None:
    reply = world.call(route, statement_id=unknown)
    assert reply.status_code == 404
    assert reply.json() == {"msg": f"statement {unknown!r} does not exist in session {world.session.id}."}
    assert world.manager.cancelled == []


def test_deleting_an_ended_session_is_404(world: World) -> None:
    world.session.state = "dead"
    reply = world.client.delete(f"/sessions/{world.session.id}")
    assert reply.status_code == 404 and "already ended" in reply.json()["msg"]


def test_a_statement_without_an_arrow_result_is_404(world: World) -> None:
    reply = world.client.get(f"/sessions/{world.session.id}/statements/0/result")
    assert reply.status_code == 404 and "has no Arrow result" in reply.json()["msg"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/nowhere"), ("GET", "/v2.0/p/sessions/1/nothing")])
def test_an_unknown_path_is_404(world: World, method: str, path: str) -> None:
    reply = world.client.request(method, path)
    assert reply.status_code == 404
    assert reply.json() == {"msg": f"no such endpoint: {method} {path}."}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/sessions"),
        ("POST", "/version"),
        ("DELETE", "/sessions/0/statements/0"),
        ("GET", "/sessions/0/completion"),
    ],
)
def test_a_wrong_method_is_405(world: World, method: str, path: str) -> None:
    reply = world.client.request(method, path)
    assert reply.status_code == 405
    assert reply.json() == {"msg": f"method {method} is not allowed on {path}."}
    assert world.manager.calls.names == []


# -- 400: bad bodies and parameters ---------------------------------------------------------------

BODY_ROUTES = [r for r in ROUTES if sample_body(r) is not None]


@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_a_body_that_is_not_json_is_400(world: World, route: tuple[str, str]) -> None:
    method, template = route
    reply = world.client.request(
        method, world.url(template), content=b"{kind: pyspark", headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json()["msg"].startswith("the request body is not valid JSON: ")
    assert not {"create", "submit", "completion"} & set(world.manager.calls.names)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_a_body_that_is_not_an_object_is_400(world: World, route: tuple[str, str]) -> None:
    method, template = route
    reply = world.client.request(method, world.url(template), json=[1, 2])
    assert reply.status_code == 400
    assert "JSON object" in reply.json()["msg"]
    assert not {"create", "submit", "completion"} & set(world.manager.calls.names)


@pytest.mark.parametrize(("prefix", "extra"), [("", {}), (f"/v2.0/{PROJECT}", {"cluster_name": "c1"})])
def test_an_unknown_create_field_is_400(world: World, prefix: str, extra: dict) -> None:
    reply = world.client.post(f"{prefix}/sessions", json={"kind": "pyspark", "bogus": 1, **extra})
    assert reply.status_code == 400
    assert reply.json()["msg"].startswith("unknown field 'bogus'; accepted fields are: ")
    assert "create" not in world.manager.calls.names


@pytest.mark.parametrize(
    ("prefix", "body", "needle"),
    [
        ("", {"kind": "sparkr"}, "kind must be one of"),
        ("", {"kind": "pyspark", "driverMemory": "2048"}, "driverMemory"),
        ("", {"kind": "pyspark", "numExecutors": 0}, "numExecutors"),
        (f"/v2.0/{PROJECT}", {"kind": "pyspark"}, "cluster_name is required"),
        (f"/v2.0/{PROJECT}", {"kind": "pyspark", "cluster_name": "c", "sc_type": "D"}, "sc_type"),
    ],
)
def test_a_bad_create_request_is_400(world: World, prefix: str, body: dict, needle: str) -> None:
    reply = world.client.post(f"{prefix}/sessions", json=body)
    assert reply.status_code == 400
    assert needle in reply.json()["msg"] and "\n" not in reply.json()["msg"]
    assert "create" not in world.manager.calls.names


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ({}, "'code' is required and must be a string."),
        ({"code": 5}, "'code' is required and must be a string."),
        ({"code": "1", "kind": 5}, "'kind' must be a string such as 'pyspark', 'spark' or 'sql' (got 5)."),
        (
            {"code": "1", "maxRows": "ten"},
            "'maxRows' must be an integer >= 0, or -1 for all rows (got 'ten').",
        ),
        ({"code": "1", "maxRows": True}, "'maxRows' must be an integer >= 0, or -1 for all rows (got True)."),
        ({"code": "1", "maxRows": -2}, "'maxRows' must be an integer >= 0, or -1 for all rows (got -2)."),
        ({"code": "1", "resultFormat": 1}, "'resultFormat' must be 'json' or 'arrow' (got 1)."),
        (
            {"code": "1", "extra": True},
            "unknown field 'extra'; accepted fields are: code, kind, maxRows, resultFormat.",
        ),
    ],
)
def test_a_bad_statement_request_is_400(world: World, body: dict, msg: str) -> None:
    for prefix, session_id in (("", world.session.id), (f"/v2.0/{PROJECT}", world.session.uuid)):
        reply = world.client.post(f"{prefix}/sessions/{session_id}/statements", json=body)
        assert reply.status_code == 400
        assert reply.json() == {"msg": msg}
    assert "submit" not in world.manager.calls.names


def test_a_statement_request_reaches_the_manager_as_sent(world: World) -> None:
    body = {"code": "SELECT 1", "kind": "sql", "maxRows": -1, "resultFormat": "arrow"}
    reply = world.client.post(f"/sessions/{world.session.id}/statements", json=body)
    assert reply.status_code == 201
    assert world.manager.submitted == [("SELECT 1", "sql", -1, "arrow")]
    assert (reply.json()["kind"], reply.json()["code"]) == ("sql", "SELECT 1")


def test_an_unknown_statement_kind_from_the_manager_is_400(world: World) -> None:
    reply = world.client.post(
        f"/sessions/{world.session.id}/statements", json={"code": "1", "kind": "sparkr"}
    )
    assert reply.status_code == 400 and "kind must be one of" in reply.json()["msg"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"code": "spark.ra"}, ("spark.ra", None, 8)),  # the cursor defaults to the end
        (
            {"code": "spark.ra", "cursor": "5", "kind": "spark"},
            ("spark.ra", "spark", 5),
        ),  # Livy sends a string
        ({"code": "sp", "cursor": 0}, ("sp", None, 0)),
    ],
)
def test_a_completion_request_reaches_the_manager_as_meant(world: World, body: dict, expected: tuple) -> None:
    reply = world.client.post(f"/sessions/{world.session.id}/completion", json=body)
    assert reply.status_code == 200
    assert world.manager.completed == [expected]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "'code' string"),
        ({"code": 1}, "'code' string"),
        (
            {"code": "sp", "cursor": 99},
            "'cursor' must be an integer between 0 and the length of code (got 99).",
        ),
        ({"code": "sp", "cursor": -1}, "(got -1)"),
        ({"code": "sp", "cursor": True}, "(got True)"),
        ({"code": "sp", "cursor": "x"}, "(got 'x')"),
    ],
)
def test_a_bad_completion_request_is_400(world: World, body: dict, needle: str) -> None:
    reply = world.client.post(f"/v2.0/{PROJECT}/sessions/{world.session.uuid}/completion", json=body)
    assert reply.status_code == 400 and needle in reply.json()["msg"]
    assert "completion" not in world.manager.calls.names


@pytest.mark.parametrize(
    ("path", "msg"),
    [
        ("/sessions?from=-1", "query parameter 'from' must be an integer >= 0 (got '-1')."),
        ("/sessions?size=0", "query parameter 'size' must be an integer >= 1 (got '0')."),
        ("/sessions?size=many", "query parameter 'size' must be an integer >= 1 (got 'many')."),
        ("/sessions/0/log?from=x", "query parameter 'from' must be an integer >= 0 (got 'x')."),
        ("/sessions/0/log?size=-1", "query parameter 'size' must be an integer >= 0 (got '-1')."),
        ("/sessions/0?wait=soon", "query parameter 'wait' must be a number of seconds >= 0 (got 'soon')."),
        ("/sessions/0/state?wait=-1", "query parameter 'wait' must be a number of seconds >= 0 (got '-1')."),
        (
            "/sessions/0/statements/2?wait=nan",
            "query parameter 'wait' must be a number of seconds >= 0 (got 'nan').",
        ),
        (
            "/sessions/0/statements/2?wait=inf",
            "query parameter 'wait' must be a number of seconds >= 0 (got 'inf').",
        ),
    ],
)
def test_a_bad_query_parameter_is_400(world: World, path: str, msg: str) -> None:
    for prefix in ("", f"/v2.0/{PROJECT}"):
        reply = world.client.get(prefix + path.replace("/0", f"/{world.session.uuid}") if prefix else path)
        assert reply.status_code == 400
        assert reply.json() == {"msg": msg}
    assert "watch" not in world.manager.calls.names


def test_an_unknown_state_filter_is_400(world: World) -> None:
    reply = world.client.get("/sessions", params={"state": "idle,sleeping"})
    assert reply.status_code == 400 and "'sleeping'" in reply.json()["msg"]


# -- listing and paging ---------------------------------------------------------------------------


def test_sessions_are_paged(world: World) -> None:
    for _ in range(3):
        world.manager.add_session()
    body = world.client.get("/sessions", params={"from": 1, "size": 2}).json()
    assert (body["from"], body["total"]) == (1, 4)
    assert [s["id"] for s in body["sessions"]] == [1, 2]
    assert world.client.get("/sessions", params={"from": 9}).json()["sessions"] == []


def test_the_list_filters_reach_the_manager(world: World) -> None:
    query = {"state": "idle,busy", "kind": "sql", "name": "x", "cluster_name": "c", "owner": "bob"}
    world.client.get(f"/v2.0/{PROJECT}/sessions", params=query)
    world.client.get("/sessions", params={"queue": "q"})
    world.client.get("/sessions")
    assert world.manager.listed == [
        {"states": ["idle", "busy"], "kind": "sql", "name": "x", "cluster": "c", "owner": "bob"},
        {"states": [], "kind": None, "name": None, "cluster": "q", "owner": None},
        {"states": [], "kind": None, "name": None, "cluster": None, "owner": None},
    ]


def test_the_log_is_paged(world: World) -> None:
    body = world.client.get(f"/sessions/{world.session.id}/log", params={"from": 3, "size": 2}).json()
    assert (body["from"], body["total"], body["log"]) == (3, LOG_LINES, ["line 3", "line 4"])
    tail = world.client.get(f"/sessions/{world.session.id}/log", params={"size": 4}).json()
    assert (tail["from"], tail["log"]) == (
        LOG_LINES - 4,
        [f"line {n}" for n in range(LOG_LINES - 4, LOG_LINES)],
    )


def test_statements_newest_first(world: World) -> None:
    body = world.client.get(f"/sessions/{world.session.id}/statements", params={"order": "desc"}).json()
    assert [s["id"] for s in body["statements"]] == [2, 1, 0]


# -- 409: the wrong state -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["dead", "killed", "error"])
def test_a_statement_for_an_ended_session_is_409(world: World, state: str) -> None:
    world.session.state = state
    for prefix, session_id in (("", world.session.id), (f"/v2.0/{PROJECT}", world.session.uuid)):
        reply = world.client.post(f"{prefix}/sessions/{session_id}/statements", json={"code": "1"})
        assert reply.status_code == 409
        assert reply.json() == {"msg": f"session {world.session.id} is {state} and cannot run statements."}


def test_the_result_of_an_unfinished_statement_is_409(world: World) -> None:
    world.manager.add_statement(world.session, state="running", result_format="arrow")
    reply = world.client.get(f"/sessions/{world.session.id}/statements/3/result")
    assert reply.status_code == 409
    assert reply.json() == {"msg": "statement 3 is running and has no result to fetch."}


def test_creating_while_the_server_stops_is_409(world: World) -> None:
    world.manager.closing = True
    reply = world.client.post("/sessions", json={"kind": "pyspark"})
    assert reply.status_code == 409 and "shutting down" in reply.json()["msg"]


# -- 500 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", SESSION_ROUTES, ids=route_id)
def test_an_unexpected_error_is_500_without_its_details(manager: FakeManager, route: tuple[str, str]) -> None:
    session = manager.add_session()
    manager.fail = RuntimeError(f"secret detail of {session.workdir}")
    client = TestClient(create_app(manager, TOKEN, BASE_URL), headers=AUTH, raise_server_exceptions=False)
    method, template = route
    url = template.format(project_id=PROJECT, session_id=session.id, statement_id=0)
    reply = client.request(method, url, json=sample_body(route))
    assert reply.status_code == 500
    assert reply.json() == {"msg": "internal server error (RuntimeError); see the server log."}


def test_the_wait_is_capped() -> None:
    from dli_kernel.server.params import wait_param

    assert wait_param({"wait": str(MAX_WAIT * 100)}) == MAX_WAIT
    assert wait_param({"wait": "0.25"}) == 0.25
    assert wait_param({}) == 0.0 and wait_param({"wait": ""}) == 0.0


MANAGER_API = [
    "get", "touch", "list", "create", "delete", "submit", "statement", "cancel", "arrow_result", "watch",
    "log_size", "completion", "output",
]  # fmt: skip


@pytest.mark.parametrize("name", MANAGER_API)
def test_the_fake_manager_has_the_real_ones_signatures(name: str) -> None:
    """The routes' tests hold only while the fake takes what the real manager takes."""
    real = inspect.signature(getattr(SessionManager, name))
    fake = inspect.signature(getattr(FakeManager, name))
    assert list(fake.parameters) == list(real.parameters)
    assert [p.default for p in fake.parameters.values()] == [p.default for p in real.parameters.values()]
