"""The Spark UI proxy (``/sessions/{id}/ui/...``) in process, in front of a fake UI (pytest-httpserver): it
answers only behind the server's token and only for sessions the caller sees, forwards path and query,
never the caller's credentials, streams the answer back and keeps redirects under its prefix."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from starlette.datastructures import Headers
from starlette.testclient import TestClient
from werkzeug import Request as WRequest
from werkzeug import Response as WResponse

from dli_kernel.server import ui_proxy
from dli_kernel.server.app import create_app
from dli_kernel.server.ui_proxy import proxied_location, request_headers, upstream_url
from dli_kernel.spec import SessionSpec
from tests.unit.fake_manager import FakeManager, FakeSession
from tests.unit.team_fakes import TeamUsers, auth

BASE_URL = "http://127.0.0.1:8998"


@dataclass
class Proxy:
    manager: FakeManager
    client: TestClient
    session: FakeSession  # alice's, its UI the fake one
    ui: HTTPServer

    @property
    def prefix(self) -> str:
        return f"/sessions/{self.session.id}/ui"

    def get(self, path: str, user: str | None = "alice", **kwargs: Any) -> Any:
        headers = {**(auth(user) if user else {}), **kwargs.pop("headers", {})}
        return self.client.get(self.prefix + path, headers=headers, follow_redirects=False, **kwargs)


@pytest.fixture
def proxy(tmp_path: Path, httpserver: HTTPServer) -> Iterator[Proxy]:
    manager = FakeManager(tmp_path)
    session = manager.add_session(SessionSpec(kind="pyspark", name="mine"))
    session.ui_url = httpserver.url_for("/").rstrip("/")
    app = create_app(manager, "unused-token", BASE_URL, users=TeamUsers())
    with TestClient(app) as client:
        yield Proxy(manager, client, session, httpserver)


def test_a_page_is_forwarded_with_its_path_query_and_the_prefix_the_ui_links_with(proxy: Proxy) -> None:
    seen: list[WRequest] = []

    def page(request: WRequest) -> WResponse:
        seen.append(request)
        return WResponse("<a href='/sessions/0/ui/stages/'>Stages</a>", content_type="text/html")

    proxy.ui.expect_request("/jobs/job/", query_string="id=3").respond_with_handler(page)
    reply = proxy.get("/jobs/job/?id=3", headers={"Cookie": "a=b", "Accept-Language": "de"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/html")
    assert reply.text == "<a href='/sessions/0/ui/stages/'>Stages</a>"
    (request,) = seen
    assert request.headers["X-Forwarded-Context"] == proxy.prefix
    assert request.headers["Accept-Language"] == "de"
    # The server's token and the caller's cookies stay with the server.
    assert "Authorization" not in request.headers and "Cookie" not in request.headers


def test_a_redirect_to_the_ui_itself_stays_under_the_prefix(proxy: Proxy) -> None:
    own = proxy.ui.url_for("/jobs/")
    proxy.ui.expect_request("/").respond_with_response(WResponse(status=302, headers={"Location": own}))
    bare = proxy.get("")  # sparkUiUrl, without the final slash, as Spark's own address has none
    assert (bare.status_code, bare.headers["location"]) == (307, f"http://testserver{proxy.prefix}/")
    reply = proxy.get("/")
    assert reply.status_code == 302
    assert reply.headers["location"] == f"{proxy.prefix}/jobs/"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://127.0.0.1:4040/jobs/?a=1", "/sessions/3/ui/jobs/?a=1"),
        ("/stages/", "/sessions/3/ui/stages/"),
        ("/sessions/3/ui/stages/", "/sessions/3/ui/stages/"),  # the UI made it with the prefix already
        ("http://127.0.0.1:4040", "/sessions/3/ui/"),
        ("stage/?id=1", "stage/?id=1"),  # relative to the page: already under the prefix
        ("https://elsewhere.example/x", "https://elsewhere.example/x"),
        ("http://127.0.0.1:4041/jobs/", "http://127.0.0.1:4041/jobs/"),  # another port is another server
    ],
)
def test_proxied_location(location: str, expected: str) -> None:
    assert proxied_location(location, "http://127.0.0.1:4040", "/sessions/3/ui") == expected


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("", "", "http://127.0.0.1:4040/"),
        ("jobs/", "", "http://127.0.0.1:4040/jobs/"),
        ("api/v1/applications", "status=running", "http://127.0.0.1:4040/api/v1/applications?status=running"),
        ("static/a b.js", "", "http://127.0.0.1:4040/static/a%20b.js"),
        ("/api/v1", "", "http://127.0.0.1:4040/api/v1"),  # a URL built as sparkUiUrl + '/api/v1'
    ],
)
def test_upstream_url(path: str, query: str, expected: str) -> None:
    assert upstream_url("http://127.0.0.1:4040/", path, query) == expected


def test_without_the_token_nothing_reaches_the_ui(proxy: Proxy) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        reply = proxy.client.get(proxy.prefix + "/environment/", headers=headers)
        assert reply.status_code == 401
    assert proxy.ui.log == []
    assert proxy.manager.calls.names == []


def test_another_users_session_is_the_same_404_as_a_missing_one(proxy: Proxy) -> None:
    reply = proxy.get("/environment/", user="bob")
    missing = proxy.client.get("/sessions/99/ui/environment/", headers=auth("bob"))
    assert (reply.status_code, missing.status_code) == (404, 404)
    assert reply.json()["msg"] == missing.json()["msg"].replace("'99'", f"'{proxy.session.id}'")
    assert proxy.ui.log == []


def test_an_admin_sees_any_users_ui(proxy: Proxy) -> None:
    proxy.ui.expect_request("/environment/").respond_with_data("conf")
    assert proxy.get("/environment/", user="root").text == "conf"


def test_a_session_is_found_by_name_and_browsing_its_ui_is_its_heartbeat(proxy: Proxy) -> None:
    proxy.ui.expect_request("/jobs/").respond_with_data("jobs")
    reply = proxy.client.get("/sessions/mine/ui/jobs/", headers=auth("alice"))
    assert reply.text == "jobs"
    assert proxy.manager.touched == [proxy.session.id]
    assert proxy.manager.calls.on_loop == []  # the manager's lock is never taken on the event loop


def test_a_session_without_a_ui_yet_is_409(proxy: Proxy) -> None:
    proxy.session.state, proxy.session.ui_url = "starting", None
    reply = proxy.get("/jobs/")
    assert reply.status_code == 409
    assert reply.json() == {"msg": f"session {proxy.session.id} has no Spark UI now: it is starting."}


def test_a_ui_that_does_not_listen_is_502_in_one_sentence(proxy: Proxy) -> None:
    with socket.socket() as closed:  # a port of the loopback's that nothing listens on
        closed.bind(("127.0.0.1", 0))
        proxy.session.ui_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    reply = proxy.get("/jobs/")
    assert reply.status_code == 502
    assert reply.json() == {
        "msg": f"the Spark UI of session {proxy.session.id} could not be reached (ConnectionError)."
    }


def test_a_ui_that_does_not_answer_in_time_is_504(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_proxy, "READ_TIMEOUT", 0.2)

    def slow(request: WRequest) -> WResponse:
        time.sleep(1.0)
        return WResponse("late")

    proxy.ui.expect_request("/jobs/").respond_with_handler(slow)
    reply = proxy.get("/jobs/")
    assert reply.status_code == 504
    assert "did not answer within" in reply.json()["msg"]


def test_head_is_forwarded_without_a_body(proxy: Proxy) -> None:
    proxy.ui.expect_request("/static/spark-logo.png", method="HEAD").respond_with_data(
        b"", headers={"Content-Length": "1234", "Content-Type": "image/png"}
    )
    reply = proxy.client.head(proxy.prefix + "/static/spark-logo.png", headers=auth("alice"))
    assert reply.status_code == 200
    assert (reply.headers["content-type"], reply.content) == ("image/png", b"")


def test_a_large_body_streams_through_whole(proxy: Proxy) -> None:
    body = bytes(range(256)) * 16 * 1024  # 4 MiB, many chunks
    proxy.ui.expect_request("/api/v1/applications/app/logs").respond_with_data(body)
    reply = proxy.get("/api/v1/applications/app/logs")
    assert reply.status_code == 200 and reply.content == body


def test_a_compressed_answer_passes_as_the_ui_sent_it(proxy: Proxy) -> None:
    packed = gzip.compress(b"<html>jobs</html>")
    proxy.ui.expect_request("/jobs/").respond_with_data(
        packed, headers={"Content-Encoding": "gzip"}, content_type="text/html"
    )
    reply = proxy.get("/jobs/", headers={"Accept-Encoding": "gzip"})
    assert reply.headers["content-encoding"] == "gzip"
    assert reply.text == "<html>jobs</html>"  # the client undid the UI's own compression


def test_a_caller_that_asks_no_compression_gets_none() -> None:
    """requests would otherwise ask the UI for gzip, and the proxy pass it to a caller that cannot read it."""
    sent = request_headers(Headers({"authorization": "Bearer t", "x-auth-token": "t"}), "/sessions/1/ui")
    assert sent == {"accept-encoding": "identity", "x-forwarded-context": "/sessions/1/ui"}


def test_the_ui_answers_other_statuses_as_they_are(proxy: Proxy) -> None:
    proxy.ui.expect_request("/nothing/").respond_with_data("Not Found", status=404)
    reply = proxy.get("/nothing/")
    assert (reply.status_code, reply.text) == (404, "Not Found")


def test_only_reading_methods_are_forwarded(proxy: Proxy) -> None:
    reply = proxy.client.post(proxy.prefix + "/jobs/job/kill/", headers=auth("alice"))
    assert reply.status_code == 405
    assert proxy.ui.log == []


def test_the_session_json_names_the_proxy_not_the_drivers_port(proxy: Proxy) -> None:
    body = proxy.client.get(f"/sessions/{proxy.session.id}", headers=auth("alice")).json()
    assert body["appInfo"]["sparkUiUrl"] == f"{BASE_URL}{proxy.prefix}"
    dli = proxy.client.get(f"/v2.0/p/sessions/{proxy.session.uuid}", headers=auth("alice")).json()
    assert dli["appInfo"]["sparkUiUrl"] == f"{BASE_URL}{proxy.prefix}"
    proxy.session.ui_url = None
    body = proxy.client.get(f"/sessions/{proxy.session.id}", headers=auth("alice")).json()
    assert body["appInfo"]["sparkUiUrl"] is None
