"""DLC's action API on the embedded server, in process (Starlette's TestClient) over the fake manager:
requests signed by Tencent's own SDK, answers read back by the SDK's own response models (any field they
lack would make them warn, which fails here), and every refusal in DLC's error shape with HTTP 200."""

from __future__ import annotations

import datetime
import json
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dli_kernel.protocol import DLC_CU_MEMORY_MB as CU_MEMORY_MB
from dli_kernel.protocol import SQL_RESULT_MIME
from dli_kernel.server.app import create_app
from dli_kernel.server.dlc_actions import ACTIONS
from dli_kernel.server.manager import ManagedSession, Statement
from dli_kernel.spec import SessionSpec
from tests.unit.fake_manager import FakeManager

pytest.importorskip("tencentcloud.dlc.v20210125.dlc_client")
from tencentcloud.common.credential import Credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.dlc.v20210125 import models
from tencentcloud.dlc.v20210125.dlc_client import DlcClient

TOKEN = "dlc-test-token"
HOST = "testserver"  # the TestClient's Host header, which the signature covers


class Dlc:
    """Sends actions as DlcClient signs them, and reads the answer as its models do."""

    def __init__(self, client: TestClient, manager: FakeManager) -> None:
        self.client = client
        self.manager = manager

    def send(self, action: str, params: dict[str, Any], key: str = TOKEN, **headers: str) -> dict[str, Any]:
        profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=HOST))
        request = RequestInternal(HOST, "POST", "/", header={})
        DlcClient(Credential("AKIDcarol", key), "ap-guangzhou", profile)._build_req_inter(
            action, params, request
        )
        sent = {**request.header, **headers}
        reply = self.client.post(
            "/", content=request.data.encode(), headers={k: v for k, v in sent.items() if v}
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/json"  # else the SDK would not see an error
        answer = reply.json()["Response"]
        uuid.UUID(answer["RequestId"])
        return answer

    def call(self, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A successful action, read back by its SDK response model without a warning."""
        answer = self.send(action, params or {})
        assert "Error" not in answer, answer
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            getattr(models, f"{action}Response")()._deserialize(answer)
        return answer

    def error(self, action: str, params: dict[str, Any], code: str, **headers: str) -> str:
        answer = self.send(action, params, **headers)
        assert set(answer) == {"Error", "RequestId"}
        assert answer["Error"]["Code"] == code, answer
        message = answer["Error"]["Message"]
        assert TOKEN not in message and "\n" not in message and message.endswith((".", ")"))
        return message


@pytest.fixture
def manager(tmp_path: Path) -> FakeManager:
    return FakeManager(tmp_path)


@pytest.fixture
def dlc(manager: FakeManager) -> Iterator[Dlc]:
    with TestClient(create_app(manager, TOKEN, "http://127.0.0.1:8998")) as client:
        yield Dlc(client, manager)


@pytest.fixture
def session(manager: FakeManager) -> ManagedSession:
    session = manager.add_session(SessionSpec(kind="pyspark", name="nb", cluster_name="engine-a"))
    manager.add_statement(session)
    return session


def sql_statement(manager: FakeManager, session: ManagedSession, rows: int = 5) -> Statement:
    statement = manager.add_statement(session)
    statement.kind, statement.started, statement.completed = "sql", 1000, 1250
    schema = {
        "type": "struct",
        "fields": [
            {"name": "id", "type": "long", "nullable": False, "metadata": {}},
            {"name": "name", "type": "string", "nullable": True, "metadata": {}},
            {"name": "price", "type": "decimal(10,2)", "nullable": True, "metadata": {}},
            {"name": "tags", "type": {"type": "array", "elementType": "string", "containsNull": True}},
        ],
    }
    data = [[n, f"row-{n}", "1.50", ["a"]] for n in range(rows)]
    result = {"schema": schema, "data": data, "total": rows, "truncated": False}
    statement.output = {"status": "ok", "execution_count": statement.id, "data": {SQL_RESULT_MIME: result}}
    return statement


CREATE = {"Name": "nb-new", "Kind": "pyspark", "DataEngineName": "engine-a"}


# -- every action ----------------------------------------------------------------------------------


def sample(action: str, session: ManagedSession, manager: FakeManager) -> dict[str, Any]:
    sql = sql_statement(manager, session)
    task = f"{session.uuid}.{sql.id}"
    return {
        "CreateNotebookSession": CREATE,
        "DescribeNotebookSession": {"SessionId": session.uuid},
        "DescribeNotebookSessions": {},
        "DeleteNotebookSession": {"SessionId": session.uuid},
        "DescribeNotebookSessionLog": {"SessionId": session.uuid},
        "CreateNotebookSessionStatement": {"SessionId": session.uuid, "Code": "1 + 1"},
        "DescribeNotebookSessionStatement": {"SessionId": session.uuid, "StatementId": "0"},
        "DescribeNotebookSessionStatements": {"SessionId": session.uuid},
        "CancelNotebookSessionStatement": {"SessionId": session.uuid, "StatementId": "0"},
        "DescribeNotebookSessionStatementSqlResult": {"TaskId": task},
    }[action]


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_answers_in_the_sdks_model_off_the_event_loop(
    dlc: Dlc, session: ManagedSession, manager: FakeManager, action: str
) -> None:
    dlc.call(action, sample(action, session, manager))
    assert manager.calls.names and manager.calls.on_loop == []


def test_create_describe_and_list(dlc: Dlc, manager: FakeManager) -> None:
    created = dlc.call("CreateNotebookSession", CREATE)
    new = manager.sessions[-1]
    assert created == {
        "SessionId": new.uuid,
        "SparkAppId": new.app_id,
        "State": "not_started",
        "RequestId": created["RequestId"],
    }
    info = dlc.call("DescribeNotebookSession", {"SessionId": new.uuid})["Session"]
    assert (info["Name"], info["Kind"], info["DataEngineName"], info["State"]) == (
        "nb-new",
        "pyspark",
        "engine-a",
        "not_started",
    )
    assert (
        info["DriverSize"],
        info["ExecutorSize"],
        info["ExecutorNumbers"],
        info["ExecutorMaxNumbers"],
    ) == ("small", "small", 1, 1)
    assert info["TimeoutInSecond"] == 3600
    beijing = datetime.timezone(datetime.timedelta(hours=8))
    created = datetime.datetime.fromtimestamp(new.created / 1000, beijing)
    assert info["CreateTime"] == created.strftime("%Y-%m-%d %H:%M:%S")
    listed = dlc.call("DescribeNotebookSessions")["Sessions"]
    assert [s["SessionId"] for s in listed] == [new.uuid]
    assert listed[0]["Creator"] == new.owner == "AKIDcarol"  # whoever signed the create


def test_the_create_fields_map_onto_the_spec(dlc: Dlc, manager: FakeManager) -> None:
    dlc.call(
        "CreateNotebookSession",
        {
            **CREATE,
            "Kind": "SQL",
            "DriverSize": "large",
            "ExecutorSize": "medium",
            "ExecutorNumbers": 2,
            "ExecutorMaxNumbers": 5,
            "Arguments": [{"Key": "spark.sql.shuffle.partitions", "Value": "4"}],
            "ProgramDependentJars": ["cosn://b/a.jar"],
            "ProgramDependentPython": ["cosn://b/m.py"],
            "ProgramDependentFiles": ["cosn://b/f.txt"],
            "ProgramArchives": ["cosn://b/env.tgz#env"],
            "TimeoutInSecond": 120,
            "ProxyUser": "bob",
            "SparkImage": "spark-3.5",
            "IsInherit": 0,
        },
    )
    spec = manager.sessions[-1].spec
    assert (spec.kind, spec.cluster_name, spec.name, spec.proxy_user, spec.heartbeat_timeout_s) == (
        "sql",
        "engine-a",
        "nb-new",
        "bob",
        120,
    )
    assert (spec.driver_cores, spec.driver_memory_mb, spec.executor_cores, spec.executor_memory_mb) == (
        4,
        4 * CU_MEMORY_MB,
        2,
        2 * CU_MEMORY_MB,
    )
    assert spec.num_executors == 2
    assert spec.conf == {
        "spark.sql.shuffle.partitions": "4",
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.minExecutors": "2",
        "spark.dynamicAllocation.maxExecutors": "5",
    }
    assert (spec.jars, spec.py_files, spec.files, spec.archives) == (
        ("cosn://b/a.jar",),
        ("cosn://b/m.py",),
        ("cosn://b/f.txt",),
        ("cosn://b/env.tgz#env",),
    )
    info = dlc.call("DescribeNotebookSession", {"SessionId": manager.sessions[-1].uuid})["Session"]
    assert (
        info["DriverSize"],
        info["ExecutorSize"],
        info["ExecutorNumbers"],
        info["ExecutorMaxNumbers"],
    ) == ("large", "medium", 2, 5)
    assert {"Key": "spark.sql.shuffle.partitions", "Value": "4"} in info["Arguments"]
    assert info["ProgramDependentJars"] == ["cosn://b/a.jar"] and info["ProxyUser"] == "bob"


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({**CREATE, "Kind": "sparkr"}, "InvalidParameter.InvalidSessionKindType", "runs no R"),
        ({**CREATE, "Kind": "scala2"}, "InvalidParameter.InvalidSessionKindType", "Kind must be one of"),
        ({"Name": "x", "DataEngineName": "e"}, "MissingParameter", "Kind is required"),
        ({"Name": "x", "Kind": "spark"}, "MissingParameter", "DataEngineName is required"),
        ({**CREATE, "DataEngineName": "  "}, "MissingParameter", "DataEngineName"),
        ({**CREATE, "DriverSize": "huge"}, "InvalidParameterValue", "small, medium, large, xlarge"),
        ({**CREATE, "ExecutorNumbers": "two"}, "InvalidParameter", "ExecutorNumbers must be an integer"),
        ({**CREATE, "ExecutorNumbers": True}, "InvalidParameter", "ExecutorNumbers must be an integer"),
        (
            {**CREATE, "ExecutorNumbers": 0},
            "InvalidParameterValue",
            "ExecutorNumbers must be an integer >= 1",
        ),
        (
            {**CREATE, "ExecutorNumbers": 3, "ExecutorMaxNumbers": 2},
            "InvalidParameterValue",
            "must not be less",
        ),
        ({**CREATE, "Arguments": {"a": "b"}}, "InvalidParameter", "Arguments must be a list of objects"),
        ({**CREATE, "Arguments": [{"Key": "a", "Value": 1}]}, "InvalidParameter", "{Key: non-empty string"),
        ({**CREATE, "ProgramDependentJars": "a.jar"}, "InvalidParameter", "a list of non-empty strings"),
        ({**CREATE, "TimeoutInSecond": -1}, "InvalidParameterValue", "TimeoutInSecond"),
        ({**CREATE, "Name": "n" * 200}, "InvalidParameterValue", "1 to 128 characters"),
        ({**CREATE, "Bogus": 1}, "UnknownParameter", "unknown parameter 'Bogus'"),
        ({**CREATE, "IsInherit": 2}, "InvalidParameterValue", "IsInherit"),
        *(
            ({**CREATE, "Arguments": [{"Key": key, "Value": value}]}, "InvalidParameterValue", key)
            for key in ("spark.dynamicAllocation.maxExecutors", "spark.dynamicAllocation.minExecutors")
            for value in ("\u00b2", "\u0663", "9" * 5000, "-1", "two", "")
        ),
        (
            {**CREATE, "Arguments": [{"Key": "spark.dynamicAllocation.maxExecutors", "Value": "0"}]},
            "InvalidParameterValue",
            "maxExecutors must be a whole number >= 1",
        ),
        (
            {
                **CREATE,
                "ExecutorNumbers": 3,
                "ExecutorMaxNumbers": 5,
                "Arguments": [{"Key": "spark.dynamicAllocation.maxExecutors", "Value": "2"}],
            },
            "InvalidParameterValue",
            "minExecutors (3) must not be more than spark.dynamicAllocation.maxExecutors (2)",
        ),
    ],
)
def test_a_bad_create_request_creates_nothing(
    dlc: Dlc, manager: FakeManager, params: dict, code: str, needle: str
) -> None:
    assert needle in dlc.error("CreateNotebookSession", params, code)
    assert manager.sessions == [] and "create" not in manager.calls.names


@pytest.mark.parametrize("stored", ["\u00b2", "9" * 5000, "lots", ""])
def test_a_session_with_an_odd_stored_max_executors_is_still_described(
    dlc: Dlc, manager: FakeManager, stored: str
) -> None:
    # made on the Livy path, which passes conf through, or recorded before Arguments were checked
    conf = {"spark.dynamicAllocation.maxExecutors": stored}
    odd = manager.add_session(SessionSpec(kind="pyspark", name="odd", cluster_name="e", conf=conf))
    info = dlc.call("DescribeNotebookSession", {"SessionId": odd.uuid})["Session"]
    assert info["ExecutorMaxNumbers"] == info["ExecutorNumbers"]


def test_creating_while_the_server_stops_fails(dlc: Dlc, manager: FakeManager) -> None:
    manager.closing = True
    assert "shutting down" in dlc.error("CreateNotebookSession", CREATE, "FailedOperation")


# -- listing ---------------------------------------------------------------------------------------


@pytest.fixture
def several(manager: FakeManager) -> list[ManagedSession]:
    made = []
    for n, (state, engine, kind) in enumerate(
        [
            ("idle", "engine-x", "pyspark"),
            ("busy", "engine-y", "sql"),
            ("dead", "engine-x", "spark"),
            ("recovering", "engine-x", "pyspark"),
        ]
    ):
        session = manager.add_session(
            SessionSpec(kind=kind, name=f"nb-{n}", cluster_name=engine), state=state
        )
        session.created = 1_700_000_000_000 + n * 1000
        made.append(session)
    return made


def names(answer: dict[str, Any]) -> list[str]:
    return [s["Name"] for s in answer["Sessions"]]


def test_the_list_is_newest_first_and_holds_ended_sessions(dlc: Dlc, several: list) -> None:
    answer = dlc.call("DescribeNotebookSessions")
    assert names(answer) == ["nb-3", "nb-2", "nb-1", "nb-0"]
    assert [s["State"] for s in answer["Sessions"]] == [
        "starting",
        "dead",
        "busy",
        "idle",
    ]  # recovering shows as starting
    assert (answer["TotalElements"], answer["TotalPages"], answer["Page"], answer["Size"]) == (4, 1, 1, 10)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"State": ["idle", "busy"]}, ["nb-1", "nb-0"]),
        ({"State": ["starting"]}, ["nb-3"]),
        ({"Asc": True}, ["nb-0", "nb-1", "nb-2", "nb-3"]),
        ({"SortFields": ["Kind", "Name"], "Asc": True}, ["nb-0", "nb-3", "nb-2", "nb-1"]),
        ({"Filters": [{"Name": "notebook-keyword", "Values": ["NB-1"]}]}, ["nb-1"]),
        ({"Filters": [{"Name": "notebook-keyword", "Values": ["Engine-Y"]}]}, ["nb-1"]),
        ({"Filters": [{"Name": "session-name", "Values": ["nb-2", "nb-0"]}]}, ["nb-2", "nb-0"]),
        ({"Filters": [{"Name": "kind", "Values": ["sql"]}]}, ["nb-1"]),
        ({"Filters": [{"Name": "engine-generation", "Values": ["supersql"]}]}, []),
        (
            {"Filters": [{"Name": "engine-generation", "Values": ["native"], "Operator": "EQ"}]},
            ["nb-3", "nb-2", "nb-1", "nb-0"],
        ),
        ({"Limit": 2, "Offset": 2}, ["nb-1", "nb-0"]),
    ],
)
def test_the_list_filters_sorts_and_pages(dlc: Dlc, several: list, params: dict, expected: list) -> None:
    assert names(dlc.call("DescribeNotebookSessions", params)) == expected


def test_the_engine_and_states_reach_the_manager(dlc: Dlc, several: list) -> None:
    dlc.call("DescribeNotebookSessions", {"DataEngineName": "engine-x", "State": ["starting", "idle"]})
    assert dlc.manager.listed[-1]["cluster"] == "engine-x"
    assert dlc.manager.listed[-1]["states"] == ["starting", "recovering", "idle"]


def test_a_session_is_filtered_by_its_id(dlc: Dlc, several: list) -> None:
    params = {"Filters": [{"Name": "session-id", "Values": [several[2].uuid]}]}
    assert names(dlc.call("DescribeNotebookSessions", params)) == ["nb-2"]


def test_the_page_numbers(dlc: Dlc, several: list) -> None:
    answer = dlc.call("DescribeNotebookSessions", {"Limit": 3, "Offset": 3})
    assert (answer["TotalElements"], answer["TotalPages"], answer["Page"], answer["Size"]) == (4, 2, 2, 3)


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({"State": ["sleeping"]}, "InvalidParameterValue", "'sleeping' is no session state"),
        ({"State": "idle"}, "InvalidParameter", "State must be a list"),
        ({"DataEngineName": 5}, "InvalidParameter", "DataEngineName must be a string"),
        ({"SortFields": ["Colour"]}, "InvalidParameterValue", "cannot be sorted on"),
        ({"Limit": 0}, "InvalidParameterValue", "Limit must be an integer between 1 and 1000"),
        ({"Offset": -1}, "InvalidParameterValue", "Offset must be an integer >= 0"),
        ({"Asc": "yes"}, "InvalidParameter", "Asc must be true or false"),
        (
            {"Filters": [{"Name": "colour", "Values": ["red"]}]},
            "InvalidParameterValue",
            "filters are: notebook-keyword",
        ),
        ({"Filters": [{"Name": "kind", "Values": []}]}, "InvalidParameter", "non-empty list of strings"),
        (
            {"Filters": [{"Name": "engine-generation", "Values": ["v3"]}]},
            "InvalidParameterValue",
            "native, supersql",
        ),
    ],
)
def test_a_bad_list_request_is_refused(dlc: Dlc, several: list, params: dict, code: str, needle: str) -> None:
    assert needle in dlc.error("DescribeNotebookSessions", params, code)
    assert "list" not in dlc.manager.calls.names


# -- sessions by id -------------------------------------------------------------------------------

SESSION_ACTIONS = [
    ("DescribeNotebookSession", {}),
    ("DeleteNotebookSession", {}),
    ("DescribeNotebookSessionLog", {}),
    ("CreateNotebookSessionStatement", {"Code": "1"}),
    ("DescribeNotebookSessionStatement", {"StatementId": "0"}),
    ("DescribeNotebookSessionStatements", {}),
    ("CancelNotebookSessionStatement", {"StatementId": "0"}),
]


@pytest.mark.parametrize(("action", "extra"), SESSION_ACTIONS, ids=[a for a, _ in SESSION_ACTIONS])
def test_an_unknown_session_is_not_found(dlc: Dlc, session: ManagedSession, action: str, extra: dict) -> None:
    message = dlc.error(action, {"SessionId": "no-such-session", **extra}, "ResourceNotFound.SessionNotFound")
    assert "'no-such-session' does not exist" in message
    assert set(dlc.manager.calls.names) <= {"get"}


@pytest.mark.parametrize("session_id", ["\u00b2", "\u0661", "9" * 5000])
@pytest.mark.parametrize(("action", "extra"), SESSION_ACTIONS, ids=[a for a, _ in SESSION_ACTIONS])
def test_a_session_id_of_odd_digits_is_not_found(
    dlc: Dlc, session: ManagedSession, action: str, extra: dict, session_id: str
) -> None:
    message = dlc.error(action, {"SessionId": session_id, **extra}, "ResourceNotFound.SessionNotFound")
    assert len(message) < 300 and session.state == "idle"


@pytest.mark.parametrize(("action", "extra"), SESSION_ACTIONS, ids=[a for a, _ in SESSION_ACTIONS])
def test_a_missing_session_id_is_refused(dlc: Dlc, session: ManagedSession, action: str, extra: dict) -> None:
    assert "SessionId is required" in dlc.error(action, extra, "MissingParameter")
    assert dlc.manager.calls.names == []


@pytest.mark.parametrize(("action", "extra"), SESSION_ACTIONS, ids=[a for a, _ in SESSION_ACTIONS])
def test_a_session_id_of_the_wrong_type_is_refused(
    dlc: Dlc, session: ManagedSession, action: str, extra: dict
) -> None:
    assert "SessionId must be a string" in dlc.error(action, {"SessionId": 7, **extra}, "InvalidParameter")


@pytest.mark.parametrize(("action", "extra"), SESSION_ACTIONS, ids=[a for a, _ in SESSION_ACTIONS])
def test_every_request_on_a_session_is_its_heartbeat(
    dlc: Dlc, session: ManagedSession, action: str, extra: dict
) -> None:
    dlc.call(action, {"SessionId": session.uuid, **extra})
    assert dlc.manager.touched == [session.id]


def test_a_session_is_found_by_its_livy_id_and_name_too(dlc: Dlc, session: ManagedSession) -> None:
    for key in (str(session.id), "nb"):
        assert dlc.call("DescribeNotebookSession", {"SessionId": key})["Session"]["SessionId"] == session.uuid


def test_delete(dlc: Dlc, session: ManagedSession) -> None:
    dlc.call("DeleteNotebookSession", {"SessionId": session.uuid})
    assert session.state == "killed"
    message = dlc.error(
        "DeleteNotebookSession", {"SessionId": session.uuid}, "ResourceNotFound.SessionStateDead"
    )
    assert "has ended (killed)" in message


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("dead", "ResourceNotFound.SessionStateDead"),
        ("shutting_down", "ResourceNotFound.SessionStateShuttingDown"),
    ],
)
def test_no_statement_for_a_session_that_ended(
    dlc: Dlc, session: ManagedSession, state: str, code: str
) -> None:
    session.state = state
    dlc.error("CreateNotebookSessionStatement", {"SessionId": session.uuid, "Code": "1"}, code)
    assert "submit" not in dlc.manager.calls.names


def test_the_log_is_paged(dlc: Dlc, session: ManagedSession) -> None:
    tail = dlc.call("DescribeNotebookSessionLog", {"SessionId": session.uuid, "Limit": 3})
    assert (tail["Logs"], tail["Limit"], tail["Offset"]) == (["line 22", "line 23", "line 24"], 3, 22)
    page = dlc.call("DescribeNotebookSessionLog", {"SessionId": session.uuid, "Offset": 2, "Limit": 2})
    assert (page["Logs"], page["Offset"]) == (["line 2", "line 3"], 2)
    assert len(dlc.call("DescribeNotebookSessionLog", {"SessionId": session.uuid})["Logs"]) == 25


# -- statements ------------------------------------------------------------------------------------


def test_a_statement_is_submitted_once_as_sent(dlc: Dlc, session: ManagedSession) -> None:
    answer = dlc.call(
        "CreateNotebookSessionStatement", {"SessionId": session.uuid, "Code": "SELECT 1", "Kind": "sql"}
    )
    info = answer["NotebookSessionStatement"]
    assert (info["StatementId"], info["State"], info["Code"], info["OutPut"]) == (
        "1",
        "waiting",
        "SELECT 1",
        None,
    )
    assert info["TaskId"] == f"{session.uuid}.1"
    assert dlc.manager.submitted == [("SELECT 1", "sql", 1000, "json")]


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({"Kind": "sparkr", "Code": "1"}, "InvalidParameter.InvalidSessionKindType", "runs no R"),
        ({"Code": 5}, "InvalidParameter", "Code must be a string"),
        ({}, "MissingParameter", "Code is required"),
        ({"Code": "1", "Language": "py"}, "UnknownParameter", "'Language'"),
    ],
)
def test_a_bad_statement_request_submits_nothing(
    dlc: Dlc, session: ManagedSession, params: dict, code: str, needle: str
) -> None:
    assert needle in dlc.error("CreateNotebookSessionStatement", {"SessionId": session.uuid, **params}, code)
    assert dlc.manager.submitted == []


def test_a_statement_is_described_by_id_or_task_id(dlc: Dlc, session: ManagedSession) -> None:
    by_id = dlc.call("DescribeNotebookSessionStatement", {"SessionId": session.uuid, "StatementId": "0"})
    by_task = dlc.call("DescribeNotebookSessionStatement", {"TaskId": f"{session.uuid}.0"})
    for answer in (by_id, by_task):
        info = answer["NotebookSessionStatement"]
        assert (info["State"], info["Progress"], info["OutPut"]["Status"]) == ("available", 0.0, "ok")
        assert info["OutPut"]["Data"] == [{"Key": "text/plain", "Value": "2"}]


def test_an_error_statement_shows_its_error(dlc: Dlc, session: ManagedSession, manager: FakeManager) -> None:
    statement = manager.add_statement(session, state="error")
    statement.output = {
        "status": "error",
        "execution_count": 1,
        "ename": "NameError",
        "evalue": "x",
        "traceback": ["t1\n", "t2\n"],
    }
    out = dlc.call("DescribeNotebookSessionStatement", {"SessionId": session.uuid, "StatementId": "1"})[
        "NotebookSessionStatement"
    ]["OutPut"]
    assert (out["Status"], out["ErrorName"], out["ErrorValue"], out["ErrorMessage"]) == (
        "error",
        "NameError",
        "x",
        ["t1\n", "t2\n"],
    )


# One action per test, so that each request is the first its signature is seen with (test_dlc_replay.py).
STATEMENT_ACTIONS = ("DescribeNotebookSessionStatement", "CancelNotebookSessionStatement")


@pytest.mark.parametrize("action", STATEMENT_ACTIONS)
@pytest.mark.parametrize("statement_id", ["9", "x", "\u00b2", "\u0660", "9" * 5000, "-1", " 0"])
def test_an_unknown_statement_is_not_found(
    dlc: Dlc, session: ManagedSession, action: str, statement_id: str
) -> None:
    message = dlc.error(action, {"SessionId": session.uuid, "StatementId": statement_id}, "ResourceNotFound")
    assert len(message) < 400
    assert dlc.manager.cancelled == []


@pytest.mark.parametrize("action", STATEMENT_ACTIONS)
def test_a_missing_statement_id_is_refused(dlc: Dlc, session: ManagedSession, action: str) -> None:
    assert "StatementId is required" in dlc.error(action, {"SessionId": session.uuid}, "MissingParameter")


def test_statements_and_cancel(dlc: Dlc, session: ManagedSession, manager: FakeManager) -> None:
    manager.add_statement(session, state="running")
    batch = dlc.call("DescribeNotebookSessionStatements", {"SessionId": session.uuid})[
        "NotebookSessionStatements"
    ]
    assert [s["StatementId"] for s in batch["NotebookSessionStatementBatch"]] == ["0", "1"]
    assert (batch["IsAvailable"], batch["SessionId"]) == (False, session.uuid)
    dlc.call("CancelNotebookSessionStatement", {"SessionId": session.uuid, "StatementId": "1"})
    assert manager.cancelled == [(session.id, 1)]


# -- SQL results -----------------------------------------------------------------------------------


def test_a_sql_result_is_paged_with_next_token(
    dlc: Dlc, session: ManagedSession, manager: FakeManager
) -> None:
    statement = sql_statement(manager, session, rows=5)
    task = f"{session.uuid}.{statement.id}"
    first = dlc.call("DescribeNotebookSessionStatementSqlResult", {"TaskId": task, "MaxResults": 2})
    assert json.loads(first["ResultSet"]) == [[0, "row-0", "1.50", ["a"]], [1, "row-1", "1.50", ["a"]]]
    assert [(c["Name"], c["Type"], c["Position"]) for c in first["ResultSchema"]] == [
        ("id", "bigint", 0),
        ("name", "string", 1),
        ("price", "decimal", 2),
        ("tags", "array", 3),
    ]
    price = first["ResultSchema"][2]
    assert (price["Precision"], price["Scale"], price["TypeText"]) == (10, 2, "decimal(10,2)")
    assert (first["ResultSchema"][0]["Nullable"], first["AffectRows"], first["UseTime"], first["TaskId"]) == (
        "false",
        5,
        250,
        task,
    )
    rows, token = [], first["NextToken"]
    while token:
        page = dlc.call(
            "DescribeNotebookSessionStatementSqlResult", {"TaskId": task, "MaxResults": 2, "NextToken": token}
        )
        rows += json.loads(page["ResultSet"])
        token = page["NextToken"]
    assert [row[0] for row in rows] == [2, 3, 4]
    cut = dlc.call("DescribeNotebookSessionStatementSqlResult", {"TaskId": task, "DataFieldCutLen": 3})
    assert json.loads(cut["ResultSet"])[0][1] == "row" and cut["NextToken"] == ""


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({}, "MissingParameter", "TaskId is required"),
        ({"TaskId": "nonsense"}, "ResourceNotFound", "task 'nonsense' does not exist"),
        ({"TaskId": "no-session.1"}, "ResourceNotFound.SessionNotFound", "does not exist"),
        ({"TaskId": "{uuid}.0"}, "InvalidParameter.InvalidStatementKindType", "only SQL statements"),
        ({"TaskId": "{uuid}.9"}, "ResourceNotFound", "statement '9' does not exist"),
        ({"TaskId": "{uuid}.1", "NextToken": "abc"}, "InvalidParameterValue", "NextToken 'abc'"),
        ({"TaskId": "{uuid}.1", "NextToken": "\u00b2"}, "InvalidParameterValue", "NextToken '\u00b2'"),
        ({"TaskId": "{uuid}.1", "NextToken": "9" * 5000}, "InvalidParameterValue", "(5000 characters)"),
        ({"TaskId": "{uuid}.1", "NextToken": "-1"}, "InvalidParameterValue", "NextToken '-1'"),
        ({"TaskId": "{uuid}.\u00b2"}, "ResourceNotFound", "does not exist"),
        ({"TaskId": "{uuid}.\u0661"}, "ResourceNotFound", "does not exist"),
        ({"TaskId": "{uuid}." + "9" * 5000}, "ResourceNotFound", "(5037 characters)"),
        ({"TaskId": "{uuid}.1", "MaxResults": 5000}, "InvalidParameterValue", "between 0 and 1000"),
    ],
)
def test_a_bad_sql_result_request_is_refused(
    dlc: Dlc, session: ManagedSession, manager: FakeManager, params: dict, code: str, needle: str
) -> None:
    sql_statement(manager, session)
    params = {k: v.format(uuid=session.uuid) if isinstance(v, str) else v for k, v in params.items()}
    assert needle in dlc.error("DescribeNotebookSessionStatementSqlResult", params, code)


def test_max_results_0_is_the_default_page_and_paging_ends(
    dlc: Dlc, session: ManagedSession, manager: FakeManager
) -> None:
    statement = sql_statement(manager, session, rows=2500)
    task = f"{session.uuid}.{statement.id}"
    tokens, rows, token = [], 0, None
    while True:
        params: dict = {"TaskId": task, "MaxResults": 0, **({"NextToken": token} if token else {})}
        page = dlc.call("DescribeNotebookSessionStatementSqlResult", params)
        rows += len(json.loads(page["ResultSet"]))
        token = page["NextToken"]
        if not token:
            break
        assert token not in tokens and len(tokens) < 5
        tokens.append(token)
    assert (rows, tokens) == (2500, ["1000", "2000"])


def test_an_unfinished_or_failed_sql_statement_has_no_result(
    dlc: Dlc, session: ManagedSession, manager: FakeManager
) -> None:
    statement = sql_statement(manager, session)
    statement.state, statement.output = "running", None
    task = {"TaskId": f"{session.uuid}.{statement.id}"}
    assert "is running" in dlc.error("DescribeNotebookSessionStatementSqlResult", task, "FailedOperation")
    statement.state = "error"
    statement.output = {
        "status": "error",
        "ename": "AnalysisException",
        "evalue": "no table t",
        "traceback": [],
    }
    assert "no table t" in dlc.error("DescribeNotebookSessionStatementSqlResult", task, "FailedOperation")


# -- the envelope: signature, version, action, body -------------------------------------------------


def test_a_bad_signature_reaches_nothing(dlc: Dlc, session: ManagedSession) -> None:
    assert "does not match" in dlc.error(
        "DescribeNotebookSession", {"SessionId": session.uuid}, "AuthFailure.SignatureFailure", key="wrong"
    )
    assert "not signed" in dlc.error(
        "DescribeNotebookSession", {}, "AuthFailure.SignatureFailure", Authorization=""
    )
    dlc.error(
        "DescribeNotebookSession", {}, "AuthFailure.InvalidAuthorization", Authorization=f"Bearer {TOKEN}"
    )
    stale = str(int(time.time()) - 3600)
    dlc.error("DescribeNotebookSession", {}, "AuthFailure.SignatureExpire", **{"X-TC-Timestamp": stale})
    assert dlc.manager.calls.names == []


def test_an_unsigned_request_is_refused_in_dlcs_shape(dlc: Dlc) -> None:
    reply = dlc.client.post("/", json={}, headers={"X-TC-Action": "DescribeNotebookSessions"})
    assert reply.status_code == 200
    assert reply.json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize("version", ["2017-03-12", ""])
def test_another_version_is_refused(dlc: Dlc, version: str) -> None:
    message = dlc.error("DescribeNotebookSessions", {}, "NoSuchVersion", **{"X-TC-Version": version})
    assert "X-TC-Version must be 2021-01-25" in message
    assert dlc.manager.calls.names == []


@pytest.mark.parametrize("action", ["DescribeTasks", ""])
def test_an_unknown_action_is_refused(dlc: Dlc, action: str) -> None:
    message = dlc.error("DescribeNotebookSessions", {}, "InvalidAction", **{"X-TC-Action": action})
    assert "CreateNotebookSession" in message


def test_a_body_that_is_not_an_object_is_refused(dlc: Dlc) -> None:
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=HOST))
    request = RequestInternal(HOST, "POST", "/", header={})
    DlcClient(Credential("id", TOKEN), "", profile)._build_req_inter("CreateNotebookSession", [1, 2], request)  # type: ignore[arg-type]
    reply = dlc.client.post("/", content=request.data.encode(), headers=request.header)
    assert reply.json()["Response"]["Error"] == {
        "Code": "InvalidParameter",
        "Message": "the request body must be a JSON object (got an array).",
    }


def test_an_unexpected_error_is_an_internal_error_without_details(dlc: Dlc, session: ManagedSession) -> None:
    dlc.manager.fail = RuntimeError(f"secret detail of {session.workdir}")
    message = dlc.error("DescribeNotebookSession", {"SessionId": session.uuid}, "InternalError")
    assert "secret detail" not in message and str(session.workdir) not in message


def test_the_other_routes_keep_their_token(dlc: Dlc) -> None:
    """Only POST / skips the bearer token; GET / and every other path still need it."""
    assert dlc.client.get("/").status_code == 401
    assert dlc.client.get("/sessions").status_code == 401
    assert dlc.client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405
    # The bearer token is no TC3 signature: it does not open the action API either.
    reply = dlc.client.post("/", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.json()["Response"]["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
