"""The dlc dialect where a review found it wrong: statements sent twice after DLC's InternalError, an
ambiguous create adopting someone else's (or a dead) session, bare ValueErrors, endless SQL-result paging,
lists that stop at the first page, waits that never end on a state nobody knows, and logs read whole
before every cell. Over real HTTP (FakeDlc checks every signature with Tencent's SDK)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from dli_kernel.client import BadRequest, ClientError, ServerError, SessionsClient
from dli_kernel.client import dlc as dlc_module
from dli_kernel.client.dlc import create_body
from dli_kernel.client.dlc_results import read_sql_result
from dli_kernel.client.models import SessionInfo
from dli_kernel.kernel.remote_session import RemoteSession
from dli_kernel.spec import SessionSpec
from tests.unit.test_dlc_client import (
    SECRET_ID,
    SID,
    FakeDlc,
    QuickServer,
    error,
    make_client,
    statement_info,
)


@pytest.fixture
def dlc() -> Iterator[FakeDlc]:
    with QuickServer(threaded=True) as server:
        yield FakeDlc(server)


@pytest.fixture
def client(dlc: FakeDlc) -> Iterator[SessionsClient]:
    with make_client(dlc.server) as client:
        yield client


# -- 1. a statement create DLC answered with InternalError is never sent again ------------------------


def test_a_statement_create_answered_internal_error_is_not_sent_again(
    dlc: FakeDlc, client: SessionsClient
) -> None:
    """DLC's gateway may answer InternalError ("Backend timeout.") while Livy behind it makes the
    statement; the list not showing it yet proves nothing, so the client says so instead of resending."""
    made: list[str] = []

    def create(body: dict) -> dict:
        made.append(body["Code"])
        if len(made) == 1:
            return error("InternalError", "Backend timeout.")
        return {"NotebookSessionStatement": statement_info(len(made) - 1, body["Code"])}

    dlc.answers["CreateNotebookSessionStatement"] = create
    dlc.answers["DescribeNotebookSessionStatements"] = {"NotebookSessionStatements": {}}
    client.track(SID)
    with pytest.raises(ServerError, match=r"Backend timeout \(InternalError\)\. .*was not sent again") as got:
        client.submit(SID, "bank.transfer(100)")

    assert got.value.status == 500
    assert dlc.actions().count("CreateNotebookSessionStatement") == 1


# -- 2. an ambiguous create adopts only a live session of ours made by this request -------------------


def _ambiguous_create(dlc: FakeDlc, client: SessionsClient, rows: list[dict]) -> SessionInfo:
    dlc.answers["CreateNotebookSession"] = error("InternalError", "Backend timeout.")
    dlc.answers["DescribeNotebookSessions"] = {"TotalElements": len(rows), "Sessions": rows}
    dlc.answers["DescribeNotebookSessionStatements"] = {"NotebookSessionStatements": {}}
    return client.create_session(SessionSpec(kind="sql", name="etl", cluster_name="e1"))


def _row(session_id: str, **over: Any) -> dict:
    row = {"SessionId": session_id, "Name": "etl", "State": "starting", "Kind": "sql", "Creator": SECRET_ID}
    return {**row, "CreateTime": str(int(time.time())), **over}


@pytest.mark.parametrize(
    "row",
    [
        _row("old-1", State="dead", CreateTime=str(int(time.time()))),  # ended
        _row("theirs", Creator="AKIDsomeoneelse"),  # someone else's live one
        _row("yesterday", CreateTime=str(int(time.time()) - 86_400)),  # made long before the request
        _row("undated", CreateTime=""),  # when it was made is not known
    ],
    ids=["dead", "someone-elses", "old", "undated"],
)
def test_an_ambiguous_create_adopts_no_other_session(dlc: FakeDlc, client: SessionsClient, row: dict) -> None:
    with pytest.raises(ServerError, match="No live session named 'etl' made by this request") as got:
        _ambiguous_create(dlc, client, [row])
    assert "Backend timeout (InternalError)" in str(got.value)
    assert dlc.actions() == ["CreateNotebookSession", "DescribeNotebookSessions"]  # not created again


def test_an_ambiguous_create_adopts_the_live_session_it_made(dlc: FakeDlc, client: SessionsClient) -> None:
    # Four minutes behind our clock is within the allowed skew.
    rows = [_row("old-1", State="dead"), _row("mine", CreateTime=str(int(time.time()) - 240))]
    info = _ambiguous_create(dlc, client, rows)
    assert (info.id, info.state) == ("mine", "starting")


def test_an_ambiguous_livy_create_does_not_adopt_a_dead_namesake(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sessions", method="POST").respond_with_json({"msg": "upstream"}, status=502)
    httpserver.expect_request("/sessions/etl").respond_with_json({"id": 3, "name": "etl", "state": "dead"})
    url = httpserver.url_for("/").rstrip("/")
    with (
        SessionsClient(url, "livy", retry_delays=(0.0,)) as client,
        pytest.raises(ServerError, match="502 upstream No live session named 'etl'"),
    ):
        client.create_session(SessionSpec(name="etl"))


# -- 3. a bad maxExecutors is one sentence ------------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000, "-1", " 4", ""])
def test_a_bad_max_executors_is_one_sentence(dlc: FakeDlc, client: SessionsClient, value: str) -> None:
    conf = {"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.maxExecutors": value}
    spec = SessionSpec(kind="pyspark", cluster_name="e", conf=conf)
    with pytest.raises(BadRequest, match=r"maxExecutors must be a whole number of at most 6 digits 0-9"):
        create_body(spec)
    with pytest.raises(BadRequest) as got:
        client.create_session(spec)
    assert len(str(got.value)) < 200
    assert dlc.log == []


def test_a_good_max_executors_sets_executor_max_numbers() -> None:
    conf = {"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.maxExecutors": "40"}
    assert create_body(SessionSpec(kind="pyspark", cluster_name="e", conf=conf))["ExecutorMaxNumbers"] == 40


# -- 4. SQL-result paging ends ------------------------------------------------------------------------

SCHEMA = [{"Name": "a", "Type": "int"}]


def test_a_repeating_next_token_stops_the_paging() -> None:
    tokens: list[str | None] = []

    def page(token: str | None, limit: int) -> dict:
        tokens.append(token)
        return {"ResultSchema": SCHEMA, "ResultSet": "[[1]]", "NextToken": "same"}

    with pytest.raises(ClientError, match="repeated a NextToken after 2 rows"):
        read_sql_result(page, -1)
    assert tokens == [None, "same"]


def test_an_empty_page_with_a_token_stops_the_paging() -> None:
    calls: list[str | None] = []

    def page(token: str | None, limit: int) -> dict:
        calls.append(token)
        return {"ResultSchema": SCHEMA, "ResultSet": "[]", "NextToken": f"t{len(calls)}"}

    with pytest.raises(ClientError, match="a page with no rows but a NextToken after 0 rows"):
        read_sql_result(page, 1000)
    assert calls == [None]


def test_paging_stops_as_soon_as_max_rows_are_read() -> None:
    calls: list[str | None] = []

    def page(token: str | None, limit: int) -> dict:
        calls.append(token)
        return {"ResultSchema": SCHEMA, "ResultSet": "[[1], [2], [3]]", "NextToken": "same"}

    result = read_sql_result(page, 3)
    assert (len(result.frame), result.truncated, calls) == (3, True, [None])


# -- 5. lists page through and match kind and owner ---------------------------------------------------


def _sessions(count: int) -> list[dict]:
    return [
        {"SessionId": f"s{n}", "Name": f"nb{n}", "State": "idle", "Kind": "sql" if n == 120 else "pyspark",
         "Creator": "alice" if n in (7, 120) else "bob"}
        for n in range(count)
    ]  # fmt: skip


def _paged(rows: list[dict], total: int | None = None) -> Any:
    def describe(body: dict) -> dict:
        start, limit = body.get("Offset", 0), body.get("Limit", 10)
        return {
            "TotalElements": len(rows) if total is None else total,
            "Sessions": rows[start : start + limit],
        }

    return describe


def test_a_list_pages_through_and_matches_kind_and_owner(dlc: FakeDlc, client: SessionsClient) -> None:
    dlc.answers["DescribeNotebookSessions"] = _paged(_sessions(150))

    assert [info.id for info in client.list_sessions(kind="sql")] == ["s120"]
    assert [info.id for info in client.list_sessions(owner="alice")] == ["s7", "s120"]
    assert len(client.list_sessions()) == 150
    assert [body for _, body in dlc.log[:2]] == [{"Limit": 100, "Offset": 0}, {"Limit": 100, "Offset": 100}]
    assert len(dlc.log) == 6


def test_a_list_stops_on_an_empty_page_and_keeps_an_asked_for_page(
    dlc: FakeDlc, client: SessionsClient
) -> None:
    dlc.answers["DescribeNotebookSessions"] = _paged(_sessions(150), total=10**6)  # a total that lies
    assert len(client.list_sessions()) == 150
    assert [body["Offset"] for _, body in dlc.log] == [0, 100, 150]  # the empty page at 150 ends it

    dlc.log.clear()
    assert [info.id for info in client.list_sessions(from_=100, size=50, kind="sql")] == ["s120"]
    assert [body for _, body in dlc.log] == [{"Limit": 50, "Offset": 100}]


def test_a_list_that_never_ends_is_refused(
    dlc: FakeDlc, client: SessionsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dlc_module, "MAX_LIST_PAGES", 3)
    dlc.answers["DescribeNotebookSessions"] = lambda body: {
        "TotalElements": 10**6,
        "Sessions": _sessions(100),
    }
    with pytest.raises(ClientError, match="DLC lists more than 300 sessions; narrow the list"):
        client.list_sessions()
    assert len(dlc.log) == 3


# -- 6. a statement state nobody knows ends the wait --------------------------------------------------


def test_an_unknown_statement_state_ends_a_cells_wait(dlc: FakeDlc, client: SessionsClient) -> None:
    dlc.answers["DescribeNotebookSessionStatements"] = {"NotebookSessionStatements": {}}
    dlc.answers["CreateNotebookSessionStatement"] = {"NotebookSessionStatement": statement_info(0, "x")}
    dlc.answers["DescribeNotebookSessionStatement"] = {
        "NotebookSessionStatement": statement_info(0, "x", "dead", OutPut=None)
    }
    session = RemoteSession.attach(client, SessionInfo(id=SID, state="idle"), SessionSpec(kind="pyspark"))
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        outcome.append(session.run("x"))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    try:
        assert done.wait(10), "the wait did not end"
    finally:
        session.close()
    statement, cancelled = outcome[0]
    assert (statement.state, statement.done, cancelled) == ("error", True, False)
    assert statement.output["ename"] == "UnknownState"
    assert "state 'dead', which is not a statement state" in statement.output["evalue"]
    assert client.wait_statement(SID, 0, timeout=None).state == "error"


# -- 7. the log is counted once, then only its new lines ----------------------------------------------


def test_the_log_length_is_counted_from_where_it_was_last_counted(
    dlc: FakeDlc, client: SessionsClient
) -> None:
    lines = [f"line {n}" for n in range(1500)]

    def log(body: dict) -> dict:
        start, limit = body.get("Offset", 0), body["Limit"]
        return {"Logs": lines[start : start + limit], "Limit": limit, "Offset": start}

    dlc.answers["DescribeNotebookSessionLog"] = log
    assert client.logs(SID, size=0).total == 1500
    lines.extend(["line 1500", "line 1501"])
    assert client.logs(SID, size=0).total == 1502
    last = client.logs(SID, size=2)

    assert last.lines == ("line 1500", "line 1501")
    assert [body["Offset"] for _, body in dlc.log] == [0, 1000, 1500, 1502, 1500]
