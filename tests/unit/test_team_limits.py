"""A shared server's limits: live sessions per user, sessions starting at once and the driver memory of the
live sessions (each refused with one sentence and 429 before anything is made), and the size of request
bodies on every route (413, by Content-Length at once, or counted as a chunked body streams in).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from dli_kernel.protocol import DLC_PATH, SESSION_STATES
from dli_kernel.server.body_limit import BodyLimit
from dli_kernel.server.principal import Principal
from tests.unit.manager_fakes import WAIT, wait_state, wait_until
from tests.unit.team_fakes import PRINCIPALS, PROJECT, Team, TeamUsers, auth, team_server
from tests.unit.test_routes import ROUTES, route_id

KIB = 1024


def made(team: Team) -> tuple[int, int, int]:
    """What a refused request must not have made: sessions, drivers, session directories."""
    workdirs = team.manager.settings.state_dir / "sessions"
    dirs = len(list(workdirs.iterdir())) if workdirs.exists() else 0
    return len(team.manager.list(states=SESSION_STATES)), len(team.launcher.drivers), dirs


def create(team: Team, user: str, expect: int, prefix: str = "", **body: Any) -> dict[str, Any]:
    spec = {"kind": "pyspark", **body, **({"cluster_name": "c1"} if prefix else {})}
    before = made(team)
    reply = team.request(user, "POST", f"{prefix}/sessions", json=spec)
    assert reply.status_code == expect, reply.text
    if expect >= 400:
        assert made(team) == before, "a refused request made something"
        assert set(reply.json()) == {"msg"}
    else:  # its driver is launched in the background: done, before the next request counts drivers
        session = team.manager.get(str(reply.json()["livy_id" if prefix else "id"]))
        wait_until(team.manager, session, lambda: session.driver is not None, what="the driver's launch")
    return reply.json()


# -- live sessions per user ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", f"/v2.0/{PROJECT}"])
def test_a_user_holds_at_most_the_servers_number_of_live_sessions(tmp_path: Path, prefix: str) -> None:
    with team_server(tmp_path, max_sessions_per_user=2) as team:
        first = create(team, "alice", 201, prefix)
        create(team, "alice", 201, prefix)
        refused = create(team, "alice", 429, prefix)
        assert refused == {
            "msg": "you have 2 live sessions, the most this server allows a user (2); delete one of them to "
            "start another."
        }
        create(team, "bob", 201, prefix)  # a limit per user: bob's are his own
        assert team.request("alice", "DELETE", f"{prefix}/sessions/{first['id']}").status_code == 200
        create(team, "alice", 201, prefix)  # an ended session no longer counts


def test_a_users_own_limit_stands_in_for_the_servers(tmp_path: Path) -> None:
    users = TeamUsers(
        {**PRINCIPALS, "alice": Principal("alice", max_sessions=1), "root": Principal("root", True, 3)}
    )
    with team_server(tmp_path, users=users, max_sessions_per_user=2) as team:
        create(team, "alice", 201)
        assert "(1)" in create(team, "alice", 429)["msg"]
        for _ in range(2):
            create(team, "bob", 201)
        create(team, "bob", 429)
        for _ in range(3):
            create(team, "root", 201)  # an admin has a limit too: their own
        create(team, "root", 429)


def test_no_limit_by_default(tmp_path: Path) -> None:
    with team_server(tmp_path) as team:
        for _ in range(5):
            create(team, "alice", 201)


# -- sessions starting at once ---------------------------------------------------------------------------


def test_the_server_starts_at_most_max_starting_sessions_at_once(tmp_path: Path) -> None:
    with team_server(tmp_path, max_starting=1) as team:
        team.launcher.boot_gate.clear()  # drivers stay in Spark's start
        first = create(team, "alice", 201)
        refused = create(team, "bob", 429)
        assert refused == {
            "msg": "this server is starting as many sessions as it starts at once (1); try again when one of "
            "them is up."
        }
        team.launcher.boot_gate.set()
        wait_state(team.manager, team.manager.get(str(first["id"])), "idle")
        create(team, "bob", 201)


# -- driver memory --------------------------------------------------------------------------------------


def test_the_live_sessions_hold_at_most_max_driver_memory(tmp_path: Path) -> None:
    with team_server(tmp_path, max_driver_memory_mb=3 * 1024) as team:
        first = create(team, "alice", 201, driverMemory="1g")
        create(team, "bob", 201, driverMemory="1g")
        refused = create(team, "bob", 429, driverMemory="2g")
        assert refused == {
            "msg": "the live sessions leave less driver memory than this session's 2048 MB of the server's "
            "total of 3072 MB; try again when sessions have ended, or ask for less."
        }
        never = create(team, "root", 400, driverMemory="4g")  # no wait would help: not a 429
        assert never == {
            "msg": "the session asks for 4096 MB of driver memory, more than this server allows all sessions "
            "together (3072 MB); ask for less driverMemory."
        }
        create(team, "alice", 201, driverMemory="1g")  # exactly the total
        assert team.request("alice", "DELETE", f"/sessions/{first['id']}").status_code == 200
        create(team, "bob", 201, driverMemory="1g")


def test_the_default_driver_memory_counts(tmp_path: Path) -> None:
    with team_server(tmp_path, max_driver_memory_mb=10 * 1024) as team:
        create(team, "alice", 201)  # sc_type A's driver: 7 GiB
        create(team, "alice", 429, driverMemory="4g")
        create(team, "alice", 201, driverMemory="3g")


def test_driver_memory_set_in_conf_counts_as_spark_reads_it(tmp_path: Path) -> None:
    """The conf's spark.driver.memory wins over driverMemory when the driver starts: it is what counts."""
    with team_server(tmp_path, max_driver_memory_mb=4 * 1024) as team:
        never = create(team, "alice", 400, driverMemory="1g", conf={"spark.driver.memory": "64g"})
        assert "asks for 65536 MB of driver memory" in never["msg"]
        unreadable = create(team, "alice", 400, conf={"spark.driver.memory": "lots"})
        assert unreadable["msg"].startswith("conf spark.driver.memory must be a size such as 4g")
        create(team, "alice", 201, driverMemory="1g", conf={"spark.driver.memory": "3072"})  # MiB, as Spark
        create(team, "bob", 429, driverMemory="1g", conf={"spark.driver.memory": "2G"})
        create(team, "bob", 201, driverMemory="4g", conf={"spark.driver.memory": "1048576k"})
        assert made(team)[0] == 2


# -- DLC ---------------------------------------------------------------------------------------------------


def test_dlc_refuses_a_limit_in_its_own_shape(tmp_path: Path) -> None:
    create_body = {"Kind": "pyspark", "DataEngineName": "engine-a"}
    with team_server(tmp_path, max_sessions_per_user=1) as team:
        first = team.dlc_as("alice", "CreateNotebookSession", create_body)
        wait_state(team.manager, team.manager.get(first["SessionId"]), "idle")
        before = made(team)
        answer = team.dlc_as("alice", "CreateNotebookSession", create_body)
        assert answer["Error"] == {
            "Code": "LimitExceeded",
            "Message": "you have 1 live sessions, the most this server allows a user (1); delete one of them "
            "to start another.",
        }
        assert made(team) == before


# -- body sizes ------------------------------------------------------------------------------------------

SMALL, LARGE = 1000, 5000  # the test server's limits: any body, a statement's (or a DLC action's)
ALL_ROUTES = [*ROUTES, ("POST", DLC_PATH)]


def reads_body(route: tuple[str, str]) -> bool:
    method, template = route
    return method == "POST" and not template.endswith(("/cancel", "/links"))  # they take no body


def limit_of(route: tuple[str, str]) -> int:
    method, template = route
    return LARGE if method == "POST" and template.endswith(("/statements", DLC_PATH)) else SMALL


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Team]:
    with team_server(tmp_path, max_body=SMALL, max_statement_body=LARGE) as team:
        team.populate("alice", "nb")
        yield team


def url(team: Team, template: str) -> str:
    session = team.owned["alice"].session
    key = session.uuid if template.startswith("/v2.0/") else str(session.id)
    return template.format(project_id=PROJECT, session_id=key, statement_id="0")


def too_large(limit: int) -> dict[str, str]:
    return {"msg": f"the request body is larger than this route accepts ({limit} bytes); send a smaller one."}


@pytest.mark.parametrize("route", ALL_ROUTES, ids=route_id)
def test_a_body_longer_than_its_routes_limit_is_413(small: Team, route: tuple[str, str]) -> None:
    method, template = route
    limit = limit_of(route)
    before = made(small), small.owned["alice"].fingerprint()
    reply = small.request("alice", method, url(small, template), content=b" " * (limit + 1))
    assert reply.status_code == 413
    assert reply.json() == too_large(limit)
    assert (made(small), small.owned["alice"].fingerprint()) == before


def asgi_request(team: Team, route: tuple[str, str], chunks: int, size: int) -> tuple[int, Any, int]:
    """The request as an ASGI server passes a chunked body (the TestClient sends a body in one piece):
    ``chunks`` pieces of ``size`` bytes, no Content-Length. (status, JSON answer, pieces the app read)."""
    method, template = route
    path = url(team, template)
    headers = [(b"authorization", auth("alice")["Authorization"].encode()), (b"host", b"testserver")]
    if path == DLC_PATH:
        headers = [(b"host", b"testserver")]  # refused unsigned, but only once the body is read
    scope: Scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    read = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b" " * size, "more_body": read < chunks}

    async def send(message: Message) -> None:
        sent.append(message)

    async def serve() -> None:
        await team.client.app(scope, receive, send)

    asyncio.run(serve())
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], json.loads(body) if body else None, read


@pytest.mark.parametrize("route", ALL_ROUTES, ids=route_id)
def test_a_chunked_body_is_cut_off_once_over_the_limit(small: Team, route: tuple[str, str]) -> None:
    limit = limit_of(route)
    before = made(small), small.owned["alice"].fingerprint()
    status, _answer, read = asgi_request(small, route, chunks=4 * limit // 100, size=100)
    if reads_body(route):
        assert (status, _answer) == (413, too_large(limit))
        assert read == limit // 100 + 1  # read no further than the piece that went over
        assert (made(small), small.owned["alice"].fingerprint()) == before
    else:
        # A route that takes no body keeps none of it (a file answer drains it, listening for the end).
        assert status < 300 or (route, status) == (("GET", "/pool"), 403)  # the pool is for admins


def test_the_default_limits_take_64_kib_anywhere_and_more_in_a_statement(tmp_path: Path) -> None:
    with team_server(tmp_path) as team:
        team.populate("alice", "nb")
        session = team.owned["alice"].session
        code = "x" * (64 * KIB - len('{"code": ""}'))
        body = json.dumps({"code": code}).encode()
        assert len(body) == 64 * KIB
        for prefix, key in (("", str(session.id)), (f"/v2.0/{PROJECT}", session.uuid)):
            reply = team.request("alice", "POST", f"{prefix}/sessions/{key}/completion", content=body)
            assert reply.status_code == 200, reply.text
            big = json.dumps({"code": code * 20}).encode()  # 1.3 MB of code
            reply = team.request("alice", "POST", f"{prefix}/sessions/{key}/statements", content=big)
            assert reply.status_code == 201, reply.text
            over = json.dumps({"code": code + "x"}).encode()
            reply = team.request("alice", "POST", f"{prefix}/sessions/{key}/completion", content=over)
            assert reply.status_code == 413 and reply.json() == too_large(64 * KIB)
        dlc = team.dlc_as(
            "alice", "CreateNotebookSessionStatement", {"SessionId": session.uuid, "Code": code * 20}
        )
        assert "Error" not in dlc, dlc


def test_a_token_less_request_is_refused_before_its_body_is_looked_at(small: Team) -> None:
    reply = small.client.post("/sessions", content=b" " * (SMALL + 1))
    assert reply.status_code == 401


# -- the middleware on its own ---------------------------------------------------------------------------


async def reading_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers with its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await JSONResponse({"size": size})(scope, receive, send)


class Exchange:
    def __init__(self, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
        self.chunks = list(chunks)
        self.received = 0  # receive() calls
        self.sent: list[Message] = []
        self.scope: Scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}

    async def receive(self) -> Message:
        self.received += 1
        body = self.chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def run(exchange: Exchange, limit: int) -> None:
    asyncio.run(BodyLimit(reading_app, lambda scope: limit)(exchange.scope, exchange.receive, exchange.send))


def test_a_declared_length_over_the_limit_is_refused_without_reading_a_byte() -> None:
    exchange = Exchange([b"x" * 50] * 3, [(b"content-length", b"150")])
    run(exchange, 100)
    assert (exchange.status, exchange.body, exchange.received) == (413, too_large(100), 0)


def test_a_chunked_body_is_refused_at_the_chunk_that_goes_over() -> None:
    exchange = Exchange([b"x" * 40] * 10, [])
    run(exchange, 100)
    assert (exchange.status, exchange.body, exchange.received) == (413, too_large(100), 3)


@pytest.mark.parametrize("headers", [[], [(b"content-length", b"100")]], ids=["chunked", "declared"])
def test_a_body_of_exactly_the_limit_passes(headers: list[tuple[bytes, bytes]]) -> None:
    exchange = Exchange([b"x" * 50] * 2, headers)
    run(exchange, 100)
    assert (exchange.status, exchange.body) == (200, {"size": 100})


def test_a_lying_content_length_is_still_counted() -> None:
    exchange = Exchange([b"x" * 60] * 2, [(b"content-length", b"10")])
    run(exchange, 100)
    assert exchange.status == 413


def test_two_creates_at_once_cannot_both_pass_a_limit(tmp_path: Path) -> None:
    """Both pass the first look (a barrier holds them where a pooled driver would be reserved); the look
    again under the lock that registers a session lets only one through."""
    with team_server(tmp_path, max_sessions_per_user=1) as team:
        barrier = threading.Barrier(2, timeout=WAIT)
        reserve = team.manager._starter.reserve

        def reserve_together(spec: Any, owner: Any = None) -> Any:
            barrier.wait()
            return reserve(spec, owner)

        team.manager._starter.reserve = reserve_together  # type: ignore[method-assign]
        statuses: list[int] = []

        def create_one() -> None:
            statuses.append(team.request("alice", "POST", "/sessions", json={"kind": "pyspark"}).status_code)

        threads = [threading.Thread(target=create_one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT)
        assert sorted(statuses) == [201, 429]
        assert len(team.manager.list()) == 1
