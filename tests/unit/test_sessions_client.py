"""Unit tests for dli_kernel.client.SessionsClient against a real local HTTP server (pytest-httpserver).

Every request goes over a real socket to ``httpserver``; only failures a server cannot produce on demand
(a refused connection) use a closed port, and a spy on the client's ``requests.Session`` counts attempts
that never reached a server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dli_kernel.client import (
    BadRequest,
    ClientError,
    ConfigError,
    Conflict,
    ConnectionFailed,
    LogPage,
    NotFound,
    RequestRejected,
    ServerError,
    SessionInfo,
    SessionsClient,
    StatementInfo,
    Unauthorized,
    normalize_state,
)
from dli_kernel.spec import SessionSpec

FAST = (0.0, 0.0)  # retry delays: two retries, no waiting
SECRET = "s3cr3t-t0ken-8f2b1c"
DLI_ID = "f28a0d0c-0a37-4bd4-8d1d-1416031e5151"

# A session as Livy 0.8 answers it.
LIVY_SESSION = {
    "id": 3,
    "name": "etl",
    "appId": "application_1700000000000_0042",
    "owner": "alice",
    "proxyUser": "svc-spark",
    "state": "idle",
    "kind": "pyspark",
    "appInfo": {
        "driverLogUrl": "http://nm-1:8042/node/containerlogs/container_1/alice",
        "sparkUiUrl": "http://rm-1:8088/proxy/application_1700000000000_0042/",
    },
    "log": ["stdout: ", "\nstderr: ", "24/01/01 INFO SparkContext: Running Spark version 3.5.1"],
}

# A session as DLI answers it (the "Creating a Session" example response).
DLI_SESSION = {
    "id": DLI_ID,
    "appId": None,
    "name": None,
    "owner": None,
    "proxyUser": None,
    "state": "starting",
    "kind": "spark",
    "log": ["stdout: ", "\nstderr: ", "\nYARN Diagnostics: "],
    "sc_type": "A",
    "cluster_name": "test_cluster",
    "create_time": 1531906043036,
    "update_time": 0,
}


def statement(statement_id: int, code: str, state: str = "waiting", output: dict | None = None) -> dict:
    return {
        "id": statement_id,
        "code": code,
        "state": state,
        "output": output,
        "progress": 0.0,
        "started": 0,
        "completed": 0,
    }


class SecretAuth(requests.auth.AuthBase):
    """Sets a secret Authorization header, as the real auth schemes do."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {SECRET}"
        return request


def base_url(server: HTTPServer) -> str:
    return server.url_for("/").rstrip("/")


def calls(server: HTTPServer) -> list[tuple[str, str]]:
    """(method, path) of every request the server received, in order."""
    return [(request.method, request.path) for request, _ in server.log]


def closed_port() -> int:
    """A port nothing listens on: bound, then closed, so connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spy_requests(client: SessionsClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the method of every HTTP attempt the client makes, including ones that never connect."""
    attempts: list[str] = []
    send = client._http.request

    def counting(method: str, url: str, **kwargs: object) -> requests.Response:
        attempts.append(method)
        return send(method, url, **kwargs)

    monkeypatch.setattr(client._http, "request", counting)
    return attempts


class QuickServer(HTTPServer):
    """pytest-httpserver's server, polling for shutdown every 20 ms instead of 500 ms, so stopping is fast."""

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)


@pytest.fixture(scope="module")
def make_httpserver() -> Iterator[HTTPServer]:
    """Overrides the plugin's session server (the ``httpserver`` fixture uses it) with a QuickServer."""
    server = QuickServer()
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def client(httpserver: HTTPServer) -> Iterator[SessionsClient]:
    with SessionsClient(base_url(httpserver), "livy", timeout=(1.0, 2.0), retry_delays=FAST) as client:
        yield client


# -- request shapes --------------------------------------------------------------------------------


def test_livy_create_sends_livy_field_names(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions", method="POST").respond_with_json(LIVY_SESSION, status=201)
    spec = SessionSpec(
        kind="python",
        name="etl",
        cluster_name="root.analytics",
        driver_memory_mb=2048,
        driver_cores=2,
        executor_memory_mb=2500,
        conf={"spark.sql.shuffle.partitions": "8"},
        proxy_user="svc-spark",
        heartbeat_timeout_s=60,
        ttl_s=3600,
    )

    info = client.create_session(spec)

    assert calls(httpserver) == [("POST", "/sessions")]
    assert httpserver.log[0][0].get_json() == {
        "kind": "pyspark",
        "name": "etl",
        "queue": "root.analytics",
        "driverMemory": "2 GB",
        "driverCores": 2,
        "executorMemory": "2500 MB",
        "conf": {"spark.sql.shuffle.partitions": "8"},
        "proxyUser": "svc-spark",
        "heartbeatTimeoutInSecond": 60,
        "ttl": "1h",
    }
    assert info.id == "3"
    assert info.state == "idle"


def test_livy_create_sends_a_tier_as_its_sizes(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions", method="POST").respond_with_json(LIVY_SESSION, status=201)

    client.create_session(SessionSpec(kind="spark", sc_type="B"))

    assert httpserver.log[0][0].get_json() == {
        "kind": "spark",
        "driverMemory": "7 GB",
        "driverCores": 2,
        "executorMemory": "8 GB",
        "executorCores": 2,
        "numExecutors": 7,
    }


def test_dli_create_goes_under_the_project_with_dli_field_names(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2.0/proj-7/sessions", method="POST").respond_with_json(DLI_SESSION)
    spec = SessionSpec(
        kind="spark",
        name="nightly",
        cluster_name="test_cluster",
        sc_type="a",
        executor_cores=2,
        jars=("group.tesddws/gsjdbc4.jar",),
        modules=("sys.datasource.css",),
        resources=({"name": "group.tesddws/gsjdbc3.jar", "type": "jar"},),
    )

    with SessionsClient(base_url(httpserver), "dli", project_id="proj-7", retry_delays=FAST) as client:
        info = client.create_session(spec)

    assert calls(httpserver) == [("POST", "/v2.0/proj-7/sessions")]
    assert httpserver.log[0][0].get_json() == {
        "kind": "spark",
        "name": "nightly",
        "cluster_name": "test_cluster",
        "sc_type": "A",
        "executorCores": 2,
        "jars": ["group.tesddws/gsjdbc4.jar"],
        "modules": ["sys.datasource.css"],
        "resources": [{"name": "group.tesddws/gsjdbc3.jar", "type": "jar"}],
    }
    assert info.id == DLI_ID
    assert info.state == "starting"


def test_dli_dialect_needs_a_project_id() -> None:
    with pytest.raises(ConfigError, match="project id"):
        SessionsClient("http://127.0.0.1:1", "dli")
    with pytest.raises(ConfigError, match="dialect must be one of livy, dli, dlc, local"):
        SessionsClient("http://127.0.0.1:1", "yarn")


def test_local_create_defaults_cluster_name_to_local(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2.0/local/sessions", method="POST").respond_with_json(
        DLI_SESSION | {"cluster_name": "local"}, status=201
    )

    with SessionsClient(base_url(httpserver), "local", retry_delays=FAST) as client:
        client.create_session(SessionSpec(kind="sql"))
        client.create_session(SessionSpec(kind="sql", cluster_name="mine", sc_type="C"))

    assert calls(httpserver) == [("POST", "/v2.0/local/sessions")] * 2
    assert httpserver.log[0][0].get_json() == {"kind": "sql", "cluster_name": "local"}
    assert httpserver.log[1][0].get_json() == {"kind": "sql", "cluster_name": "mine", "sc_type": "C"}


@pytest.mark.parametrize(
    ("dialect", "prefix", "session_id", "expected"),
    [
        ("livy", "", "3", {"code": "df.count()", "kind": "sql"}),
        ("dli", "/v2.0/p1", DLI_ID, {"code": "df.count()", "kind": "sql"}),
        ("local", "/v2.0/local", DLI_ID, {"code": "df.count()", "kind": "sql", "maxRows": 10}),
    ],
)
def test_statement_body_has_max_rows_only_for_local(
    httpserver: HTTPServer, dialect: str, prefix: str, session_id: str, expected: dict
) -> None:
    path = f"{prefix}/sessions/{session_id}/statements"
    httpserver.expect_request(path, method="POST").respond_with_json(statement(0, "df.count()"), status=201)

    with SessionsClient(base_url(httpserver), dialect, project_id="p1", retry_delays=FAST) as client:
        submitted = client.submit(session_id, "df.count()", kind="sql", max_rows=10)
        client.submit(session_id, "df.count()")

    assert calls(httpserver) == [("POST", path)] * 2
    assert httpserver.log[0][0].get_json() == expected
    assert httpserver.log[1][0].get_json() == {"code": "df.count()"}  # no kind, no maxRows
    assert submitted == StatementInfo(id=0, state="waiting", code="df.count()")


def test_list_sessions_sends_filters_as_query_params(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions", method="GET").respond_with_json(
        {"from": 5, "total": 7, "sessions": [LIVY_SESSION, LIVY_SESSION | {"id": 4, "state": "busy"}]}
    )

    sessions = client.list_sessions(from_=5, size=2, state="idle", kind="pyspark", owner=None)
    everything = client.list_sessions()

    first, second = (request for request, _ in httpserver.log)
    assert first.args.to_dict() == {"from": "5", "size": "2", "state": "idle", "kind": "pyspark"}
    assert second.query_string == b""
    assert [(s.id, s.state) for s in sessions] == [("3", "idle"), ("4", "busy")]
    assert everything == sessions


def test_list_sessions_without_a_sessions_key_is_empty(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    httpserver.expect_request("/sessions").respond_with_json({"from": 0, "total": 0})

    assert client.list_sessions() == []


def test_logs_sends_from_and_size(httpserver: HTTPServer, client: SessionsClient) -> None:
    lines = ["24/01/01 INFO a", "24/01/01 INFO b"]
    httpserver.expect_request("/sessions/3/log", method="GET").respond_with_json(
        {"id": 3, "from": 10, "total": 42, "log": lines}
    )

    page = client.logs(3, start=10, size=2)
    tail = client.logs("3")

    first, second = (request for request, _ in httpserver.log)
    assert first.args.to_dict() == {"from": "10", "size": "2"}
    assert second.args.to_dict() == {"size": "100"}  # no ``from``: the tail
    assert page == LogPage(start=10, total=42, lines=tuple(lines))
    assert tail == page


def test_completion_body_and_candidates(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/3/completion", method="POST").respond_with_json(
        {"candidates": ["range", "read", "readStream"]}
    )

    candidates = client.complete("3", "spark.r", "pyspark", 7)

    assert httpserver.log[0][0].get_json() == {"code": "spark.r", "kind": "pyspark", "cursor": 7}
    assert candidates == ["range", "read", "readStream"]


def test_cancel_get_list_and_delete_paths(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/3/statements/7/cancel", method="POST").respond_with_json(
        {"msg": "canceled"}
    )
    httpserver.expect_request("/sessions/3/statements/7", method="GET").respond_with_json(
        statement(7, "spark.range(10).count()", "cancelling")
    )
    httpserver.expect_request("/sessions/3/statements", method="GET").respond_with_json(
        {"total_statements": 1, "statements": [statement(7, "spark.range(10).count()", "Canceled")]}
    )
    httpserver.expect_request("/sessions/3", method="DELETE").respond_with_json({"msg": "deleted"})

    assert client.cancel(3, 7) is None
    one = client.get_statement(3, 7)
    listed = client.list_statements("3")
    assert client.delete_session(3) is None

    assert calls(httpserver) == [
        ("POST", "/sessions/3/statements/7/cancel"),
        ("GET", "/sessions/3/statements/7"),
        ("GET", "/sessions/3/statements"),
        ("DELETE", "/sessions/3"),
    ]
    assert httpserver.log[0][0].get_data() == b""  # cancel has no body
    assert (one.id, one.state, one.done) == (7, "cancelling", False)
    assert [(s.id, s.state, s.done) for s in listed] == [(7, "cancelled", True)]


def test_every_request_carries_x_requested_by_and_custom_headers(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sessions", method="POST").respond_with_json(LIVY_SESSION, status=201)
    httpserver.expect_request("/sessions", method="GET").respond_with_json({"sessions": [LIVY_SESSION]})
    httpserver.expect_request("/sessions/3").respond_with_json(LIVY_SESSION)
    httpserver.expect_request("/sessions/3/statements", method="POST").respond_with_json(statement(0, "1"))
    httpserver.expect_request("/sessions/3/statements/0").respond_with_json(statement(0, "1"))
    httpserver.expect_request("/sessions/3/statements/0/cancel").respond_with_json({"msg": "canceled"})
    httpserver.expect_request("/sessions/3/log").respond_with_json({"from": 0, "total": 0, "log": []})
    httpserver.expect_request("/sessions/3/completion").respond_with_json({"candidates": []})
    headers = {"X-Tenant": "team-9", "Accept-Language": "en"}

    with SessionsClient(base_url(httpserver), headers=headers, retry_delays=FAST) as client:
        client.create_session(SessionSpec())
        client.list_sessions()
        client.get_session(3)
        client.submit(3, "1")
        client.get_statement(3, 0)
        client.cancel(3, 0)
        client.logs(3)
        client.complete(3, "1", "pyspark", 1)
        client.delete_session(3)

    assert {method for method, _ in calls(httpserver)} == {"GET", "POST", "DELETE"}
    assert len(httpserver.log) == 9
    for request, _ in httpserver.log:
        assert request.headers.get("X-Requested-By") == "dli-kernel", request.path
        assert request.headers.get("X-Tenant") == "team-9", request.path
        assert request.headers.get("Accept-Language") == "en", request.path


# -- parsing ---------------------------------------------------------------------------------------


def test_session_info_from_a_livy_body(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/3").respond_with_json(LIVY_SESSION)

    info = client.get_session("3")

    assert info == SessionInfo(
        id="3",
        state="idle",
        kind="pyspark",
        name="etl",
        app_id="application_1700000000000_0042",
        owner="alice",
        proxy_user="svc-spark",
        spark_ui_url="http://rm-1:8088/proxy/application_1700000000000_0042/",
        driver_log_url="http://nm-1:8042/node/containerlogs/container_1/alice",
        log=("stdout: ", "\nstderr: ", "24/01/01 INFO SparkContext: Running Spark version 3.5.1"),
    )
    assert info.raw == LIVY_SESSION
    assert (info.ready, info.ended) == (True, False)


def test_session_info_from_a_dli_body(httpserver: HTTPServer) -> None:
    body = DLI_SESSION | {
        "state": "dead",
        "appInfo": {"sparkUiUrl": "https://dli.example/ui/1", "driverLogUrl": None},
    }
    httpserver.expect_request(f"/v2.0/p1/sessions/{DLI_ID}").respond_with_json(body)

    with SessionsClient(base_url(httpserver), "dli", project_id="p1", retry_delays=FAST) as client:
        info = client.get_session(DLI_ID)

    assert (info.id, info.state, info.kind) == (DLI_ID, "dead", "spark")
    assert (info.name, info.app_id, info.owner, info.proxy_user) == (None, None, None, None)
    assert (info.spark_ui_url, info.driver_log_url) == ("https://dli.example/ui/1", None)
    assert info.log == ("stdout: ", "\nstderr: ", "\nYARN Diagnostics: ")
    assert (info.raw["cluster_name"], info.raw["sc_type"]) == ("test_cluster", "A")
    assert (info.ready, info.ended) == (False, True)


def test_session_info_tolerates_missing_app_info_and_null_log() -> None:
    info = SessionInfo.from_json({"id": 0, "state": "starting", "appInfo": None, "log": None})

    assert (info.id, info.state, info.spark_ui_url, info.log) == ("0", "starting", None, ())


@pytest.mark.parametrize(
    ("wire", "state"),
    [
        ("canceled", "cancelled"),
        ("Canceled", "cancelled"),
        ("CANCELING", "cancelling"),
        ("shutting down", "shutting_down"),
        ("Shutting-Down", "shutting_down"),
        ("cancelled", "cancelled"),
        ("recovering", "recovering"),
        ("some_new_state", "some_new_state"),
        (" idle ", "idle"),
        (None, ""),
    ],
)
def test_normalize_state(wire: str | None, state: str) -> None:
    assert normalize_state(wire) == state


def test_statement_info_from_a_livy_body(httpserver: HTTPServer, client: SessionsClient) -> None:
    output = {"status": "ok", "execution_count": 2, "data": {"text/plain": "10"}}
    body = statement(2, "spark.range(10).count()", "available", output) | {
        "progress": 1.0,
        "started": 1700000000123,
        "completed": 1700000000456,
    }
    httpserver.expect_request("/sessions/3/statements/2").respond_with_json(body)

    info = client.get_statement(3, 2)

    assert info == StatementInfo(
        id=2,
        state="available",
        code="spark.range(10).count()",
        output=output,
        progress=1.0,
        started=1700000000123,
        completed=1700000000456,
    )
    assert info.done is True


@pytest.mark.parametrize(
    ("state", "output", "done"),
    [
        ("available", None, False),  # Livy says available a moment before the output is set
        ("available", {"status": "error", "ename": "NameError", "evalue": "x", "traceback": []}, True),
        ("waiting", None, False),
        ("running", None, False),
        ("cancelling", None, False),
        ("Canceled", None, True),
        ("cancelled", None, True),
        ("error", None, True),
        ("some_new_state", None, True),  # ended as an error naming the state: no wait hangs on it
    ],
)
def test_statement_done(state: str, output: dict | None, done: bool) -> None:
    assert StatementInfo.from_json(statement(1, "x", state, output)).done is done


# -- errors ----------------------------------------------------------------------------------------


def test_400_with_msg_is_bad_request_naming_method_and_path(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    httpserver.expect_request("/sessions/3/statements", method="POST").respond_with_json(
        {"msg": "Session '3' is not idle: busy"}, status=400
    )

    with pytest.raises(BadRequest) as caught:
        client.submit(3, "1 + 1")

    text = str(caught.value)
    assert "Session '3' is not idle: busy" in text
    assert f"POST {base_url(httpserver)}/sessions/3/statements" in text
    assert "400" in text
    assert caught.value.status == 400
    assert calls(httpserver) == [("POST", "/sessions/3/statements")]  # no retry, no listing


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, Unauthorized), (403, Unauthorized), (404, NotFound), (409, Conflict), (418, RequestRejected)],
)
def test_4xx_maps_to_its_error_and_is_not_retried(
    httpserver: HTTPServer, client: SessionsClient, status: int, error: type[RequestRejected]
) -> None:
    httpserver.expect_request("/sessions/9").respond_with_json(
        {"msg": f"refused with {status}"}, status=status
    )

    with pytest.raises(RequestRejected) as caught:
        client.get_session(9)

    assert type(caught.value) is error
    assert caught.value.status == status
    assert str(caught.value) == f"GET {base_url(httpserver)}/sessions/9: {status} refused with {status}"
    assert calls(httpserver) == [("GET", "/sessions/9")]


def test_dli_error_msg_is_used(httpserver: HTTPServer) -> None:
    httpserver.expect_request(f"/v2.0/p1/sessions/{DLI_ID}").respond_with_json(
        {"error_code": "DLI.0002", "error_msg": "The session does not exist."}, status=404
    )

    with (
        SessionsClient(base_url(httpserver), "dli", project_id="p1", retry_delays=FAST) as client,
        pytest.raises(NotFound) as caught,
    ):
        client.get_session(DLI_ID)

    assert str(caught.value).endswith(": 404 The session does not exist.")


def test_bare_json_string_error_body(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/7").respond_with_json("Session '7' not found.", status=404)

    with pytest.raises(NotFound) as caught:
        client.get_session(7)

    assert str(caught.value) == f"GET {base_url(httpserver)}/sessions/7: 404 Session '7' not found."


def test_html_error_page_is_stripped_and_short(httpserver: HTTPServer, client: SessionsClient) -> None:
    page = (
        "<html>\n<head>\n<title>Error 400 Missing Required Header for CSRF protection.</title>\n</head>\n"
        "<body><h2>HTTP ERROR 400</h2>\n<p>Problem accessing /sessions. Reason:\n"
        "<pre>    Missing Required Header for CSRF protection.</pre></p>"
        '<hr><a href="https://eclipse.org/jetty">Powered by Jetty:// 9.3.24</a><hr/>\n'
        + "<p>padding &amp; more padding</p>\n" * 40
        + "</body>\n</html>\n"
    )
    httpserver.expect_request("/sessions", method="POST").respond_with_data(
        page, status=400, content_type="text/html"
    )

    with pytest.raises(BadRequest) as caught:
        client.create_session(SessionSpec())

    text = str(caught.value)
    reason = text.split(": 400 ", 1)[1]
    assert reason.startswith(
        "Error 400 Missing Required Header for CSRF protection. HTTP ERROR 400 Problem accessing /sessions."
    )
    assert "<" not in text and ">" not in text
    assert "padding & more" in reason  # entities unescaped
    assert len(reason) == 200 and reason.endswith("…")


def test_empty_error_body_falls_back_to_the_reason(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/3", method="DELETE").respond_with_data("", status=409)

    with pytest.raises(Conflict) as caught:
        client.delete_session(3)

    assert str(caught.value) == f"DELETE {base_url(httpserver)}/sessions/3: 409 CONFLICT"


def test_non_json_success_body_is_a_client_error(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/3").respond_with_data(
        "<html><body>Welcome to nginx!</body></html>", content_type="text/html"
    )

    with pytest.raises(ClientError) as caught:
        client.get_session(3)

    assert type(caught.value) is ClientError
    assert str(caught.value) == (
        f"GET {base_url(httpserver)}/sessions/3: the answer is not JSON (Welcome to nginx!)."
    )
    assert len(httpserver.log) == 1


def test_5xx_is_a_server_error_with_status(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sessions/3").respond_with_json({"msg": "java.lang.NullPointerException"}, 500)

    with (
        SessionsClient(base_url(httpserver), retry_delays=()) as client,
        pytest.raises(ServerError) as caught,
    ):
        client.get_session(3)

    assert caught.value.status == 500
    assert str(caught.value) == f"GET {base_url(httpserver)}/sessions/3: 500 java.lang.NullPointerException"


def test_errors_never_contain_the_authorization_value(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sessions/400").respond_with_json({"msg": "bad"}, status=400)
    httpserver.expect_request("/sessions/401").respond_with_json({"msg": "token expired"}, status=401)
    httpserver.expect_request("/sessions/404").respond_with_data("<h1>Not Found</h1>", status=404)
    httpserver.expect_request("/sessions/503").respond_with_json("overloaded", status=503)
    httpserver.expect_request("/sessions/200").respond_with_data("not json")
    errors: list[ClientError] = []

    with SessionsClient(base_url(httpserver), auth=SecretAuth(), retry_delays=()) as client:
        for session_id in (400, 401, 404, 503, 200):
            with pytest.raises(ClientError) as caught:
                client.get_session(session_id)
            errors.append(caught.value)
        assert SECRET not in repr(client)
    with (
        SessionsClient(f"http://127.0.0.1:{closed_port()}", auth=SecretAuth(), retry_delays=()) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.submit(1, "x")
    errors.append(caught.value)

    assert [type(err) for err in errors] == [
        BadRequest,
        Unauthorized,
        NotFound,
        ServerError,
        ClientError,
        type(caught.value),
    ]
    for request, _ in httpserver.log:  # the secret was sent...
        assert request.headers["Authorization"] == f"Bearer {SECRET}"
    for err in errors:  # ...and never shown
        assert SECRET not in str(err)
        assert SECRET not in repr(err)
        assert "Authorization" not in str(err)


def test_password_in_the_url_is_never_shown(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sessions/3").respond_with_json({"msg": "no such session"}, status=404)
    url = base_url(httpserver).replace("http://", f"http://alice:{SECRET}@")

    with SessionsClient(url, retry_delays=()) as client:
        shown = repr(client)
        with pytest.raises(NotFound) as caught:
            client.get_session(3)

    assert httpserver.log[0][0].authorization.password == SECRET  # requests sent it as basic auth
    assert SECRET not in str(caught.value)
    assert SECRET not in shown


# -- retries ---------------------------------------------------------------------------------------


def test_get_is_retried_on_503_then_succeeds(httpserver: HTTPServer, client: SessionsClient) -> None:
    for _ in range(2):
        httpserver.expect_oneshot_request("/sessions/3").respond_with_json({"msg": "busy"}, status=503)
    httpserver.expect_request("/sessions/3").respond_with_json(LIVY_SESSION)

    info = client.get_session(3)

    assert info.id == "3"
    assert calls(httpserver) == [("GET", "/sessions/3")] * 3
    httpserver.check_assertions()


def test_get_gives_up_after_len_retry_delays_retries(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/3").respond_with_json({"msg": "gateway"}, status=502)

    with pytest.raises(ServerError) as caught:
        client.get_session(3)

    assert caught.value.status == 502
    assert len(httpserver.log) == 1 + len(FAST)


def test_get_is_not_retried_on_400(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions").respond_with_json({"msg": "size must be positive"}, status=400)

    with pytest.raises(BadRequest, match="size must be positive"):
        client.list_sessions(size=-1)

    assert len(httpserver.log) == 1


def test_delete_of_a_missing_session_is_done(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions/3", method="DELETE").respond_with_json(
        {"msg": "Session '3' not found."}, status=404
    )

    assert client.delete_session(3) is None
    assert calls(httpserver) == [("DELETE", "/sessions/3")]


def test_retried_delete_that_finds_the_session_gone_is_done(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    httpserver.expect_oneshot_request("/sessions/3", method="DELETE").respond_with_json({}, status=504)
    httpserver.expect_request("/sessions/3", method="DELETE").respond_with_json({"msg": "gone"}, status=404)

    client.delete_session(3)

    assert calls(httpserver) == [("DELETE", "/sessions/3")] * 2


def test_cancel_and_completion_posts_are_retried(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_oneshot_request("/sessions/3/statements/1/cancel").respond_with_json({}, status=503)
    httpserver.expect_request("/sessions/3/statements/1/cancel").respond_with_json({"msg": "canceled"})
    httpserver.expect_oneshot_request("/sessions/3/completion").respond_with_json({}, status=502)
    httpserver.expect_request("/sessions/3/completion").respond_with_json({"candidates": ["x"]})

    client.cancel(3, 1)
    assert client.complete(3, "x", "pyspark", 1) == ["x"]

    assert (
        calls(httpserver)
        == [("POST", "/sessions/3/statements/1/cancel")] * 2 + [("POST", "/sessions/3/completion")] * 2
    )


def test_connection_refused_fails_fast_after_retrying_the_get(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with SessionsClient(url, timeout=(1.0, 1.0), retry_delays=(0.0, 0.0, 0.0)) as client:
        attempts = spy_requests(client, monkeypatch)
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as caught:
            client.get_session(3)
        elapsed = time.monotonic() - started

    assert attempts == ["GET"] * 4  # the first try and one retry per delay
    assert str(caught.value) == f"GET {url}/sessions/3: could not connect (is the server running?)."
    assert elapsed < 0.5


# -- timeouts --------------------------------------------------------------------------------------


def test_read_timeout_is_connection_failed_naming_the_timeout(httpserver: HTTPServer) -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(5)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/sessions/3").respond_with_handler(slow)
    try:
        with SessionsClient(base_url(httpserver), timeout=(1, 0.3), retry_delays=()) as client:
            started = time.monotonic()
            with pytest.raises(ConnectionFailed) as caught:
                client.get_session(3)
            elapsed = time.monotonic() - started
    finally:
        release.set()
        deadline = time.monotonic() + 2
        while not httpserver.log and time.monotonic() < deadline:  # let the server finish that request
            time.sleep(0.01)

    assert str(caught.value) == f"GET {base_url(httpserver)}/sessions/3: no answer within 0.3 s."
    assert 0.25 < elapsed < 0.8


# -- never run twice -------------------------------------------------------------------------------

STATEMENTS = "/sessions/3/statements"


def test_ambiguous_statement_post_that_landed_is_found_not_resent(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    code = "spark.range(10).count()"
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json(statement(4, code), 201)
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json({"msg": "bad gw"}, 502)
    httpserver.expect_request(STATEMENTS, method="GET").respond_with_json(
        {
            "total_statements": 3,
            "statements": [
                statement(3, "other()", "available", {"status": "ok", "data": {}}),
                statement(4, code, "available", {"status": "ok", "data": {"text/plain": "10"}}),
                statement(5, code, "running"),
            ],
        }
    )

    first = client.submit(3, code)
    second = client.submit(3, code)  # the same code again: id 4 is the earlier run, id 5 is this one

    assert (first.id, second.id, second.state, second.code) == (4, 5, "running", code)
    assert calls(httpserver) == [("POST", STATEMENTS), ("POST", STATEMENTS), ("GET", STATEMENTS)]
    httpserver.check_assertions()


def test_ambiguous_statement_post_that_did_not_land_is_sent_once_more(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    code = "df.write.saveAsTable('t')"
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json({}, status=503)
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json(statement(6, code), 201)
    httpserver.expect_request(STATEMENTS, method="GET").respond_with_json(
        {"total_statements": 1, "statements": [statement(5, "other()", "available", {"status": "ok"})]}
    )

    client.track(3)
    submitted = client.submit(3, code, kind="pyspark")

    assert submitted.id == 6
    assert calls(httpserver) == [
        ("GET", STATEMENTS),
        ("POST", STATEMENTS),
        ("GET", STATEMENTS),
        ("POST", STATEMENTS),
    ]
    bodies = [request.get_json() for request, _ in httpserver.log if request.method == "POST"]
    assert bodies == [{"code": code, "kind": "pyspark"}] * 2


def test_an_older_statement_with_the_same_code_is_not_taken_for_the_new_one(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    code = "x += 1"
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json(statement(8, code), 201)
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json({}, status=502)
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json(statement(9, code), 201)
    httpserver.expect_request(STATEMENTS, method="GET").respond_with_json(
        {"statements": [statement(8, code, "available", {"status": "ok"})]}
    )

    assert client.submit(3, code).id == 8
    assert client.submit(3, code).id == 9  # 8 is the earlier run: the code is sent again, once

    assert [method for method, _ in calls(httpserver)] == ["POST", "POST", "GET", "POST"]


def test_unknown_session_history_makes_an_ambiguous_submit_raise_not_guess(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    """A client that never saw this session's statements cannot tell an old run of the same code from
    the new one, so it neither returns the old one nor sends the code again."""
    code = "df.count()"
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json({}, status=502)
    httpserver.expect_request(STATEMENTS, method="GET").respond_with_json(
        {"statements": [statement(0, code, "available", {"status": "ok", "data": {"text/plain": "41"}})]}
    )

    with pytest.raises(ServerError, match="was not sent again"):
        client.submit(3, code)

    assert [method for method, _ in calls(httpserver)] == ["POST"]


def test_tracked_session_resolves_an_ambiguous_submit(httpserver: HTTPServer, client: SessionsClient) -> None:
    code = "df.count()"
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json({}, status=502)
    httpserver.expect_oneshot_request(STATEMENTS, method="POST").respond_with_json(statement(1, code), 201)
    httpserver.expect_request(STATEMENTS, method="GET").respond_with_json(
        {"statements": [statement(0, code, "available", {"status": "ok", "data": {"text/plain": "41"}})]}
    )

    client.track(3)  # what a client attaching to someone else's session does first
    submitted = client.submit(3, code)

    assert [method for method, _ in calls(httpserver)] == ["GET", "POST", "GET", "POST"]
    assert (submitted.id, submitted.state, submitted.output) == (1, "waiting", None)


def test_timed_out_submit_not_listed_yet_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """No answer at all: the server may still be taking it, so a second POST could run it twice."""
    release = threading.Event()
    posts: list[str] = []

    def post(request: Request) -> Response:
        posts.append(request.get_json()["code"])
        release.wait(5)
        return Response(status=201)

    with QuickServer(threaded=True) as server:
        server.expect_request(STATEMENTS, method="POST").respond_with_handler(post)
        server.expect_request(STATEMENTS, method="GET").respond_with_json({"statements": []})
        try:
            with SessionsClient(base_url(server), timeout=(1, 0.3), retry_delays=FAST) as client:
                client.track(3)
                with pytest.raises(ConnectionFailed, match="was not sent again"):
                    client.submit(3, "x = 1")
        finally:
            release.set()

    assert posts == ["x = 1"]


def test_second_post_failing_too_raises_and_stops(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request(STATEMENTS, method="POST").respond_with_json({"msg": "down"}, status=502)
    httpserver.expect_request(STATEMENTS, method="GET").respond_with_json({"statements": []})

    client.track(3)
    with pytest.raises(ServerError) as caught:
        client.submit(3, "1")

    assert caught.value.status == 502
    assert [method for method, _ in calls(httpserver)] == ["GET", "POST", "GET", "POST"]


def test_statement_post_refused_raises_without_listing_or_resending(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with SessionsClient(url, retry_delays=FAST) as client:
        attempts = spy_requests(client, monkeypatch)
        with pytest.raises(ConnectionFailed, match="could not connect"):
            client.submit(3, "spark.range(10).count()")

    assert attempts == ["POST"]


def test_statement_post_timing_out_after_it_landed_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ambiguous case: the server took the statement but answered too late."""
    code = "spark.range(10).count()"
    landed: list[dict] = []
    release = threading.Event()

    def post(request: Request) -> Response:
        landed.append(statement(0, request.get_json()["code"], "running"))
        release.wait(5)  # answer only after the client gave up
        return Response(status=201)

    with QuickServer(threaded=True) as server:
        server.expect_request(STATEMENTS, method="POST").respond_with_handler(post)
        server.expect_request(STATEMENTS, method="GET").respond_with_handler(
            lambda _: Response(json.dumps({"statements": landed}), content_type="application/json")
        )
        try:
            with SessionsClient(base_url(server), timeout=(1, 0.3), retry_delays=FAST) as client:
                client.track(3)
                submitted = client.submit(3, code)
        finally:
            release.set()

    assert (submitted.id, submitted.code, submitted.state) == (0, code, "running")
    assert len(landed) == 1  # the code ran once


def test_named_session_create_that_landed_is_found(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions", method="POST").respond_with_json({"msg": "upstream"}, status=502)
    httpserver.expect_request("/sessions/etl", method="GET").respond_with_json(LIVY_SESSION)
    httpserver.expect_request(STATEMENTS, method="GET").respond_with_json({"statements": []})

    info = client.create_session(SessionSpec(name="etl"))

    assert (info.id, info.name) == ("3", "etl")
    # It may be an older session of that name: learn its statements before any submit relies on them.
    assert calls(httpserver) == [("POST", "/sessions"), ("GET", "/sessions/etl"), ("GET", STATEMENTS)]


def test_named_dli_session_create_looks_under_the_project(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2.0/p1/sessions", method="POST").respond_with_json({}, status=504)
    httpserver.expect_request("/v2.0/p1/sessions/nightly").respond_with_json(
        DLI_SESSION | {"name": "nightly", "create_time": int(time.time() * 1000)}
    )
    httpserver.expect_request(f"/v2.0/p1/sessions/{DLI_ID}/statements").respond_with_json({"statements": []})

    with SessionsClient(base_url(httpserver), "dli", project_id="p1", retry_delays=FAST) as client:
        info = client.create_session(SessionSpec(name="nightly", cluster_name="c"))

    assert (info.id, info.name) == (DLI_ID, "nightly")
    assert calls(httpserver) == [
        ("POST", "/v2.0/p1/sessions"),
        ("GET", "/v2.0/p1/sessions/nightly"),
        ("GET", f"/v2.0/p1/sessions/{DLI_ID}/statements"),
    ]


def test_named_session_create_that_did_not_land_raises_the_first_error(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    httpserver.expect_request("/sessions", method="POST").respond_with_json({"msg": "upstream"}, status=502)
    httpserver.expect_request("/sessions/etl", method="GET").respond_with_json(
        {"msg": "Session 'etl' not found."}, status=404
    )

    with pytest.raises(ServerError) as caught:
        client.create_session(SessionSpec(name="etl"))

    assert caught.value.status == 502
    assert calls(httpserver) == [("POST", "/sessions"), ("GET", "/sessions/etl")]


def test_unnamed_session_create_failing_raises_after_one_post(
    httpserver: HTTPServer, client: SessionsClient
) -> None:
    httpserver.expect_request("/sessions", method="POST").respond_with_json({"msg": "upstream"}, status=502)

    with pytest.raises(ServerError, match="502 upstream"):
        client.create_session(SessionSpec())

    assert calls(httpserver) == [("POST", "/sessions")]


def test_session_create_refused_does_not_look_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with SessionsClient(f"http://127.0.0.1:{closed_port()}", retry_delays=FAST) as client:
        attempts = spy_requests(client, monkeypatch)
        with pytest.raises(ConnectionFailed):
            client.create_session(SessionSpec(name="etl"))

    assert attempts == ["POST"]


# -- repr ------------------------------------------------------------------------------------------


def test_repr_shows_url_and_dialect_only() -> None:
    livy = SessionsClient(
        "http://livy:8998/", auth=SecretAuth(), headers={"X-Api-Key": SECRET}, timeout=(2, 3)
    )
    dli = SessionsClient("https://dli.example.com", "dli", project_id="proj-secret-id")

    assert repr(livy) == "SessionsClient(url='http://livy:8998', dialect='livy')"
    assert repr(dli) == "SessionsClient(url='https://dli.example.com', dialect='dli')"
    livy.close()
    dli.close()


def test_redirects_are_not_followed(httpserver: HTTPServer, client: SessionsClient) -> None:
    httpserver.expect_request("/sessions").respond_with_data(
        "", status=307, headers={"Location": "http://elsewhere.example/sessions"}
    )

    with pytest.raises(ClientError, match=r"redirects to http://elsewhere\.example/sessions"):
        client.list_sessions()

    assert len(httpserver.log) == 1
