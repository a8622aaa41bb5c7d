"""The magics in a plain IPython ``InteractiveShell`` with ``%load_ext dli_kernel``, against the real server.

The tests run in order and share the notebook's session where they can: each session costs a Spark driver.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from tests.integration.conftest import Server


@dataclass
class Cell:
    error: BaseException | None
    stdout: str
    stderr: str
    displays: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plain(self) -> str:
        return "\n".join(d.get("text/plain", "") for d in self.displays)

    @property
    def html(self) -> str:
        return "\n".join(d.get("text/html", "") for d in self.displays)


class Shell:
    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell

    def __call__(self, code: str) -> Cell:
        with capture_output() as captured:
            result = self.shell.run_cell(code, store_history=False)
        displays = [output.data for output in captured.outputs]
        if hasattr(result.result, "_repr_mimebundle_"):  # the cell's Out[n], all of it (a table's HTML too)
            displays.append(result.result._repr_mimebundle_())
        return Cell(
            result.error_in_exec or result.error_before_exec, captured.stdout, captured.stderr, displays
        )

    def ok(self, code: str) -> Cell:
        cell = self(code)
        assert cell.error is None, f"{type(cell.error).__name__}: {cell.error}\n{cell.stdout}\n{cell.stderr}"
        return cell

    def usage_error(self, code: str, *words: str) -> str:
        """Run a bad magic: a UsageError of one line that names what was wrong."""
        cell = self(code)
        assert isinstance(cell.error, UsageError), (code, cell.error, cell.stdout)
        message = str(cell.error)
        assert "\n" not in message and "Traceback" not in cell.stdout + cell.stderr
        for word in words:
            assert word in message, (word, message)
        return message

    @property
    def holder(self) -> Any:
        return self.shell.user_ns["_dli_magics"].holder

    def session_id(self) -> str:
        return str(self.holder.session.info.id)


@contextlib.contextmanager
def magics_shell(server: Server, config: Path) -> Iterator[Shell]:
    """A plain IPython shell with ``%load_ext dli_kernel``, on ``server``, with no other settings."""
    patch = pytest.MonkeyPatch()
    for name in list(os.environ):
        if name.startswith("DLI_KERNEL_"):
            patch.delenv(name)
    patch.setenv("DLI_KERNEL_URL", server.url)
    patch.setenv("DLI_KERNEL_DIALECT", "local")
    patch.setenv("DLI_KERNEL_TOKEN", server.token)
    patch.setenv("JUPYTER_CONFIG_DIR", str(config))
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext dli_kernel", store_history=False)
    magics = next(m for m in shell.magics_manager.registry.values() if hasattr(m, "holder"))
    shell.user_ns["_dli_magics"] = magics
    try:
        yield Shell(shell)
    finally:
        shell.run_cell("%unload_ext dli_kernel", store_history=False)
        patch.undo()


@pytest.fixture(scope="module")
def ip(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    with magics_shell(server, tmp_path_factory.mktemp("ipython-config")) as shell:
        yield shell


def session_of(server: Server, session_id: str) -> dict[str, Any]:
    return server.get(f"/sessions/{session_id}").json()


# Bad input and the words its one-line error must hold; the kernels get the same list in test_notebooks.
BAD_INPUT = [
    ("%session configure --driver-memory 2", ("--driver-memory", "unit")),
    ("%session configure --executor-memory lots", ("--executor-memory",)),
    ("%session configure --sc-type D", ("--sc-type", "A", "B", "C")),
    ("%session configure --num-executors 0", ("--num-executors", "positive integer")),
    ("%session configure --driver-cores -3", ("--driver-cores",)),
    ("%session configure --heartbeat-timeout soon", ("--heartbeat-timeout",)),
    ("%session configure --conf spark.x", ("--conf", "key=value")),
    ("%session configure --kind cobol", ("kind", "pyspark")),
    (f"%session configure --name {'n' * 129}", ("name", "128")),
    ("%session configure --driver-memory", ("--driver-memory", "expected one argument")),
    ("%session configure --bogus 1", ("unrecognized arguments", "--bogus")),
    ("%session frobnicate", ("invalid choice", "frobnicate", "configure")),
    ("%session configure --name 'unclosed", ("closing quotation",)),
    ("%session list --sort name", ("unrecognized arguments",)),
    ("%session kill", ("the following arguments are required", "id")),
    ("%session logs -n 0", ("-n", "positive integer")),
    ("%session ui", ("no session yet",)),
    ("%session logs", ("no session yet",)),
    ("%sql -n many SELECT 1", ("-n", "-1 for all")),
    ("%sql -o 1x SELECT 1", ("-o", "variable name")),
    ("%sql --sample 2 SELECT 1", ("--sample", "fraction")),
    ("%sql -n 5", ("no query",)),
    ("%%sql SELECT 1\nSELECT 2", ("unexpected", "SELECT 1")),
    ("%send_to_spark -i nothing_here", ("no local variable", "nothing_here")),
    ("%send_to_spark", ("required", "-i")),
    ("%send_to_spark -i 12", ("-i", "variable name")),
    ("%%pyspark extra\n1", ("takes no arguments",)),
    ("%%session info\nbody", ("only as %%session configure",)),
    ("%%session configure\n{not json", ("not valid JSON",)),
    ('%%session configure\n{"driverMemory": "2"}', ("driverMemory", "unit")),
    ('%%session configure\n{"bogus": 1}', ("unknown field 'bogus'", "accepted fields")),
    ("%%session configure\n[1, 2]", ("JSON object",)),
]


# -- help and bad input before any session -----------------------------------------------------------


def test_help(ip: Shell) -> None:
    cell = ip.ok("%session --help")
    for sub in (
        "info",
        "configure",
        "start",
        "restart",
        "stop",
        "status",
        "list",
        "kill",
        "use",
        "logs",
        "ui",
    ):
        assert sub in cell.stdout
    cell = ip.ok("%session configure --help")
    assert "--driver-memory" in cell.stdout and "--sc-type" in cell.stdout and "-f, --force" in cell.stdout
    assert "--follow" in ip.ok("%session logs --help").stdout


def test_info_before_any_session_shows_the_next_sessions_settings(ip: Shell) -> None:
    cell = ip.ok("%session")
    assert "none yet" in cell.plain and "sc_type" in cell.plain and "<table>" in cell.html
    assert ip.holder.session is None  # looking does not start anything


@pytest.mark.parametrize(
    ("line", "words"),
    BAD_INPUT,
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    ip: Shell, line: str, words: tuple[str, ...]
) -> None:
    spec, session = ip.holder.spec, ip.holder.session
    ip.usage_error(line, *words)
    assert ip.holder.spec == spec and ip.holder.session is session


def test_send_to_spark_refuses_other_types(ip: Shell) -> None:
    ip.shell.user_ns["a_number"] = 3
    ip.usage_error("%send_to_spark -i a_number", "int", "DataFrame or str")


# -- configure, then the first cell starts the session -------------------------------------------------


def test_configure_flags_then_the_session_has_them(ip: Shell, server: Server) -> None:
    cell = ip.ok(
        "%session configure --sc-type B --driver-memory 1g --executor-memory '3 GB' --executor-cores 1 "
        "--num-executors 2 --conf spark.sql.shuffle.partitions=3 --conf spark.dli.note=a=b "
        "--name magics-test --heartbeat-timeout 300 --cluster local"
    )
    assert "CUSTOMIZED" in cell.plain and "1 GB, 2 cores" in cell.plain  # driver cores from tier B
    assert "2 × (3 GB, 1 core)" in cell.plain and "spark.dli.note=a=b" in cell.plain
    assert ip.holder.session is None  # nothing started yet, so nothing to replace

    cell = ip.ok("%%pyspark\nprint(spark.conf.get('spark.sql.shuffle.partitions'))")
    assert cell.stdout.endswith("3\n")
    info = session_of(server, ip.session_id())
    assert info["name"] == "magics-test" and info["sc_type"] == "CUSTOMIZED"
    assert info["driverMemory"] == "1 GB" and info["executorMemory"] == "3 GB" and info["numExecutors"] == 2
    assert info["heartbeatTimeoutInSecond"] == 300 and info["conf"]["spark.dli.note"] == "a=b"


def test_info_of_a_live_session(ip: Shell) -> None:
    cell = ip.ok("%session info")
    plain = cell.plain
    for label in (
        "appId",
        "state",
        "sc_type",
        "cluster",
        "owner",
        "driver",
        "executors",
        "conf",
        "created",
        "validity period",
        "heartbeat timeout",
        "Spark UI",
        "driver log",
    ):
        assert label in plain, label
    assert ip.session_id() in plain and "CUSTOMIZED" in plain
    assert re.search(r"^heartbeat timeout +5m$", plain, re.MULTILINE), plain  # 300 s, as durations show
    assert "<a href=" in cell.html  # the links are links


def test_status_ui_and_start_on_a_live_session(ip: Shell) -> None:
    assert "is idle" in ip.ok("%session status").stdout
    cell = ip.ok("%session ui")
    assert cell.plain.startswith("Spark UI: http") and "<a href=" in cell.html
    assert "already ready" in ip.ok("%session start").stdout


def test_configure_refuses_to_replace_a_used_session_without_force(ip: Shell, server: Server) -> None:
    before = ip.session_id()
    ip.usage_error("%session configure --num-executors 1", "has run statements", "-f", "nothing was changed")
    assert ip.session_id() == before and ip.holder.spec.num_executors == 2


# -- SQL ---------------------------------------------------------------------------------------------


def test_sql_line_and_cell_with_a_temp_view_from_pyspark(ip: Shell) -> None:
    ip.ok(
        "%%pyspark\n"
        "from pyspark.sql import functions as F\n"
        "spark.range(2500).select(F.col('id'), (F.col('id') * 1.5).alias('x'), "
        "F.concat(F.lit('r'), F.col('id').cast('string')).alias('s')).createOrReplaceTempView('numbers')"
    )
    cell = ip.ok("%sql SELECT count(*) AS n FROM numbers WHERE s LIKE 'r1%'")
    assert "<th>n</th>" in cell.html and "1 row" in cell.plain

    cell = ip.ok("%%sql\nSELECT * FROM numbers ORDER BY id")
    assert "first 1000 rows shown; more rows exist" in cell.plain  # the default limit is said, never silent
    cell = ip.ok("%%sql -n 10 --count\nSELECT * FROM numbers ORDER BY id")
    assert "10 of 2500 rows shown" in cell.plain
    cell = ip.ok("%%sql -n -1 -o everything\nSELECT * FROM numbers")
    assert "2500 rows" in cell.plain and len(ip.shell.user_ns["everything"]) == 2500


def test_sql_several_statements_run_in_order_and_the_last_is_shown(ip: Shell) -> None:
    cell = ip.ok(
        "%%sql\n"
        "CREATE OR REPLACE TEMP VIEW semi AS SELECT ';' AS sep, 1 AS one; -- a comment; with ;\n"
        "SELECT sep, one + 1 AS two FROM semi;\n"
    )
    assert "<td>;</td>" in cell.html and "<td>2</td>" in cell.html


def test_sql_quiet_and_sample(ip: Shell) -> None:
    cell = ip.ok("%%sql -q -o few\nSELECT * FROM numbers WHERE id < 5")
    assert cell.displays == [] and cell.stdout == "" and len(ip.shell.user_ns["few"]) == 5
    cell = ip.ok("%%sql --sample 0.1 -n -1 -o sample\nSELECT * FROM numbers")
    assert 0 < len(ip.shell.user_ns["sample"]) < 2500


def test_sql_o_gives_the_right_dtypes(ip: Shell) -> None:
    ip.ok(
        "%%sql -q -o typed\n"
        "SELECT * FROM VALUES\n"
        "  (1, CAST(2 AS BIGINT), 1.5D, CAST('12.30' AS DECIMAL(10,2)), 'a', true,\n"
        "   DATE'2024-02-29', TIMESTAMP'2024-02-29 12:34:56.789', array(1, 2), named_struct('k', 'v'),\n"
        "   map('m', 1), CAST(NULL AS INT)),\n"
        "  (NULL, CAST(3 AS BIGINT), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n"
        "   CAST(NULL AS INT))\n"
        "AS t(i, l, d, dec, s, b, dt, ts, arr, st, mp, nothing)"
    )
    df: pd.DataFrame = ip.shell.user_ns["typed"]
    # As toPandas types them: Spark's INT is 32 bits; with a null, pandas' nullable integer.
    assert str(df["i"].dtype) == "Int32" and df["i"].isna().tolist() == [False, True]
    assert df["l"].dtype == "int64" and df["l"].tolist() == [2, 3]
    assert df["d"].dtype == "float64" and pd.isna(df["d"][1])
    assert df["dec"][0] == decimal.Decimal("12.30") and df["dec"][1] is None
    assert df["s"].tolist() == ["a", None]
    assert str(df["b"].dtype) == "boolean" and bool(df["b"][0]) is True
    assert df["dt"][0] == datetime.date(2024, 2, 29) and df["dt"][1] is None
    assert str(df["ts"].dtype) == "datetime64[us]"
    assert df["ts"][0] == pd.Timestamp("2024-02-29 12:34:56.789") and pd.isna(df["ts"][1])
    assert df["arr"][0] == [1, 2] and df["st"][0] == {"k": "v"} and df["mp"][0] == {"m": 1}
    assert df["nothing"].isna().all()


def test_remote_sql_error_is_named_as_the_remote_names_it(ip: Shell) -> None:
    cell = ip("%sql SELECT * FROM no_such_table")
    assert type(cell.error).__name__ == "AnalysisException" and "no_such_table" in str(cell.error)
    assert "dli_kernel/kernel/" not in cell.stdout  # the remote traceback only


# -- other cell magics ---------------------------------------------------------------------------------


def test_local_and_send_to_spark(ip: Shell) -> None:
    ip.ok("%%local\nlocal_frame = __import__('pandas').DataFrame({'a': [1, 2, None], 'b': ['x', 'y', 'z']})")
    cell = ip.ok("%send_to_spark -i local_frame -n remote_frame")
    assert "remote_frame is now a Spark DataFrame" in cell.stdout
    cell = ip.ok("%%pyspark\nprint(remote_frame.count(), remote_frame.columns)")
    assert cell.stdout.strip().endswith("3 ['a', 'b']")
    ip.shell.user_ns["greeting"] = 'it\'s "quoted"\nand two lines'
    ip.ok("%send_to_spark -i greeting")
    assert (
        ip.ok("%%pyspark\nprint(repr(greeting))").stdout.strip().endswith(repr(ip.shell.user_ns["greeting"]))
    )


def test_pyspark_output_kinds(ip: Shell) -> None:
    cell = ip.ok("%%pyspark\nprint('printed')\n40 + 2")
    # The value is the cell's Out[n] (a terminal IPython prints it so), no longer printed text.
    assert cell.stdout.startswith("printed\nOut[") and cell.stdout.endswith("]: 42\n")
    cell = ip.ok("%%pyspark\nspark.range(3).toPandas()")
    assert "<table" in cell.html
    cell = ip("%%pyspark\n1 / 0")
    assert type(cell.error).__name__ == "ZeroDivisionError"


def test_logs(ip: Shell) -> None:
    ip.ok("%%pyspark\nimport sys\nprint('a line for the log', file=sys.__stderr__, flush=True)")
    cell = ip.ok("%session logs -n 200")
    assert "a line for the log" in cell.stdout
    first = ip.ok("%session logs --from 0 -n 3").stdout.splitlines()
    assert len(first) == 3


# -- list, kill, use ------------------------------------------------------------------------------------


def test_list_with_filters(ip: Shell, server: Server) -> None:
    mine = ip.session_id()
    other = server.create(kind="sql", name="magics-other", heartbeatTimeoutInSecond=300)
    try:
        cell = ip.ok("%session list")
        assert "magics-test" in cell.plain and "magics-other" in cell.plain
        row = next(line for line in cell.plain.splitlines() if "magics-test" in line)
        assert row.startswith("*") and "this notebook's session" in cell.plain
        for header in ("name", "id", "state", "kind", "cluster", "creator", "created", "validity period"):
            assert f"<th>{header}</th>" in cell.html

        def names(line: str) -> set[str]:
            plain = ip.ok(line).plain
            return {name for name in ("magics-test", "magics-other") if name in plain}

        assert names("%session list --kind sql") == {"magics-other"}
        assert names("%session list --name magics-test") == {"magics-test"}
        assert names(f"%session list --id {mine}") == {"magics-test"}
        assert names("%session list --cluster local") == {"magics-test"}
        assert names("%session list --owner nobody-at-all") == set()
        assert names("%session list --state idle,busy,starting,not_started") == {
            "magics-test",
            "magics-other",
        }
        assert names("%session list --state killed") == set()

        ip.usage_error(f"%session kill {other['uuid']}", "-f", "nothing was changed")
        assert session_of(server, other["uuid"])["state"] not in ("killed", "shutting_down")
        assert f"Session {other['uuid']} killed" in ip.ok(f"%session kill {other['uuid']} -f").stdout
        assert session_of(server, other["uuid"])["state"] == "killed"
        assert names("%session list --state killed") == {"magics-other"}
        assert "already ended" in ip.ok(f"%session kill {other['uuid']} -f").stdout
    finally:
        server.delete(f"/sessions/{other['uuid']}")


def test_kill_and_use_unknown_ids(ip: Shell) -> None:
    ip.usage_error("%session kill 987654", "987654")
    ip.usage_error("%session use no-such-session", "no-such-session")


def test_configure_with_force_replaces_the_session(ip: Shell, server: Server) -> None:
    old = ip.session_id()
    cell = ip.ok('%%session configure -f\n{"numExecutors": 1, "conf": {"spark.sql.shuffle.partitions": "5"}}')
    assert "new session" in cell.stdout
    assert session_of(server, old)["state"] in ("killed", "shutting_down")
    assert ip.ok("%%pyspark\nprint(spark.conf.get('spark.sql.shuffle.partitions'))").stdout.endswith("5\n")
    assert session_of(server, ip.session_id())["numExecutors"] == 1


def test_use_attaches_and_stop_leaves_a_used_session_running(ip: Shell, server: Server) -> None:
    mine = ip.session_id()
    other = server.create(kind="pyspark", name="magics-shared", heartbeatTimeoutInSecond=300)
    try:
        cell = ip.ok(f"%session use {other['uuid']}")
        assert f"now uses session {other['uuid']}" in cell.stdout and f"({mine}) was deleted" in cell.stdout
        assert session_of(server, mine)["state"] in ("killed", "shutting_down")
        assert ip.ok("%%pyspark\nprint('on the shared one')").stdout.endswith("on the shared one\n")
        ip.usage_error("%session configure --num-executors 2", "did not start", "-f")
        assert "left running" in ip.ok("%session stop").stdout
        assert session_of(server, other["uuid"])["state"] == "idle"
    finally:
        server.delete(f"/sessions/{other['uuid']}")


def test_a_dead_session_is_said_and_replaced(ip: Shell, server: Server) -> None:
    assert "ready" in ip.ok("%session start").stdout
    first = ip.session_id()
    ip.ok("%%pyspark\nmarker = 1")
    server.delete(f"/sessions/{first}")
    cell = ip("%%pyspark\nmarker")
    assert type(cell.error).__name__ == "SessionLost" and "next cell runs on a new session" in str(cell.error)
    cell = ip.ok("%%pyspark\nprint('marker' in globals())")
    assert cell.stdout.endswith("False\n") and "the previous session ended" in cell.plain
    assert ip.session_id() != first


def test_restart_then_stop(ip: Shell, server: Server) -> None:
    before = ip.session_id()
    assert "the previous one was ended" in ip.ok("%session restart").stdout
    assert ip.session_id() != before
    current = ip.session_id()
    assert "deleted" in ip.ok("%session stop").stdout
    assert session_of(server, current)["state"] in ("killed", "shutting_down")
    assert "no session" in ip.ok("%session stop").stdout.lower()
    assert not [s for s in server.live_sessions() if (s["name"] or "").startswith(("magics-", "notebook-"))]


def test_scala_cells_share_the_session(ip: Shell) -> None:
    ip.ok("%session start")
    assert ip.ok("%%spark\nval fromScala = 41 + 1").stdout.endswith("fromScala: Int = 42\n")
    ip.ok('%%scala\nspark.range(3).createOrReplaceTempView("from_scala")')
    assert "3 rows" in ip.ok("%sql SELECT * FROM from_scala").plain
    cell = ip('%%spark\nval broken: Int = "no"')
    assert type(cell.error).__name__ == "CompileError"
    ip.ok("%session stop")
