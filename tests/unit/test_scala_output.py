"""Unit tests for how dli_kernel.driver.scala_repl turns the Scala interpreter's answers into Livy outputs.

The answers here have the shape ``scala_repl.scala`` writes; the integration tests check that the real
interpreter writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dli_kernel.driver.scala_repl import (
    ScalaError,
    ScalaFailure,
    ScalaValue,
    caret_line,
    error_class,
    exception_name,
    livy_echo,
    local_jar_paths,
    outcome,
    problem_lines,
    value_echo,
)


def step(output: str = "", echo: str = "", defined: tuple[str, ...] = (), problems: tuple = ()) -> dict:
    return {"output": output, "echo": echo, "defined": list(defined), "problems": list(problems)}


def problem(line: int, column: int, content: str, message: str, severity: str = "error") -> dict[str, Any]:
    return {"severity": severity, "line": line, "column": column, "line_content": content, "message": message}


@pytest.mark.parametrize(
    ("echo", "defined", "expected"),
    [
        ("val res0: Int = 2\n", ["res0"], "res0: Int = 2\n"),
        ("var counter: Int = 4\n", ["counter"], "counter: Int = 4\n"),
        ("val a: Int = 1\nval b: Int = 2\n", ["a", "b"], "a: Int = 1\nb: Int = 2\n"),
        # A value's own text keeps a line that only looks like an echo header.
        ("val s: String =\nx\nval y: z\n", ["s"], "s: String =\nx\nval y: z\n"),
        ("val `my value`: Int = 1\n", ["my value"], "`my value`: Int = 1\n"),
        ("def f(x: Int): Int\n", ["f"], "def f(x: Int): Int\n"),
        ("class P\n", [], "class P\n"),
        ("lazy val l: Int // unevaluated\n", ["l"], "lazy val l: Int // unevaluated\n"),
        ("", ["res3"], ""),
    ],
)
def test_livy_echo_drops_only_the_defined_names_val(echo: str, defined: list[str], expected: str) -> None:
    assert livy_echo(echo, defined) == expected


def test_caret_keeps_tabs_so_it_lines_up() -> None:
    assert caret_line("foo + 1", 1) == "^"
    assert caret_line("  x.bar", 5) == "    ^"
    assert caret_line("\tx.bar", 4) == "\t  ^"


def test_problem_lines_read_like_scalac() -> None:
    mismatch = problem(
        2, 9, "val n: String = 1", "type mismatch;\n found   : Int(1)\n required: String", "error"
    )
    assert problem_lines([mismatch]) == [
        "<console>:2: error: type mismatch;",
        " found   : Int(1)",
        " required: String",
        "val n: String = 1",
        "        ^",
    ]


def test_ok_cell_text_is_each_statements_output_then_echo_in_order() -> None:
    answer = {
        "status": "ok",
        "steps": [
            step(echo="val a: Int = 1\n", defined=("a",)),
            step(output="hello\n", defined=("res0",)),
            step(
                echo="val res1: Int = 42\n",
                defined=("res1",),
                problems=(problem(1, 5, "1 + 41", "a pure expression does nothing", "warning"),),
            ),
        ],
    }
    text, failure = outcome(answer)
    assert failure is None
    assert text == (
        "a: Int = 1\nhello\n"
        "<console>:1: warning: a pure expression does nothing\n1 + 41\n    ^\nres1: Int = 42\n"
    )


def test_the_value_echo_is_the_last_expressions_and_ends_the_text() -> None:
    answer = {
        "status": "ok",
        "steps": [
            step(echo="val x: Int = 42\n", defined=("x",)),
            step(output="printed ", echo="val res0: Int = 42\n", defined=("res0",)),
        ],
    }
    text, _ = outcome(answer)
    assert value_echo(answer) == "res0: Int = 42\n"
    assert text == "x: Int = 42\nprinted res0: Int = 42\n"


@pytest.mark.parametrize(
    "answer",
    [
        {"status": "ok", "steps": [step(echo="val x: Int = 42\n", defined=("x",))]},  # a definition
        {"status": "ok", "steps": [step(output="hi\n")]},  # Unit: no echo
        {"status": "ok", "steps": [step(echo="val a: Int = 1\nval b: Int = 1\n", defined=("a", "b"))]},
        {"status": "ok", "steps": [step(echo='val res1: String =\n"a"\n\n', defined=("res1",))]},
        {"status": "ok", "steps": [step(echo="val res2: Int = 2", defined=("res2",))]},
        {"status": "ok", "steps": []},
        {"status": "error", "steps": [step(echo="val res0: Int = 1\n", defined=("res0",))]},
        {"status": "ok", "steps": [step(echo="def res3: Int\n", defined=("res3",))]},
    ],
    ids=["definition", "unit", "two-names", "two-newlines", "no-newline", "nothing", "failed", "def"],
)
def test_no_value_echo_where_the_text_cannot_be_split_cleanly(answer: dict[str, Any]) -> None:
    assert value_echo(answer) is None


def test_a_values_text_in_the_notebook_is_its_echo_to_the_character() -> None:
    from IPython.core.formatters import PlainTextFormatter

    echo = 'res0: String = "a\r\nb\u2028c\x0cd"  '
    assert PlainTextFormatter()(ScalaValue(echo)) == echo


def test_compile_error_names_the_first_error_and_shows_all() -> None:
    errors = (problem(3, 1, "zzz", "not found: value zzz"), problem(3, 5, "zzz yyy", "not found: value yyy"))
    text, failure = outcome(
        {"status": "error", "steps": [step(echo="val x: Int = 1\n", defined=("x",)), step(problems=errors)]}
    )
    assert text == "x: Int = 1\n"
    assert failure == ScalaFailure(
        "CompileError",
        "not found: value zzz",
        [
            "<console>:3: error: not found: value zzz",
            "zzz",
            "^",
            "<console>:3: error: not found: value yyy",
            "zzz yyy",
            "    ^",
        ],
    )


def test_runtime_exception_keeps_class_message_and_trace() -> None:
    trace = "java.lang.ArithmeticException: / by zero\n  at f(<console>:1)\n  ... 30 elided"
    exception = {"class": "java.lang.ArithmeticException", "message": "/ by zero", "trace": trace}
    text, failure = outcome({"status": "error", "steps": [step(output="before\n")], "exception": exception})
    assert text == "before\n"
    assert failure == ScalaFailure(
        "java.lang.ArithmeticException",
        "/ by zero",
        ["java.lang.ArithmeticException: / by zero", "  at f(<console>:1)", "  ... 30 elided"],
    )


@pytest.mark.parametrize(
    ("trace", "expected"),
    [
        (
            "java.lang.IllegalStateException: boom\n  at f(<console>:1)",
            ("java.lang.IllegalStateException", "boom"),
        ),
        (
            "java.lang.RuntimeException: two\nlines\n  ... 29 elided",
            ("java.lang.RuntimeException", "two\nlines"),
        ),
        (
            "java.lang.InterruptedException\n\tat java.base/java.lang.Thread.sleep(Native Method)",
            ("java.lang.InterruptedException", ""),
        ),
        ("something odd: happened\n  at x", ("Exception", "something odd: happened")),
    ],
)
def test_exception_name_from_a_printed_trace(trace: str, expected: tuple[str, str]) -> None:
    assert exception_name(trace) == expected
    _, failure = outcome({"status": "error", "steps": [], "exception": {"trace": trace}})
    assert (failure.ename, failure.evalue) == expected


def test_cancelled_and_incomplete() -> None:
    _, cancelled = outcome(
        {"status": "cancelled", "steps": [step()], "exception": {"trace": "java.lang.ThreadDeath"}}
    )
    assert cancelled.ename == "StatementCancelled"
    _, incomplete = outcome({"status": "incomplete", "steps": [step()]})
    assert incomplete.ename == "CompileError" and incomplete.evalue.startswith("incomplete input")


def test_error_without_position_uses_the_interpreters_own_text() -> None:
    _, failure = outcome(
        {"status": "error", "steps": [step(output="error: something synthetic\n  detail\n")]}
    )
    assert failure.evalue == "error: something synthetic"
    assert failure.traceback == ["error: something synthetic", "  detail"]


def test_error_class_is_named_after_the_scala_exception() -> None:
    cls = error_class("java.lang.ArithmeticException")
    assert cls is error_class("java.lang.ArithmeticException")  # one class per name
    assert issubclass(cls, ScalaError) and cls.__name__ == "java.lang.ArithmeticException"
    error = cls(
        ScalaFailure(
            "java.lang.ArithmeticException", "/ by zero", ["java.lang.ArithmeticException: / by zero"]
        )
    )
    assert str(error) == "/ by zero"
    assert error._render_traceback_() == ["java.lang.ArithmeticException: / by zero"]
    assert cls(ScalaFailure("StatementCancelled", "cancelled", []))._render_traceback_() == [
        "StatementCancelled: cancelled"
    ]


def test_local_jar_paths_keep_existing_local_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jar", tmp_path / "b c.jar"
    first.write_bytes(b"PK")
    second.write_bytes(b"PK")
    jars = (
        f"{first}, file://{str(second).replace(' ', '%20')}, hdfs://nn/lib/c.jar,{tmp_path / 'missing.jar'},,"
    )
    assert local_jar_paths(jars) == [str(first), str(second)]
    assert local_jar_paths("") == []
