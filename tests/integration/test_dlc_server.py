"""Tencent's own DlcClient (tencentcloud-sdk-python-dlc) against the real embedded server and real Spark:
the whole life of a notebook session through DLC's action API. Every answer is read by the SDK's models,
and a field they do not know fails the test (they warn "fileds are useless")."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.integration.conftest import Server, wait_until

pytest.importorskip("tencentcloud.dlc.v20210125.dlc_client")
from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.dlc.v20210125 import models
from tencentcloud.dlc.v20210125.dlc_client import DlcClient

pytestmark = pytest.mark.filterwarnings("error:.*fileds are useless")

DLC_STATES = {
    "not_started",
    "starting",
    "idle",
    "busy",
    "shutting_down",
    "error",
    "dead",
    "killed",
    "success",
}
NAME = "dlc-sdk-session"


def dlc_client(server: Server, key: str | None = None) -> DlcClient:
    endpoint = urlparse(server.url).netloc
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=endpoint, reqTimeout=60))
    return DlcClient(Credential("AKIDintegration", key or server.token), "ap-guangzhou", profile)


def request(model: str, **fields: Any) -> Any:
    req = getattr(models, f"{model}Request")()
    req.from_json_string(json.dumps(fields))
    return req


@pytest.fixture(scope="module")
def dlc(server: Server) -> DlcClient:
    return dlc_client(server)


@pytest.fixture(scope="module")
def session_id(server: Server, dlc: DlcClient) -> Iterator[str]:
    created = dlc.CreateNotebookSession(
        request(
            "CreateNotebookSession",
            Name=NAME,
            Kind="pyspark",
            DataEngineName="local-engine",
            DriverSize="small",
            ExecutorSize="small",
            ExecutorNumbers=1,
            Arguments=[{"Key": "spark.sql.shuffle.partitions", "Value": "2"}],
            TimeoutInSecond=900,
        )
    )
    assert created.State in DLC_STATES and created.SessionId
    try:
        yield created.SessionId
    finally:
        # Whatever happened, the server fixture must not find it left behind.
        session = server.get(f"/sessions/{created.SessionId}").json()
        if session.get("state") not in ("killed", "dead", "error", "success", None):
            server.delete(f"/sessions/{created.SessionId}")


def describe(dlc: DlcClient, session_id: str) -> Any:
    return dlc.DescribeNotebookSession(request("DescribeNotebookSession", SessionId=session_id)).Session


def statement(dlc: DlcClient, session_id: str, statement_id: str) -> Any:
    answer = dlc.DescribeNotebookSessionStatement(
        request("DescribeNotebookSessionStatement", SessionId=session_id, StatementId=statement_id)
    )
    return answer.NotebookSessionStatement


def run(dlc: DlcClient, session_id: str, code: str, kind: str | None = None) -> Any:
    fields = {"SessionId": session_id, "Code": code, **({"Kind": kind} if kind else {})}
    created = dlc.CreateNotebookSessionStatement(request("CreateNotebookSessionStatement", **fields))
    statement_id = created.NotebookSessionStatement.StatementId
    return wait_statement(
        dlc, session_id, statement_id, lambda s: s.State in ("available", "error", "cancelled")
    )


def wait_statement(dlc: DlcClient, session_id: str, statement_id: str, done: Callable[[Any], bool]) -> Any:
    seen: list[Any] = []

    def check() -> Any:
        seen[:] = [statement(dlc, session_id, statement_id)]
        return seen[0] if done(seen[0]) else None

    return wait_until(check, lambda: f"statement {statement_id}: {seen[0].State if seen else '?'}", 180, 0.1)


@pytest.fixture(scope="module")
def idle(dlc: DlcClient, session_id: str) -> str:
    states: list[str] = []

    def ready() -> bool:
        state = describe(dlc, session_id).State
        assert state in DLC_STATES, state
        if not states or states[-1] != state:
            states.append(state)
        assert state not in ("error", "dead", "killed"), f"the session ended: {states}"
        return state == "idle"

    wait_until(ready, lambda: f"the session to be idle (states seen: {states})", 180, 0.2)
    return session_id


def test_the_session_is_described_in_dlcs_terms(dlc: DlcClient, idle: str) -> None:
    info = describe(dlc, idle)
    assert (info.Name, info.Kind, info.DataEngineName, info.State) == (
        NAME,
        "pyspark",
        "local-engine",
        "idle",
    )
    assert (info.DriverSize, info.ExecutorSize, info.ExecutorNumbers, info.TimeoutInSecond) == (
        "small",
        "small",
        1,
        900,
    )
    assert info.SparkAppId and info.SparkUiUrl.startswith("http://")
    assert {(a.Key, a.Value) for a in info.Arguments} >= {("spark.sql.shuffle.partitions", "2")}
    assert time.strptime(info.CreateTime, "%Y-%m-%d %H:%M:%S")


def test_a_python_statement(dlc: DlcClient, idle: str) -> None:
    done = run(dlc, idle, "1 + 1")
    assert (done.State, done.OutPut.Status, done.Progress) == ("available", "ok", 100.0)
    assert {d.Key: d.Value for d in done.OutPut.Data}["text/plain"] == "2"
    assert done.Started <= done.Completed


def test_a_failing_statement_shows_its_error(dlc: DlcClient, idle: str) -> None:
    done = run(dlc, idle, "undefined_name")
    # As in Livy: the statement ran (available); its output failed.
    assert (done.State, done.OutPut.Status, done.OutPut.ErrorName) == ("available", "error", "NameError")
    assert done.OutPut.ErrorMessage


def test_a_sql_statement_and_its_result_pages(dlc: DlcClient, idle: str) -> None:
    done = run(dlc, idle, "SELECT id, id * 2 AS twice, CAST(id AS DECIMAL(5,1)) AS d FROM range(5)", "sql")
    assert (done.State, done.OutPut.Status) == ("available", "ok")
    assert json.loads(done.OutPut.SQLResult)[4] == [4, 8, "4.0"]
    rows, token, pages = [], None, 0
    while True:
        fields = {"TaskId": done.TaskId, "MaxResults": 2, **({"NextToken": token} if token else {})}
        page = dlc.DescribeNotebookSessionStatementSqlResult(
            request("DescribeNotebookSessionStatementSqlResult", **fields)
        )
        rows += json.loads(page.ResultSet)
        pages += 1
        token = page.NextToken
        if not token:
            break
    assert (pages, [row[0] for row in rows]) == (3, [0, 1, 2, 3, 4])
    assert [(c.Name, c.Type) for c in page.ResultSchema] == [
        ("id", "bigint"),
        ("twice", "bigint"),
        ("d", "decimal"),
    ]
    assert (page.ResultSchema[2].Precision, page.ResultSchema[2].Scale, page.AffectRows) == (5, 1, 5)


def test_a_long_statement_is_cancelled(dlc: DlcClient, idle: str) -> None:
    created = dlc.CreateNotebookSessionStatement(
        request("CreateNotebookSessionStatement", SessionId=idle, Code="import time\ntime.sleep(600)")
    )
    statement_id = created.NotebookSessionStatement.StatementId
    wait_statement(dlc, idle, statement_id, lambda s: s.State == "running")
    assert describe(dlc, idle).State == "busy"
    dlc.CancelNotebookSessionStatement(
        request("CancelNotebookSessionStatement", SessionId=idle, StatementId=statement_id)
    )
    done = wait_statement(dlc, idle, statement_id, lambda s: s.State in ("available", "error", "cancelled"))
    assert done.State == "cancelled"
    assert run(dlc, idle, "'still usable'").State == "available"


def test_the_statements_and_the_log(dlc: DlcClient, idle: str) -> None:
    batch = dlc.DescribeNotebookSessionStatements(
        request("DescribeNotebookSessionStatements", SessionId=idle)
    ).NotebookSessionStatements
    assert batch.SessionId == idle and batch.NotebookSessionStatementBatch
    assert [s.StatementId for s in batch.NotebookSessionStatementBatch] == [
        str(n) for n in range(len(batch.NotebookSessionStatementBatch))
    ]
    log = dlc.DescribeNotebookSessionLog(request("DescribeNotebookSessionLog", SessionId=idle, Limit=5))
    assert 0 < len(log.Logs) <= 5 and log.Limit == 5
    first = dlc.DescribeNotebookSessionLog(
        request("DescribeNotebookSessionLog", SessionId=idle, Offset=0, Limit=3)
    )
    assert (first.Offset, len(first.Logs)) == (0, 3)


def test_the_list_with_filters(dlc: DlcClient, idle: str) -> None:
    def listed(**fields: Any) -> list[str]:
        answer = dlc.DescribeNotebookSessions(request("DescribeNotebookSessions", **fields))
        assert all(s.State in DLC_STATES for s in answer.Sessions)
        return [s.SessionId for s in answer.Sessions]

    keyword = [{"Name": "notebook-keyword", "Values": [NAME.upper()]}]
    assert listed(Filters=keyword, State=["idle", "busy"], DataEngineName="local-engine") == [idle]
    assert listed(Filters=keyword, State=["dead"]) == []
    assert listed(DataEngineName="another-engine") == []
    answer = dlc.DescribeNotebookSessions(request("DescribeNotebookSessions", Filters=keyword, Limit=1))
    assert (answer.TotalElements, answer.TotalPages, answer.Page, answer.Size) == (1, 1, 1, 1)
    row = answer.Sessions[0]
    assert (row.Name, row.Kind, row.DataEngineName, row.State) == (NAME, "pyspark", "local-engine", "idle")
    assert row.Creator == "AKIDintegration"  # the SecretId that signed the create
    assert row.SparkAppId and row.LastRunningTime


def test_refusals_are_sdk_errors(server: Server, dlc: DlcClient, idle: str) -> None:
    with pytest.raises(TencentCloudSDKException) as bad_key:
        dlc_client(server, key="not-the-token").DescribeNotebookSessions(request("DescribeNotebookSessions"))
    assert bad_key.value.code == "AuthFailure.SignatureFailure" and bad_key.value.requestId
    with pytest.raises(TencentCloudSDKException) as unknown:
        dlc.DescribeNotebookSession(request("DescribeNotebookSession", SessionId="no-such-session"))
    assert unknown.value.code == "ResourceNotFound.SessionNotFound"
    with pytest.raises(TencentCloudSDKException) as sparkr:
        dlc.CreateNotebookSession(
            request("CreateNotebookSession", Name="r", Kind="sparkr", DataEngineName="e")
        )
    assert sparkr.value.code == "InvalidParameter.InvalidSessionKindType"


def test_delete_last(dlc: DlcClient, idle: str) -> None:
    dlc.DeleteNotebookSession(request("DeleteNotebookSession", SessionId=idle))
    assert describe(dlc, idle).State == "killed"
    with pytest.raises(TencentCloudSDKException) as again:
        dlc.DeleteNotebookSession(request("DeleteNotebookSession", SessionId=idle))
    assert again.value.code == "ResourceNotFound.SessionStateDead"
