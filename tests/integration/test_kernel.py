"""The wrapper kernels, started with jupyter_client, against the real embedded server."""

from __future__ import annotations

import base64
import json
import queue
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from tests.integration.conftest import Server, new_sessions, wait_no_new_sessions, wait_until


class Kernel:
    def __init__(self, kernel_env: dict[str, Any], name: str, server: Server) -> None:
        self.server = server
        self.before = {s["id"] for s in server.live_sessions()}  # the kernel's sessions are the others
        self.manager = KernelManager(
            kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_env["kernels"]])
        )
        self.manager.start_kernel(env=kernel_env["env"])
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 180) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        messages: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(code, output_hook=messages.append, timeout=timeout)
        outputs = [
            m for m in messages if m["msg_type"] in ("stream", "display_data", "execute_result", "error")
        ]
        return reply["content"], outputs

    def session(self) -> dict[str, Any]:
        """The one live session this kernel made, once the server has it."""
        mine = wait_until(
            lambda: new_sessions(self.server, self.before), "the kernel to ask for a session", 30
        )
        assert len(mine) == 1, mine
        return mine[0]

    def statement_running(self, msg_id: str, code: str) -> bool:
        """Whether the cell's code is a running statement on the kernel's session."""
        for session in new_sessions(self.server, self.before):
            listing = self.server.get(f"/sessions/{session['id']}/statements", params={"order": "desc"})
            newest = listing.json()["statements"][:1]
            if newest and newest[0]["state"] == "running" and code in newest[0]["code"]:
                return True
        return False

    def printed(self, msg_id: str, code: str) -> bool:
        """Whether the cell has sent output (read from iopub, which the interrupted cell does not need)."""
        try:
            message = self.client.get_iopub_msg(timeout=0.1)
        except queue.Empty:
            return False
        return message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream"

    def interrupted(self, code: str, ready: Callable[[str, str], object] | None = None) -> dict[str, Any]:
        """Start ``code``, interrupt the kernel once ``ready(msg_id, code)`` says the cell got as far as
        the test needs (by default: its statement is running on the server), and return the cell's reply."""
        msg_id = self.client.execute(code)
        wait_until(
            lambda: (ready or self.statement_running)(msg_id, code), f"the cell to get going: {code}", 180
        )
        self.manager.interrupt_kernel()
        reply = self.client.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        return reply["content"]

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def text(outputs: list[dict[str, Any]], name: str = "stdout") -> str:
    return "".join(
        o["content"]["text"] for o in outputs if o["msg_type"] == "stream" and o["content"]["name"] == name
    )


def value(outputs: list[dict[str, Any]]) -> str | None:
    """The cell's value, its Out[n]: the execute result's text, or None when it has none."""
    results = [o["content"]["data"]["text/plain"] for o in outputs if o["msg_type"] == "execute_result"]
    assert len(results) <= 1, results
    return results[0] if results else None


def displays(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o["content"]["data"]
        for o in outputs
        if o["msg_type"] in ("display_data", "execute_result")
        and o["content"]["data"].get("text/plain") != ""
    ]


@pytest.fixture(scope="module")
def pyspark_kernel(kernel_env: dict[str, Any], server: Server) -> Iterator[Kernel]:
    kernel = Kernel(kernel_env, "dli_pyspark", server)
    yield kernel
    kernel.shutdown()
    wait_no_new_sessions(server, kernel.before)


def test_kernel_answers_while_its_session_starts(kernel_env: dict[str, Any], server: Server) -> None:
    kernel = Kernel(kernel_env, "dli_sql", server)
    try:
        info = kernel.client.kernel_info(reply=True, timeout=10)["content"]
        assert info["language_info"]["name"] == "sql" and info["implementation"] == "dli_kernel"
        new = kernel.session()
        assert new["kind"] == "sql" and new["state"] in ("not_started", "starting")
        assert new["heartbeatTimeoutInSecond"] > 0  # a crashed kernel's session is reaped
        reply, outputs = kernel.execute("SELECT 1 AS one, 'x' AS letter")
        assert reply["status"] == "ok"
        table = displays(outputs)[-1]
        assert "<th>one</th>" in table["text/html"] and "1 row" in table["text/plain"]
    finally:
        kernel.shutdown()
    wait_no_new_sessions(server, kernel.before)


def test_shutdown_while_starting_deletes_the_session(kernel_env: dict[str, Any], server: Server) -> None:
    kernel = Kernel(kernel_env, "dli_pyspark", server)
    try:
        session = kernel.session()  # the session exists: what happens to it below is the kernel's doing
        assert session["state"] in ("not_started", "starting")
    finally:
        kernel.shutdown()
    wait_no_new_sessions(server, kernel.before)
    assert server.get(f"/sessions/{session['id']}").json()["state"] == "killed"


def test_cells_outputs_and_errors(pyspark_kernel: Kernel) -> None:
    reply, outputs = pyspark_kernel.execute("print('hello')\n1 + 1")
    assert reply["status"] == "ok" and text(outputs) == "hello\n" and value(outputs) == "2"

    reply, outputs = pyspark_kernel.execute("1 / 0")
    assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError"
    assert next(o for o in outputs if o["msg_type"] == "error")["content"]["evalue"] == "division by zero"

    reply, outputs = pyspark_kernel.execute(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    )
    png = [d for d in displays(outputs) if "image/png" in d]
    assert reply["status"] == "ok" and base64.b64decode(png[0]["image/png"]).startswith(b"\x89PNG")

    reply, outputs = pyspark_kernel.execute("spark.range(3).toPandas()")
    assert any("<table" in d.get("text/html", "") for d in displays(outputs))


def test_session_log_lines_stream_to_stderr(pyspark_kernel: Kernel) -> None:
    code = (
        "import sys, time\n"
        "sys.__stderr__.write('a line of the driver log\\n'); sys.__stderr__.flush()\n"
        "time.sleep(1.5)"
    )
    reply, outputs = pyspark_kernel.execute(code)
    assert reply["status"] == "ok"
    assert "a line of the driver log" in text(outputs, "stderr")


def test_interrupt_cancels_the_statement(pyspark_kernel: Kernel) -> None:
    reply = pyspark_kernel.interrupted("import time\nwhile True:\n    time.sleep(0.05)")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    reply, outputs = pyspark_kernel.execute("'still here'")
    assert value(outputs) == "'still here'"


def test_completion(pyspark_kernel: Kernel) -> None:
    pyspark_kernel.execute("1")  # the session is ready
    reply = pyspark_kernel.client.complete("spark.ran", 9, reply=True, timeout=30)["content"]
    assert "spark.range" in reply["matches"] and reply["cursor_start"] == 0


def test_a_lost_session_is_replaced(pyspark_kernel: Kernel, server: Server) -> None:
    pyspark_kernel.execute("lost = 1")
    lost = pyspark_kernel.session()
    assert lost["name"].startswith("notebook-")
    assert server.delete(f"/sessions/{lost['id']}").status_code == 200
    reply, outputs = pyspark_kernel.execute("lost")
    assert reply["status"] == "error" and reply["ename"] == "SessionLost"
    assert "next cell runs on a new session" in reply["evalue"]
    reply, outputs = pyspark_kernel.execute("'fresh' if 'lost' not in globals() else 'old'")
    assert value(outputs) == "'fresh'"
    assert pyspark_kernel.session()["id"] != lost["id"]


def test_kernelspecs_installed(kernel_env: dict[str, Any]) -> None:
    specs = KernelSpecManager(kernel_dirs=[kernel_env["kernels"]]).get_all_specs()
    assert {
        name: spec["spec"]["display_name"] for name, spec in specs.items() if name.startswith("dli_")
    } == {
        "dli_pyspark": "PySpark (DLI)",
        "dli_spark": "Spark (DLI)",
        "dli_sql": "Spark SQL (DLI)",
    }
    assert Path(specs["dli_pyspark"]["spec"]["argv"][0]).exists()


def test_progress_shows_as_an_updating_bar(pyspark_kernel: Kernel) -> None:
    messages: list[dict[str, Any]] = []
    # 36 half-second tasks on local[6]: six waves, seconds after the bar appears (at one second).
    code = (
        "import time\n"
        "def slow(rows):\n"
        "    time.sleep(0.5)\n"
        "    return rows\n"
        "spark.sparkContext.parallelize(range(72), 36).mapPartitions(slow).count()"
    )
    reply = pyspark_kernel.client.execute_interactive(code, output_hook=messages.append, timeout=180)
    assert reply["content"]["status"] == "ok"
    bars = [
        m["content"]["data"]["text/plain"]
        for m in messages
        if m["msg_type"] in ("display_data", "update_display_data")
        and m["content"]["data"].get("text/plain", "").startswith("[")
    ]
    figures = [re.fullmatch(r"\[[#.]{30}\] (\d+)% · \d+ s", bar) for bar in bars]
    assert bars and all(figures), bars
    percents = [int(figure.group(1)) for figure in figures if figure]
    # The figure moved: it was seen part way, took more than one value, and never went back.
    assert any(0 < p < 100 for p in percents) and len(set(percents)) > 1, percents
    assert percents == sorted(percents), percents
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    assert updates and updates[-1]["content"]["data"]["text/plain"].startswith("done in")  # one line, updated


def test_bad_magic_input_is_one_line_and_the_kernel_goes_on(pyspark_kernel: Kernel) -> None:
    reply, outputs = pyspark_kernel.execute("%session configure --driver-memory 2")
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    assert "--driver-memory" in reply["evalue"] and "unit" in reply["evalue"]
    assert "Traceback" not in text(outputs, "stderr") + text(outputs)
    reply, outputs = pyspark_kernel.execute("'fine'")
    assert reply["status"] == "ok" and value(outputs) == "'fine'"


def test_logs_follow_until_interrupted(pyspark_kernel: Kernel) -> None:
    pyspark_kernel.execute("1")
    # Interrupted once it has shown the last lines, so while it follows the log.
    assert pyspark_kernel.interrupted("%session logs -n 3 --follow", pyspark_kernel.printed)["status"] == "ok"


def test_restart_replaces_the_session(kernel_env: dict[str, Any], server: Server) -> None:
    kernel = Kernel(kernel_env, "dli_pyspark", server)
    try:
        kernel.execute("first = 1")
        old = kernel.session()["id"]
        kernel.manager.restart_kernel(now=False)
        kernel.client.wait_for_ready(timeout=60)
        _, outputs = kernel.execute("'first' in globals()")
        assert value(outputs) == "False"
        assert server.get(f"/sessions/{old}").json()["state"] in ("killed", "shutting_down")
    finally:
        kernel.shutdown()
    wait_no_new_sessions(server, kernel.before)


def test_spark_kernel_runs_scala_cancels_and_completes(
    kernel_env: dict[str, Any], server: Server, tmp_path: Path
) -> None:
    kernel = Kernel(kernel_env, "dli_spark", server)
    try:
        info = kernel.client.kernel_info(reply=True, timeout=10)["content"]
        assert info["language_info"]["name"] == "scala"
        reply, outputs = kernel.execute("val answer = 40 + 2")
        assert reply["status"] == "ok" and text(outputs).endswith("answer: Int = 42\n")
        reply = kernel.client.complete("spark.rang", 10, reply=True, timeout=60)["content"]
        assert "spark.range" in reply["matches"]
        # Interrupted once the loop runs, past compiling: it first creates a file.
        looping = tmp_path / "looping"
        loop = f"{{ new java.io.File({json.dumps(str(looping))}).createNewFile(); while (true) {{}} }}"
        assert kernel.interrupted(loop, lambda msg_id, code: looping.exists())["ename"] == "KeyboardInterrupt"
        reply, outputs = kernel.execute("answer + 1")
        assert (value(outputs) or "").endswith("Int = 43")
    finally:
        kernel.shutdown()
    wait_no_new_sessions(server, kernel.before)
