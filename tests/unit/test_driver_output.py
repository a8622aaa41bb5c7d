"""Unit tests for the pure parts of dli_kernel.server.driver_process (no kernel process, no Spark)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dli_kernel.processes import pid_alive as _pid_alive
from dli_kernel.server.driver_process import _lines, _OutputCollector, _whole_tokens

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def iopub(msg_type: str, content: dict[str, Any], parent: str = "req-1") -> dict[str, Any]:
    """An IOPub message shaped like the ones jupyter_client hands back."""
    return {
        "header": {
            "msg_id": f"{msg_type}-{id(content)}",
            "msg_type": msg_type,
            "username": "me",
            "session": "s-1",
            "date": "2024-01-01T00:00:00.000000Z",
            "version": "5.3",
        },
        "parent_header": {"msg_id": parent, "msg_type": "execute_request"},
        "metadata": {},
        "content": content,
        "buffers": [],
        "msg_id": f"{msg_type}-{id(content)}",
        "msg_type": msg_type,
    }


def collect(*messages: dict[str, Any], on_text=None) -> _OutputCollector:
    collector = _OutputCollector(on_text)
    for message in messages:
        collector.add(message)
    return collector


def text_of(collector: _OutputCollector) -> str:
    """Livy's text/plain as the collector makes it (before the driver drops a final newline)."""
    return collector.finish()[1]


# -- _OutputCollector -------------------------------------------------------------------------------


def test_collector_folds_a_whole_statement_in_order() -> None:
    seen: list[str] = []
    collector = collect(
        iopub("execute_input", {"code": "...", "execution_count": 4}),
        iopub("stream", {"name": "stdout", "text": "out 1\n"}),
        iopub("stream", {"name": "stderr", "text": "warn\n"}),
        iopub("stream", {"name": "stdout", "text": "out 2\n"}),
        iopub(
            "execute_result",
            {
                "execution_count": 4,
                "data": {"text/plain": "   a\n0  1", "text/html": "<table><tr><td>1</td></tr></table>"},
                "metadata": {},
            },
        ),
        on_text=seen.append,
    )
    assert collector.execution_count == 4
    assert text_of(collector) == "out 1\nwarn\nout 2\n   a\n0  1\n"
    assert collector.data == {"text/html": "<table><tr><td>1</td></tr></table>"}
    assert collector.error is None
    # The callback sees each piece of text/plain as it is appended, in the same order.
    assert "".join(seen) == text_of(collector)


def test_collector_keeps_a_result_that_already_ends_in_a_newline() -> None:
    collector = collect(iopub("execute_result", {"execution_count": 1, "data": {"text/plain": "'x'\n"}}))
    assert text_of(collector) == "'x'\n"
    assert collector.data == {}


def test_collector_drops_the_figure_placeholder_but_keeps_the_image() -> None:
    collector = collect(
        iopub("stream", {"name": "stdout", "text": "plotting\n"}),
        iopub(
            "display_data",
            {
                "data": {"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"},
                "metadata": {"image/png": {"width": 640, "height": 480}},
                "transient": {},
            },
        ),
    )
    assert text_of(collector) == "plotting\n"
    assert "<Figure" not in text_of(collector)
    assert collector.data == {"image/png": PNG}


def test_collector_keeps_display_data_that_is_only_text() -> None:
    seen: list[str] = []
    collector = collect(
        iopub("display_data", {"data": {"text/plain": "shown with display()"}, "metadata": {}}),
        iopub("stream", {"name": "stdout", "text": "after\n"}),
        on_text=seen.append,
    )
    assert text_of(collector) == "shown with display()\nafter\n"
    assert seen == ["shown with display()\n", "after\n"]
    assert collector.data == {}


def test_collector_last_rich_output_of_a_type_wins() -> None:
    collector = collect(
        iopub("display_data", {"data": {"text/html": "<b>first</b>", "text/plain": "first"}}),
        iopub("display_data", {"data": {"text/html": "<b>second</b>", "text/plain": "second"}}),
        iopub("display_data", {"data": {"application/json": {"a": 1}}}),
    )
    assert collector.data == {"text/html": "<b>second</b>", "application/json": {"a": 1}}
    assert text_of(collector) == ""


def test_collector_does_not_change_the_message_it_reads() -> None:
    data = {"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}
    collect(iopub("display_data", {"data": data}))
    assert data == {"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}


def test_collector_keeps_the_error() -> None:
    error = {
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"],
    }
    seen: list[str] = []
    collector = collect(
        iopub("execute_input", {"code": "1/0", "execution_count": 2}),
        iopub("stream", {"name": "stdout", "text": "before\n"}),
        iopub("error", error),
        on_text=seen.append,
    )
    assert collector.error == error
    assert collector.execution_count == 2
    assert text_of(collector) == "before\n"
    assert seen == ["before\n"]


def test_collector_ignores_other_message_types() -> None:
    collector = collect(
        iopub("status", {"execution_state": "busy"}),
        iopub("clear_output", {"wait": False}),
        iopub("comm_open", {"comm_id": "c", "target_name": "t", "data": {}}),
    )
    assert (collector.finish(), collector.data, collector.error, collector.execution_count) == (
        ([], ""),
        {},
        None,
        None,
    )


def test_collector_without_callback() -> None:
    collector = collect(iopub("stream", {"name": "stdout", "text": "x"}), on_text=None)
    assert text_of(collector) == "x"


def test_collector_keeps_the_jupyter_outputs_apart_in_order() -> None:
    collector = collect(
        iopub("execute_input", {"code": "...", "execution_count": 3}),
        iopub("stream", {"name": "stdout", "text": "a"}),
        iopub("stream", {"name": "stdout", "text": "\n"}),
        iopub("stream", {"name": "stderr", "text": "careful\n"}),
        iopub("stream", {"name": "stdout", "text": "b\n"}),
        iopub("display_data", {"data": {"text/html": "<b>x</b>", "text/plain": "x"}, "metadata": {}}),
        iopub("stream", {"name": "stdout", "text": "c\n"}),
        iopub("execute_result", {"execution_count": 3, "data": {"text/plain": "42"}, "metadata": {}}),
    )
    outputs, text = collector.finish()
    assert outputs == [
        {"output_type": "stream", "name": "stdout", "text": "a\n"},  # consecutive chunks merged
        {"output_type": "stream", "name": "stderr", "text": "careful\n"},
        {"output_type": "stream", "name": "stdout", "text": "b\n"},
        {"output_type": "display_data", "data": {"text/html": "<b>x</b>", "text/plain": "x"}},
        {"output_type": "stream", "name": "stdout", "text": "c\n"},
        {"output_type": "execute_result", "data": {"text/plain": "42"}},
    ]
    # Livy's text is what it was before the outputs were kept: streams and the repr, in order.
    assert text == "a\ncareful\nb\nc\n42\n"
    assert collector.data == {"text/html": "<b>x</b>"}


def test_collector_keeps_an_images_metadata_and_its_placeholder_in_the_outputs() -> None:
    metadata = {"image/png": {"width": 640, "height": 480}}
    collector = collect(
        iopub("display_data", {"data": {"image/png": PNG, "text/plain": "<Figure>"}, "metadata": metadata})
    )
    outputs, text = collector.finish()
    assert outputs == [
        {
            "output_type": "display_data",
            "data": {"image/png": PNG, "text/plain": "<Figure>"},
            "metadata": metadata,
        }
    ]
    assert text == ""


def test_collector_outputs_of_a_statement_that_printed_nothing() -> None:
    collector = collect(iopub("execute_input", {"code": "x = 1", "execution_count": 1}))
    assert collector.finish() == ([], "")


# -- _lines -----------------------------------------------------------------------------------------


def test_lines_strips_ansi_and_ends_every_line() -> None:
    traceback = [
        "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
        "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)",
        "Cell \x1b[0;32mIn[1], line 1\x1b[0m\n"
        "\x1b[0;32m----> 1\x1b[0m \x1b[38;5;241m1\x1b[39m\x1b[38;5;241m/\x1b[39m0",
        "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
    ]
    assert _lines(traceback) == [
        "---------------------------------------------------------------------------\n",
        "ZeroDivisionError                         Traceback (most recent call last)\n",
        "Cell In[1], line 1\n",
        "----> 1 1/0\n",
        "ZeroDivisionError: division by zero\n",
    ]


def test_lines_splits_multi_line_entries() -> None:
    assert _lines(["a\nb\nc", "d"]) == ["a\n", "b\n", "c\n", "d\n"]


def test_lines_of_nothing() -> None:
    assert _lines([]) == []


# -- _whole_tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reply", "expected"),
    [
        ("spark.rang", {"matches": ["range"], "cursor_start": 6}, ["spark.range"]),
        (
            "spark.read.js",
            {"matches": ["jdbc", "json"], "cursor_start": 11, "cursor_end": 13},
            ["spark.read.jdbc", "spark.read.json"],
        ),
        ("x = spark.ra", {"matches": ["range"], "cursor_start": 10}, ["spark.range"]),
        ("print(spark.cat", {"matches": ["catalog"], "cursor_start": 12}, ["spark.catalog"]),
        ("pri", {"matches": ["print", "property"], "cursor_start": 0}, ["print", "property"]),
        ("x = pri", {"matches": ["print"], "cursor_start": 4}, ["print"]),
        ("spark.zzz", {"matches": [], "cursor_start": 6}, []),
        ('df["a"].ali', {"matches": ["alias"], "cursor_start": 8}, ["alias"]),
        ("spark.zzz", {"status": "ok"}, []),
    ],
)
def test_whole_tokens(code: str, reply: dict[str, Any], expected: list[str]) -> None:
    assert _whole_tokens(code, reply) == expected


# -- _pid_alive -------------------------------------------------------------------------------------


def test_pid_alive_for_this_process() -> None:
    assert _pid_alive(os.getpid()) is True


def test_pid_alive_for_a_process_that_exited_and_was_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert child.wait(timeout=10) == 0
    assert _pid_alive(child.pid) is False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see zombies")
def test_pid_alive_for_a_zombie() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        # Exited but not yet reaped: kill(pid, 0) still succeeds, the process is dead all the same.
        assert _pid_alive(child.pid) is False
    finally:
        child.wait(timeout=10)
