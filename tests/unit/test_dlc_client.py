"""Unit tests for the dlc dialect of dli_kernel.client: DLC's actions over real HTTP (pytest-httpserver),
every request's signature checked with Tencent's SDK, answers shaped as the SDK's models."""

from __future__ import annotations

import datetime
import decimal
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.credential import Credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.dlc.v20210125 import models
from werkzeug import Request, Response

from dli_kernel.client import (
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    MissingDependency,
    NotFound,
    RequestRejected,
    ServerError,
    SessionsClient,
    Unauthorized,
)
from dli_kernel.client.dlc import DEFAULT_URL, SIZES, DlcDialect, create_body, epoch_ms, statement_id
from dli_kernel.client.tc3 import TencentTC3, tencent_credential
from dli_kernel.spec import SessionSpec

SECRET_ID = "AKIDexample0123456789"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLEKEY"
TOKEN = "temporary-session-token-4f1e"
REGION = "ap-guangzhou"
SID = "2aedf3ce-a3c0-4c4b-8b7a-0e1a7c6bd6f2"
FAST = (0.0, 0.0)


class QuickServer(HTTPServer):
    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)


def sdk_signature(request: Request, secret_key: str) -> str:
    """The Authorization the SDK's own client computes for this request (its _get_tc3_signature)."""
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=request.host))
    sdk = CommonClient("dlc", "2021-01-25", Credential(SECRET_ID, secret_key), REGION, profile)
    timestamp = int(request.headers["X-TC-Timestamp"])
    header = {
        "Content-Type": request.headers["Content-Type"],
        "Host": request.host,
        "X-TC-Timestamp": str(timestamp),
    }
    internal = RequestInternal(request.host, "POST", "/", header=header, data=request.get_data())
    date = datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")
    signature = sdk._get_tc3_signature({}, internal, date, "dlc", secret_key)
    credential_id = request.headers["Authorization"].split("Credential=")[1].split("/")[0]
    return (
        f"TC3-HMAC-SHA256 Credential={credential_id}/{date}/dlc/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


class FakeDlc:
    """DLC's action endpoint: answers each action from ``answers`` (a Response payload, or a function of the
    request body returning one), checks every signature with the SDK, and records (action, body)."""

    def __init__(self, server: HTTPServer, secret_key: str = SECRET_KEY) -> None:
        self.server = server
        self.secret_key = secret_key
        self.answers: dict[str, Any] = {}
        self.log: list[tuple[str, dict]] = []
        self.headers: list[dict[str, str]] = []
        server.expect_request("/", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        action = request.headers.get("X-TC-Action", "")
        body = request.get_json()
        self.log.append((action, body))
        self.headers.append(dict(request.headers))
        assert request.headers["Authorization"] == sdk_signature(request, self.secret_key)
        answer = self.answers.get(action, {})
        payload = answer(body) if callable(answer) else answer
        if isinstance(payload, Response):
            return payload
        return Response(
            json.dumps({"Response": {**payload, "RequestId": "req-1"}}), content_type="application/json"
        )

    def actions(self) -> list[str]:
        return [action for action, _ in self.log]


def error(code: str, message: str) -> dict:
    return {"Error": {"Code": code, "Message": message}}


@pytest.fixture(scope="module")
def make_httpserver() -> Iterator[HTTPServer]:
    server = QuickServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def dlc(httpserver: HTTPServer) -> FakeDlc:
    return FakeDlc(httpserver)


def make_client(server: HTTPServer, token: str | None = None, **kwargs: Any) -> SessionsClient:
    auth = TencentTC3(tencent_credential(SECRET_ID, SECRET_KEY, token))
    kwargs.setdefault("retry_delays", FAST)
    return SessionsClient(server.url_for("/").rstrip("/"), "dlc", region=REGION, auth=auth, **kwargs)


@pytest.fixture
def client(dlc: FakeDlc) -> Iterator[SessionsClient]:
    with make_client(dlc.server) as client:
        yield client


# A NotebookSessionInfo as DLC's DescribeNotebookSession answers it.
SESSION_INFO = {
    "Name": "etl",
    "Kind": "pyspark",
    "DataEngineName": "spark-engine-1",
    "Arguments": [{"Key": "spark.sql.shuffle.partitions", "Value": "64"}],
    "ProgramDependentFiles": [],
    "ProgramDependentJars": [],
    "ProgramDependentPython": [],
    "ProgramArchives": [],
    "DriverSize": "medium",
    "ExecutorSize": "small",
    "ExecutorNumbers": 6,
    "ProxyUser": "svc",
    "TimeoutInSecond": 120,
    "SparkAppId": "spark-app-42",
    "SessionId": SID,
    "State": "idle",
    "CreateTime": "2024-05-01 08:00:00",
    "AppInfo": [{"Key": "creator", "Value": "alice"}, {"Key": "driverLogUrl", "Value": "http://x/log"}],
    "SparkUiUrl": "https://ui.example/spark-app-42",
    "ExecutorMaxNumbers": 6,
}


def statement_info(statement_id: int, code: str, state: str = "waiting", **extra: Any) -> dict:
    return {
        "StatementId": str(statement_id),
        "Code": code,
        "State": state,
        "Progress": 0,
        "Started": 0,
        "Completed": 0,
        "OutPut": None,
        "TaskId": f"task-{statement_id}",
        **extra,
    }


# -- signing -----------------------------------------------------------------------------------------


def test_the_signature_is_the_sdks_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same request built by the SDK's own client (with the same clock) carries the same headers."""
    import requests

    now = 1_714_550_400
    params = {"SessionId": SID, "Code": "print('你好')", "Kind": "pyspark"}
    auth = TencentTC3(tencent_credential(SECRET_ID, SECRET_KEY, TOKEN), clock=lambda: now)
    ours = requests.Request("POST", "https://dlc.tencentcloudapi.com/", json=params, auth=auth).prepare()

    profile = ClientProfile(httpProfile=HttpProfile(endpoint="dlc.tencentcloudapi.com"))
    sdk = CommonClient("dlc", "2021-01-25", Credential(SECRET_ID, SECRET_KEY, TOKEN), REGION, profile)
    theirs = RequestInternal("dlc.tencentcloudapi.com", "POST", "/")
    monkeypatch.setattr(time, "time", lambda: now)
    sdk._build_req_inter("CreateNotebookSessionStatement", params, theirs)

    assert ours.body == theirs.data.encode("utf-8")
    for name in ("Authorization", "X-TC-Timestamp", "X-TC-Token", "Content-Type", "Host"):
        assert ours.headers[name] == theirs.header[name], name


def test_every_request_carries_the_action_headers_and_a_fresh_signature(dlc: FakeDlc) -> None:
    dlc.answers["DescribeNotebookSession"] = {"Session": SESSION_INFO}
    with make_client(dlc.server, token=TOKEN) as client:
        client.get_session(SID)

    headers = dlc.headers[0]
    assert headers["X-Tc-Action"] == "DescribeNotebookSession"
    assert headers["X-Tc-Version"] == "2021-01-25"
    assert headers["X-Tc-Region"] == REGION
    assert headers["X-Tc-Token"] == TOKEN
    assert abs(int(headers["X-Tc-Timestamp"]) - time.time()) < 60
    assert headers["Authorization"].startswith(f"TC3-HMAC-SHA256 Credential={SECRET_ID}/")


def test_a_wrong_key_does_not_verify(dlc: FakeDlc) -> None:
    dlc.secret_key = "another-key"
    dlc.answers["DescribeNotebookSession"] = {"Session": SESSION_INFO}
    with make_client(dlc.server) as client, pytest.raises(ServerError):
        client.get_session(SID)  # the fake's assertion fails: werkzeug answers 500


def test_no_secret_in_reprs_or_errors(dlc: FakeDlc) -> None:
    dlc.answers["DescribeNotebookSession"] = error("AuthFailure.SignatureFailure", "The signature is wrong.")
    with make_client(dlc.server, token=TOKEN) as client:
        with pytest.raises(Unauthorized) as caught:
            client.get_session(SID)
        shown = " ".join([repr(client), repr(client._http.auth), str(client._http.auth), str(caught.value)])
    assert SECRET_KEY not in shown and TOKEN not in shown and SECRET_ID not in shown
    assert "secret_key=***" in repr(client._http.auth)


def test_without_the_sdk_the_dialect_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tencentcloud.common.sign", None)
    with pytest.raises(MissingDependency, match=r"pip install 'dli-kernel\[dlc\]'"):
        tencent_credential(SECRET_ID, SECRET_KEY)


def test_the_default_endpoint_is_tencent_clouds() -> None:
    with SessionsClient(None, "dlc", region=REGION) as client:
        assert client.url == DEFAULT_URL


def test_the_dlc_dialect_needs_a_region() -> None:
    with pytest.raises(ClientError, match="needs a region such as ap-guangzhou"):
        SessionsClient(None, "dlc")


# -- sessions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "driver", "executor", "count"),
    [("A", "medium", "small", 6), ("B", "medium", "medium", 7), ("C", "large", "medium", 14)],
)
def test_tiers_map_to_dlc_sizes(tier: str, driver: str, executor: str, count: int) -> None:
    body = create_body(SessionSpec(kind="sql", cluster_name="e1", sc_type=tier))
    assert (body["DriverSize"], body["ExecutorSize"], body["ExecutorNumbers"]) == (driver, executor, count)
    assert body["ExecutorMaxNumbers"] == count


@pytest.mark.parametrize(
    ("cores", "memory_mb", "size"),
    [(1, 1024, "small"), (1, 4096, "small"), (1, 4097, "medium"), (2, 8192, "medium"), (3, 2048, "large"),
     (1, 16 * 1024, "large"), (8, 32 * 1024, "xlarge")],
)  # fmt: skip
def test_explicit_sizes_round_up_to_the_smallest_dlc_size(cores: int, memory_mb: int, size: str) -> None:
    spec = SessionSpec(cluster_name="e1", driver_cores=cores, driver_memory_mb=memory_mb)
    assert create_body(spec)["DriverSize"] == size


def test_a_size_above_xlarge_is_refused_in_one_sentence() -> None:
    with pytest.raises(BadRequest) as caught:
        create_body(SessionSpec(cluster_name="e1", executor_cores=16))
    message = str(caught.value)
    assert "no executor size with 16 cores" in message and "xlarge (8 cores, 32 GB)" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_create_maps_every_field(dlc: FakeDlc, client: SessionsClient) -> None:
    dlc.answers["CreateNotebookSession"] = {"SessionId": SID, "SparkAppId": "", "State": "not_started"}
    spec = SessionSpec(
        kind="spark",
        name="etl",
        cluster_name="spark-engine-1",
        sc_type="B",
        num_executors=3,
        conf={"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.maxExecutors": "9"},
        jars=("cosn://b/a.jar",),
        py_files=("cosn://b/m.py",),
        files=("cosn://b/f.txt",),
        archives=("cosn://b/env.tgz",),
        heartbeat_timeout_s=300,
        proxy_user="svc",
    )
    info = client.create_session(spec)

    assert dlc.actions() == ["CreateNotebookSession"]
    assert dlc.log[0][1] == {
        "Kind": "spark",
        "DataEngineName": "spark-engine-1",
        "DriverSize": "medium",
        "ExecutorSize": "medium",
        "ExecutorNumbers": 3,
        "ExecutorMaxNumbers": 9,
        "Name": "etl",
        "ProgramDependentJars": ["cosn://b/a.jar"],
        "ProgramDependentPython": ["cosn://b/m.py"],
        "ProgramDependentFiles": ["cosn://b/f.txt"],
        "ProgramArchives": ["cosn://b/env.tgz"],
        "Arguments": [
            {"Key": "spark.dynamicAllocation.enabled", "Value": "true"},
            {"Key": "spark.dynamicAllocation.maxExecutors", "Value": "9"},
        ],
        "TimeoutInSecond": 300,
        "ProxyUser": "svc",
    }
    models.CreateNotebookSessionRequest()._deserialize(dlc.log[0][1])  # every field is one the SDK knows
    assert (info.id, info.state, info.kind, info.name) == (SID, "not_started", "spark", "etl")
    assert (info.raw["cluster_name"], info.raw["numExecutors"]) == ("spark-engine-1", 3)
    assert info.proxy_user == "svc"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (SessionSpec(kind="sql"), "cluster_name is required for DLC"),
        (SessionSpec(cluster_name="e", modules=("sys.datasource.css",)), "modules cannot be sent to DLC"),
        (SessionSpec(cluster_name="e", ttl_s=60), "ttl cannot be sent to DLC"),
    ],
)
def test_what_dlc_cannot_take_is_refused_before_any_request(
    dlc: FakeDlc, client: SessionsClient, spec: SessionSpec, needle: str
) -> None:
    with pytest.raises(BadRequest, match=needle):
        client.create_session(spec)
    assert dlc.log == []


def test_sparkr_is_refused_clearly(dlc: FakeDlc, client: SessionsClient) -> None:
    with pytest.raises(
        BadRequest, match="DLC's sparkr kind is not supported here; use pyspark, spark or sql"
    ):
        client.submit(SID, "1 + 1", kind="sparkr")
    assert dlc.log == []


def test_describe_maps_the_session(dlc: FakeDlc, client: SessionsClient) -> None:
    dlc.answers["DescribeNotebookSession"] = {"Session": SESSION_INFO}
    models.DescribeNotebookSessionResponse()._deserialize({"Session": SESSION_INFO})

    info = client.get_session(SID, wait=5)  # DLC has no long-poll: the wait is not sent

    assert dlc.log == [("DescribeNotebookSession", {"SessionId": SID})]
    assert (info.id, info.state, info.kind, info.name) == (SID, "idle", "pyspark", "etl")
    assert (info.app_id, info.owner, info.proxy_user) == ("spark-app-42", "alice", "svc")
    assert (info.spark_ui_url, info.driver_log_url) == ("https://ui.example/spark-app-42", "http://x/log")
    assert info.ready and not info.ended
    raw = info.raw
    assert raw["cluster_name"] == "spark-engine-1"
    assert raw["conf"] == {"spark.sql.shuffle.partitions": "64"}
    assert (raw["driverMemory"], raw["driverCores"], raw["executorMemory"], raw["executorCores"]) == (
        "8 GB", 2, "4 GB", 1,
    )  # fmt: skip
    assert (raw["numExecutors"], raw["heartbeatTimeoutInSecond"]) == (6, 120)
    # DLC's times without a zone are Beijing time (UTC+8)
    assert raw["create_time"] == int(datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC).timestamp() * 1000)
    assert raw["dlc"] == SESSION_INFO


@pytest.mark.parametrize(
    ("dlc_state", "ours", "ended"),
    [("not_started", "not_started", False), ("shutting down", "shutting_down", False),
     ("busy", "busy", False),
     ("killed", "killed", True), ("success", "success", True), ("dead", "dead", True),
     ("Paused", "paused", False)],
)  # fmt: skip
def test_states_map_and_an_unknown_one_is_shown(
    dlc: FakeDlc, client: SessionsClient, dlc_state: str, ours: str, ended: bool
) -> None:
    dlc.answers["DescribeNotebookSession"] = {"Session": {**SESSION_INFO, "State": dlc_state}}
    info = client.get_session(SID)
    assert (info.state, info.ended) == (ours, ended)


def test_list_maps_filters_and_rows(dlc: FakeDlc, client: SessionsClient) -> None:
    row = {
        "Kind": "sql", "SessionId": SID, "ProxyUser": "", "State": "idle", "SparkAppId": "", "Name": "etl",
        "CreateTime": "1714550400", "DataEngineName": "e1", "LastRunningTime": "", "Creator": "bob",
        "SparkUiUrl": "",
    }  # fmt: skip
    dlc.answers["DescribeNotebookSessions"] = {"TotalElements": 1, "Sessions": [row]}

    plain = client.list_sessions()
    filtered = client.list_sessions(
        state="idle,busy", name="etl", cluster_name="e1", from_=20, size=5, sort="Name", asc="true"
    )

    assert dlc.log[0][1] == {"Limit": 100, "Offset": 0}
    assert dlc.log[1][1] == {
        "Limit": 5,
        "Offset": 20,
        "DataEngineName": "e1",
        "State": ["idle", "busy"],
        "SortFields": ["Name"],
        "Asc": True,
        "Filters": [{"Name": "notebook-keyword", "Values": ["etl"]}],
    }
    models.DescribeNotebookSessionsRequest()._deserialize(dlc.log[1][1])
    assert plain == filtered
    assert (plain[0].id, plain[0].owner, plain[0].kind, plain[0].raw["create_time"]) == (
        SID, "bob", "sql", 1_714_550_400_000,
    )  # fmt: skip


def test_kind_and_owner_filters_send_nothing_and_unknown_ones_are_refused(
    dlc: FakeDlc, client: SessionsClient
) -> None:
    dlc.answers["DescribeNotebookSessions"] = {"Sessions": []}
    client.list_sessions(kind="sql", owner="bob")
    assert dlc.log[0][1] == {"Limit": 100, "Offset": 0}
    with pytest.raises(BadRequest, match="no filter colour; accepted are state, kind"):
        client.list_sessions(colour="red")


def test_delete_and_delete_of_a_gone_session(dlc: FakeDlc, client: SessionsClient) -> None:
    client.delete_session(SID)
    dlc.answers["DeleteNotebookSession"] = error("ResourceNotFound.SessionNotFound", "No such session.")
    client.delete_session(SID)  # already gone counts as done
    assert dlc.log == [("DeleteNotebookSession", {"SessionId": SID})] * 2


def test_an_ambiguous_named_create_is_found_by_listing(dlc: FakeDlc) -> None:
    dlc.answers["CreateNotebookSession"] = error("InternalError", "Backend timeout.")
    row = {
        "SessionId": SID, "Name": "etl", "State": "starting", "Kind": "sql", "Creator": SECRET_ID,
        "CreateTime": str(int(time.time())),
    }  # fmt: skip
    dlc.answers["DescribeNotebookSessions"] = {"Sessions": [{**row, "Name": "etl-2"}, row]}
    dlc.answers["DescribeNotebookSessionStatements"] = {"NotebookSessionStatements": {}}
    with make_client(dlc.server) as client:
        info = client.create_session(SessionSpec(kind="sql", name="etl", cluster_name="e1"))

    assert (info.id, info.name) == (SID, "etl")
    assert dlc.actions() == [
        "CreateNotebookSession",
        "DescribeNotebookSessions",
        "DescribeNotebookSessionStatements",
    ]


# -- statements --------------------------------------------------------------------------------------


def test_statement_calls(dlc: FakeDlc, client: SessionsClient) -> None:
    dlc.answers["CreateNotebookSessionStatement"] = {"NotebookSessionStatement": statement_info(0, "1 + 1")}
    done = statement_info(
        0,
        "1 + 1",
        "available",
        Progress=100,
        Started=1714550400000,
        Completed=1714550401000,
        OutPut={
            "ExecutionCount": 1,
            "Status": "ok",
            "Data": [
                {"Key": "text/plain", "Value": "2"},
                {"Key": "application/json", "Value": '{"schema": {"fields": []}, "data": [[1]]}'},
            ],
            "ErrorName": "",
            "ErrorValue": "",
            "ErrorMessage": [],
            "SQLResult": "",
        },
    )
    models.NotebookSessionStatementInfo()._deserialize(done)
    dlc.answers["DescribeNotebookSessionStatement"] = {"NotebookSessionStatement": done}
    dlc.answers["DescribeNotebookSessionStatements"] = {
        "NotebookSessionStatements": {"NotebookSessionStatementBatch": [done], "SessionId": SID}
    }

    submitted = client.submit(SID, "1 + 1", kind="pyspark", max_rows=10)
    finished = client.wait_statement(SID, submitted.id, timeout=5)
    listed = client.list_statements(SID)
    client.cancel(SID, 0)

    assert dlc.log == [
        ("CreateNotebookSessionStatement", {"SessionId": SID, "Code": "1 + 1", "Kind": "pyspark"}),
        ("DescribeNotebookSessionStatement", {"SessionId": SID, "StatementId": "0"}),
        ("DescribeNotebookSessionStatements", {"SessionId": SID}),
        ("CancelNotebookSessionStatement", {"SessionId": SID, "StatementId": "0"}),
    ]
    assert (submitted.id, submitted.state, submitted.task_id) == (0, "waiting", "task-0")
    assert finished.done and finished.progress == 1.0 and finished.completed == 1714550401000
    assert finished.output == {
        "status": "ok",
        "execution_count": 1,
        "data": {"text/plain": "2", "application/json": {"schema": {"fields": []}, "data": [[1]]}},
    }
    assert listed == [finished]


def test_an_error_output_maps_to_livys_fields(dlc: FakeDlc, client: SessionsClient) -> None:
    output = {
        "ExecutionCount": 2, "Status": "error", "Data": [], "ErrorName": "NameError",
        "ErrorValue": "name 'x' is not defined", "ErrorMessage": ["Traceback", "NameError"],
    }  # fmt: skip
    dlc.answers["DescribeNotebookSessionStatement"] = {
        "NotebookSessionStatement": statement_info(1, "x", "error", OutPut=output, Progress=37.5)
    }
    statement = client.get_statement(SID, 1)
    assert statement.output == {
        "status": "error", "execution_count": 2, "ename": "NameError", "evalue": "name 'x' is not defined",
        "traceback": ["Traceback", "NameError"],
    }  # fmt: skip
    assert statement.progress == 0.375 and statement.done


@pytest.mark.parametrize(
    ("state", "output", "ours", "done"),
    [
        ("canceled", None, "cancelled", True),
        ("succeeded", {"Status": "ok", "Data": [{"Key": "text/plain", "Value": "1"}]}, "available", True),
        ("failed", {"Status": "error", "ErrorName": "E"}, "error", True),
        ("queued", None, "error", True),  # ended as an error naming the state: no wait hangs on it
    ],
)
def test_unknown_statement_states(
    dlc: FakeDlc, client: SessionsClient, state: str, output: dict | None, ours: str, done: bool
) -> None:
    dlc.answers["DescribeNotebookSessionStatement"] = {
        "NotebookSessionStatement": statement_info(2, "x", state, OutPut=output)
    }
    statement = client.get_statement(SID, 2)
    assert (statement.state, statement.done) == (ours, done)


def test_a_timed_out_statement_create_is_never_sent_again() -> None:
    """No answer: the statement may still start, so a second CreateNotebookSessionStatement could run it
    twice; the client lists, does not find it, and says so instead of sending it again."""
    release = threading.Event()

    def slow(body: dict) -> dict:
        release.wait(5)
        return {"NotebookSessionStatement": statement_info(0, body["Code"])}

    with QuickServer(threaded=True) as server:
        fake = FakeDlc(server)
        fake.answers["CreateNotebookSessionStatement"] = slow
        fake.answers["DescribeNotebookSessionStatements"] = {"NotebookSessionStatements": {}}
        try:
            with make_client(server, timeout=(1, 0.3)) as client:
                client.track(SID)
                with pytest.raises(ConnectionFailed, match="was not sent again"):
                    client.submit(SID, "x = 1")
        finally:
            release.set()

    assert fake.actions().count("CreateNotebookSessionStatement") == 1


def test_a_statement_create_that_landed_before_an_error_is_found_not_resent(dlc: FakeDlc) -> None:
    landed = statement_info(4, "spark.range(3).count()", "running")
    dlc.answers["CreateNotebookSessionStatement"] = error("InternalError.DBError", "Write failed.")
    dlc.answers["DescribeNotebookSessionStatements"] = {
        "NotebookSessionStatements": {"NotebookSessionStatementBatch": [landed]}
    }
    with make_client(dlc.server) as client:
        client._last_statement[SID] = 3
        statement = client.submit(SID, "spark.range(3).count()")

    assert (statement.id, statement.state) == (4, "running")
    assert dlc.actions() == ["CreateNotebookSessionStatement", "DescribeNotebookSessionStatements"]


def test_completion_is_empty_without_a_request(dlc: FakeDlc, client: SessionsClient) -> None:
    assert client.complete(SID, "spark.ran", "pyspark", 9) == []
    assert dlc.log == []


def test_logs_page_by_offset_and_count_the_log_for_its_total(dlc: FakeDlc, client: SessionsClient) -> None:
    lines = [f"line {n}" for n in range(1500)]

    def log(body: dict) -> dict:
        start, limit = body.get("Offset", 0), body["Limit"]
        return {"Logs": lines[start : start + limit], "Limit": limit, "Offset": start}

    dlc.answers["DescribeNotebookSessionLog"] = log
    total = client.logs(SID, size=0)
    page = client.logs(SID, start=1490, size=100)

    assert (total.start, total.total, total.lines) == (1500, 1500, ())
    assert (page.start, page.total, page.lines) == (1490, 1500, tuple(lines[1490:]))
    assert [body for _, body in dlc.log] == [
        {"SessionId": SID, "Limit": 1000, "Offset": 0},
        {"SessionId": SID, "Limit": 1000, "Offset": 1000},
        {"SessionId": SID, "Limit": 100, "Offset": 1490},
    ]


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("AuthFailure.SignatureExpire", Unauthorized),
        ("UnauthorizedOperation", Unauthorized),
        ("ResourceNotFound.SessionNotFound", NotFound),
        ("InvalidParameter.InvalidSessionKindType", BadRequest),
        ("InvalidParameterValue", BadRequest),
        ("MissingParameter", BadRequest),
        ("UnsupportedOperation", BadRequest),
        ("FailedOperation", Conflict),
        ("ResourceUnavailable.SessionStateDead", Conflict),
        ("LimitExceeded", RequestRejected),
    ],
)
def test_error_codes_map_onto_the_hierarchy(
    dlc: FakeDlc, client: SessionsClient, code: str, kind: type[RequestRejected]
) -> None:
    dlc.answers["DescribeNotebookSession"] = error(code, "Something is off.")
    with pytest.raises(RequestRejected) as caught:
        client.get_session(SID)
    assert type(caught.value) is kind and caught.value.code == code
    assert str(caught.value) == f"DescribeNotebookSession at {client.url}: Something is off ({code})."
    assert dlc.actions() == ["DescribeNotebookSession"]  # a refusal is not retried


def test_an_internal_error_is_a_server_error_retried_only_where_safe(
    dlc: FakeDlc, client: SessionsClient
) -> None:
    dlc.answers["DescribeNotebookSession"] = error("InternalError", "Try again.")
    with pytest.raises(ServerError, match=r"Try again \(InternalError\)\."):
        client.get_session(SID)
    assert dlc.actions() == ["DescribeNotebookSession"] * 3  # two retries (FAST)


def test_an_answer_that_is_not_dlcs_is_one_sentence(dlc: FakeDlc, client: SessionsClient) -> None:
    dlc.answers["DescribeNotebookSession"] = lambda _: Response(
        '{"sessions": []}', content_type="application/json"
    )
    with pytest.raises(ClientError, match="is not a DLC answer"):
        client.get_session(SID)


def test_a_statement_id_that_is_not_a_number_is_one_sentence(dlc: FakeDlc, client: SessionsClient) -> None:
    dlc.answers["DescribeNotebookSessionStatement"] = {"NotebookSessionStatement": statement_info(0, "1") | {
        "StatementId": "st-a"}}  # fmt: skip
    with pytest.raises(ClientError, match=r"statement id that is not a number \('st-a'\)"):
        client.get_statement(SID, 0)


# -- SQL results -------------------------------------------------------------------------------------

SCHEMA = [
    {"Name": "id", "Type": "bigint"},
    {"Name": "small", "Type": "int"},
    {"Name": "name", "Type": "string"},
    {"Name": "price", "Type": "decimal(10,2)"},
    {"Name": "ok", "Type": "boolean"},
    {"Name": "ratio", "Type": "double"},
    {"Name": "day", "Type": "date"},
    {"Name": "at", "Type": "timestamp"},
    {"Name": "tags", "Type": "array"},
    {"Name": "id", "Type": "bigint"},
]


def _row(n: int) -> list:
    return [
        n, None if n == 1 else n, f"n{n}", "1.50", n % 2 == 0, n / 4, "2024-05-01",
        "2024-05-01T08:00:00.000+08:00", [n, n], str(n),
    ]  # fmt: skip


def _sql_answers(rows: list[list], page: int) -> Callable[[dict], dict]:
    def answer(body: dict) -> dict:
        assert body["TaskId"] == "task-0"
        start = int(body.get("NextToken") or 0)
        limit = min(body["MaxResults"], page)
        chunk = rows[start : start + limit]
        more = start + limit < len(rows)
        payload = {
            "TaskId": "task-0",
            "ResultSet": json.dumps(chunk),
            "ResultSchema": SCHEMA,
            "NextToken": str(start + limit) if more else "",
            "AffectRows": len(rows),
        }
        models.DescribeNotebookSessionStatementSqlResultResponse()._deserialize(payload)
        return payload

    return answer


def _sql_statement(dlc: FakeDlc, rows: list[list], page: int) -> None:
    ok = {"ExecutionCount": 1, "Status": "ok", "Data": [], "SQLResult": ""}
    dlc.answers["CreateNotebookSessionStatement"] = {"NotebookSessionStatement": statement_info(0, "q")}
    dlc.answers["DescribeNotebookSessionStatement"] = {
        "NotebookSessionStatement": statement_info(0, "q", "available", OutPut=ok)
    }
    dlc.answers["DescribeNotebookSessionStatementSqlResult"] = _sql_answers(rows, page)


def test_fetch_dataframe_pages_with_next_token_into_typed_columns(
    dlc: FakeDlc, client: SessionsClient
) -> None:
    import pandas as pd

    _sql_statement(dlc, [_row(n) for n in range(5)], page=2)
    result = client.fetch_dataframe(SID, "SELECT * FROM t", max_rows=-1, timeout=5)

    frame = result.frame
    assert (result.total, result.truncated, result.transport) == (5, False, "dlc-sql-result")
    assert list(frame.columns) == [column["Name"] for column in SCHEMA]
    assert [str(t) for t in frame.dtypes] == [
        "int64", "Int32", "object", "object", "bool", "float64", "object", "datetime64[us]", "object",
        "int64",
    ]  # fmt: skip
    assert frame.iloc[:, 1].isna().tolist() == [False, True, False, False, False]
    assert frame["price"][0] == decimal.Decimal("1.50")
    assert frame["day"][0] == datetime.date(2024, 5, 1)
    assert frame["at"][0] == pd.Timestamp("2024-05-01 08:00:00")  # Spark's wall time, as toPandas gives it
    assert frame["tags"][3] == [3, 3]
    assert frame.iloc[:, 9].tolist() == [0, 1, 2, 3, 4]
    pages = [body for action, body in dlc.log if action == "DescribeNotebookSessionStatementSqlResult"]
    assert pages == [
        {"TaskId": "task-0", "MaxResults": 1000},
        {"TaskId": "task-0", "MaxResults": 1000, "NextToken": "2"},
        {"TaskId": "task-0", "MaxResults": 1000, "NextToken": "4"},
    ]
    assert (
        "CreateNotebookSessionStatement",
        {"SessionId": SID, "Code": "SELECT * FROM t", "Kind": "sql"},
    ) in (dlc.log)


def test_fetch_dataframe_stops_at_max_rows(dlc: FakeDlc, client: SessionsClient) -> None:
    _sql_statement(dlc, [_row(n) for n in range(5)], page=2)
    result = client.fetch_dataframe(SID, "SELECT * FROM t", max_rows=3, timeout=5)

    assert (len(result.frame), result.total, result.truncated) == (3, 5, True)
    pages = [body for action, body in dlc.log if action == "DescribeNotebookSessionStatementSqlResult"]
    assert [page["MaxResults"] for page in pages] == [3, 1]


def test_an_empty_result_keeps_its_schema(dlc: FakeDlc, client: SessionsClient) -> None:
    _sql_statement(dlc, [], page=2)
    result = client.fetch_dataframe(SID, "SELECT * FROM t WHERE false", timeout=5)
    assert len(result.frame) == 0 and str(result.frame.dtypes.iloc[0]) == "int64"


# -- mapping details ---------------------------------------------------------------------------------


def test_epoch_ms_reads_dlcs_time_forms() -> None:
    assert epoch_ms("1714550400") == epoch_ms(1714550400000) == 1714550400000
    assert epoch_ms("2024-05-01 16:00:00") == 1714550400000  # Beijing time
    assert epoch_ms("2024-05-01T08:00:00+00:00") == 1714550400000
    assert epoch_ms("") is None and epoch_ms("soon") is None


@pytest.mark.parametrize("text", ["²", "٢", "1²", "9" * 40, "-1"])
def test_epoch_ms_is_none_for_what_is_not_ascii_digits_or_a_date(text: str) -> None:
    assert epoch_ms(text) is None  # never int()'s ValueError, nor a 40-digit "time"


@pytest.mark.parametrize("value", ["²", "٢", "1²", "9" * 40, -1, True])
def test_a_statement_id_of_unicode_digits_is_a_client_error(value: Any) -> None:
    assert statement_id(" 7 ") == statement_id(7) == 7
    with pytest.raises(ClientError, match=r"statement id that is not a number"):
        statement_id(value)


def test_the_size_table_is_one_cu_per_core_and_four_gb() -> None:
    assert {name: (cores, mb // 1024) for name, (cores, mb) in SIZES.items()} == {
        "small": (1, 4), "medium": (2, 8), "large": (4, 16), "xlarge": (8, 32),
    }  # fmt: skip
    assert DlcDialect(REGION).name == "dlc"


def test_a_failed_query_raises_its_error_without_reading_a_result(
    dlc: FakeDlc, client: SessionsClient
) -> None:
    from dli_kernel.client import StatementFailed

    failed = {"Status": "error", "ErrorName": "AnalysisException", "ErrorValue": "no such table t"}
    dlc.answers["CreateNotebookSessionStatement"] = {"NotebookSessionStatement": statement_info(0, "q")}
    dlc.answers["DescribeNotebookSessionStatement"] = {
        "NotebookSessionStatement": statement_info(0, "q", "error", OutPut=failed)
    }
    with pytest.raises(StatementFailed, match="the query failed: AnalysisException: no such table t"):
        client.fetch_dataframe(SID, "SELECT * FROM t", timeout=5)
    assert "DescribeNotebookSessionStatementSqlResult" not in dlc.actions()
    assert client._sql_results == {}
