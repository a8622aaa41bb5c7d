"""Large statement outputs spilled to files (server/outputs.py, output_http.py): what is written, what the
statement and its record keep, and how the whole output still reaches a Livy client. Fake drivers only."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from dli_kernel.server import output_http, outputs
from dli_kernel.server.driver_process import ExecutionResult
from dli_kernel.server.errors import EXCEPTION_HANDLERS
from dli_kernel.server.manager import SessionManager
from dli_kernel.server.outputs import SpilledOutput, keep, load, output_path
from dli_kernel.server.principal import operator
from dli_kernel.server.views import statement_json
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import FakeLauncher, make_manager, wait_state

LIMIT = 10_000  # bytes of JSON above which the tests' managers spill an output


def ok(text: str, execution_count: int = 0) -> dict[str, Any]:
    return {"status": "ok", "execution_count": execution_count, "data": {"text/plain": text}}


# -- outputs.keep and load ----------------------------------------------------------------------------


def test_an_output_at_most_the_threshold_is_kept_as_it_is(tmp_path: Path) -> None:
    output = ok("x" * 100)
    path = tmp_path / "outputs" / "0.json"
    assert keep(output, path, 10_000) is output
    assert keep(None, path, 10) is None
    assert keep(ok("x" * 10**6), path, None) == ok("x" * 10**6)
    assert not path.parent.exists()


@pytest.mark.parametrize(
    "text",
    [
        "x" * 3_000_000,  # longer than the pieces a long string is encoded in
        "行\n" * 400_000 + 'é\t"\\ \x00 \U0001f600',  # non-ASCII and characters JSON escapes
        "a\ud800b" * 100_000,  # a lone surrogate: JSON can say it, UTF-8 cannot
    ],
    ids=["ascii", "unicode", "lone-surrogate"],
)
def test_a_large_output_goes_to_a_file_that_reads_back_as_the_output(tmp_path: Path, text: str) -> None:
    output = {**ok(text, 7), "data": {"text/plain": text, "application/json": {"rows": [[1, "a"]]}}}
    path = tmp_path / "outputs" / "7.json"
    kept = keep(output, path, 10_000)
    assert isinstance(kept, SpilledOutput)
    assert kept.path == path and kept.size == path.stat().st_size
    assert json.loads(path.read_bytes()) == output
    # The file is what Starlette's JSONResponse would have sent, byte for byte, wherever UTF-8 can say it.
    if "\ud800" not in text:
        assert path.read_bytes() == JSONResponse(output).body
    assert [p.name for p in path.parent.iterdir()] == ["7.json"]  # no partial file left behind
    assert load(kept) == output


def test_what_strict_json_cannot_say_is_written_as_the_routes_write_it(tmp_path: Path) -> None:
    deep: Any = "bottom"
    for _ in range(5000):
        deep = [deep]
    data = {"text/plain": "x" * 20_000, "application/json": {"n": float("nan"), "deep": deep}}
    kept = keep({"status": "ok", "execution_count": 0, "data": data}, tmp_path / "0.json", 10_000)
    assert isinstance(kept, SpilledOutput)
    written = json.loads(kept.path.read_bytes())  # strict JSON: no NaN, nothing a decoder cannot read
    assert written["data"]["text/plain"] == "x" * 20_000
    assert written["data"]["application/json"]["n"] is None


def test_the_stub_of_a_spilled_output_says_what_it_is_and_where_the_rest_is(tmp_path: Path) -> None:
    text = "".join(f"line {n}\n" for n in range(100_000))
    kept = keep(ok(text, 3), tmp_path / "3.json", 10_000)
    assert isinstance(kept, SpilledOutput)
    assert kept["status"] == "ok" and kept["execution_count"] == 3
    preview = kept["data"]["text/plain"]
    assert preview.startswith(text[: outputs.PREVIEW_CHARS])
    assert f"{kept.size:,} bytes" in preview and "/output" in preview
    assert len(json.dumps(dict(kept))) < 2 * outputs.PREVIEW_CHARS


def test_the_stub_of_a_large_error_keeps_its_name_and_the_start_of_its_message(tmp_path: Path) -> None:
    error = {
        "status": "error",
        "execution_count": 1,
        "ename": "ValueError",
        "evalue": "bad " * 10_000,
        "traceback": ["frame\n"] * 10_000,
    }
    kept = keep(error, tmp_path / "1.json", 10_000)
    assert isinstance(kept, SpilledOutput)
    assert kept["ename"] == "ValueError"
    assert kept["evalue"].startswith("bad bad") and "/output" in kept["evalue"]
    assert kept["traceback"] == [] and "data" not in kept
    assert load(kept) == error


def test_a_file_that_cannot_be_written_raises_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "outputs").write_text("a file where the directory should be")
    with pytest.raises(OSError):
        keep(ok("x" * 20_000), tmp_path / "outputs" / "0.json", 10_000)


def test_load_of_a_spilled_output_whose_file_is_gone_is_its_stub(tmp_path: Path) -> None:
    kept = keep(ok("x" * 20_000), tmp_path / "0.json", 10_000)
    assert isinstance(kept, SpilledOutput)
    kept.path.unlink()
    assert load(kept) == dict(kept)


# -- through the manager ---------------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path, launcher: FakeLauncher) -> Iterator[SessionManager]:
    manager = make_manager(tmp_path, launcher, output_spill_bytes=LIMIT)
    yield manager
    manager.close()


def run_statement(manager: SessionManager, launcher: FakeLauncher, text: str, session: Any = None) -> Any:
    """A session (new unless given) and its statement that printed ``text``, once available."""
    session = session or manager.create(SessionSpec())
    wait_state(manager, session, "idle")
    statement = manager.submit(session, "print(big)", None, 1000)
    driver = next(d for d in launcher.drivers if d.workdir == session.workdir)
    driver.next_run().finish(text=text)
    wait_state(manager, session, "available", statement=statement)
    wait_state(manager, session, "idle")
    return session, statement


def stored_statement(tmp_path: Path, session_id: int, statement_id: int) -> str:
    db = sqlite3.connect(tmp_path / "state" / "sessions.db")
    try:
        (record,) = db.execute(
            "SELECT record FROM statements WHERE session_id = ? AND id = ?", (session_id, statement_id)
        ).fetchone()
    finally:
        db.close()
    return record


def test_a_large_output_is_held_and_stored_as_a_stub_and_its_file(
    tmp_path: Path, manager: SessionManager, launcher: FakeLauncher
) -> None:
    text = "y" * 200_000
    session, statement = run_statement(manager, launcher, text)
    assert isinstance(statement.output, SpilledOutput)
    assert statement.output.path == output_path(session.workdir, statement.id)
    assert json.loads(statement.output.path.read_bytes())["data"]["text/plain"] == text
    record = stored_statement(tmp_path, session.id, statement.id)
    assert len(record) < 2 * outputs.PREVIEW_CHARS
    assert json.loads(record)["spilled"] == statement.output.size


def test_a_small_output_stays_whole_in_memory_and_in_the_store(
    tmp_path: Path, manager: SessionManager, launcher: FakeLauncher
) -> None:
    session, statement = run_statement(manager, launcher, "small")
    assert type(statement.output) is dict and statement.output["data"]["text/plain"] == "small"
    assert json.loads(stored_statement(tmp_path, session.id, statement.id))["output"] == statement.output
    assert not (session.workdir / outputs.OUTPUTS_DIR).exists()


def test_an_output_that_cannot_be_spilled_is_kept_whole_and_the_log_says_why(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec())
    wait_state(manager, session, "idle")
    (session.workdir / outputs.OUTPUTS_DIR).write_text("in the way")
    session, statement = run_statement(manager, launcher, "z" * 50_000, session)
    assert type(statement.output) is dict and statement.output["data"]["text/plain"] == "z" * 50_000
    assert any("could not be written" in line for line in session.log_lines()[2])


def test_an_error_output_spills_too(manager: SessionManager, launcher: FakeLauncher) -> None:
    session = manager.create(SessionSpec())
    wait_state(manager, session, "idle")
    statement = manager.submit(session, "raise", None, 1000)
    launcher.drivers[0].next_run().finish(
        ExecutionResult(status="error", ename="E", evalue="v" * 50_000, traceback=["t\n"])
    )
    wait_state(manager, session, "error", "available", statement=statement)
    assert isinstance(statement.output, SpilledOutput)
    assert load(statement.output)["evalue"] == "v" * 50_000  # type: ignore[index]


def test_a_restarted_server_knows_the_spilled_output_again(tmp_path: Path, launcher: FakeLauncher) -> None:
    first = make_manager(tmp_path, launcher, output_spill_bytes=LIMIT, keep_sessions_on_exit=True)
    session, statement = run_statement(first, launcher, "w" * 100_000)
    spilled = statement.output
    first.close()
    second = make_manager(tmp_path, launcher, output_spill_bytes=LIMIT, attach=lambda workdir: None)
    try:
        again = second.statement(second.get(str(session.id)), str(statement.id))
        assert isinstance(again.output, SpilledOutput)
        assert isinstance(spilled, SpilledOutput)
        assert (again.output.path, again.output.size, dict(again.output)) == (
            spilled.path,
            spilled.size,
            dict(spilled),
        )
        assert load(again.output)["data"]["text/plain"] == "w" * 100_000  # type: ignore[index]
    finally:
        second.close()


# -- on the wire -----------------------------------------------------------------------------------


class AsOperator:
    """What the token check does for the routes: the request's user (here always the operator)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["user"] = operator()
        await self.app(scope, receive, send)


def wire_app(manager: SessionManager) -> TestClient:
    """The statement routes as the endpoints answer them with ``statement_response``, and the output route."""

    def session_and_statement(request: Request) -> Any:
        session = manager.get(request.path_params["session_id"])
        return session, manager.statement(session, request.path_params["statement_id"])

    async def get_statement(request: Request) -> Response:
        return output_http.statement_response(statement_json(session_and_statement(request)[1]))

    async def list_statements(request: Request) -> Response:
        session = manager.get(request.path_params["session_id"])
        statements = [statement_json(s) for s in session.statements]
        return output_http.statement_response({"total_statements": len(statements), "statements": statements})

    statement = "/sessions/{session_id}/statements/{statement_id}"
    app = Starlette(
        routes=[
            Route("/sessions/{session_id}/statements", list_statements),
            Route(statement, get_statement),
            Route(statement + "/output", output_http.statement_output),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.manager = manager
    app.add_middleware(AsOperator)
    return TestClient(app)


def test_a_statement_get_sends_the_whole_spilled_output_as_livy_does(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    text = "".join(f"row {n}, ünïcode\n" for n in range(20_000))
    session, statement = run_statement(manager, launcher, text)
    assert isinstance(statement.output, SpilledOutput)
    with wire_app(manager) as client:
        response = client.get(f"/sessions/{session.id}/statements/{statement.id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert body["output"] == {"status": "ok", "execution_count": statement.id, "data": {"text/plain": text}}
    assert body["id"] == statement.id and body["state"] == "available" and body["code"] == "print(big)"


def test_the_statement_list_splices_every_spilled_output(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session, _ = run_statement(manager, launcher, "a" * 30_000)
    run_statement(manager, launcher, "small", session)
    run_statement(manager, launcher, "c" * 40_000, session)
    with wire_app(manager) as client:
        body = client.get(f"/sessions/{session.id}/statements").json()
    texts = [s["output"]["data"]["text/plain"] for s in body["statements"]]
    assert texts == ["a" * 30_000, "small", "c" * 40_000]


def test_without_a_spilled_output_the_answer_is_jsonresponses_own(tmp_path: Path) -> None:
    content = {"id": 1, "output": ok("é" * 10), "nested": [{"a": None}]}
    response = output_http.statement_response(content, headers={"x-a": "b"})
    assert isinstance(response, JSONResponse)
    assert response.body == JSONResponse(content).body and response.headers["x-a"] == "b"


def test_a_spilled_output_whose_file_is_gone_is_sent_as_its_stub(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session, statement = run_statement(manager, launcher, "q" * 30_000)
    assert isinstance(statement.output, SpilledOutput)
    statement.output.path.unlink()
    with wire_app(manager) as client:
        response = client.get(f"/sessions/{session.id}/statements/{statement.id}")
    assert response.status_code == 200
    assert response.json()["output"] == dict(statement.output)


def test_the_output_route_serves_a_spilled_output_by_range(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    text = "0123456789" * 5_000
    session, statement = run_statement(manager, launcher, text)
    whole = json.dumps(ok(text, statement.id), separators=(",", ":")).encode()
    path = f"/sessions/{session.id}/statements/{statement.id}/output"
    with wire_app(manager) as client:
        full = client.get(path)
        part = client.get(path, headers={"Range": "bytes=100-199"})
        tail = client.get(path, headers={"Range": "bytes=-20"})
        malformed = client.get(path, headers={"Range": "bytes=x-y"})
        beyond = client.get(path, headers={"Range": f"bytes={len(whole) + 10}-"})
    assert full.status_code == 200 and full.content == whole
    assert full.headers["accept-ranges"] == "bytes"
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    assert tail.status_code == 206 and tail.content == whole[-20:]
    assert (malformed.status_code, beyond.status_code) == (400, 416)  # refused, never a 500


def test_the_output_route_serves_a_small_output_whole_and_refuses_one_not_there_yet(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session, statement = run_statement(manager, launcher, "little")
    waiting = manager.submit(session, "1", None, 1000)
    with wire_app(manager) as client:
        small = client.get(f"/sessions/{session.id}/statements/{statement.id}/output")
        early = client.get(f"/sessions/{session.id}/statements/{waiting.id}/output")
        nowhere = client.get(f"/sessions/{session.id}/statements/99/output")
    assert small.status_code == 200 and small.json() == ok("little", statement.id)
    assert early.status_code == 409 and early.json()["msg"].endswith("has no output.")
    assert nowhere.status_code == 404


# -- memory -------------------------------------------------------------------------------------------


def test_spilling_and_serving_a_large_output_never_copies_it_whole(tmp_path: Path) -> None:
    text = "m" * 20_000_000
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        kept = keep(ok(text, 5), tmp_path / "5.json", LIMIT)
        _, spill_peak = tracemalloc.get_traced_memory()
        assert isinstance(kept, SpilledOutput)
        response = output_http.statement_response({"id": 5, "output": kept})
        assert isinstance(response, StreamingResponse)
        tracemalloc.reset_peak()
        sent = asyncio.run(drain(response))
        _, serve_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent == int(response.headers["content-length"]) > kept.size
    # The output is 20 MB; what writing and sending it hold at once is a piece of it.
    assert spill_peak < 4_000_000 and serve_peak < 2_000_000


def with_outputs(text: str, execution_count: int = 0) -> dict[str, Any]:
    """An output as a Python statement's comes from the real driver: its Jupyter outputs beside data."""
    return {
        **ok(text + "42", execution_count),
        "jupyterOutputs": [
            {"output_type": "stream", "name": "stdout", "text": text},
            {"output_type": "display_data", "data": {"text/html": "<b>é</b>", "text/plain": "x"}},
            {"output_type": "execute_result", "data": {"text/plain": "42"}},
        ],
    }


def test_a_large_output_with_jupyter_outputs_spills_whole_and_is_spliced_whole(tmp_path: Path) -> None:
    output = with_outputs("行\n" * 400_000, 3)
    kept = keep(output, tmp_path / "3.json", LIMIT)
    assert isinstance(kept, SpilledOutput)
    assert json.loads(kept.path.read_bytes()) == output
    assert kept.path.read_bytes() == JSONResponse(output).body
    assert "jupyterOutputs" not in kept  # the stub: a client without the file shows the text preview
    response = output_http.statement_response({"id": 3, "output": kept})
    assert isinstance(response, StreamingResponse)
    assert json.loads(b"".join(asyncio.run(collect_body(response)))) == {"id": 3, "output": output}


def test_spilling_jupyter_outputs_never_copies_their_text_whole(tmp_path: Path) -> None:
    output = with_outputs("m" * 20_000_000, 5)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        kept = keep(output, tmp_path / "5.json", LIMIT)
        _, spill_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(kept, SpilledOutput) and kept.size > 40_000_000
    assert spill_peak < 4_000_000


def test_an_output_nested_deep_in_lists_is_written_as_the_routes_write_it(tmp_path: Path) -> None:
    # A display of JSON a thousand lists deep: taking lists apart must not recurse without end.
    nested: list[Any] = []
    for _ in range(3000):
        nested = [nested]
    output = {**ok("x" * (LIMIT + 1), 2)}
    output["data"] = {**output["data"], "application/json": nested}
    output["jupyterOutputs"] = [{"output_type": "display_data", "data": {"application/json": nested}}]
    kept = keep(output, tmp_path / "2.json", LIMIT)
    assert isinstance(kept, SpilledOutput)
    whole = json.loads(kept.path.read_bytes())  # the too deep part shortened, as answers.JSONAnswer does
    assert whole["data"]["text/plain"] == output["data"]["text/plain"]
    assert whole["jupyterOutputs"][0]["output_type"] == "display_data"


async def collect_body(response: StreamingResponse) -> list[bytes]:
    return [piece async for piece in response.body_iterator]


async def drain(response: StreamingResponse) -> int:
    """Bytes of the body, read as Starlette sends it (each piece read from a worker thread)."""
    sent = 0
    async for piece in response.body_iterator:
        sent += len(piece)
    return sent
