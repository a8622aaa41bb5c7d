"""The dlc dialect of the client against the embedded server's DLC actions (over the fake manager, served
by uvicorn on 127.0.0.1): the two sides follow the SDK's models independently, and here they must agree."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dli_kernel.client import NotFound, SessionsClient, Unauthorized
from dli_kernel.client.tc3 import TencentTC3, tencent_credential
from dli_kernel.spec import SessionSpec
from tests.unit.fake_manager import FakeManager

uvicorn = pytest.importorskip("uvicorn")
from dli_kernel.server.app import create_app  # noqa: E402  (the server extra is there: uvicorn is)

TOKEN = "agreement-token-7c1d"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, FakeManager]]:
    manager = FakeManager(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(create_app(manager, TOKEN, url), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield url, manager
    finally:
        server.should_exit = True
        thread.join(10)


def client_for(url: str, key: str = TOKEN) -> SessionsClient:
    auth = TencentTC3(tencent_credential("alice", key))
    return SessionsClient(url, "dlc", region="ap-guangzhou", auth=auth, retry_delays=())


def test_sessions_statements_logs_and_sql_results_agree(served: tuple[str, FakeManager]) -> None:
    from tests.unit.test_dlc_server import sql_statement

    url, manager = served
    with client_for(url) as client:
        spec = SessionSpec(kind="pyspark", name="nb1", cluster_name="local", sc_type="B", conf={"a": "b"})
        created = client.create_session(spec)
        info = client.get_session(created.id)
        listed = client.list_sessions(name="nb1", state="not_started,starting,idle,busy")
        statement = client.submit(created.id, "1 + 1", kind="pyspark")
        again = client.get_statement(created.id, statement.id)
        statements = client.list_statements(created.id)
        client.cancel(created.id, statement.id)
        total = client.logs(created.id, size=0).total
        page = client.logs(created.id, start=0, size=3)
        sql = sql_statement(manager, manager.get(created.id), rows=2500)
        finished = client.get_statement(created.id, sql.id)
        client._sql_results[(created.id, sql.id)] = -1  # as submit_dataframe records it
        result = client.dataframe_result(created.id, finished)
        client.delete_session(created.id)
        with pytest.raises(NotFound):
            client.get_session("no-such-session")

    assert (created.kind, created.name) == ("pyspark", "nb1")
    assert (info.id, info.name, info.kind, info.owner) == (created.id, "nb1", "pyspark", "alice")
    assert (info.raw["cluster_name"], info.raw["conf"], info.raw["numExecutors"]) == ("local", {"a": "b"}, 7)
    assert [session.id for session in listed] == [created.id]
    assert (again.id, again.code, again.task_id) == (statement.id, "1 + 1", statement.task_id)
    assert [s.id for s in statements][:1] == [statement.id]
    assert total > 0 and page.start == 0 and len(page.lines) == min(3, total)
    assert (finished.state, finished.task_id is not None) == ("available", True)
    assert (len(result.frame), result.total, result.truncated) == (2500, 2500, False)
    assert list(result.frame.columns) == ["id", "name", "price", "tags"]
    assert str(result.frame["id"].dtype) == "int64" and result.frame["tags"][0] == ["a"]


def test_a_wrong_key_is_dlcs_auth_failure(served: tuple[str, FakeManager]) -> None:
    url, _ = served
    with client_for(url, key="not-the-token") as client, pytest.raises(Unauthorized) as caught:
        client.list_sessions()
    assert caught.value.code == "AuthFailure.SignatureFailure" and "not-the-token" not in str(caught.value)
