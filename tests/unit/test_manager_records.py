"""Unit tests for the manager's records, logs, timeouts and outputs (no threads, no driver, no Spark)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from dli_kernel.server.driver_process import DriverError, ExecutionResult
from dli_kernel.server.manager import ManagedSession, Statement
from dli_kernel.server.reaper import expired
from dli_kernel.server.records import error_output as _error_output
from dli_kernel.server.records import session_from_record as _session_from_record
from dli_kernel.server.records import statement_output as _output
from dli_kernel.spec import SessionSpec

FULL_SPEC = SessionSpec(
    kind="sql",
    name="nightly load",
    cluster_name="q1",
    sc_type="b",
    driver_memory_mb=2500,
    executor_cores=3,
    num_executors=2,
    conf={"spark.sql.shuffle.partitions": "8", "spark.a": "1"},
    jars=("a.jar", "b.jar"),
    py_files=("p.py",),
    files=("f.txt",),
    archives=("env.zip#env",),
    modules=("sys.datasource.css",),
    resources=({"name": "r.jar", "type": "jar"},),
    groups=({"name": "g", "resources": [{"name": "x.jar", "type": "jar"}]},),
    heartbeat_timeout_s=60,
    proxy_user="bob",
    ttl_s=3600,
    idle_timeout_s=900,
)


def make_session(tmp_path: Path, spec: SessionSpec | None = None, **kwargs) -> ManagedSession:
    fields = {
        "id": 3,
        "uuid": "6c1f3b7e-0000-4000-8000-000000000003",
        "spec": spec or SessionSpec(),
        "owner": "alice",
        "project_id": None,
        "workdir": tmp_path / "sessions" / "3",
    }
    fields.update(kwargs)
    session = ManagedSession(**fields)
    session.workdir.mkdir(parents=True, exist_ok=True)
    return session


def through_json(value):
    return json.loads(json.dumps(value))


# -- records ----------------------------------------------------------------------------------------


def statements() -> list[Statement]:
    return [
        Statement(
            id=0,
            code="select 1",
            kind="sql",
            max_rows=10,
            state="available",
            output={"status": "ok", "execution_count": 0, "data": {"application/json": {"data": [[1]]}}},
            progress=1.0,
            started=1_700_000_000_000,
            completed=1_700_000_000_500,
            job_group="dli-abc",
        ),
        Statement(
            id=1,
            code="1/0",
            kind="pyspark",
            state="error",
            output=_error_output(Statement(id=1, code="", kind="pyspark"), "ZeroDivisionError", "x"),
        ),
        Statement(id=2, code="spark.range(9).count()", kind="pyspark", state="running", cancel_sent=12.5),
        Statement(id=3, code="print(1)", kind="pyspark"),
    ]


@pytest.mark.parametrize("via_json", [False, True], ids=["direct", "json"])
def test_session_record_round_trip(tmp_path: Path, via_json: bool) -> None:
    session = make_session(
        tmp_path,
        FULL_SPEC,
        project_id="0f7d6b",
        state="idle",
        created=1_700_000_000_000,
        updated=1_700_000_000_123,
        app_id="local-1700000000000",
        ui_url="http://127.0.0.1:4040",
        ended_reason=None,
        statements=statements(),
    )
    record = session.record()
    statement_records = [statement.record() for statement in session.statements]
    if via_json:  # what the store does
        record, statement_records = through_json(record), through_json(statement_records)

    restored = _session_from_record(record, statement_records)

    assert restored.spec == FULL_SPEC
    assert restored.spec.jars == ("a.jar", "b.jar")
    assert restored.spec.groups == ({"name": "g", "resources": [{"name": "x.jar", "type": "jar"}]},)
    assert restored.workdir == session.workdir
    assert restored.statements == session.statements
    assert restored.record() == session.record()
    for name in ("id", "uuid", "owner", "project_id", "state", "created", "updated", "app_id", "ui_url"):
        assert getattr(restored, name) == getattr(session, name), name
    # Runtime-only fields are not carried over.
    assert restored.driver is None
    assert not restored.queue
    assert restored.stopping is False


def test_session_record_is_plain_json(tmp_path: Path) -> None:
    session = make_session(tmp_path, FULL_SPEC, state="dead", ended_reason="the driver process exited")
    record = session.record()
    assert through_json(record) == record | {"spec": through_json(record["spec"])}
    assert record["workdir"] == str(tmp_path / "sessions" / "3")
    assert (record["id"], record["state"], record["owner"]) == (3, "dead", "alice")
    assert record["ended_reason"] == "the driver process exited"
    assert record["spec"]["sc_type"] == "B"
    assert record["spec"]["driver_memory_mb"] == 2500
    assert record["spec"]["conf"] == {"spark.sql.shuffle.partitions": "8", "spark.a": "1"}
    assert set(record) == {
        "id", "uuid", "spec", "owner", "project_id", "workdir", "state", "created", "updated", "app_id",
        "ui_url", "ended_reason", "shared_driver",
    }  # fmt: skip
    assert set(record["spec"]) == {f.name for f in dataclasses.fields(SessionSpec)}


def test_default_spec_round_trip(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    restored = _session_from_record(through_json(session.record()), [])
    assert restored.spec == SessionSpec()
    assert restored.statements == []
    assert restored.state == "not_started"


def test_an_ended_session_round_trip(tmp_path: Path) -> None:
    session = make_session(tmp_path, state="killed", ended_reason="deleted by the user")
    restored = _session_from_record(through_json(session.record()), [])
    assert restored.ended is True
    assert restored.ended_reason == "deleted by the user"


# -- log_lines --------------------------------------------------------------------------------------


@pytest.fixture
def logged(tmp_path: Path) -> ManagedSession:
    session = make_session(tmp_path)
    session.log_path.write_text("".join(f"line {n}\n" for n in range(10)))
    return session


@pytest.mark.parametrize(
    ("start", "size", "expected"),
    [
        (None, 3, (7, 10, ["line 7", "line 8", "line 9"])),
        (None, 100, (0, 10, [f"line {n}" for n in range(10)])),
        (None, 10, (0, 10, [f"line {n}" for n in range(10)])),
        (0, 2, (0, 10, ["line 0", "line 1"])),
        (4, 3, (4, 10, ["line 4", "line 5", "line 6"])),
        (8, 5, (8, 10, ["line 8", "line 9"])),
        (10, 5, (10, 10, [])),
        (25, 5, (25, 10, [])),
    ],
)
def test_log_lines(logged: ManagedSession, start: int | None, size: int, expected: tuple) -> None:
    assert logged.log_lines(start, size) == expected


def test_log_lines_default_is_the_last_hundred(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    session.log_path.write_text("".join(f"{n}\n" for n in range(150)))
    start, total, lines = session.log_lines()
    assert (start, total, len(lines), lines[0], lines[-1]) == (50, 150, 100, "50", "149")


def test_log_lines_of_a_missing_log(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    assert not session.log_path.exists()
    assert session.log_lines() == (0, 0, [])
    assert session.log_lines(5, 10) == (5, 0, [])


def test_log_lines_survive_bad_bytes(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    session.log_path.write_bytes(b"ok\n\xff\xfe broken\nlast")
    assert session.log_lines() == (0, 3, ["ok", "\ufffd\ufffd broken", "last"])


# -- _expired ---------------------------------------------------------------------------------------

NOW = 10_000.0


def timed_session(tmp_path: Path, quiet: float, idle: float, state: str = "idle", **spec) -> ManagedSession:
    session = make_session(tmp_path, SessionSpec(**spec), state=state)
    session.last_touch = NOW - quiet
    session.last_activity = NOW - idle
    return session


@pytest.mark.parametrize(
    ("spec", "quiet", "idle", "state", "expected"),
    [
        ({}, 1e6, 1e6, "idle", None),
        ({"heartbeat_timeout_s": 60}, 61, 0, "busy", "no request for 61 s (heartbeatTimeoutInSecond=60)"),
        ({"heartbeat_timeout_s": 60}, 60, 1e6, "idle", None),
        ({"heartbeat_timeout_s": 60}, 59, 0, "idle", None),
        ({"ttl_s": 3600}, 3601, 0, "busy", "no request for 3601 s (ttl=3600 s)"),
        ({"ttl_s": 3600}, 3599, 0, "idle", None),
        ({"idle_timeout_s": 900}, 0, 901, "idle", "no statement for 901 s (idleTimeout=900 s)"),
        ({"idle_timeout_s": 900}, 0, 901, "busy", None),
        ({"idle_timeout_s": 900}, 0, 901, "starting", None),
        ({"idle_timeout_s": 900}, 5000, 899, "idle", None),
        (
            {"heartbeat_timeout_s": 60, "ttl_s": 90},
            100,
            0,
            "idle",
            "no request for 100 s (heartbeatTimeoutInSecond=60)",
        ),
        ({"heartbeat_timeout_s": 300, "ttl_s": 60}, 100, 0, "idle", "no request for 100 s (ttl=60 s)"),
    ],
)
def test_expired(
    tmp_path: Path, spec: dict, quiet: float, idle: float, state: str, expected: str | None
) -> None:
    session = timed_session(tmp_path, quiet, idle, state, **spec)
    assert expired(session, NOW) == expected


# -- outputs ----------------------------------------------------------------------------------------


def test_output_ok() -> None:
    statement = Statement(id=4, code="1 + 1", kind="pyspark")
    data = {"text/plain": "2\n", "text/html": "<b>2</b>"}
    result = ExecutionResult(status="ok", execution_count=17, data=data)
    # Livy counts statements per session: the statement id, not the kernel's execution count.
    assert _output(statement, result) == {"status": "ok", "execution_count": 4, "data": data}


def test_output_error_keeps_the_traceback() -> None:
    statement = Statement(id=1, code="1/0", kind="pyspark")
    traceback = [
        "---------------------------------------------------------------------------\n",
        "ZeroDivisionError                         Traceback (most recent call last)\n",
        "Cell In[3], line 1\n",
        "----> 1 1/0\n",
        "ZeroDivisionError: division by zero\n",
    ]
    result = ExecutionResult(
        status="error",
        execution_count=3,
        ename="ZeroDivisionError",
        evalue="division by zero",
        traceback=traceback,
    )
    assert _output(statement, result) == {
        "status": "error",
        "execution_count": 1,
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "traceback": traceback,
    }


def test_output_sql_error_is_the_message_only() -> None:
    statement = Statement(id=2, code="select * from nowhere", kind="sql")
    evalue = (
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `nowhere` cannot be found.\nline 1 pos 14;\n'Project [*]"
    )
    result = ExecutionResult(
        status="error",
        execution_count=9,
        ename="AnalysisException",
        evalue=evalue,
        traceback=[
            "---------------------------------------------------------------------------\n",
            "AnalysisException                         Traceback (most recent call last)\n",
            "File /x/dli_kernel/server/runtime.py:160, in run_sql(query, max_rows)\n",
            "    frame = _spark.sql(query)\n",
            f"AnalysisException: {evalue}\n",
        ],
    )
    output = _output(statement, result)
    assert output == {
        "status": "error",
        "execution_count": 2,
        "ename": "AnalysisException",
        "evalue": evalue,
        "traceback": [
            "AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] The table or view `nowhere` cannot be found.\n",
            "line 1 pos 14;\n",
            "'Project [*]\n",
        ],
    }
    assert not any("runtime.py" in line or "Traceback" in line for line in output["traceback"])


def test_error_output() -> None:
    statement = Statement(id=5, code="x", kind="pyspark")
    assert _error_output(statement, "SessionDied", DriverError("the driver process exited")) == {
        "status": "error",
        "execution_count": 5,
        "ename": "SessionDied",
        "evalue": "the driver process exited",
        "traceback": ["SessionDied: the driver process exited\n"],
    }


def test_error_output_with_a_plain_message() -> None:
    statement = Statement(id=0, code="x", kind="sql")
    output = _error_output(statement, "SessionEnded", "the session ended: deleted by the user")
    assert output["evalue"] == "the session ended: deleted by the user"
    assert output["traceback"] == ["SessionEnded: the session ended: deleted by the user\n"]
    assert json.loads(json.dumps(output)) == output


# -- log_lines reads from where it left off ---------------------------------------------------------


def whole_file_lines(path: Path, start: int | None, size: int) -> tuple[int, int, list[str]]:
    """What log_lines returned when it read the whole file on every call: the results it must keep."""
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    if start is None:
        start = max(0, len(lines) - size)
    return start, len(lines), lines[start : start + size]


WINDOWS = [(None, 1), (None, 3), (None, 100), (0, 1), (0, 4), (1, 2), (2, 50), (5, 3), (40, 10)]


def assert_same_as_whole_file(session: ManagedSession) -> None:
    for start, size in WINDOWS:
        expected = whole_file_lines(session.log_path, start, size)
        assert session.log_lines(start, size) == expected, (start, size)


def test_log_lines_follow_a_growing_log(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    assert_same_as_whole_file(session)  # no log yet
    pieces = [
        b"26/01/02 10:00:00 INFO SparkContext: Running Spark\n",
        b"half a line",  # a line being written: it shows, and grows
        b" and the rest\n",
        b"progress\r50%\r100%\n",  # carriage returns end lines too
        b"windows\r\n\r\nblank above\n",
        b"bad bytes \xff\xfe here and a cut \xe2\x82",  # bad bytes are replaced, as before
        b"\n\xc2\x85next-line char\xe2\x80\xa8line sep\x0bvt\x0cff\x1cfs\n",
        b"\n\n\n",
        b"no newline at the end",
    ]
    for piece in pieces:
        with open(session.log_path, "ab") as log:
            log.write(piece)
        assert_same_as_whole_file(session)
    session.log.append("a line of the server's own")
    assert_same_as_whole_file(session)
    assert session.log_lines(None, 1)[2][0].endswith("INFO dli-kernel: a line of the server's own")


def test_log_lines_of_a_log_replaced_or_cut(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    session.log_path.write_text("".join(f"old {n}\n" for n in range(30)))
    assert_same_as_whole_file(session)
    session.log_path.write_text("cut\n")  # the same file, shorter
    assert_same_as_whole_file(session)
    replacement = session.log_path.with_name("new.log")
    replacement.write_text("".join(f"new {n}\n" for n in range(40)))
    os.replace(replacement, session.log_path)  # another file, longer
    assert_same_as_whole_file(session)
    session.log_path.unlink()
    assert_same_as_whole_file(session)


def bytes_read_by_this_process() -> int:
    try:
        stats = Path("/proc/self/io").read_text()
    except OSError:
        pytest.skip("this system does not count the bytes a process reads (/proc/self/io)")
    return int(stats.split("rchar:")[1].split()[0])


def test_a_session_get_does_not_read_the_whole_log_again(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    line = "26/01/02 10:00:00 INFO DAGScheduler: Job 12 finished: count at <stdin>:1, took 0.05 s\n"
    session.log_path.write_text(line * 50_000)  # 4 MB: a few days of INFO logging
    assert session.log_lines(size=10)[1] == 50_000
    with open(session.log_path, "a") as log:
        log.write("the newest line\n")
    before = bytes_read_by_this_process()
    start, total, lines = session.log_lines(size=10)
    read = bytes_read_by_this_process() - before
    assert (start, total, lines[-1]) == (49_991, 50_001, "the newest line")
    assert read < 64_000, f"{read} bytes read to show 10 lines of a 4 MB log"
    before = bytes_read_by_this_process()
    assert session.log_lines(20_000, 2)[2] == [line.rstrip("\n")] * 2
    assert bytes_read_by_this_process() - before < 64_000
