"""A failing Spark job in a real kernel: the cell streams a handful of log lines before its error, at the
default level; ``quiet`` streams none, ``all`` every line; ``%session logs`` keeps the whole log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from tests.integration.conftest import Server, new_sessions, wait_no_new_sessions

# Issue 14's job: a long overflow, an ArithmeticException under ANSI mode, in every one of its tasks.
OVERFLOW = 'spark.range(0, 30_000_000, numPartitions=16).selectExpr("sum(id * id)").collect()'
FAILED_TASKS = re.compile(
    r"^ERROR TaskSetManager: \d+ tasks failed in stage [\d.]+.*: \w*ArithmeticException"
)


class Cell:
    """What one cell sent: its reply, its stderr lines and stdout text, its error output."""

    def __init__(self, reply: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        self.reply = reply
        self.messages = messages
        streams = [m["content"] for m in messages if m["msg_type"] == "stream"]
        self.stderr = "".join(s["text"] for s in streams if s["name"] == "stderr").splitlines()
        self.stdout = "".join(s["text"] for s in streams if s["name"] == "stdout")
        self.errors = [m["content"] for m in messages if m["msg_type"] == "error"]

    def stderr_before_error(self) -> bool:
        kinds = [(m["msg_type"], m["content"].get("name")) for m in self.messages]
        last_stderr = max((i for i, kind in enumerate(kinds) if kind == ("stream", "stderr")), default=-1)
        return last_stderr < kinds.index(("error", None))


@pytest.fixture(scope="module")
def kernel(kernel_env: dict[str, Any], server: Server) -> Iterator[Any]:
    before = {s["id"] for s in server.live_sessions()}
    env = {k: v for k, v in kernel_env["env"].items() if k != "DLI_KERNEL_LOG_LEVEL"}  # the default: warn
    manager = KernelManager(
        kernel_name="dli_pyspark", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_env["kernels"]])
    )
    manager.start_kernel(env=env)
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)

    def execute(code: str) -> Cell:
        messages: list[dict[str, Any]] = []
        reply = client.execute_interactive(code, output_hook=messages.append, timeout=300)
        return Cell(reply["content"], messages)

    try:
        assert execute("1 + 1").reply["status"] == "ok"  # the session, started before the job's cell
        assert len(new_sessions(server, before)) == 1
        yield execute
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
        wait_no_new_sessions(server, before)


def test_the_overflow_job_shows_a_handful_of_lines_then_its_error(kernel: Any) -> None:
    cell = kernel(OVERFLOW)
    assert cell.reply["status"] == "error"
    assert [e["ename"] for e in cell.errors] == ["ArithmeticException"]
    assert "ARITHMETIC_OVERFLOW" in cell.errors[0]["evalue"]
    print(f"\nstreamed at warn: {len(cell.stderr)} lines: {cell.stderr}")
    assert 2 <= len(cell.stderr) <= 6, cell.stderr
    assert sum(bool(FAILED_TASKS.match(line)) for line in cell.stderr) == 1, cell.stderr
    assert not any(line.startswith("\tat ") for line in cell.stderr)
    notes = [line for line in cell.stderr if re.match(r"^\(\d+ log lines condensed; %session logs", line)]
    assert len(notes) == 1 and notes[0].endswith(" shows them)"), cell.stderr
    assert cell.stderr_before_error()

    command = notes[0].split("; ")[1].removesuffix(" shows them)")
    for logs in (command, f"{command} --level all"):
        shown = kernel(logs)
        assert shown.reply["status"] == "ok"
        lines = shown.stdout.splitlines()
        assert sum(line.startswith("\tat org.apache.spark") for line in lines) > 50  # every stack trace
        assert any(re.search(r"ERROR Executor: Exception in task \S+ in stage", line) for line in lines)
    condensed = kernel(f"{command} --level warn").stdout.splitlines()
    assert sum(bool(FAILED_TASKS.match(line)) for line in condensed) == 1, condensed
    assert len(condensed) <= 8


def test_quiet_streams_nothing_and_all_every_line(kernel: Any) -> None:
    try:
        assert kernel("%session log-level quiet").reply["status"] == "ok"
        quiet = kernel(OVERFLOW)
        assert quiet.reply["status"] == "error" and quiet.stderr == []
        assert [e["ename"] for e in quiet.errors] == ["ArithmeticException"]

        assert kernel("%session log-level all").reply["status"] == "ok"
        everything = kernel(OVERFLOW)
        assert [e["ename"] for e in everything.errors] == ["ArithmeticException"]
        print(f"\nstreamed at all: {len(everything.stderr)} lines")
        assert sum(line.startswith("\tat ") for line in everything.stderr) > 50
        assert any(re.match(r"^\d\d/\d\d/\d\d \S+ ERROR Executor: ", line) for line in everything.stderr)
        assert everything.stderr_before_error()
        assert "level all" in kernel("%session log-level").stdout
    finally:
        kernel("%session log-level warn")
