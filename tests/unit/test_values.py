"""A remote cell's value as its ``Out[n]`` (the ``outputs`` extension): the server's output carrying the
Jupyter outputs apart, the client reading them, the kernel replaying them; outputs without them (plain
Livy, DLI, DLC) shown exactly as before."""

from __future__ import annotations

from typing import Any

import pytest

from dli_kernel.client import StatementInfo
from dli_kernel.client.models import jupyter_outputs
from dli_kernel.kernel.display import Rendered, Result, render
from dli_kernel.kernel.magics import runner as runner_module
from dli_kernel.kernel.magics.code import CodeMagics
from dli_kernel.kernel.magics.runner import StatementRunner
from dli_kernel.kernel.tables import table_bundle
from dli_kernel.protocol import EXT_OUTPUTS, EXTENSIONS, JUPYTER_OUTPUTS, LIVY_TABLE_MIME
from dli_kernel.server.driver_process import ExecutionResult
from dli_kernel.server.openapi import document
from dli_kernel.server.records import Statement, statement_output


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def shown(kind: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"output_type": kind, "data": data, **extra}


def ok(
    text: str, outputs: list[dict[str, Any]] | None = None, rich: dict[str, Any] | None = None
) -> dict[str, Any]:
    output: dict[str, Any] = {
        "status": "ok",
        "execution_count": 1,
        "data": {"text/plain": text, **(rich or {})},
    }
    if outputs is not None:
        output[JUPYTER_OUTPUTS] = outputs
    return output


# -- the server: which outputs carry them --------------------------------------------------------------

PRINTED = [stream("a\n"), shown("execute_result", {"text/plain": "42"})]


def test_version_lists_the_extension() -> None:
    assert EXT_OUTPUTS in EXTENSIONS


@pytest.mark.parametrize(
    ("kind", "result_format", "carried"),
    [("pyspark", "json", True), ("spark", "json", True), ("sql", "json", False), ("pyspark", "arrow", False)],
)
def test_python_and_scala_outputs_carry_them_sql_and_arrow_do_not(
    kind: str, result_format: str, carried: bool
) -> None:
    statement = Statement(id=3, code="...", kind=kind, result_format=result_format)
    data = {"text/plain": "a\n42"}
    output = statement_output(statement, ExecutionResult("ok", 1, dict(data), outputs=PRINTED))
    assert output["data"] == data  # what Livy's clients read, the same either way
    assert (output.get(JUPYTER_OUTPUTS) == PRINTED) is carried and (JUPYTER_OUTPUTS in output) is carried


def test_an_error_carries_what_was_printed_before_it_and_unknown_outputs_are_left_out() -> None:
    statement = Statement(id=4, code="...", kind="pyspark")
    failed = ExecutionResult("error", 1, ename="ZeroDivisionError", evalue="x", outputs=[stream("before\n")])
    output = statement_output(statement, failed)
    assert output[JUPYTER_OUTPUTS] == [stream("before\n")] and output["ename"] == "ZeroDivisionError"
    assert JUPYTER_OUTPUTS not in statement_output(statement, ExecutionResult("ok", 1, {"text/plain": ""}))


# -- the client -----------------------------------------------------------------------------------------


def test_the_statement_exposes_well_formed_outputs_only() -> None:
    body = {"id": 0, "state": "available", "output": ok("a\n42", PRINTED)}
    assert StatementInfo.from_json(body).jupyter_outputs == PRINTED
    assert StatementInfo.from_json({**body, "output": ok("a\n42")}).jupyter_outputs is None
    assert StatementInfo.from_json({"id": 0, "state": "running"}).jupyter_outputs is None


@pytest.mark.parametrize(
    "outputs",
    [
        "text",
        [stream("a", name="stdin")],
        [{"output_type": "stream", "name": "stdout", "text": 3}],
        [shown("display_data", "<b>")],  # type: ignore[arg-type]
        [shown("execute_result", {"text/plain": "1"}, metadata=[])],
        [{"output_type": "error", "ename": "E"}],
        [None],
    ],
)
def test_malformed_outputs_are_ignored(outputs: Any) -> None:
    assert jupyter_outputs({"status": "ok", JUPYTER_OUTPUTS: outputs}) is None


# -- render ---------------------------------------------------------------------------------------------


def test_render_replays_streams_and_displays_and_keeps_the_value_apart() -> None:
    html = shown("display_data", {"text/html": "<b>x</b>", "text/plain": "x"}, metadata={"isolated": True})
    outputs = [stream("a\n"), stream("warn\n", "stderr"), html, shown("execute_result", {"text/plain": "42"})]
    rendered = render(ok("a\nwarn\nx\n42", outputs, {"text/html": "<b>x</b>"}))
    assert rendered == Rendered(replay=outputs[:3], result={"text/plain": "42"})


def test_render_without_a_value_shows_no_result() -> None:
    rendered = render(ok("a", [stream("a\n")]))
    assert rendered.replay == [stream("a\n")] and rendered.result is None
    assert render(ok("", [])) == Rendered(replay=[])  # `None` or `21*2;` remotely: nothing at all


def test_render_turns_an_earlier_value_into_a_display_and_livy_tables_into_tables() -> None:
    table = {"headers": [{"name": "n", "type": "BIGINT_TYPE"}], "data": [[1], [2]]}
    outputs = [
        shown("execute_result", {"text/plain": "1"}),
        shown("display_data", {LIVY_TABLE_MIME: table}),
        shown("execute_result", {"text/plain": "2"}),
    ]
    rendered = render(ok("1\n2", outputs))
    assert rendered.replay == [
        shown("display_data", {"text/plain": "1"}),
        shown("display_data", table_bundle(["n"], [[1], [2]], 2)),
    ]
    assert rendered.result == {"text/plain": "2"}


def test_render_gives_livys_json_a_text_for_viewers_without_json() -> None:
    (display,) = render(ok("", [shown("display_data", {"application/json": {"a": [1]}})])).replay or []
    assert display["data"] == {"application/json": {"a": [1]}, "text/plain": '{\n "a": [\n  1\n ]\n}'}


def test_render_of_an_error_replays_what_came_before_it() -> None:
    output = {
        "status": "error",
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "traceback": ["ZeroDivisionError: division by zero\n"],
        JUPYTER_OUTPUTS: [stream("before\n")],
    }
    rendered = render(output)
    assert rendered.replay == [stream("before\n")]
    message = "ZeroDivisionError: division by zero"
    assert rendered.error == ("ZeroDivisionError", "division by zero", [message])
    assert render({k: v for k, v in output.items() if k != JUPYTER_OUTPUTS}).replay is None


def test_an_output_without_them_renders_as_before() -> None:
    output = ok("a\n42", rich={"text/html": "<b>2</b>"})
    assert render(output) == Rendered(text="a\n42", displays=[{"text/html": "<b>2</b>"}])
    # Malformed outputs are no outputs: the text is shown.
    assert render({**output, JUPYTER_OUTPUTS: [{"output_type": "stream"}]}).text == "a\n42"


# -- the kernel: show and the code magics ----------------------------------------------------------------


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], Any]]:
    bundles: list[tuple[dict[str, Any], Any]] = []
    monkeypatch.setattr(
        runner_module, "publish_display_data", lambda data, metadata=None: bundles.append((data, metadata))
    )
    return bundles


def test_show_replays_in_order_and_returns_the_value(
    published: list[tuple[dict[str, Any], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    html = shown("display_data", {"text/html": "<b>x</b>"}, metadata={"isolated": True})
    outputs = [stream("a"), stream("warn\n", "stderr"), html, shown("execute_result", {"text/plain": "42"})]
    value = StatementRunner.show(ok("awarn\n42", outputs))
    assert isinstance(value, Result) and value.bundle == {"text/plain": "42"}
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("a", "warn\n")  # as printed: no newline added
    assert published == [({"text/html": "<b>x</b>"}, {"isolated": True})]


def test_show_of_an_output_without_them_prints_as_before(
    published: list[tuple[dict[str, Any], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert StatementRunner.show(ok("a\n42", rich={"text/html": "<b>2</b>"})) is None
    assert capsys.readouterr().out == "a\n42\n"
    assert published == [({"text/html": "<b>2</b>"}, None)]


class FakeRunner(StatementRunner):
    def __init__(self, output: dict[str, Any]) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.output = output
        self.ran: list[tuple[str, str]] = []

    def run(self, code: str, kind: str, max_rows: int | None = None) -> dict[str, Any]:
        self.ran.append((code, kind))
        return self.output


@pytest.mark.parametrize(("magic", "kind"), [("pyspark", "pyspark"), ("spark", "spark"), ("scala", "spark")])
def test_code_magics_return_the_value_for_ipython_to_show_as_out(
    magic: str, kind: str, published: list[tuple[dict[str, Any], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    runner = FakeRunner(ok("a\n42", [stream("a\n"), shown("execute_result", {"text/plain": "42"})]))
    value = getattr(CodeMagics(None, runner), magic)("", "print('a'); 21*2")
    assert isinstance(value, Result) and repr(value) == "42"
    assert runner.ran == [("print('a'); 21*2", kind)] and capsys.readouterr().out == "a\n"
    runner.output = ok("a\n42")  # plain Livy: one text, printed
    assert getattr(CodeMagics(None, runner), magic)("", "print('a'); 21*2") is None
    assert capsys.readouterr().out == "a\n42\n"


def test_the_openapi_document_describes_the_outputs() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schemas = document([], "http://x")["components"]["schemas"]
    # The output's schema, with the document's components beside it for its $ref to resolve against.
    schema = {**schemas["StatementOutput"], "components": {"schemas": schemas}}
    statement = Statement(id=3, code="...", kind="pyspark")
    html = shown("display_data", {"text/html": "<b>x</b>"}, metadata={"isolated": True})
    for result in (
        ExecutionResult("ok", 1, {"text/plain": "a\n42"}, outputs=[*PRINTED, html]),
        ExecutionResult("error", 1, ename="E", evalue="v", traceback=["E: v\n"], outputs=[stream("a\n")]),
    ):
        jsonschema.validate(statement_output(statement, result), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"status": "ok", JUPYTER_OUTPUTS: [{"output_type": "error"}]}, schema)
