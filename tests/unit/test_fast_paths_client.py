"""The client's fast paths against servers that lack them: a plain Livy (pytest-httpserver) is polled and
never sent ``wait``, and a statement costs no log request before it starts.

What the embedded server adds (long-polls, Arrow results, the pool) is tested against the real server in
tests/integration/test_fast_paths.py.
"""

from __future__ import annotations

import base64
import threading
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dli_kernel.client import MissingDependency, SessionInfo, SessionsClient, StatementTimeout
from dli_kernel.client.results import INLINE_MARKER
from dli_kernel.kernel.remote_session import RemoteSession
from dli_kernel.spec import SessionSpec
from tests.unit.test_sessions_client import FAST, base_url, calls, make_httpserver, statement  # noqa: F401

LIVY_VERSION = {"version": "0.7.1-incubating", "user": "livy", "revision": "abc", "branch": "master"}


class PlainLivy:
    """A Livy session's statements: each one is ``waiting``, then ``running`` for two GETs, then done."""

    def __init__(self, server: HTTPServer, log_lines: list[str] | None = None) -> None:
        self.gets: dict[int, int] = {}
        self.codes: list[str] = []
        self.log_lines = log_lines if log_lines is not None else ["start-up line"] * 3
        self.lock = threading.Lock()
        server.expect_request("/version").respond_with_json(LIVY_VERSION)
        server.expect_request("/sessions/3/statements", method="POST").respond_with_handler(self.submit)
        server.expect_request("/sessions/3/log").respond_with_handler(self.log)
        for sid in range(5):
            server.expect_request(f"/sessions/3/statements/{sid}").respond_with_handler(self.get)

    def submit(self, request: Request) -> Response:
        with self.lock:
            self.codes.append(request.get_json()["code"])
            body = statement(len(self.codes) - 1, self.codes[-1])
        return Response(_json(body), status=201, content_type="application/json")

    def get(self, request: Request) -> Response:
        sid = int(request.path.rsplit("/", 1)[1])
        with self.lock:
            self.gets[sid] = self.gets.get(sid, 0) + 1
            seen = self.gets[sid]
        state = "running" if seen < 3 else "available"
        output = {"status": "ok", "execution_count": sid, "data": {"text/plain": "2"}} if seen >= 3 else None
        return Response(
            _json(statement(sid, self.codes[sid], state, output)), content_type="application/json"
        )

    def log(self, request: Request) -> Response:
        start = int(request.args.get("from", max(0, len(self.log_lines) - int(request.args["size"]))))
        size = int(request.args["size"])
        body = {
            "id": 3,
            "from": start,
            "total": len(self.log_lines),
            "log": self.log_lines[start : start + size],
        }
        return Response(_json(body), content_type="application/json")


def _json(body: object) -> str:
    import json

    return json.dumps(body)


def remote(client: SessionsClient) -> RemoteSession:
    session = RemoteSession(client, SessionSpec(kind="pyspark"))
    session.info = SessionInfo(id="3", state="idle")
    return session


def test_plain_livy_is_polled_without_wait_and_logs_are_read_after_not_before(httpserver: HTTPServer) -> None:
    livy = PlainLivy(httpserver)
    logged: list[list[str]] = []
    with SessionsClient(base_url(httpserver), "livy", retry_delays=FAST) as client:
        session = remote(client)
        first, cancelled = session.run("1+1", on_log=logged.append)
        assert first.done and first.output["data"]["text/plain"] == "2" and not cancelled
        livy.log_lines.append("a line the statement wrote")
        before_second = len(httpserver.log)
        second, _ = session.run("1+1", on_log=logged.append)
        assert second.done

    assert all("wait" not in parse_qs(request.query_string.decode()) for request, _ in httpserver.log)
    assert calls(httpserver)[:3] == [
        ("GET", "/sessions/3/log"),  # where the first statement's lines begin
        ("POST", "/sessions/3/statements"),
        ("GET", "/version"),  # asked once: a Livy without extensions
    ]
    # The second statement starts with its POST: the first one's last log read told where its lines begin.
    second_calls = calls(httpserver)[before_second:]
    assert second_calls[0] == ("POST", "/sessions/3/statements")
    assert second_calls[1:] == [("GET", "/sessions/3/statements/1")] * 3 + [("GET", "/sessions/3/log")]
    assert logged == [["a line the statement wrote"]]


def test_a_server_without_version_and_a_client_told_so_get_plain_polls(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/version").respond_with_json({"msg": "no such endpoint"}, status=404)
    httpserver.expect_request("/sessions/3/statements/0").respond_with_json(
        statement(0, "x", "available", {"status": "ok", "data": {"text/plain": ""}})
    )
    with SessionsClient(base_url(httpserver), "livy", retry_delays=FAST) as client:
        assert client.server_extensions() == frozenset()
        assert client.wait_statement("3", 0).done
        assert client.get_statement("3", 0, wait=5).done
    with SessionsClient(base_url(httpserver), "livy", retry_delays=FAST, extensions=()) as client:
        assert client.wait_statement("3", 0).done
    assert calls(httpserver) == [("GET", "/version")] + [("GET", "/sessions/3/statements/0")] * 3
    assert all(not request.query_string for request, _ in httpserver.log)


def test_dataframe_fallback_sends_the_query_only_inside_base64(httpserver: HTTPServer) -> None:
    import pyarrow as pa

    livy = PlainLivy(httpserver)
    sink = pa.BufferOutputStream()
    table = pa.table({"n": [1, None, 3]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    printed = INLINE_MARKER + '{"rows": 3, "total": 3, "truncated": false}\n'
    printed += base64.b64encode(sink.getvalue().to_pybytes()).decode()
    query = "SELECT * FROM t WHERE name = 'x\"; import os'"

    def done(request: Request) -> Response:
        body = statement(0, livy.codes[0], "available", {"status": "ok", "data": {"text/plain": printed}})
        return Response(_json(body), content_type="application/json")

    httpserver.clear_handler_errors()
    with SessionsClient(base_url(httpserver), "livy", retry_delays=FAST) as client:
        submitted = client.submit_dataframe("3", query, max_rows=10)
        assert query not in livy.codes[0] and base64.b64encode(query.encode()).decode() in livy.codes[0]
        posted = httpserver.log[-1][0].get_json()
        assert posted["kind"] == "pyspark" and set(posted) == {"code", "kind"}
        httpserver.expect_oneshot_request("/sessions/3/statements/0").respond_with_handler(done)
        result = client.dataframe_result("3", client.wait_statement("3", submitted.id))
    assert result.transport == "arrow-inline" and result.total == 3 and not result.truncated
    assert result.frame["n"].dtype == "Int64" and result.frame["n"].isna().tolist() == [False, True, False]


def test_no_pyarrow_no_statement(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with SessionsClient(base_url(httpserver), "livy", retry_delays=FAST) as client:
        with pytest.raises(MissingDependency, match="pyarrow"):
            client.fetch_dataframe("3", "SELECT 1")
        with pytest.raises(MissingDependency, match="pyarrow"):
            remote(client).run_dataframe("SELECT 1")
    assert calls(httpserver) == []


def test_wait_statement_long_polls_and_never_holds_past_its_timeout(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/version").respond_with_json({"extensions": ["wait"]})
    httpserver.expect_request("/sessions/3/statements/0").respond_with_json(statement(0, "x", "running"))
    with SessionsClient(base_url(httpserver), "livy", retry_delays=FAST) as client:
        with pytest.raises(StatementTimeout, match=r"statement 0 of session 3 is still running after 0.3 s"):
            client.wait_statement("3", 0, timeout=0.3)
        waits = [parse_qs(request.query_string.decode()).get("wait") for request, _ in httpserver.log[2:]]
    assert waits and waits[0] is not None  # held GETs, not sleeps
    assert all(0.01 <= float(wait[0]) <= 0.3 for wait in waits if wait)
    assert httpserver.log[1][0].query_string == b""  # the first look answers at once
