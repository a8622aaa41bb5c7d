"""Notebooks run headless with nbclient through the wrapper kernels, as papermill and CI users run them."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from dli_kernel.demo import QUICKSTART
from tests.integration.conftest import Server, wait_no_new_sessions
from tests.integration.test_magics import BAD_INPUT

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(nb: Any, kernel_env: dict[str, Any], kernel: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in kernel_env["env"].items():
        monkeypatch.setenv(key, value)  # the kernel manager passes this process's environment on
    manager = KernelManager(
        kernel_name=kernel, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_env["kernels"]])
    )
    try:
        NotebookClient(nb, km=manager, timeout=300, startup_timeout=120).execute()
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=False)
    return nb


def outputs_of(cell: Any) -> list[dict[str, Any]]:
    return [dict(output) for output in cell.outputs]


def texts(cell: Any) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result"):
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def stdout(cell: Any) -> str:
    """What the cell's code printed; a statement that ran over a second also leaves its status line
    ("done in 1.5 s"), a display output, which this leaves out."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def dialect_env(kernel_env: dict[str, Any], server: Server, dialect: str) -> dict[str, Any]:
    """The kernels' environment for ``dialect``: the embedded server's own paths (``local``), or Tencent
    Cloud DLC's signed actions (``dlc``), which the same server answers with its token as SecretKey."""
    if dialect == "local":
        return kernel_env
    env = {key: value for key, value in kernel_env["env"].items() if key != "DLI_KERNEL_TOKEN"}
    env.update(
        DLI_KERNEL_DIALECT="dlc",
        DLI_KERNEL_REGION="ap-guangzhou",
        DLI_KERNEL_CLUSTER="notebook-engine",
        TENCENTCLOUD_SECRET_ID="AKIDnotebook",
        TENCENTCLOUD_SECRET_KEY=server.token,
    )
    return dict(kernel_env, env=env)


@pytest.mark.parametrize("dialect", ["local", "dlc"])
def test_quickstart(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    before = {s["id"] for s in server.live_sessions()}
    env = dialect_env(kernel_env, server, dialect)
    nb = execute(nbformat.read(QUICKSTART, 4), env, "dli_pyspark", monkeypatch)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "10000 trips on Spark" in texts(code[0])
    assert "session" in texts(code[0]) and "ready after" in texts(code[0])  # the start was shown
    assert any("<table" in o.get("data", {}).get("text/html", "") for o in outputs_of(code[1]))
    assert "7 rows" in texts(code[2]) and "total_km" in texts(code[2])
    assert "int64" in texts(code[3]) and "float64" in texts(code[3])
    png = [o["data"]["image/png"] for o in outputs_of(code[4]) if "image/png" in o.get("data", {})]
    assert png and base64.b64decode(png[0]).startswith(b"\x89PNG")
    errors = [o for o in outputs_of(code[5]) if o["output_type"] == "error"]
    assert errors[0]["ename"] == "AnalysisException" and "no_such_column" in errors[0]["evalue"]
    assert "raises-exception" in code[5].metadata["tags"]
    assert "appId" in texts(code[6]) and "validity period" in texts(code[6])
    if dialect == "dlc":  # the session was made through DLC's actions, signed by the notebook's SecretId
        assert "AKIDnotebook" in texts(code[6]) and "notebook-engine" in texts(code[6])
    wait_no_new_sessions(server, before)  # the kernel deleted its session on shutdown


def test_an_unexpected_error_stops_the_run(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {s["id"] for s in server.live_sessions()}
    cells = [new_code_cell("SELECT 1 AS one"), new_code_cell("SELEC oops"), new_code_cell("SELECT 2")]
    nb = new_notebook(cells=cells)
    with pytest.raises(CellExecutionError) as caught:
        execute(nb, kernel_env, "dli_sql", monkeypatch)
    assert "ParseException" in str(caught.value)
    assert "1 row" in texts(nb.cells[0]) and nb.cells[2].outputs == []  # never ran
    wait_no_new_sessions(server, before)


def test_sql_kernel_notebook(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = new_notebook(
        cells=[
            new_code_cell("CREATE OR REPLACE TEMP VIEW nums AS SELECT id, id % 3 AS r FROM range(1500)"),
            new_code_cell("SELECT * FROM nums ORDER BY id"),
            new_code_cell("%%sql -n 5 -o top\nSELECT r, count(*) AS n FROM nums GROUP BY r ORDER BY r"),
            new_code_cell("%%local\nprint(type(top).__name__, len(top), list(top.columns))"),
            new_code_cell("%%pyspark\nprint(spark.table('nums').count())"),
        ]
    )
    execute(nb, kernel_env, "dli_sql", monkeypatch)
    assert "first 1000 rows shown; more rows exist (%%sql --count for the total" in texts(nb.cells[1])
    assert "3 rows" in texts(nb.cells[2])
    assert texts(nb.cells[3]).strip() == "DataFrame 3 ['r', 'n']"
    assert texts(nb.cells[4]).strip().endswith("1500")


@pytest.mark.parametrize("dialect", ["local", "dlc"])
def test_session_management_notebook(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    before = {s["id"] for s in server.live_sessions()}
    path = NOTEBOOKS / "session-management.ipynb"
    nb = execute(nbformat.read(path, 4), dialect_env(kernel_env, server, dialect), "dli_pyspark", monkeypatch)
    errors = [
        (i, o)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for o in outputs_of(cell)
        if o["output_type"] == "error" and "raises-exception" not in cell.metadata.get("tags", [])
    ]
    assert not errors
    wait_no_new_sessions(server, before)


def test_demo_runs_the_quickstart_on_the_embedded_default(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "dli_kernel", "demo", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "10000 trips on Spark" in done.stdout and "AnalysisException" in done.stdout
    assert f"executed notebook written to {output}" in done.stdout
    nb = nbformat.read(output, 4)
    assert any(o.get("output_type") == "error" for cell in nb.cells for o in cell.get("outputs", []))
    assert "Parent appears to have exited" not in done.stderr  # the kernel was shut down, not orphaned


def test_bad_input_in_the_kernel(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bad magic line of test_magics, as notebook cells: one line each, and the kernel goes on."""
    before = {s["id"] for s in server.live_sessions()}
    # The kernel has a session from the start, so "no session yet" cannot happen here.
    cases = [(line, words) for line, words in BAD_INPUT if "no session yet" not in words]
    cells = [new_code_cell(line, metadata={"tags": ["raises-exception"]}) for line, _ in cases]
    nb = new_notebook(cells=[*cells, new_code_cell("print('still fine')")])
    execute(nb, kernel_env, "dli_pyspark", monkeypatch)
    for (line, words), cell in zip(cases, nb.cells, strict=False):
        # IPython shows a UsageError as one stderr line, with no traceback; the reply is an error.
        outputs = outputs_of(cell)
        shown = "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr")
        assert len(shown) == sum(len(o.get("text", "")) for o in outputs), (line, outputs)  # nothing else
        assert shown.startswith("UsageError: "), (line, shown)
        assert shown.count("\n") == 1 and all(word in shown for word in words), (line, shown)
    assert texts(nb.cells[-1]).strip().endswith("still fine")
    wait_no_new_sessions(server, before)


def test_a_configuration_error_is_said_by_the_first_cell(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(kernel_env, env={**kernel_env["env"], "DLI_KERNEL_DIALECT": "yarn"})
    cells = [new_code_cell("1", metadata={"tags": ["raises-exception"]}), new_code_cell("%%local\n2")]
    nb = new_notebook(cells=cells)
    execute(nb, env, "dli_pyspark", monkeypatch)
    (error,) = [o for o in outputs_of(nb.cells[0]) if o["output_type"] == "error"]
    assert error["ename"] == "ConfigError"
    assert "DLI_KERNEL_DIALECT" in error["evalue"] and "livy" in error["evalue"]
    assert "2" in texts(nb.cells[1])  # the kernel itself is fine


def test_a_server_that_is_gone_is_one_sentence(
    kernel_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = dict(kernel_env, env={**kernel_env["env"], "DLI_KERNEL_URL": url})
    nb = new_notebook(cells=[new_code_cell("1", metadata={"tags": ["raises-exception"]})])
    execute(nb, env, "dli_pyspark", monkeypatch)
    (error,) = [o for o in outputs_of(nb.cells[0]) if o["output_type"] == "error"]
    assert error["ename"] == "SessionFailed" and url in error["evalue"]
    assert kernel_env["env"]["DLI_KERNEL_TOKEN"] not in json.dumps(nb)  # no secret in any output


def test_scala_notebook(kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {s["id"] for s in server.live_sessions()}
    nb = execute(nbformat.read(NOTEBOOKS / "scala.ipynb", 4), kernel_env, "dli_spark", monkeypatch)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    first = texts(code[0])
    assert "trips: org.apache.spark.sql.DataFrame" in first and first.endswith("Long = 1000")
    longest = texts(code[1]).split("longest: Long = ")[1].split()[0]
    assert "class Trip\n" in texts(code[1])
    assert "Spark 4." in texts(code[2]) and ": 10100" in texts(code[2])
    assert "7 rows" in texts(code[3])
    assert stdout(code[4]).strip() == longest  # the Python cell sees the Scala temp view
    (error,) = [o for o in outputs_of(code[5]) if o["output_type"] == "error"]
    assert error["ename"] == "CompileError" and "type mismatch" in error["evalue"]
    wait_no_new_sessions(server, before)
