"""The sessions client against the real embedded server, in each dialect the server speaks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dli_kernel.client import BadRequest, Conflict, NotFound, SessionsClient, StatementInfo, Unauthorized
from dli_kernel.client.auth import BearerToken, IamToken
from dli_kernel.spec import SessionSpec
from tests.integration.conftest import Server, wait_until


@pytest.fixture(params=["livy", "local"])
def client(request: pytest.FixtureRequest, server: Server) -> Iterator[SessionsClient]:
    with SessionsClient(server.url, request.param, auth=BearerToken(server.token)) as client:
        yield client


def _wait(client: SessionsClient, session_id: str, statement_id: int) -> dict:
    def finished() -> StatementInfo | None:
        statement = client.get_statement(session_id, statement_id)
        return statement if statement.done else None

    output = wait_until(finished, f"statement {statement_id} to finish", 120, 0.02).output
    assert output is not None
    return output


def test_statements_on_the_shared_session(client: SessionsClient, server: Server, pyspark: int) -> None:
    session_id = (
        str(pyspark) if client.dialect.name == "livy" else server.get(f"/sessions/{pyspark}").json()["uuid"]
    )
    info = client.get_session(session_id)
    assert info.state == "idle" and (info.app_id or "").startswith("local-") and info.kind == "pyspark"
    assert (info.spark_ui_url or "").startswith("http://127.0.0.1:")

    statement = client.submit(session_id, "6 * 7")
    assert _wait(client, session_id, statement.id)["data"]["text/plain"] == "42"
    rows = client.submit(session_id, "SELECT * FROM range(10)", kind="sql", max_rows=3)
    result = _wait(client, session_id, rows.id)["data"]["application/json"]
    if client.dialect.extensions:
        # The rows past the cap are not counted: the total is the lower bound rows + 1, said to be one.
        assert len(result["data"]) == 3 and (result["total"], result["totalKnown"]) == (4, False)
    else:  # plain Livy clients get the server's default cap
        assert len(result["data"]) == 10

    listed = client.list_statements(session_id)
    assert listed[-1].id == rows.id and listed[-1].code == "SELECT * FROM range(10)"
    page = client.logs(session_id, start=0, size=5)
    assert page.start == 0 and len(page.lines) == 5 and page.total >= 5
    assert "spark.range" in client.complete(session_id, "spark.ran", "pyspark", 9)


def test_session_lifecycle_and_errors(client: SessionsClient, server: Server) -> None:
    spec = SessionSpec(kind="sql", name=f"client-{client.dialect.name}", sc_type="B", heartbeat_timeout_s=60)
    created = client.create_session(spec)
    assert created.name == spec.name and created.state in ("not_started", "starting")
    assert created.raw["sc_type"] == ("B" if client.dialect.name == "local" else "CUSTOMIZED")
    assert any(s.id == created.id for s in client.list_sessions())
    client.delete_session(created.id)
    assert client.get_session(created.id).state == "killed"
    client.delete_session(created.id)  # already gone: done, not an error
    with pytest.raises(Conflict, match="cannot run statements"):
        client.submit(created.id, "SELECT 1")
    with pytest.raises(NotFound, match="does not exist"):
        client.get_session("999999")
    with pytest.raises(BadRequest, match="kind must be one of"):
        client.submit(
            str(server.live_sessions()[0]["id"])
            if client.dialect.name == "livy"
            else server.live_sessions()[0]["uuid"],
            "1",
            kind="cobol",
        )


def test_wrong_credentials(server: Server, pyspark: int) -> None:
    with (
        SessionsClient(server.url, "livy", auth=BearerToken("not-the-token")) as client,
        pytest.raises(Unauthorized) as caught,
    ):
        client.list_sessions()
    assert "not-the-token" not in str(caught.value)
    with SessionsClient(server.url, "dli", project_id="p1", auth=IamToken(server.token)) as client:
        listed = {session.id for session in client.list_sessions()}
    assert server.get(f"/sessions/{pyspark}").json()["uuid"] in listed  # a real answer, not only no error
