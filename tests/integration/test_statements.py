"""Statements on a real Spark session: Python output, SQL results, shared kinds, cancel, progress."""

from __future__ import annotations

import base64
import threading

from tests.integration.conftest import Server, wait_no_spark_jobs, wait_spark_tasks, wait_until


def test_last_expression_stdout_and_stderr_make_text_plain(server: Server, pyspark: int) -> None:
    output = server.run(pyspark, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n40 + 2")
    assert output["status"] == "ok"
    assert output["data"]["text/plain"] == "out\nerr\n42"
    assert isinstance(output["execution_count"], int)


def test_assignment_gives_empty_text(server: Server, pyspark: int) -> None:
    assert server.run(pyspark, "x = 1")["data"] == {"text/plain": ""}
    assert server.run(pyspark, "x + 1")["data"]["text/plain"] == "2"


def test_error_has_ename_evalue_and_plain_traceback(server: Server, pyspark: int) -> None:
    output = server.run(pyspark, "def f():\n    return 1 / 0\nf()")
    assert output["status"] == "error"
    assert output["ename"] == "ZeroDivisionError"
    assert output["evalue"] == "division by zero"
    assert all(line.endswith("\n") and "\x1b[" not in line for line in output["traceback"])
    assert any("return 1 / 0" in line for line in output["traceback"])


def test_spark_is_real(server: Server, pyspark: int) -> None:
    output = server.run(pyspark, "spark.range(1000).selectExpr('sum(id) AS s').first().s")
    assert output["data"]["text/plain"] == "499500"
    assert server.run(pyspark, "sc.master")["data"]["text/plain"].startswith("'local[")


def test_figure_comes_back_as_png(server: Server, pyspark: int) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()"
    output = server.run(pyspark, code)
    assert output["status"] == "ok", output
    png = base64.b64decode(output["data"]["image/png"])
    assert png.startswith(b"\x89PNG")
    assert "<Figure" not in output["data"]["text/plain"]


def test_pandas_frame_gives_html_beside_text(server: Server, pyspark: int) -> None:
    output = server.run(pyspark, "spark.range(3).toPandas()")
    assert "<table" in output["data"]["text/html"]
    assert "id" in output["data"]["text/plain"]


def test_sql_types_come_back_with_schema(server: Server, pyspark: int) -> None:
    query = """
        SELECT 1 AS i, CAST(9000000000 AS BIGINT) AS big, 2.5D AS d, CAST('12345.67' AS DECIMAL(10,2)) AS dec,
               'héllo' AS s, DATE'2024-02-29' AS day, TIMESTAMP'2024-02-29 13:45:01.5' AS ts,
               CAST(NULL AS INT) AS nothing, true AS flag,
               array(1, 2) AS arr, map('k', 1) AS m, named_struct('a', 1, 'b', 'x') AS st
    """
    output = server.run(pyspark, query, kind="sql")
    assert output["status"] == "ok", output
    result = output["data"]["application/json"]
    fields = {f["name"]: f["type"] for f in result["schema"]["fields"]}
    assert fields["dec"] == "decimal(10,2)" and fields["day"] == "date" and fields["ts"] == "timestamp"
    assert fields["arr"]["type"] == "array" and fields["st"]["type"] == "struct"
    row = result["data"][0]
    assert row[:9] == [
        1,
        9000000000,
        2.5,
        "12345.67",
        "héllo",
        "2024-02-29",
        "2024-02-29T13:45:01.500000",
        None,
        True,
    ]
    assert row[9:] == [[1, 2], {"k": 1}, {"a": 1, "b": "x"}]
    assert result["total"] == 1 and result["truncated"] is False


def test_sql_row_limit_is_never_silent(server: Server, pyspark: int) -> None:
    default = server.run(pyspark, "SELECT * FROM range(1500)", kind="sql")["data"]["application/json"]
    assert len(default["data"]) == 1000
    # The rows past the limit are not counted (it would run the query again): the total is a lower bound.
    assert (default["total"], default["truncated"], default["totalKnown"]) == (1001, True, False)
    raised = server.run(pyspark, "SELECT * FROM range(1500)", kind="sql", maxRows=-1)["data"][
        "application/json"
    ]
    assert len(raised["data"]) == 1500 and raised["truncated"] is False and raised["total"] == 1500
    small = server.run(pyspark, "SELECT * FROM range(5)", kind="sql", maxRows=2)["data"]["application/json"]
    assert small["data"] == [[0], [1]] and (small["total"], small["totalKnown"]) == (3, False)


def test_sql_error_is_short(server: Server, pyspark: int) -> None:
    output = server.run(pyspark, "SELECT nope FROM missing_table", kind="sql")
    assert output["status"] == "error"
    assert output["ename"] == "AnalysisException"
    assert "missing_table" in output["evalue"]
    assert not any("site-packages" in line for line in output["traceback"])


def test_kinds_share_one_spark_session(server: Server, pyspark: int) -> None:
    server.run(pyspark, "spark.range(4).createOrReplaceTempView('shared_view')")
    rows = server.run(pyspark, "SELECT count(*) AS n FROM shared_view", kind="sql")["data"][
        "application/json"
    ]
    assert rows["data"] == [[4]]
    server.run(pyspark, "CREATE OR REPLACE TEMP VIEW from_sql AS SELECT 7 AS seven", kind="sql")
    assert server.run(pyspark, "spark.table('from_sql').first().seven", kind="pyspark")["data"] == {
        "text/plain": "7"
    }


def test_drivers_keep_no_input_history(server: Server, pyspark: int) -> None:
    # Livy keeps none, and drivers sharing the profile's history database waited on its lock.
    assert server.run(pyspark, "get_ipython().history_manager.enabled")["data"]["text/plain"] == "False"


def test_statement_list_and_order(server: Server, pyspark: int) -> None:
    server.run(pyspark, "'listed'")
    listing = server.get(f"/sessions/{pyspark}/statements").json()
    assert listing["total_statements"] == len(listing["statements"])
    ids = [s["id"] for s in listing["statements"]]
    assert ids == list(range(len(ids)))
    newest_first = server.get(f"/sessions/{pyspark}/statements", params={"order": "desc"}).json()
    assert [s["id"] for s in newest_first["statements"]] == ids[::-1]
    last = listing["statements"][-1]
    assert last["state"] == "available" and last["progress"] == 1.0
    assert last["completed"] >= last["started"] > 0


def test_progress_follows_finished_tasks_and_ends_at_one(server: Server, pyspark: int) -> None:
    # 36 half-second tasks on local[6] take six waves: the driver, which writes the counts every 0.25 s
    # after the first second, is seen with some of them done and some not.
    code = "import time\nsc.parallelize(range(36), 36).foreach(lambda _: time.sleep(0.5))"
    statement = server.submit(pyspark, code)
    server.wait_statement(pyspark, statement["id"], states=("running",))
    seen: list[float] = []

    def partly_done() -> bool:
        current = server.statement(pyspark, statement["id"])
        assert current["state"] == "running", f"it ended before its progress was seen in (0, 1): {seen}"
        seen.append(current["progress"])
        return 0.0 < seen[-1] < 1.0

    wait_until(partly_done, lambda: f"progress strictly between 0 and 1, saw {sorted(set(seen))}", 120, 0.05)
    done = server.wait_statement(pyspark, statement["id"])
    assert done["state"] == "available" and done["output"]["status"] == "ok", done
    assert done["progress"] == 1.0
    assert seen == sorted(seen), f"progress went back: {seen}"


def test_cancel_stops_spark_jobs_and_session_stays_usable(server: Server, pyspark: int) -> None:
    code = "spark.range(10**13).selectExpr('sum(id % 7)').collect()"
    statement = server.submit(pyspark, code)
    job = wait_spark_tasks(server, pyspark, statement["id"])
    assert job["jobGroup"].startswith("dli-")  # the statement's job, tagged for cancel and progress
    # Each task has 10**12 rows or more: none can have finished, so nothing is reported done yet.
    assert server.statement(pyspark, statement["id"])["progress"] == 0.0
    reply = server.post(f"/sessions/{pyspark}/statements/{statement['id']}/cancel")
    assert reply.status_code == 200 and reply.json() == {"msg": "canceled"}
    done = server.wait_statement(pyspark, statement["id"], timeout=60)
    assert done["state"] == "cancelled"
    wait_no_spark_jobs(server, pyspark)  # no job of that statement is left running on the driver
    assert server.run(pyspark, "21 * 2")["data"]["text/plain"] == "42"


def test_cancel_interrupts_a_python_loop(server: Server, pyspark: int) -> None:
    statement = server.submit(pyspark, "import time\nwhile True:\n    time.sleep(0.01)")
    server.wait_statement(pyspark, statement["id"], states=("running",), timeout=60)
    server.post(f"/sessions/{pyspark}/statements/{statement['id']}/cancel")
    done = server.wait_statement(pyspark, statement["id"], timeout=30)
    assert done["state"] == "cancelled"
    assert done["output"]["ename"] == "KeyboardInterrupt"
    assert server.run(pyspark, "'alive'")["data"]["text/plain"] == "'alive'"


def test_cancel_a_waiting_statement_never_runs_it(server: Server, pyspark: int) -> None:
    blocker = server.submit(pyspark, "import time; time.sleep(1.5)")
    queued = server.submit(pyspark, "ran_anyway = True")
    assert queued["state"] == "waiting"
    assert server.post(f"/sessions/{pyspark}/statements/{queued['id']}/cancel").status_code == 200
    # The blocker was not done when the cancel was answered, so the queued statement had not started.
    assert server.statement(pyspark, blocker["id"])["state"] in ("waiting", "running")
    assert server.wait_statement(pyspark, queued["id"])["state"] == "cancelled"
    assert server.wait_statement(pyspark, blocker["id"])["state"] == "available"
    assert server.run(pyspark, "'ran_anyway' in globals()")["data"]["text/plain"] == "False"


def test_statements_run_in_order_when_posted_together(server: Server, pyspark: int) -> None:
    ids = [
        server.submit(pyspark, f"order_log = globals().get('order_log', []) + [{i}]")["id"] for i in range(5)
    ]
    for statement_id in ids:
        server.wait_statement(pyspark, statement_id)
    assert server.run(pyspark, "order_log[-5:]")["data"]["text/plain"] == "[0, 1, 2, 3, 4]"


def test_concurrent_clients_each_get_their_own_result(server: Server, pyspark: int) -> None:
    results: dict[int, str] = {}

    def client(n: int) -> None:
        results[n] = server.run(pyspark, f"{n} * 10")["data"]["text/plain"]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: f"{n * 10}" for n in range(6)}


def test_completion(server: Server, pyspark: int) -> None:
    reply = server.post(
        f"/sessions/{pyspark}/completion", json={"code": "spark.rang", "kind": "pyspark", "cursor": 10}
    )
    assert reply.status_code == 200
    assert "spark.range" in reply.json()["candidates"]


def test_log_has_spark_lines_with_from_and_size(server: Server, pyspark: int) -> None:
    tail = server.get(f"/sessions/{pyspark}/log").json()
    assert tail["id"] == pyspark and tail["total"] >= len(tail["log"]) > 0
    text = "\n".join(server.get(f"/sessions/{pyspark}/log", params={"from": 0, "size": 10_000}).json()["log"])
    assert "dli-kernel: session" in text and "Spark application local-" in text
    window = server.get(f"/sessions/{pyspark}/log", params={"from": 1, "size": 2}).json()
    assert window["from"] == 1 and len(window["log"]) == 2


def test_livy_repl_magics(server: Server, pyspark: int) -> None:
    table = server.run(pyspark, "rows = [{'a': 1, 'b': 'x'}, {'a': 2, 'b': None}]\n%table rows")
    assert table["data"]["application/vnd.livy.table.v1+json"] == {
        "headers": [{"name": "a", "type": "BIGINT_TYPE"}, {"name": "b", "type": "STRING_TYPE"}],
        "data": [[1, "x"], [2, None]],
    }
    as_json = server.run(pyspark, "value = {'k': [1, 2.5, None]}\n%json value")
    assert as_json["data"]["application/json"] == {"k": [1, 2.5, None]}
    plot = server.run(pyspark, "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n%matplot plt")
    assert base64.b64decode(plot["data"]["image/png"]).startswith(b"\x89PNG")
    bad = server.run(pyspark, "%table 42")
    assert bad["status"] == "error" and "%table needs" in bad["evalue"]


def test_a_failing_spark_call_shows_the_users_frames_not_pysparks(server: Server, pyspark: int) -> None:
    output = server.run(pyspark, "def load():\n    return spark.table('no_such_table_here')\nload()")
    assert output["status"] == "error" and output["ename"] == "AnalysisException"
    text = "".join(output["traceback"])
    assert "return spark.table('no_such_table_here')" in text  # the user's own frame
    assert "no_such_table_here" in output["evalue"]
    assert "site-packages" not in text and "py4j" not in text and "interactiveshell" not in text


def test_a_udfs_error_keeps_its_remote_traceback(server: Server, pyspark: int) -> None:
    code = (
        "from pyspark.sql.functions import udf\n"
        "@udf('int')\ndef boom(x):\n    raise ValueError('bad row ' + str(x))\n"
        "spark.range(1).select(boom('id')).collect()"
    )
    output = server.run(pyspark, code)
    assert output["status"] == "error"
    assert "bad row 0" in output["evalue"] + "".join(output["traceback"])
    assert "spark.range(1).select(boom('id')).collect()" in "".join(output["traceback"])
