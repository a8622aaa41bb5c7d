"""``spark_log``: a session's log condensed, on real driver.log samples (tests/unit/spark_logs/, cut from
the logs of the embedded server's PySpark 4 sessions) and on the other forms Spark and Livy builds write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dli_kernel.kernel.spark_log import LEVELS, LogFolder, condense

SAMPLES = Path(__file__).parent / "spark_logs"


def sample(name: str) -> list[str]:
    return (SAMPLES / name).read_text().splitlines()


def records(lines: list[str]) -> list[list[str]]:
    """The lines cut into what the driver writes at once: a levelled line with the lines that follow it."""
    batches: list[list[str]] = []
    for line in lines:
        if re.match(r"^\d\d/\d\d/\d\d ", line) or not batches:
            batches.append([])
        batches[-1].append(line)
    return batches


# -- the overflow job of issue 14 -----------------------------------------------------------------


def test_the_overflow_jobs_wall_of_stack_traces_is_two_lines() -> None:
    lines = sample("overflow.log")[8:]  # from the statement's first line on, as a cell streams it
    shown = condense(lines, "warn")
    assert len(lines) > 140 and len(shown) == 2
    first, count = shown
    assert first.startswith("ERROR Executor: Exception in task 2.0 in stage 0.0 (TID 2): ")
    assert count.startswith(
        "ERROR TaskSetManager: 4 tasks failed in stage 0.0, job aborted: SparkArithmeticException: "
        "[ARITHMETIC_OVERFLOW] overflow."
    )
    assert sum(bool(re.search(r"\d+ tasks failed.*ArithmeticException", line)) for line in shown) == 1
    assert not any(line.startswith(("\tat", "org.apache")) for line in shown)


def test_the_first_failure_shows_at_once_and_the_count_when_the_stage_is_done() -> None:
    folder = LogFolder("warn")
    batches = records(sample("overflow.log")[8:])
    assert folder.feed(batches[0]) == [
        "ERROR Executor: Exception in task 2.0 in stage 0.0 (TID 2): SparkArithmeticException: "
        "[ARITHMETIC_OVERFLOW] overflow. Use 'try_add' to tolerate overflow and return NULL instead. If "
        'necessary set "spark.sql.ansi.enabled" to "false" to bypass this error. SQLSTATE: 22003'
    ]
    assert [folder.feed(batch) for batch in batches[1:]] == [[]] * (len(batches) - 1)  # folded, so far
    assert [line.split(":")[1] for line in folder.flush()] == [" 4 tasks failed in stage 0.0, job aborted"]
    assert folder.note() == [
        f"({folder.fed - 1} log lines condensed; %session logs -n {folder.fed} shows them)"
    ]


def test_a_different_line_completes_the_fold() -> None:
    folder = LogFolder("warn")
    folder.feed(sample("overflow.log")[8:])
    shown = folder.feed(["26/12/02 14:35:02 WARN SparkContext: something else"])
    assert [line.split(":")[0] for line in shown] == ["ERROR TaskSetManager", "WARN SparkContext"]
    assert folder.flush() == []  # said already


def test_a_fold_cut_by_a_print_goes_on_counting() -> None:
    failures = records(sample("overflow.log")[8:])
    folder = LogFolder("warn")
    shown = folder.feed(failures[0] + failures[1]) + folder.feed(["a print"]) + folder.feed(failures[2])
    shown += folder.flush()
    assert [line[:40] for line in shown[1:]] == [
        "ERROR TaskSetManager: 2 tasks failed in ",
        "a print",
        "ERROR TaskSetManager: 3 tasks failed in ",
    ]


# -- Python workers, cancels, prints -----------------------------------------------------------------


def test_a_python_workers_error_is_its_tracebacks_last_line() -> None:
    shown = condense(sample("python_worker.log"), "warn")
    assert shown == [
        "ERROR Executor: Exception in task 1.0 in stage 1.0 (TID 12): PythonException: "
        "ZeroDivisionError: division by zero"
    ]  # the abort adds nothing to one failure


def test_killed_tasks_are_info_and_counted_apart() -> None:
    assert condense(sample("python_worker.log"), "info")[-1] == (
        "ERROR TaskSetManager: 1 task failed in stage 1.0 (1 more killed), job aborted: PythonException: "
        "ZeroDivisionError: division by zero"
    )
    cancel = sample("cancel.log")
    assert condense(cancel, "warn") == cancel[:6]  # the user's prints and warning, in full; no kills
    assert condense(cancel, "info")[6:] == [
        "INFO PythonRunner: Incomplete task interrupted: Attempting to kill Python Worker - task 5.0 in "
        "stage 5 (TID 22)",
        "  (and 5 more like it)",
        "INFO TaskSetManager: Lost task 3.0 in stage 5.0 (TID 20) (localhost executor driver): TaskKilled "
        "(Stage cancelled: [SPARK_JOB_CANCELLED] Job 4 cancelled statement cancelled SQLSTATE: XXKDA)",
        "INFO TaskSetManager: 6 tasks killed in stage 5.0: TaskKilled (Stage cancelled: "
        "[SPARK_JOB_CANCELLED] Job 4 cancelled statement cancelled SQLSTATE: XXKDA)",
    ]


def test_prints_are_never_folded_as_repeats() -> None:
    prints = [f"row {n}" for n in range(5)]
    assert condense(prints, "warn") == prints
    assert condense(prints, "quiet") == []


def test_a_python_traceback_in_the_log_is_its_last_line() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "worker.py", line 1, in <module>',
        "    main()",
        "KeyError: 'x'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "worker.py", line 3, in <module>',
        "RuntimeError: worker crashed",
        "after it",
    ]
    assert condense(lines, "warn") == ["RuntimeError: worker crashed", "after it"]


# -- the levels --------------------------------------------------------------------------------------


def test_the_levels() -> None:
    lines = sample("overflow.log")
    assert LEVELS == ("quiet", "warn", "info", "all")
    assert condense(lines, "all") == lines
    assert condense(lines, "quiet") == []
    warn, info = condense(lines, "warn"), condense(lines, "info")
    assert not any("dli-kernel" in line for line in warn)
    assert "INFO dli-kernel: session 344460 accepted (pyspark)" in info
    assert 'Setting default log level to "WARN".' in info and len(info) == len(warn) + 7
    with pytest.raises(ValueError, match="quiet, warn, info, all"):
        LogFolder("loud")


def test_all_and_quiet_say_nothing_about_condensing() -> None:
    for level in ("all", "quiet"):
        folder = LogFolder(level)
        folder.feed(sample("overflow.log"))
        assert folder.flush() == [] and folder.note() == []


def test_debug_shows_only_with_all() -> None:
    line = "26/12/02 14:35:02 DEBUG BlockManager: detail"
    assert condense([line], "info") == [] and condense([line], "all") == [line]


def test_repeated_warnings_fold_numbers_aside() -> None:
    lines = [
        f"26/12/02 14:35:0{n} WARN RowBasedKeyValueBatch: Calling spill() on batch {n}" for n in range(4)
    ]
    assert condense(lines, "warn") == [
        "WARN RowBasedKeyValueBatch: Calling spill() on batch 0",
        "  (and 3 more like it)",
    ]


# -- the forms of a log line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "24/01/02 12:34:56 WARN Utils: disk is slow",
        "2024-01-02 12:34:56,789 WARN Utils: disk is slow",
        "2024-01-02T12:34:56.789Z WARN  [main] org.apache.spark.util.Utils: disk is slow",
        "2024-01-02 12:34:56,789 WARN [dispatcher-1] org.apache.spark.util.Utils - disk is slow",
        "2024-01-02 12:34:56,789 | WARN  | [main] | disk is slow | org.apache.util.Utils (Utils.java:4)",
        "WARNING:Utils:disk is slow",
    ],
)
def test_every_form_of_a_levelled_line(line: str) -> None:
    assert condense([line], "warn") == ["WARN Utils: disk is slow"]
    assert condense([line.replace("WARN", "INFO", 1).replace("INFOING", "INFO")], "warn") == []


def test_the_root_cause_names_a_driver_error_where_it_is_short() -> None:
    lines = [
        "24/01/02 12:34:56 ERROR FileFormatWriter: Aborting job 5.",
        "org.apache.spark.SparkException: Job aborted due to stage failure: " + "x" * 300,
        "\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2672)",
        "Caused by: java.io.IOException: No space left on device",
        "\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)",
        "\t... 42 more",
        "",
    ]
    assert condense(lines, "warn") == [
        "ERROR FileFormatWriter: Aborting job 5.: IOException: No space left on device"
    ]
    long_cause = [*lines[:3], "Caused by: java.io.IOException: " + "y" * 300]
    shown = condense(long_cause, "warn")[0]
    assert "SparkException: Job aborted" in shown and shown.endswith("…") and len(shown) < 400


def test_a_sql_context_in_the_message_is_folded_too() -> None:
    lines = [
        "24/01/02 12:34:56 ERROR Executor: Exception in task 0.0 in stage 3.0 (TID 7)",
        "org.apache.spark.SparkArithmeticException: [DIVIDE_BY_ZERO] Division by zero. SQLSTATE: 22012",
        "== SQL (line 1, position 8) ==",
        "select a / b from t",
        "       ^^^^^",
        "",
        "\tat org.apache.spark.sql.errors.QueryExecutionErrors$.divideByZeroError(QueryErrors.scala:203)",
        "user print after it",
    ]
    assert condense(lines, "warn") == [
        "ERROR Executor: Exception in task 0.0 in stage 3.0 (TID 7): SparkArithmeticException: "
        "[DIVIDE_BY_ZERO] Division by zero. SQLSTATE: 22012",
        "user print after it",
    ]


def test_a_stack_trace_cut_by_a_batch_stays_folded() -> None:
    folder = LogFolder("warn")
    record = records(sample("overflow.log")[8:])[0]
    shown = folder.feed(record[:3]) + folder.feed(record[3:]) + folder.flush()
    assert len(shown) == 1 and shown[0].startswith("ERROR Executor: Exception in task 2.0")
    assert folder.note()[0].startswith(f"({len(record) - 1} log lines condensed; %session logs shows")


@pytest.mark.parametrize("name", ["overflow.log", "python_worker.log", "cancel.log"])
def test_a_batch_may_end_anywhere_in_a_record(name: str) -> None:
    """The log is read while the driver writes it: a batch can end right after a record's first line,
    inside its exception's message or its Python traceback. What follows is still folded into it."""
    lines = sample(name)
    whole = condense(lines, "warn")
    for cut in range(1, len(lines)):
        folder = LogFolder("warn")
        shown = folder.feed(lines[:cut]) + folder.feed(lines[cut:]) + folder.flush()
        assert len(shown) == len(whole), f"cut before line {cut}: {shown}"
        assert not any(line.startswith(("\tat ", "  File ", "org.apache")) for line in shown)


def test_a_python_traceback_cut_by_a_batch_waits_for_its_error() -> None:
    traceback = [
        "Traceback (most recent call last):",
        '  File "worker.py", line 1, in <module>',
        "    main()",
    ]
    folder = LogFolder("warn")
    assert folder.feed(traceback) == []
    assert folder.feed(["KeyError: 'x'", "", "During handling of the above exception"]) == ["KeyError: 'x'"]
    assert folder.feed(["", "Traceback (most recent call last):", "RuntimeError: crashed"]) == [
        "RuntimeError: crashed"
    ]


def test_a_stack_trace_without_its_record_is_its_first_line() -> None:
    trace = ["\tat org.apache.X.y(X.java:1)", "\tat org.apache.X.z(X.java:2)", "\t... 42 more"]
    printed = [
        "java.lang.IllegalStateException: boom",
        *trace,
        "Caused by: java.io.IOException: disk",
        *trace,
    ]
    assert condense(printed, "warn") == ["java.lang.IllegalStateException: boom"]  # printStackTrace
    assert condense([*trace, "a print"], "warn") == ["a print"]  # `%session logs -n` began inside one


def test_structured_lines_are_records_too() -> None:
    pyspark = sample("pyspark_json.log")  # what PySpark 4's own logger wrote as the overflow job failed
    assert condense(pyspark, "warn") == []  # it repeats the statement's error, which the cell shows
    assert condense(pyspark, "info") == [
        "INFO SQLQueryContextLogger: [ARITHMETIC_OVERFLOW] overflow. Use 'try_add' to tolerate overflow and "
        'return NULL instead. If necessary set "spark.sql.ansi.enabled" to "false" to bypass this error. '
        "SQLSTATE: 22003 (SparkArithmeticException)"
    ]
    jvm = (
        '{"ts":"2024-06-26T18:53:29.457Z","level":"WARN","msg":"Lost task 0.0 in stage 1.0 (TID 1) (host '
        'executor 1): java.lang.ArithmeticException: long overflow","logger":"TaskSetManager"}'
    )
    assert condense([jvm, jvm.replace("(TID 1)", "(TID 2)")], "warn") == [
        "WARN TaskSetManager: Lost task 0.0 in stage 1.0 (TID 1) (host executor 1): ArithmeticException: "
        "long overflow",
        "WARN TaskSetManager: 2 tasks failed in stage 1.0: ArithmeticException: long overflow",
    ]
    odd = ['{"not": "a log line"}', "{broken}", '{"a": ' + "[" * 100_000 + "}"]
    assert condense(odd, "warn") == odd


def test_an_indented_print_after_a_shown_warning_is_the_users() -> None:
    folder = LogFolder("warn")
    assert folder.feed(["26/12/02 14:35:02 WARN Utils: slow"]) == ["WARN Utils: slow"]
    assert folder.feed(["\tat org.apache.X.y(X.java:1)", "   3   4"]) == ["   3   4"]  # its trace, a print


def test_a_log_of_only_hidden_lines_leaves_the_cell_quiet() -> None:
    folder = LogFolder("warn")
    shown = folder.feed(
        [
            "26/12/02 14:34:59 INFO DAGScheduler: Job 3 finished",
            "26/12/02 14:34:59 INFO dli-kernel: statement 4 done",
        ]
    )
    assert shown == [] and folder.flush() == []
    assert folder.folded == 2 and folder.note() == []  # nothing on stderr, so no "condensed" line either


def test_the_note_comes_with_what_was_shown() -> None:
    folder = LogFolder("warn")
    shown = folder.feed(
        [
            "26/12/02 14:34:59 WARN TaskSetManager: Stage 0 contains a task of very large size",
            "26/12/02 14:35:00 INFO X: y",
        ]
    )
    assert len(shown) == 1 and folder.note() == ["(1 log line condensed; %session logs shows them)"]
