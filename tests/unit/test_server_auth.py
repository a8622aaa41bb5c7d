"""The server's token check on every route of its table: without the token nothing reaches the manager."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from starlette.testclient import TestClient

from dli_kernel.server.app import create_app
from dli_kernel.server.auth import REFUSED
from tests.unit.fake_manager import FakeManager
from tests.unit.test_routes import ROUTES, route_id, sample_body

if TYPE_CHECKING:  # the TestClient's response: httpx2's, or httpx's with an older Starlette
    from httpx2 import Response

TOKEN = "s3cret-token-of-the-server"
WRONG = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Basic {TOKEN}"},  # the right secret in the wrong scheme
    {"Authorization": TOKEN},
    {"X-Auth-Token": "wrong"},
    {"X-Auth-Token": ""},
]


@pytest.fixture
def manager(tmp_path: Path) -> FakeManager:
    manager = FakeManager(tmp_path)
    session = manager.add_session()
    manager.add_statement(session, result_format="arrow")
    return manager


@pytest.fixture
def client(manager: FakeManager) -> TestClient:
    return TestClient(create_app(manager, TOKEN, "http://127.0.0.1:1"))


def request(client: TestClient, manager: FakeManager, route: tuple[str, str], headers: dict) -> Response:
    method, template = route
    session = manager.sessions[0]
    session_id = session.uuid if template.startswith("/v2.0/") else session.id
    url = template.format(project_id="p", session_id=session_id, statement_id=0)
    return client.request(method, url, json=sample_body(route), headers=headers)


@pytest.mark.parametrize("headers", WRONG, ids=repr)
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_every_route_refuses_a_missing_or_wrong_token(
    client: TestClient, manager: FakeManager, route: tuple[str, str], headers: dict
) -> None:
    reply = request(client, manager, route, headers)
    assert reply.status_code == 401
    assert reply.json() == {"msg": REFUSED}
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in reply.text
    assert manager.calls.names == []
    assert "token" in REFUSED and TOKEN not in REFUSED


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_every_route_takes_the_bearer_token(
    client: TestClient, manager: FakeManager, route: tuple[str, str], scheme: str
) -> None:
    reply = request(client, manager, route, {"Authorization": f"{scheme} {TOKEN}"})
    assert reply.status_code < 400, reply.text


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_x_auth_token_is_taken_on_the_dli_paths_only(
    client: TestClient, manager: FakeManager, route: tuple[str, str]
) -> None:
    reply = request(client, manager, route, {"X-Auth-Token": TOKEN})
    if route[1].startswith("/v2.0/"):
        assert reply.status_code < 400, reply.text
    else:
        assert reply.status_code == 401
        assert manager.calls.names == []


def test_unknown_paths_are_refused_before_they_are_looked_up(client: TestClient) -> None:
    """Without the token a caller learns nothing, not even which paths exist."""
    for path in ("/nowhere", "/v2.0/p/nothing"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
