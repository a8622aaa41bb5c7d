"""A large output on a real session: spilled to a file in the session's directory, sessions.db stays small,
and Livy clients still read the whole output from the statement's JSON (a third-party client included)."""

from __future__ import annotations

import json

import pytest
import requests
from livy.client import LivyClient

from tests.integration.conftest import Server

LINES = 400_000  # "line 000000 ...\n": about 20 MB of text/plain
CODE = f"print('\\n'.join(f'line {{n:06d}} ' + 'é' * 20 for n in range({LINES})))"


def expected_text() -> str:
    return "\n".join(f"line {n:06d} " + "é" * 20 for n in range(LINES))


@pytest.fixture(scope="module")
def large(server: Server, pyspark: int) -> dict:
    """The statement that printed the large output, done."""
    statement = server.submit(pyspark, CODE)
    return server.wait_statement(pyspark, statement["id"])


def test_a_large_output_reaches_a_livy_client_whole(server: Server, pyspark: int, large: dict) -> None:
    assert large["state"] == "available", large["output"]
    assert large["output"]["data"]["text/plain"] == expected_text()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {server.token}"
    client = LivyClient(server.url, requests_session=http)
    try:
        seen = client.get_statement(pyspark, large["id"])
    finally:
        client.close()
    assert seen.output is not None and seen.output.text == expected_text()
    listed = server.get(f"/sessions/{pyspark}/statements").json()["statements"]
    assert [s["output"] for s in listed if s["id"] == large["id"]] == [large["output"]]


def test_the_output_is_a_file_of_the_session_and_not_in_sessions_db(
    server: Server, pyspark: int, large: dict
) -> None:
    path = server.state_dir / "sessions" / str(pyspark) / "outputs" / f"{large['id']}.json"
    assert json.loads(path.read_bytes()) == large["output"]
    db = server.state_dir / "sessions.db"
    stored = sum(p.stat().st_size for p in (db, db.with_name("sessions.db-wal")) if p.exists())
    assert stored < 10_000_000  # the output alone is over 20 MB


def test_the_output_route_serves_it_by_range(server: Server, pyspark: int, large: dict) -> None:
    path = f"/sessions/{pyspark}/statements/{large['id']}/output"
    whole = server.get(path)
    assert whole.status_code == 200 and whole.json() == large["output"]
    part = server.get(path, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]
    session_uuid = server.get(f"/sessions/{pyspark}").json()["uuid"]
    dli = server.get(f"/v2.0/0123abcd/sessions/{session_uuid}/statements/{large['id']}")
    assert dli.json()["output"] == large["output"]
