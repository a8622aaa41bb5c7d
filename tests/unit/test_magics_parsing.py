"""The magics' pure parts: SQL splitting, option parsing, error naming, cell routing."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
from IPython.core.error import UsageError

from dli_kernel.kernel.kernel import SparkKernel
from dli_kernel.kernel.magics import RemoteError, args, remote_error
from dli_kernel.kernel.magics.session import session_parser
from dli_kernel.kernel.magics.sql import leading_options, sql_options
from dli_kernel.kernel.sql_text import split_sql


@pytest.mark.parametrize(
    ("text", "statements"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1;", ["SELECT 1"]),
        ("SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT ';' AS s; SELECT 2", ["SELECT ';' AS s", "SELECT 2"]),
        ('SELECT ";" AS s', ['SELECT ";" AS s']),
        ("SELECT `a;b` FROM t", ["SELECT `a;b` FROM t"]),
        ("SELECT 'it\\'s;' AS s", ["SELECT 'it\\'s;' AS s"]),
        ("SELECT 1 -- a; comment\n; SELECT 2", ["SELECT 1 -- a; comment", "SELECT 2"]),
        ("/* a; b */ SELECT 1", ["/* a; b */ SELECT 1"]),
        ("SELECT 1;\n-- only a comment;\n", ["SELECT 1"]),
        ("  ;  ; ", []),
    ],
)
def test_split_sql(text: str, statements: list[str]) -> None:
    assert split_sql(text) == statements


@pytest.mark.parametrize(
    ("line", "options", "rest"),
    [
        ("SELECT 1", "", "SELECT 1"),
        ("-o df SELECT 'a  b'", "-o df ", "SELECT 'a  b'"),
        ("-n -1 -q SELECT 1", "-n -1 -q ", "SELECT 1"),
        ("--sample 0.5 -o x", "--sample 0.5 -o x", ""),
        ("  -q   select *  from t", "  -q   ", "select *  from t"),
    ],
)
def test_leading_options_keep_the_query_untouched(line: str, options: str, rest: str) -> None:
    assert leading_options(line, {"-o", "-n", "--sample"}) == (options, rest)


def testsql_options() -> None:
    args, query = sql_options('-o df -n 5 -q --sample 0.25 SELECT "x"', None)
    assert (args.o, args.n, args.q, args.sample, query) == ("df", 5, True, 0.25, 'SELECT "x"')
    args, query = sql_options("", "SELECT 1")
    assert (args.o, args.n, args.q, args.sample, query) == (None, 1000, False, None, "SELECT 1")
    assert sql_options("-n -1", "SELECT 1")[0].n == -1


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("-n -2 SELECT 1", ("-n", "-1 for all")),
        ("-o class SELECT 1", ("-o", "variable name")),
        ("--sample 0 SELECT 1", ("--sample", "above 0")),
        ("--sample x SELECT 1", ("--sample",)),
        ("--frobnicate SELECT 1", ("unrecognized", "--frobnicate")),
    ],
)
def test_sql_option_errors(line: str, words: tuple[str, ...]) -> None:
    with pytest.raises(UsageError) as caught:
        sql_options(line, None)
    for word in words:
        assert word in str(caught.value)


def test_session_parser_reads_every_configure_flag() -> None:
    args = session_parser().parse_args(
        [
            "configure", "--sc-type", "b", "--driver-memory", "2g", "--driver-cores", "2",
            "--executor-memory", "1536 MB", "--executor-cores", "1", "--num-executors", "3",
            "--conf", "a=1", "--conf", "b=x=y", "--jars", "a.jar, b.jar", "--py-files", "x.py",
            "--files", "f.txt", "--name", "n", "--heartbeat-timeout", "0", "--cluster", "c",
            "--kind", "sql", "-f",
        ]
    )  # fmt: skip
    assert args.sc_type == "B" and args.driver_memory == 2048 and args.executor_memory == 1536
    assert args.conf == [("a", "1"), ("b", "x=y")] and args.jars == ("a.jar", "b.jar")
    assert (args.num_executors, args.heartbeat_timeout, args.kind, args.force) == (3, 0, "sql", True)


def test_remote_errors_are_named_as_the_remote_names_them() -> None:
    err = remote_error("AnalysisException", "no such table", ["line 1", "line 2"])
    assert type(err).__name__ == "AnalysisException" and isinstance(err, RemoteError)
    assert str(err) == "no such table" and err.traceback == ["line 1", "line 2"]
    assert type(remote_error("AnalysisException", "again")) is type(err)
    assert remote_error("SessionLost", "gone").traceback == ["SessionLost: gone"]


@pytest.mark.parametrize(
    ("kind", "cell", "runs"),
    [
        ("pyspark", "1 + 1", "%%pyspark\n1 + 1"),
        ("sql", "SELECT 1", "%%sql\nSELECT 1"),
        ("spark", "val x = 1", "%%spark\nval x = 1"),
        ("pyspark", "%%sql\nSELECT 1", "%%sql\nSELECT 1"),
        ("pyspark", "%session info", "%session info"),
        ("pyspark", "%%local\nx = 1", "x = 1"),
        ("pyspark", "%matplot plt", "%%pyspark\n%matplot plt"),  # Livy's magic: for the session
        ("pyspark", "", ""),
    ],
)
def test_cells_go_to_the_session_unless_they_start_with_a_magic(kind: str, cell: str, runs: str) -> None:
    known = {("cell", "sql"), ("line", "session"), ("cell", "local")}
    shell = SimpleNamespace(find_magic=lambda name, where: (where, name) in known)
    assert SparkKernel.cell_code(SimpleNamespace(kind=kind, shell=shell), cell) == runs


@pytest.mark.parametrize("value", ["²", "٢", "1²", "9" * 5000, "-1", "1.5", ""])
def test_counts_accept_ascii_digits_only(value: str) -> None:
    # str.isdigit() is true for "²" and "٢", which int() then refuses: a bare ValueError, not a sentence
    for read in (args.positive, args.non_negative):
        with pytest.raises(argparse.ArgumentTypeError, match="got"):
            read(value)
    assert args.positive("12") == 12 and args.non_negative("0") == 0
