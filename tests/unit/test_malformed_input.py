"""Malformed requests on every path family, over the real SessionManager with fake drivers: each is refused
with 400 (or DLC's error shape) and one sentence before anything is made, nothing answers 500, and a
statement that breaks the server's own code ends as an error without taking its session's worker down.

Issue 15: lone surrogates in JSON strings (items 1), non-Latin-1 text in paths (2), deep JSON and bodies
parsed off the event loop (5), ids that are not ASCII decimal in canonical form (8).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from dli_kernel.protocol import DLC_API_VERSION, DLC_PATH
from dli_kernel.server import json_body
from dli_kernel.server.app import create_app, session_routes
from dli_kernel.server.driver_process import ExecutionResult
from dli_kernel.server.endpoints import DLI, LIVY
from dli_kernel.server.manager import ManagedSession, SessionManager
from dli_kernel.spec import SessionSpec, parse_id
from tests.unit.fake_manager import on_event_loop
from tests.unit.manager_fakes import FakeDriver, FakeLauncher, make_manager, wait_state

if TYPE_CHECKING:
    from httpx2 import Response

TOKEN = "malformed-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROJECT = "0123abcd"
SURROGATE_CODE = b'{"code": "x = \\"\\ud800\\""}'
PREFIXES = ["", f"/v2.0/{PROJECT}"]


@dataclass
class Server:
    manager: SessionManager
    launcher: FakeLauncher
    client: TestClient

    def session(self, name: str | None = None) -> tuple[ManagedSession, FakeDriver]:
        """A new idle session (of ``name``) and its driver."""
        session = self.manager.create(SessionSpec(kind="pyspark", name=name))
        driver = self.launcher.next_driver()
        wait_state(self.manager, session, "idle")
        return session, driver

    def post(self, path: str, raw: bytes) -> Response:
        return self.client.post(path, content=raw, headers={"Content-Type": "application/json"})

    def dlc(self, action: str, raw: bytes) -> dict[str, Any]:
        """``raw`` sent as DLC ``action``, signed as Tencent's SDK signs it; the answer's Response."""
        from tencentcloud.common.credential import Credential

        from dli_kernel.client.tc3 import TencentTC3

        now = int(time.time())
        signer = TencentTC3(Credential("AKIDmalformed", TOKEN))
        host = "testserver"
        headers = {
            "Content-Type": "application/json",
            "Host": host,
            "X-TC-Timestamp": str(now),
            "X-TC-Action": action,
            "X-TC-Version": DLC_API_VERSION,
            "X-TC-Region": "ap-guangzhou",
            "Authorization": signer.authorization(
                "AKIDmalformed", TOKEN, "POST", host, "application/json", raw, now
            ),
        }
        reply = self.client.post(DLC_PATH, content=raw, headers=headers)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()["Response"]
        return answer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    launcher = FakeLauncher()
    manager = make_manager(tmp_path, launcher)
    app = create_app(manager, TOKEN, "http://127.0.0.1:8998")
    try:
        with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
            yield Server(manager, launcher, client)
    finally:
        manager.close()


def one_sentence(reply: Response, status: int = 400) -> str:
    assert reply.status_code == status, reply.text
    message: str = reply.json()["msg"]
    assert "\n" not in message and message.endswith(".") and len(message) < 400, message
    return message


def session_path(prefix: str, session: ManagedSession) -> str:
    return f"{prefix}/sessions/{session.uuid if prefix else session.id}"


def run_one(server: Server, session: ManagedSession, driver: FakeDriver, prefix: str = "") -> None:
    """A good statement still runs in ``session`` and comes back ``available``."""
    reply = server.client.post(f"{session_path(prefix, session)}/statements", json={"code": "1 + 1"})
    assert reply.status_code == 201, reply.text
    driver.next_run().finish(text="2")
    statement = session.statements[reply.json()["id"]]
    wait_state(server.manager, session, "available", statement=statement)
    assert statement.output == {"status": "ok", "execution_count": statement.id, "data": {"text/plain": "2"}}


# -- item 1: lone surrogates ------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_lone_surrogate_in_code_is_refused_before_the_statement_is_made(
    server: Server, prefix: str
) -> None:
    session, driver = server.session()
    message = one_sentence(server.post(f"{session_path(prefix, session)}/statements", SURROGATE_CODE))
    assert "surrogate" in message and "\\ud800" in message and "'code'" in message
    assert session.statements == [] and session.state == "idle"
    assert server.client.get(f"{session_path(prefix, session)}/statements").status_code == 200
    run_one(server, session, driver, prefix)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind": "pyspark", "name": "\\ud800"}',
        b'{"kind": "pyspark", "name": "ok", "conf": {"spark.x": "\\udfff"}}',
        b'{"kind": "pyspark", "conf": {"\\ud83d": "1"}}',  # a high surrogate without its low half, in a key
        b'{"kind": "pyspark", "jars": ["a.jar", "\\udc00b.jar"]}',
    ],
)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_lone_surrogate_anywhere_in_a_new_session_is_refused_and_nothing_is_made(
    server: Server, prefix: str, raw: bytes
) -> None:
    body = json.loads(raw)
    if prefix:
        body["cluster_name"] = "c1"
    raw = json.dumps(body).encode()  # json.dumps writes the surrogate as its \u escape again
    message = one_sentence(server.post(f"{prefix}/sessions", raw))
    assert "surrogate" in message
    assert server.manager.list(["not_started", "starting", "idle", "busy", "error", "dead"]) == []
    listed = server.client.get(f"{prefix}/sessions")
    assert listed.status_code == 200 and listed.json()["total"] == 0


def test_a_surrogate_pair_is_one_character_and_welcome(server: Server) -> None:
    reply = server.post("/sessions", b'{"kind": "pyspark", "name": "\\ud83d\\ude00 nb"}')
    assert reply.status_code == 201, reply.text
    assert reply.json()["name"] == "\U0001f600 nb"


def test_a_surrogate_encoded_as_utf8_bytes_is_refused(server: Server) -> None:
    """json.loads of bytes lets CESU-8 bytes through as surrogates ('surrogatepass'); the server does not."""
    session, _driver = server.session()
    message = one_sentence(server.post(f"/sessions/{session.id}/statements", b'{"code": "\xed\xa0\x80"}'))
    assert "UTF-8" in message
    assert session.statements == []


def test_a_body_in_utf16_is_refused(server: Server) -> None:
    message = one_sentence(server.post("/sessions", json.dumps({"kind": "pyspark"}).encode("utf-16")))
    assert "UTF-8" in message
    assert server.manager.list() == []


def test_a_lone_surrogate_in_completion_code_is_refused(server: Server) -> None:
    session, _driver = server.session()
    message = one_sentence(server.post(f"/sessions/{session.id}/completion", b'{"code": "sp\\ud800"}'))
    assert "surrogate" in message


@pytest.mark.parametrize(
    ("action", "field"),
    [
        ("CreateNotebookSessionStatement", "Code"),
        ("CreateNotebookSession", "Name"),
    ],
)
def test_dlc_actions_refuse_lone_surrogates(server: Server, action: str, field: str) -> None:
    session, driver = server.session()
    body = {
        "CreateNotebookSessionStatement": {"SessionId": session.uuid, "Code": "x = '\ud800'"},
        "CreateNotebookSession": {"Name": "nb\ud800", "Kind": "pyspark", "DataEngineName": "e"},
    }[action]
    answer = server.dlc(action, json.dumps(body).encode())
    assert answer["Error"]["Code"] == "InvalidParameter", answer
    assert "surrogate" in answer["Error"]["Message"] and repr(field) in answer["Error"]["Message"]
    assert session.statements == [] and len(server.manager.list()) == 1
    run_one(server, session, driver)


def test_stored_values_no_input_check_saw_are_still_rendered(server: Server) -> None:
    """A record from before the input checks (or made in Python) holds what it holds: views never 500."""
    session, driver = server.session(name="old")
    object.__setattr__(session.spec, "name", "old\ud800")
    statement = server.manager.submit(session, "x = '\udfff'", None, 10)
    driver.next_run().finish(ExecutionResult(status="ok", data={"application/json": {"v": math.nan}}))
    wait_state(server.manager, session, "available", statement=statement)
    for path in (
        "/sessions",
        f"/sessions/{session.id}",
        f"/v2.0/{PROJECT}/sessions/{session.uuid}",
        f"/sessions/{session.id}/statements",
        f"/sessions/{session.id}/statements/0",
        f"/sessions/{session.id}/statements/0?wait=0.01",
    ):
        reply = server.client.get(path)
        assert reply.status_code == 200, (path, reply.text)
        reply.json()  # valid JSON: the surrogate as its \u escape, NaN as null
    assert server.client.get(f"/sessions/{session.id}").json()["name"] == "old\ud800"
    listed = server.dlc("DescribeNotebookSessions", b"{}")
    assert "Error" not in listed and listed["Sessions"][0]["Name"] == "old\ud800"


# -- item 1: a statement that breaks the server's code never kills the worker -------------------------


def test_an_unexpected_error_running_a_statement_ends_that_statement_only(server: Server) -> None:
    session, driver = server.session()
    real_execute = driver.execute

    def broken(code: str, *args: Any, **kwargs: Any) -> ExecutionResult:
        if "boom" in code:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return real_execute(code, *args, **kwargs)

    driver.execute = broken  # type: ignore[method-assign]
    bad = server.manager.submit(session, "boom", None, 10)
    wait_state(server.manager, session, "error", statement=bad)
    assert bad.output is not None and bad.output["status"] == "error"
    assert bad.output["ename"] == "InternalError" and "UnicodeEncodeError" in bad.output["evalue"]
    assert session.state in ("idle", "busy") and not session.ended
    assert server.client.get(f"/sessions/{session.id}/statements").status_code == 200
    run_one(server, session, driver)


def test_an_error_in_the_workers_loop_ends_the_session_dead_with_a_reason(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, _driver = server.session()

    def broken(*args: Any) -> None:
        raise RuntimeError("the queue broke")

    # The worker waits in _next already: what it calls there once a statement comes is what fails.
    monkeypatch.setattr(server.manager._states, "run", broken)
    server.manager.submit(session, "1", None, 10)
    wait_state(server.manager, session, "dead")
    assert session.ended_reason is not None and "RuntimeError" in session.ended_reason
    assert all(s.state not in ("waiting", "running") for s in session.statements)


# -- item 2: text beyond Latin-1 in paths ------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_statement_on_a_session_named_in_chinese_is_made_once_with_an_encoded_location(
    server: Server, prefix: str
) -> None:
    session, driver = server.session(name="测试")
    reply = server.client.post(f"{prefix}/sessions/测试/statements", json={"code": "1"})
    assert reply.status_code == 201, reply.text
    assert reply.headers["Location"] == f"{prefix}/sessions/{quote('测试')}/statements/0"
    assert reply.headers["Location"].isascii()
    assert len(session.statements) == 1
    driver.next_run().finish(text="1")
    assert server.client.get(f"{prefix}/sessions/测试/statements/0?wait=5").json()["state"] == "available"


@pytest.mark.parametrize("project", ["项", "a b", "a/b", "-a", "x" * 65, "p\u00e9"])
def test_a_dli_project_id_that_is_not_one_is_refused_before_anything_is_made(
    server: Server, project: str
) -> None:
    reply = server.client.post(
        f"/v2.0/{quote(project, safe='')}/sessions", json={"kind": "pyspark", "cluster_name": "c"}
    )
    if project == "a/b":  # no route: the slash splits the path
        assert reply.status_code == 404
    else:
        assert "project id" in one_sentence(reply)
        assert one_sentence(server.client.get(f"/v2.0/{quote(project, safe='')}/sessions")).startswith("the")
    assert server.manager.list() == []


def test_a_dli_session_location_is_under_its_project(server: Server) -> None:
    reply = server.client.post(f"/v2.0/{PROJECT}/sessions", json={"kind": "pyspark", "cluster_name": "c"})
    assert reply.status_code == 201
    assert reply.headers["Location"] == f"/v2.0/{PROJECT}/sessions/{reply.json()['id']}"


# -- item 5: bodies and their depth --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"code": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"code": "1", "x": ' + b'{"a": ' * 65 + b"1" + b"}" * 65 + b"}",
    ],
    ids=["unclosed", "2000-deep", "65-deep"],
)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_json_nested_too_deep_is_refused(server: Server, prefix: str, raw: bytes) -> None:
    session, _driver = server.session()
    message = one_sentence(server.post(f"{session_path(prefix, session)}/statements", raw))
    assert "nested" in message and "64" in message
    assert session.statements == []


def test_json_depth_is_counted_exactly() -> None:
    assert json_body.load_json(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(json_body.BodyError):
        json_body.load_json(b"[" * 65 + b"]" * 65)
    brackets_in_a_string = json.dumps({"code": "[" * 10_000}).encode()
    assert json_body.load_json(brackets_in_a_string) == {"code": "[" * 10_000}


def test_dlc_refuses_deep_json(server: Server) -> None:
    answer = server.dlc("DescribeNotebookSessions", b'{"Filters": ' + b"[" * 3000 + b"]" * 3000 + b"}")
    assert answer["Error"]["Code"] == "InvalidParameter" and "nested" in answer["Error"]["Message"]


@pytest.mark.parametrize(
    "raw",
    [b'{"code": "1", "maxRows": ' + b"9" * 5000 + b"}", b'{"code": "1", "maxRows": 1e400}'],
    ids=["5000-digit int", "infinite float"],
)
def test_numbers_beyond_reason_in_a_body_are_refused(server: Server, raw: bytes) -> None:
    session, _driver = server.session()
    one_sentence(server.post(f"/sessions/{session.id}/statements", raw))
    assert session.statements == []


def test_bodies_are_parsed_off_the_event_loop(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bool] = []
    real = json_body.load_json

    def noted(raw: bytes) -> Any:
        parsed.append(on_event_loop())
        return real(raw)

    monkeypatch.setattr(json_body, "load_json", noted)
    session, _driver = server.session()
    for path, body in (
        ("/sessions", {"kind": "pyspark"}),
        (f"/v2.0/{PROJECT}/sessions", {"kind": "pyspark", "cluster_name": "c"}),
        (f"/sessions/{session.id}/statements", {"code": "1"}),
        (f"/v2.0/{PROJECT}/sessions/{session.uuid}/statements", {"code": "1"}),
        (f"/sessions/{session.id}/completion", {"code": "sp"}),
    ):
        assert server.client.post(path, json=body).status_code < 300
    assert "Error" not in server.dlc("DescribeNotebookSessions", b"{}")
    assert parsed == [False] * 6


# -- item 8: ids are ASCII decimal in canonical form, the exact uuid, or the exact name -----------------


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("7", 7), ("123456", 123456)])
def test_canonical_ids(text: str, number: int) -> None:
    assert parse_id(text) == number


@pytest.mark.parametrize("text", ["00", "007", "0123456", "\u0662", "\u00b2", "9" * 19, "9" * 5000, "", "+1"])
def test_not_ids(text: str) -> None:
    assert parse_id(text) is None


def every_route() -> list[tuple[str, str]]:
    """Every route of both path families that names a session."""
    return [
        (method, route.path)
        for route in (*session_routes(LIVY), *session_routes(DLI))
        if "{session_id}" in route.path
        for method in route.methods or ()
        if method != "HEAD"
    ]


def test_no_id_in_another_form_names_a_session_or_statement_on_any_route(server: Server) -> None:
    session, driver = server.session()
    statement = server.manager.submit(session, "1", None, 10)
    driver.next_run().finish(text="1")
    wait_state(server.manager, session, "available", statement=statement)
    number = str(session.id)
    arabic = number.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    superscript = number.translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    for method, template in every_route():
        for session_key, statement_key in (
            ("0" + number, "0"),
            (arabic, "0"),
            (quote(superscript), "0"),
            ("9" * 5000, "0"),
            (number, "00"),
            (number, "\u0660"),
            (number, "%C2%B2"),
            (number, "9" * 5000),
        ):
            if "{statement_id}" not in template and statement_key != "0":
                continue
            path = template.format(project_id=PROJECT, session_id=session_key, statement_id=statement_key)
            body = {"code": "1"} if method == "POST" else None
            reply = server.client.request(method, path, json=body)
            assert reply.status_code == 404, (method, path[:80], reply.text)
            assert "does not exist" in one_sentence(reply, 404)
    assert len(session.statements) == 1 and session.state == "idle"


def test_a_session_named_with_leading_zeros_is_found_by_its_name(server: Server) -> None:
    session, _driver = server.session(name="007")
    assert server.client.get("/sessions/007").json()["id"] == session.id


@pytest.mark.parametrize("name", ["from", "size"])
@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000, "01x", "-1"])
@pytest.mark.parametrize("path", ["/sessions", f"/v2.0/{PROJECT}/sessions", "LOG"])
def test_query_numbers_are_ascii_decimal(server: Server, name: str, value: str, path: str) -> None:
    if path == "LOG":
        session, _driver = server.session()
        path = f"/sessions/{session.id}/log"
    assert repr(name) in one_sentence(server.client.get(path, params={name: value}))


@pytest.mark.parametrize("value", ["\u0662", "1e5000", "nan", "inf", "-1", "1_0", "\u00b2", "9" * 5000])
def test_wait_is_an_ascii_number_of_seconds(server: Server, value: str) -> None:
    session, _driver = server.session()
    server.manager.submit(session, "1", None, 10)
    for path in (
        f"/sessions/{session.id}",
        f"/sessions/{session.id}/state",
        f"/sessions/{session.id}/statements/0",
        f"/v2.0/{PROJECT}/sessions/{session.uuid}/statements/0",
    ):
        assert "'wait'" in one_sentence(server.client.get(path, params={"wait": value}))


@pytest.mark.parametrize("cursor", ["\u0662", "9" * 5000, 10**30, -1, "1.5"])
def test_a_completion_cursor_is_a_position_in_the_code(server: Server, cursor: object) -> None:
    session, _driver = server.session()
    reply = server.client.post(f"/sessions/{session.id}/completion", json={"code": "sp", "cursor": cursor})
    assert "'cursor'" in one_sentence(reply)


def test_dlc_ids_and_numbers_in_other_forms_name_nothing(server: Server) -> None:
    session, driver = server.session()
    statement = server.manager.submit(session, "1", None, 10)
    driver.next_run().finish(text="1")
    wait_state(server.manager, session, "available", statement=statement)
    for body, code in (
        ({"SessionId": session.uuid, "StatementId": "00"}, "ResourceNotFound"),
        ({"SessionId": session.uuid, "StatementId": "\u0660"}, "ResourceNotFound"),
        ({"SessionId": session.uuid, "StatementId": "9" * 5000}, "ResourceNotFound"),
        ({"TaskId": f"{session.uuid}.00"}, "ResourceNotFound"),
        ({"SessionId": "0" + str(session.id), "StatementId": "0"}, "ResourceNotFound.SessionNotFound"),
    ):
        answer = server.dlc("DescribeNotebookSessionStatement", json.dumps(body).encode())
        assert answer["Error"]["Code"] == code, (body, answer)
    for raw in (b'{"Limit": ' + b"9" * 5000 + b"}", b'{"Offset": 1e999}', b'{"Limit": "\xd9\xa2"}'):
        answer = server.dlc("DescribeNotebookSessions", raw)
        assert answer["Error"]["Code"] in ("InvalidParameter", "InvalidParameterValue"), answer
    for token in ("9" * 5000, "\u0662", "1e3"):
        body = {"TaskId": f"{session.uuid}.0", "NextToken": token}
        answer = server.dlc("DescribeNotebookSessionStatementSqlResult", json.dumps(body).encode())
        assert answer["Error"]["Code"] == "InvalidParameterValue", answer


def test_a_stored_name_with_a_lone_surrogate_is_listed_after_a_restart(tmp_path: Path) -> None:
    """The issue's store held such a name, and every GET /sessions after a restart was a 500."""
    launcher = FakeLauncher()
    manager = make_manager(tmp_path, launcher)
    session = manager.create(SessionSpec(kind="pyspark", name="old"))
    launcher.next_driver()
    wait_state(manager, session, "idle")
    object.__setattr__(session.spec, "name", "old\ud800")
    manager._states.set_state(session, "idle")  # saved as the server before the checks saved it
    manager.close()
    restarted = make_manager(tmp_path, FakeLauncher())
    try:
        with TestClient(create_app(restarted, TOKEN, "http://x"), headers=AUTH) as client:
            # The server that stopped ended it (success); its record, name and all, is what was loaded.
            reply = client.get("/sessions", params={"state": "success"})
            assert reply.status_code == 200 and reply.json()["sessions"][0]["name"] == "old\ud800"
    finally:
        restarted.close()
