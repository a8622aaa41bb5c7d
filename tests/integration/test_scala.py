"""Scala statements on the real server: REPL text, errors, executors, shared sessions, cancel, completion."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Server,
    idle_session,
    wait_marker,
    wait_no_spark_jobs,
    wait_spark_tasks,
    wait_until,
)

INTERPRETER_STARTED = "Scala interpreter started in"


@pytest.fixture(scope="module")
def scala(server: Server) -> Iterator[int]:
    """One session created with kind spark, shared by the tests that only run statements on it."""
    yield from idle_session(server, "spark", "shared-scala", heartbeat=600)


def text(output: dict) -> str:
    assert output["status"] == "ok", output
    return output["data"]["text/plain"]


def log_text(server: Server, session_id: int) -> str:
    return "\n".join(
        server.get(f"/sessions/{session_id}/log", params={"from": 0, "size": 100_000}).json()["log"]
    )


def test_spark_kind_session_runs_scala_by_default_and_starts_the_interpreter_lazily(server: Server) -> None:
    session = server.create(kind="scala")  # Livy's alias
    try:
        assert session["kind"] == "spark"
        server.wait_state(session["id"], ("idle",))
        assert INTERPRETER_STARTED not in log_text(server, session["id"])  # not paid for until needed
        assert text(server.run(session["id"], "1+1")) == "res0: Int = 2\n"
        started = re.search(rf"{INTERPRETER_STARTED} ([0-9.]+) s", log_text(server, session["id"]))
        assert started and float(started.group(1)) > 0
        assert text(server.run(session["id"], "res0 * 21")) == "res1: Int = 42\n"
    finally:
        assert server.delete(f"/sessions/{session['id']}").status_code == 200


def test_definitions_print_like_livy(server: Server, scala: int) -> None:
    assert text(server.run(scala, "val x = 3")) == "x: Int = 3\n"
    assert text(server.run(scala, "var counter = x + 1")) == "counter: Int = 4\n"
    assert text(server.run(scala, "def twice(n: Int) = n * 2")) == "def twice(n: Int): Int\n"
    # Each top-level statement runs and echoes in turn, as in spark-shell; a value keeps its own text.
    cell = 'val a = 1; val b = "x\\nval y: z"\nval c = twice(a) +\n  x'
    assert text(server.run(scala, cell)) == "a: Int = 1\nb: String = \nx\nval y: z\nc: Int = 5\n"


def test_println_is_captured_in_order(server: Server, scala: int) -> None:
    output = server.run(scala, 'println("hello")\nprint("no newline ")\n40 + 2')
    assert re.fullmatch(r"hello\nno newline res\d+: Int = 42\n", text(output))
    shown = text(server.run(scala, "spark.range(3).show()"))
    assert "| id|" in shown and "|  2|" in shown


def test_java_streams_of_the_statement_are_captured_and_the_jvms_log_is_not(
    server: Server, scala: int
) -> None:
    code = (
        'System.out.println("java out")\n'
        'System.err.println("java err")\n'
        # Another thread's writes are the JVM's own, like Spark's logging: they go to the session log.
        'val other = new Thread(() => System.err.println("from another thread")); other.start(); other.join()'
    )
    assert text(server.run(scala, code)).startswith("java out\njava err\nother: Thread = Thread[")
    wait_until(
        lambda: "from another thread" in log_text(server, scala),
        "a JVM thread's stderr in the session log",
        10,
    )


def test_compile_error_has_message_and_line(server: Server, scala: int) -> None:
    output = server.run(scala, "val ok = 1\nval sum = ok +\n  missingName")
    assert output["status"] == "error"
    assert output["ename"] == "CompileError"
    assert output["evalue"] == "not found: value missingName"
    assert output["traceback"][0] == "<console>:3: error: not found: value missingName\n"
    assert "  missingName\n" in output["traceback"] and "  ^\n" in output["traceback"]
    one_line = server.run(scala, "undefinedThing + 1")
    assert one_line["traceback"] == [
        "<console>:1: error: not found: value undefinedThing\n",
        "undefinedThing + 1\n",
        "^\n",
    ]
    incomplete = server.run(scala, "val open = (")
    assert incomplete["status"] == "error" and "incomplete" in incomplete["evalue"]
    assert text(server.run(scala, "ok")).endswith("Int = 1\n")  # what came before the error ran


def test_runtime_exception_has_class_and_message(server: Server, scala: int) -> None:
    output = server.run(scala, 'def fail(n: Int): Int = throw new IllegalStateException(s"boom $n")\nfail(7)')
    assert output["status"] == "error"
    assert output["ename"] == "java.lang.IllegalStateException"
    assert output["evalue"] == "boom 7"
    assert output["traceback"][0] == "java.lang.IllegalStateException: boom 7\n"
    assert any("fail" in line for line in output["traceback"][1:])
    zero = server.run(scala, "1 / 0")
    assert (zero["ename"], zero["evalue"]) == ("java.lang.ArithmeticException", "/ by zero")
    own = server.run(
        scala, 'class QuotaExceeded(m: String) extends Exception(m)\nthrow new QuotaExceeded("too many")'
    )
    assert (own["ename"], own["evalue"]) == ("QuotaExceeded", "too many")  # named as the user wrote it


def test_spark_and_sc_are_bound(server: Server, scala: int) -> None:
    assert re.fullmatch(r"res\d+: Long = 10\n", text(server.run(scala, "spark.range(10).count()")))
    assert re.search(r"String = local\[", text(server.run(scala, "sc.master")))


def test_closures_run_on_executors(server: Server, scala: int) -> None:
    # The closures' classes exist only in the interpreter: executors must load them from the driver.
    assert re.fullmatch(
        r"res\d+: Double = 10100.0\n", text(server.run(scala, "sc.parallelize(1 to 100).map(_ * 2).sum()"))
    )
    code = "val factor = 3\nsc.parallelize(1 to 10, 4).map(_ * factor).filter(_ % 2 == 0).collect().sum"
    assert text(server.run(scala, code)).endswith("Int = 90\n")


def test_case_class_dataset(server: Server, scala: int) -> None:
    code = (
        "case class Person(name: String, age: Int)\n"
        'val people = Seq(Person("ann", 31), Person("bob", 45), Person("cy", 52)).toDS()\n'
        'people.filter(_.age > 40).map(p => p.name.toUpperCase).collect().mkString(",")'
    )
    output = text(server.run(scala, code))
    assert output.startswith(
        "class Person\npeople: org.apache.spark.sql.Dataset[Person] = [name: string, age: int]\n"
    )
    assert output.endswith("String = BOB,CY\n")


def test_temp_views_are_shared_between_scala_python_and_sql(server: Server, scala: int) -> None:
    server.run(scala, 'spark.range(5).toDF("n").createOrReplaceTempView("from_scala")')
    assert text(server.run(scala, 'spark.table("from_scala").count()', kind="spark")).endswith("Long = 5\n")
    assert text(server.run(scala, "spark.table('from_scala').count()", kind="pyspark")) == "5"
    rows = server.run(scala, "SELECT sum(n) AS total FROM from_scala", kind="sql")
    assert rows["data"]["application/json"]["data"] == [[10]]
    server.run(
        scala,
        "spark.createDataFrame([(1, 'a'), (2, 'b')], ['k', 'v']).createOrReplaceTempView('from_py')",
        kind="pyspark",
    )
    assert text(server.run(scala, 'spark.table("from_py").where("k > 1").first().getString(1)')).endswith(
        "String = b\n"
    )


def test_pyspark_session_runs_scala_statements(server: Server, pyspark: int) -> None:
    server.run(pyspark, "spark.range(7).createOrReplaceTempView('seven')")
    output = server.run(pyspark, 'spark.table("seven").count()', kind="spark")
    assert re.fullmatch(r"res\d+: Long = 7\n", text(output))
    assert text(server.run(pyspark, "21 * 2")) == "42"  # Python is still the session's default


def test_cancel_stops_the_statements_spark_jobs(server: Server, scala: int) -> None:
    statement = server.submit(scala, 'spark.range(10000000000000L).selectExpr("sum(id % 7)").collect()')
    job = wait_spark_tasks(server, scala, statement["id"])
    assert job["jobGroup"].startswith("dli-")  # the statement's job, tagged for cancel and progress
    # Each task has 10**12 rows or more: none can have finished, so nothing is reported done yet.
    assert server.statement(scala, statement["id"])["progress"] == 0.0
    assert server.post(f"/sessions/{scala}/statements/{statement['id']}/cancel").json() == {"msg": "canceled"}
    done = server.wait_statement(scala, statement["id"], timeout=60)
    assert done["state"] == "cancelled"
    wait_no_spark_jobs(server, scala)
    assert text(server.run(scala, "21 * 2")).endswith("Int = 42\n")


def in_loop(marker: Path, loop: str) -> str:
    """``loop`` as one statement that first creates ``marker``: seeing the file, a test knows the loop
    is compiled and running."""
    # `locally`: a bare block after a line would be read as an argument to what that line ends with.
    return f"locally {{ new java.io.File({json.dumps(str(marker))}).createNewFile(); {loop} }}"


def test_cancel_stops_a_runaway_loop(server: Server, scala: int, tmp_path: Path) -> None:
    spinning = tmp_path / "spinning"
    statement = server.submit(scala, "var spins = 0L\n" + in_loop(spinning, "while (true) { spins += 1 }"))
    wait_marker(server, scala, statement["id"], spinning)
    started = time.monotonic()
    server.post(f"/sessions/{scala}/statements/{statement['id']}/cancel")
    done = server.wait_statement(scala, statement["id"], timeout=60)
    assert done["state"] == "cancelled" and done["output"]["status"] == "error"
    assert time.monotonic() - started < 30
    assert text(server.run(scala, "spins > 0")).endswith("Boolean = true\n")  # the session lives on
    sleeping = tmp_path / "sleeping"
    # This one gives way to an interrupt.
    sleeper = server.submit(scala, in_loop(sleeping, "while (true) Thread.sleep(10)"))
    wait_marker(server, scala, sleeper["id"], sleeping)
    server.post(f"/sessions/{scala}/statements/{sleeper['id']}/cancel")
    assert server.wait_statement(scala, sleeper["id"], timeout=60)["state"] == "cancelled"
    assert text(server.run(scala, '"alive"')).endswith("String = alive\n")


def test_completion(server: Server, scala: int) -> None:
    def candidates(code: str) -> list[str]:
        reply = server.post(
            f"/sessions/{scala}/completion", json={"code": code, "kind": "spark", "cursor": len(code)}
        )
        assert reply.status_code == 200
        return reply.json()["candidates"]

    assert "spark.range" in candidates("spark.rang")
    assert "sc.parallelize" in candidates("sc.paral")
    server.run(scala, "val completionTarget = 1")
    assert "completionTarget" in candidates("completionTar")
