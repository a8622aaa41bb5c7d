"""A remote cell's value is its ``Out[n]``: the embedded server keeps a statement's Jupyter outputs apart
(the ``outputs`` extension), the PySpark kernel replays them, and Livy's clients read the same text as
before."""

from __future__ import annotations

from typing import Any

import pytest
from livy.client import LivyClient
from nbformat.v4 import new_code_cell, new_notebook

from dli_kernel.protocol import EXT_OUTPUTS, JUPYTER_OUTPUTS
from tests.integration.conftest import Server, wait_no_new_sessions
from tests.integration.test_notebooks import execute

CELLS = {
    "value": "21*2",
    "print_then_value": "print('a'); 21*2",
    "html": "from IPython.display import HTML, display\ndisplay(HTML('<b>shown</b>'))",
    "stderr": "import sys\nprint('to stderr', file=sys.stderr)\nprint('to stdout')",
    "none": "None",
    "semicolon": "21*2;",
    "error": "print('before'); 1/0",
    "frame": "spark.range(2).toPandas()",
    "scala": "%%spark\nval x = 21*2\nx",
    "scala_definition": "%%spark\nval y = x + 1",
}


def outputs(cell: Any, *kinds: str, stderr: bool = False) -> list[dict[str, Any]]:
    """The cell's outputs of ``kinds``, streams to stdout only unless ``stderr``. Left
    out: the session log's lines on stderr (the Scala interpreter's start, Spark's warnings) and the
    status line a statement slower than a second leaves (a display of "done in 1.5 s")."""
    found = [dict(output) for output in cell.outputs if output["output_type"] in kinds]
    found = [o for o in found if o.get("name") != "stderr" or stderr]
    return [o for o in found if not str(o.get("data", {}).get("text/plain", "")).startswith("done in ")]


def streams(cell: Any, name: str) -> str:
    return "".join(o["text"] for o in outputs(cell, "stream", stderr=True) if o["name"] == name)


@pytest.fixture(scope="module")
def notebook(
    kernel_env: dict[str, Any], server: Server, monkeypatch_module: pytest.MonkeyPatch
) -> dict[str, Any]:
    """One PySpark notebook, run by nbclient as papermill and CI run notebooks: its cells by name."""
    before = {s["id"] for s in server.live_sessions()}
    cells = [
        new_code_cell(code, metadata={"tags": ["raises-exception"]} if name == "error" else {})
        for name, code in CELLS.items()
    ]
    nb = execute(new_notebook(cells=cells), kernel_env, "dli_pyspark", monkeypatch_module)
    wait_no_new_sessions(server, before)  # the kernel deleted its session on shutdown
    return dict(zip(CELLS, nb.cells, strict=True))


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_a_value_is_the_cells_execute_result_with_its_execution_count(notebook: dict[str, Any]) -> None:
    cell = notebook["value"]
    (result,) = outputs(cell, "execute_result")
    assert result["data"]["text/plain"] == "42"
    assert result["execution_count"] == cell.execution_count and cell.execution_count is not None
    assert outputs(cell, "stream") == []


def test_prints_stay_a_stream_before_the_value(notebook: dict[str, Any]) -> None:
    shown = outputs(notebook["print_then_value"], "stream", "execute_result")
    assert [o["output_type"] for o in shown] == ["stream", "execute_result"]
    assert shown[0]["name"] == "stdout" and shown[0]["text"] == "a\n"
    assert shown[1]["data"]["text/plain"] == "42"


def test_displayed_html_stays_display_data(notebook: dict[str, Any]) -> None:
    cell = notebook["html"]
    (display,) = outputs(cell, "display_data")
    assert display["data"]["text/html"] == "<b>shown</b>"
    assert outputs(cell, "execute_result") == []


def test_stderr_stays_stderr(notebook: dict[str, Any]) -> None:
    cell = notebook["stderr"]
    assert "to stderr\n" in streams(cell, "stderr") and "to stderr" not in streams(cell, "stdout")
    assert streams(cell, "stdout") == "to stdout\n"


def test_none_and_a_semicolon_show_nothing_as_in_ipython(notebook: dict[str, Any]) -> None:
    for name in ("none", "semicolon"):
        assert outputs(notebook[name], "stream", "execute_result", "display_data") == [], name


def test_what_was_printed_before_an_error_is_shown_before_it(notebook: dict[str, Any]) -> None:
    cell = notebook["error"]
    shown = outputs(cell, "stream", "error")
    assert [o["output_type"] for o in shown] == ["stream", "error"]
    assert shown[0]["text"] == "before\n" and shown[1]["ename"] == "ZeroDivisionError"


def test_a_frame_is_a_rich_value(notebook: dict[str, Any]) -> None:
    (result,) = outputs(notebook["frame"], "execute_result")
    assert "<table" in result["data"]["text/html"] and "id" in result["data"]["text/plain"]


def test_scala_definitions_print_and_the_last_expression_is_the_value(notebook: dict[str, Any]) -> None:
    cell = notebook["scala"]
    shown = outputs(cell, "stream", "execute_result")
    assert [o["output_type"] for o in shown] == ["stream", "execute_result"]
    assert shown[0]["text"] == "x: Int = 42\n"
    assert shown[1]["data"]["text/plain"].endswith(": Int = 42")
    assert shown[1]["data"]["text/plain"].startswith("res")
    assert shown[1]["execution_count"] == cell.execution_count
    # A definition alone is not a value: its echo stays printed, as the REPL prints it.
    definition = notebook["scala_definition"]
    assert streams(definition, "stdout") == "y: Int = 43\n" and outputs(definition, "execute_result") == []


# -- on the wire ------------------------------------------------------------------------------------------


def test_the_server_lists_the_extension(server: Server) -> None:
    assert EXT_OUTPUTS in server.get("/version").json()["extensions"]


def test_a_livy_client_reads_the_same_text_and_the_outputs_are_beside_it(
    server: Server, pyspark: int
) -> None:
    livy = LivyClient(server.url, requests_session=server.http)
    statement = livy.create_statement(pyspark, "import sys\nprint('a'); print('b', file=sys.stderr); 21*2")
    server.wait_statement(pyspark, statement.statement_id)
    statement = livy.get_statement(pyspark, statement.statement_id)
    assert statement.output is not None
    assert statement.output.text == "a\nb\n42"  # Livy's one text: prints and value, no final newline
    raw = server.statement(pyspark, statement.statement_id)["output"]
    assert raw["data"] == {"text/plain": "a\nb\n42"}
    assert raw[JUPYTER_OUTPUTS] == [
        {"output_type": "stream", "name": "stdout", "text": "a\n"},
        {"output_type": "stream", "name": "stderr", "text": "b\n"},
        {"output_type": "execute_result", "data": {"text/plain": "42"}},
    ]
    # The same on DLI's paths; SQL statements carry none (their result is data).
    uuid = server.get(f"/sessions/{pyspark}").json()["uuid"]
    dli = server.run(uuid, "21*2", prefix="/v2.0/proj-values")
    assert dli[JUPYTER_OUTPUTS] == [{"output_type": "execute_result", "data": {"text/plain": "42"}}]
    assert JUPYTER_OUTPUTS not in server.run(pyspark, "SELECT 1 AS one", kind="sql")


def test_scala_text_is_livys_and_its_value_is_apart(server: Server, pyspark: int) -> None:
    output = server.run(pyspark, 'println("hi")\nprint("no newline ")\n40 + 2', kind="spark")
    text = output["data"]["text/plain"]
    assert text.startswith("hi\nno newline res") and text.endswith(": Int = 42\n")
    stream, result = output[JUPYTER_OUTPUTS]
    assert stream == {"output_type": "stream", "name": "stdout", "text": "hi\nno newline "}
    assert result["output_type"] == "execute_result" and result["data"]["text/plain"] + "\n" == text[14:]
