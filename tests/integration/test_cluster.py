"""Sessions on a real Spark standalone cluster (a Master and two Workers from pyspark's own distribution on
127.0.0.1): tasks provably run in the Workers' executors, resources become cluster requests, and cancel,
worker loss, the warm pool and recovery behave there. One cluster and one server for the whole module.

Run only these: ``pytest tests/integration/test_cluster.py`` (about 3 minutes on 2 cores); ``-k notebook``
runs the notebook alone. The figures (start times, a 10^6-row result, a worker's death) are printed
(``-rA`` or ``-s`` shows them).
"""

from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from nbformat.v4 import new_code_cell, new_notebook

from dli_kernel.client import SessionsClient
from dli_kernel.client.auth import BearerToken
from dli_kernel.install import install
from dli_kernel.protocol import ENDED_STATES
from tests.integration.conftest import (
    Server,
    driver_pid,
    driver_pids,
    pid_alive,
    spark_ui,
    wait_gone,
    wait_no_new_sessions,
    wait_until,
)
from tests.integration.spark_cluster import (
    PROBE,
    StandaloneCluster,
    executor_pids,
    own_address,
    spark_cluster,
    wait_executors,
)
from tests.integration.test_notebooks import execute, texts

__all__ = ["spark_cluster"]  # a fixture: imported to be found here

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

# Small executors that both Workers (2 cores, 5g each) can hold beside others: 2 × 512m, 1 core each.
SMALL: dict[str, Any] = {
    "executorMemory": "512m",
    "executorCores": 1,
    "numExecutors": 2,
    "driverMemory": "512m",
}

DLI = "/v2.0/proj-cluster"  # DLI's paths: sessions with DLI's fields (sc_type)

# A statement that prints the executor requests the driver's SparkConf holds.
CONF_READ = (
    "import json\nprint(json.dumps({k: sc.getConf().get(k) for k in "
    "('spark.executor.memory', 'spark.executor.cores', 'spark.cores.max')}))"
)

FIGURES: dict[str, Any] = {}  # printed as they come, and all together when the module's server stops


def figure(name: str, value: Any) -> None:
    FIGURES[name] = value
    print(f"figure {name}: {value}")


def stop_server(server: Server) -> None:
    """Delete what the tests left, stop the server, and check no driver outlived it."""
    leaked = server.live_sessions()
    for session in leaked:
        server.delete(f"/sessions/{session['id']}")
    drivers = driver_pids(server.state_dir)
    code = server.stop()
    assert all(wait_gone(pid, timeout=15) for pid in drivers), "a driver outlived the server"
    assert code in (0, -signal.SIGTERM)
    assert not leaked, f"tests left sessions behind: {[s['id'] for s in leaked]}"
    assert server.token not in server.stderr_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def cluster_server(
    spark_cluster: StandaloneCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("cluster-server") / "state", ("--master", spark_cluster.url))
    yield server
    stop_server(server)
    print(f"figures: {json.dumps(FIGURES)}")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A module for ``pyFiles``, a data file for ``files`` and a jar for ``jars``, in a directory no executor
    has on its path."""
    root = tmp_path_factory.mktemp("shipped")
    module = root / "cluster_udfs.py"
    module.write_text(
        "import os\n\n\ndef tag(value):\n    return f'{value}@{os.getpid()}'\n",
    )
    data = root / "lookup.txt"
    data.write_text("forty-two\n")
    jar = root / "shipped.jar"  # a resource, not a class: nothing to compile
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        archive.writestr("dli-shipped.txt", "from-a-jar\n")
    return {"module": module, "data": data, "jar": jar, "markers": root}


@pytest.fixture(scope="module")
def remote(cluster_server: Server, shipped: dict[str, Path]) -> Iterator[dict]:
    """The module's shared session on the cluster: small executors, and what ``shipped`` made as its pyFiles,
    files and jars; its create→idle time is one of the figures."""
    started = time.monotonic()
    created = cluster_server.create(
        kind="pyspark",
        name="on-cluster",
        heartbeatTimeoutInSecond=3600,
        pyFiles=[str(shipped["module"])],
        files=[str(shipped["data"])],
        jars=[str(shipped["jar"])],
        **SMALL,
    )
    session = cluster_server.wait_state(created["id"], ("idle",))
    figure("cluster_create_to_idle_s", round(time.monotonic() - started, 1))
    assert cluster_server.run(session["id"], PROBE)["status"] == "ok"
    yield session
    assert cluster_server.delete(f"/sessions/{session['id']}").status_code == 200


def printed(output: dict[str, Any]) -> str:
    assert output["status"] == "ok", output
    return output["data"]["text/plain"]


def where(server: Server, session_id: object, partitions: int = 4) -> dict[str, Any]:
    """Where one job's tasks ran: the driver's JVM pid and the task JVMs (see spark_cluster.PROBE)."""
    return json.loads(printed(server.run(session_id, f"_where({partitions})")))


def assert_remote(cluster: StandaloneCluster, placed: dict[str, Any]) -> None:
    """The tasks ran in executors the Workers started for the session's application, none in the driver."""
    executors = cluster.app_executor_pids(placed["app"])
    assert placed["tasks"] and set(placed["tasks"]) <= executors, (placed, executors)
    assert placed["driver"] not in placed["tasks"]


def ui_executors(server: Server, session: dict[str, Any]) -> list[dict[str, Any]]:
    """The session's executors other than the driver, from its Spark UI."""
    return [e for e in spark_ui(server, session, f"/{session['appId']}/executors") if e["id"] != "driver"]


# -- where tasks run ---------------------------------------------------------------------------------


def test_tasks_run_in_the_workers_executors(
    cluster_server: Server, spark_cluster: StandaloneCluster, remote: dict
) -> None:
    assert_remote(spark_cluster, where(cluster_server, remote["id"]))
    app = spark_cluster.app(remote["appId"])
    assert app is not None and app["name"] != "pyspark-shell"
    executors = ui_executors(cluster_server, remote)
    assert len(executors) == 2 and sum(e["totalTasks"] for e in executors) >= 4
    assert {e["hostPort"].split(":")[0] for e in executors} == {"127.0.0.1"}


def test_the_spark_ui_link_is_the_drivers_and_answers(cluster_server: Server, remote: dict) -> None:
    session = cluster_server.get(f"/sessions/{remote['id']}").json()
    ui = session["appInfo"]["sparkUiUrl"]
    assert ui == f"{cluster_server.url}/sessions/{remote['id']}/ui"  # the server's proxy to the driver's UI
    apps = cluster_server.http.get(f"{ui}/api/v1/applications", timeout=30).json()
    assert [a["id"] for a in apps] == [session["appId"]]
    assert cluster_server.http.get(ui, timeout=30).status_code == 200
    assert requests.get(ui, timeout=30).status_code == 401  # not without the token


def test_the_probe_sees_local_tasks_in_the_driver(tmp_path: Path) -> None:
    """The same probe on a local[*] server finds the tasks in the driver's own JVM: what the cluster tests
    see is the cluster's doing, not the probe's. Its create→idle time is the local figure beside the
    cluster's."""
    server = Server(tmp_path / "state")
    try:
        started = time.monotonic()
        created = server.create(kind="pyspark", name="on-local", **SMALL)
        server.wait_state(created["id"], ("idle",))
        figure("local_create_to_idle_s", round(time.monotonic() - started, 1))
        assert server.run(created["id"], PROBE)["status"] == "ok"
        placed = where(server, created["id"])
        assert placed["tasks"] == [placed["driver"]] and placed["app"].startswith("local-"), placed
        assert server.delete(f"/sessions/{created['id']}").status_code == 200
    finally:
        stop_server(server)


# -- resources become cluster requests -----------------------------------------------------------------


def test_explicit_resources_are_what_the_cluster_grants(
    cluster_server: Server, spark_cluster: StandaloneCluster, remote: dict
) -> None:
    conf = json.loads(printed(cluster_server.run(remote["id"], CONF_READ)))
    assert conf == {"spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": "2"}
    app = spark_cluster.app(remote["appId"])
    assert app is not None and (app["cores"], app["memoryperexecutor"]) == (2, 512)
    granted = wait_executors(spark_cluster, remote["appId"], 2)
    assert [e["memory"] for e in granted] == [512, 512]  # two executors for 2 cores: 1 core each
    assert {e["worker"] for e in granted} == {0, 1}  # the master spreads an app over the workers


def test_a_tier_is_asked_of_the_cluster(cluster_server: Server, spark_cluster: StandaloneCluster) -> None:
    """sc_type A (DLI's field): executors of 4g and 1 core each, spark.cores.max = 6 × 1; the cluster
    grants what its free cores allow (the shared session holds one core of each Worker)."""
    created = cluster_server.create(DLI, kind="sql", name="tier-a", cluster_name="standalone", sc_type="A")
    try:
        session = cluster_server.wait_state(created["id"], ("idle",), DLI)
        assert session["sc_type"] == "A"
        conf = cluster_server.run(created["id"], CONF_READ, DLI, kind="pyspark")
        assert json.loads(printed(conf)) == {
            "spark.executor.memory": "4g",
            "spark.executor.cores": "1",
            "spark.cores.max": "6",
        }
        app = spark_cluster.app(session["appId"])
        assert app is not None and app["memoryperexecutor"] == 4096 and app["cores"] >= 1
        assert {e["memory"] for e in wait_executors(spark_cluster, session["appId"], 1)} == {4096}
    finally:
        assert cluster_server.delete(f"{DLI}/sessions/{created['id']}").status_code == 200


def test_a_request_the_cluster_cannot_grant_ends_in_error_with_the_reason(
    spark_cluster: StandaloneCluster, tmp_path: Path
) -> None:
    """sc_type B asks for 8g executors; no Worker has more than 5g. The session never looks ready: it
    waits, saying what it asked for, and ends as error with the reason at its server's start timeout."""
    # Its own server, for a start timeout this short; it still leaves a driver time to start on 2 busy cores.
    timeout = 45
    server = Server(tmp_path / "state", ("--master", spark_cluster.url, "--start-timeout", str(timeout)))
    try:
        created = server.create(DLI, kind="pyspark", name="too-big", cluster_name="standalone", sc_type="B")
        log: list[str] = []

        def state() -> str:
            session = server.get(f"{DLI}/sessions/{created['id']}").json()
            log[:] = server.get(f"{DLI}/sessions/{created['id']}/log").json()["log"]
            return session["state"]

        def waits() -> str | None:
            assert state() in ("not_started", "starting"), log[-5:]
            return next((line for line in log if "waiting for the cluster" in line), None)

        line = wait_until(waits, "the session's log to say it waits for executors", timeout, 0.5)
        assert "8g" in line and "2 cores each" in line and "spark.cores.max=14" in line, line
        app = next(a for a in spark_cluster.state()["activeapps"] if a["name"] == "too-big")
        assert app["cores"] == 0  # nothing granted
        started = time.monotonic()

        def ended() -> str | None:
            current = state()
            return current if current in ENDED_STATES else None

        assert wait_until(ended, "the session to end", timeout + 30, 0.5) == "error", log[-5:]
        assert any(f"granted no executor within {timeout} s" in line for line in log[-5:]), log[-5:]
        figure("unsatisfiable_waited_until_error_s", round(time.monotonic() - started, 1))
        # Its driver stopped: the application left the cluster.
        wait_until(lambda: not spark_cluster.app(app["id"]), "the application to leave the cluster", 30, 0.5)
    finally:
        stop_server(server)


# -- what sessions ship reaches the executors ----------------------------------------------------------


def test_files_reach_the_executors(
    cluster_server: Server, spark_cluster: StandaloneCluster, remote: dict
) -> None:
    code = """
from pyspark import SparkFiles

def _read_shipped(_):
    with open(SparkFiles.get("lookup.txt")) as data:
        return data.read().strip(), _task_jvm(0)

print(json.dumps(sc.parallelize(range(4), 4).map(_read_shipped).collect()))
"""
    rows = json.loads(printed(cluster_server.run(remote["id"], code)))
    assert {text for text, _ in rows} == {"forty-two"}
    assert {jvm for _, jvm in rows} <= spark_cluster.app_executor_pids(remote["appId"]), rows


def test_a_udf_imports_a_py_files_module_on_the_executors(
    cluster_server: Server, spark_cluster: StandaloneCluster, remote: dict
) -> None:
    code = """
from pyspark.sql.functions import udf

@udf("string")
def tagged(value):
    import cluster_udfs  # shipped with pyFiles, on no executor's path otherwise
    return cluster_udfs.tag(f"{value}:{_task_jvm(0)}")

print(json.dumps([row[0] for row in spark.range(4).repartition(4).select(tagged("id")).collect()]))
"""
    rows = json.loads(printed(cluster_server.run(remote["id"], code)))
    assert sorted(r.split(":")[0] for r in rows) == ["0", "1", "2", "3"]
    jvms = {int(r.split(":")[1].split("@")[0]) for r in rows}
    assert jvms <= spark_cluster.app_executor_pids(remote["appId"]), rows


def test_jars_reach_the_executors(
    cluster_server: Server, spark_cluster: StandaloneCluster, remote: dict
) -> None:
    code = """
val seen = sc.parallelize(1 to 4, 4).map { _ =>
  val in = Thread.currentThread.getContextClassLoader.getResourceAsStream("dli-shipped.txt")
  (scala.io.Source.fromInputStream(in).mkString.trim, ProcessHandle.current().pid())
}.collect()
println("shipped " + seen.map(_._1).distinct.mkString(",") + " " + seen.map(_._2).distinct.mkString(","))
"""
    shown = printed(cluster_server.run(remote["id"], code, kind="spark"))
    text, jvms = shown.split("shipped ")[1].split()
    assert text == "from-a-jar"
    assert {int(jvm) for jvm in jvms.split(",")} <= spark_cluster.app_executor_pids(remote["appId"]), shown


# -- results and cancel ------------------------------------------------------------------------------


def test_a_million_row_arrow_result_from_the_cluster(cluster_server: Server, remote: dict) -> None:
    with SessionsClient(cluster_server.url, "local", auth=BearerToken(cluster_server.token)) as client:
        started = time.monotonic()
        result = client.fetch_dataframe(
            remote["uuid"], "SELECT id, id % 7 AS k, CAST(id AS STRING) AS s FROM range(0, 1000000, 1, 4)", -1
        )
        elapsed = time.monotonic() - started
    assert (result.transport, result.total, result.truncated, len(result.frame)) == (
        "arrow",
        10**6,
        False,
        10**6,
    )
    assert result.frame["id"].iloc[-1] == 10**6 - 1 and result.frame["s"].iloc[17] == "17"
    figure("cluster_arrow_1e6_rows_s", round(elapsed, 2))


def test_cancel_leaves_no_task_running_on_the_workers(
    cluster_server: Server, spark_cluster: StandaloneCluster, remote: dict, shipped: dict[str, Path]
) -> None:
    markers = shipped["markers"] / "cancel"
    markers.mkdir()
    code = f"""
def _sleepy(i):
    import os, time
    open(os.path.join({str(markers)!r}, str(os.getpid())), "w").close()
    time.sleep(600)
    return i

sc.parallelize(range(2), 2).map(_sleepy).collect()
"""
    statement = cluster_server.submit(remote["id"], code)

    def both_sleeping() -> list[int] | None:
        found = [int(p.name) for p in markers.iterdir()]
        return found if len(found) == 2 else None

    sleepers = wait_until(both_sleeping, "both tasks to be sleeping on the executors", 120, 0.2)
    assert (
        cluster_server.post(f"/sessions/{remote['id']}/statements/{statement['id']}/cancel").status_code
        == 200
    )
    assert cluster_server.wait_statement(remote["id"], statement["id"], timeout=60)["state"] == "cancelled"
    # The tasks' Python workers were killed with their tasks, on the workers' side of the cluster.
    wait_until(
        lambda: not any(pid_alive(pid) for pid in sleepers), "the sleeping tasks to be killed", 60, 0.2
    )
    busy = "print(json.dumps([sc.statusTracker().getActiveJobsIds(), sc.statusTracker().getActiveStageIds(), "
    busy += "[e.numRunningTasks for e in sc.statusTracker().getExecutorInfos()]]))"
    jobs, stages, running = json.loads(printed(cluster_server.run(remote["id"], busy)))
    assert (jobs, stages, set(running)) == ([], [], {0})
    assert all(e["activeTasks"] == 0 for e in ui_executors(cluster_server, remote))
    assert_remote(spark_cluster, where(cluster_server, remote["id"]))  # still usable, still on the cluster


# -- the kernels: a notebook on the cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_kernel_env(cluster_server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The kernels' environment pointed at the cluster server, their sessions small (dli_kernel.json)."""
    prefix = tmp_path_factory.mktemp("cluster-jupyter")
    install(prefix=str(prefix))
    (prefix / "config").mkdir()
    (prefix / "config" / "dli_kernel.json").write_text(json.dumps({"session": SMALL}))
    env = dict(os.environ)
    env.update(
        DLI_KERNEL_URL=cluster_server.url,
        DLI_KERNEL_DIALECT="local",
        DLI_KERNEL_TOKEN=cluster_server.token,
        JUPYTER_CONFIG_DIR=str(prefix / "config"),
        JUPYTER_RUNTIME_DIR=str(prefix / "runtime"),
    )
    return {"env": env, "kernels": str(prefix / "share" / "jupyter" / "kernels")}


# The tasks each executor of the notebook's session ran, and the tasks of all its completed stages.
UI_TASKS = """
import urllib.request
def _ui(path):
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/{path}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)
_by_executor = {e["id"]: e["completedTasks"] for e in _ui("allexecutors")}
print(json.dumps([_by_executor, sum(s["numCompleteTasks"] for s in _ui("stages?status=complete"))]))
"""


def test_a_notebook_runs_on_the_cluster(
    cluster_server: Server,
    spark_cluster: StandaloneCluster,
    cluster_kernel_env: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = {s["id"] for s in cluster_server.live_sessions()}
    cells = [
        new_code_cell(PROBE + "\n_where(4)"),
        new_code_cell(
            "%%sql\nSELECT id % 3 AS k, count(*) AS n FROM range(0, 30000, 1, 4) GROUP BY 1 ORDER BY 1"
        ),
        new_code_cell("%%sql -o big -n -1 -q\nSELECT id, id % 7 AS k FROM range(0, 1000000, 1, 4)"),
        new_code_cell("%%local\nprint(len(big), int(big.k.sum()))"),
        new_code_cell(
            "%%scala\ncase class Seen(partition: Int, jvm: Long)\n"
            # The REPL's class Seen is made and used on the executors; only Longs come back.
            "val jvms = sc.parallelize(1 to 4, 4).mapPartitionsWithIndex((i, _) =>"
            " Iterator(Seen(i, ProcessHandle.current().pid()))).map(_.jvm).collect()\n"
            'println("scala-jvms " + jvms.distinct.sorted.mkString(","))\n'
            'println("scala-driver " + ProcessHandle.current().pid())'
        ),
        new_code_cell(UI_TASKS),
    ]
    nb = execute(new_notebook(cells=cells), cluster_kernel_env, "dli_pyspark", monkeypatch)
    placed = json.loads(texts(nb.cells[0]).strip().splitlines()[-1])
    assert_remote(spark_cluster, placed)
    executors = spark_cluster.app_executor_pids(placed["app"])
    assert "3 rows" in texts(nb.cells[1]) and "10000" in texts(nb.cells[1])
    assert texts(nb.cells[3]).strip() == f"1000000 {sum(i % 7 for i in range(10**6))}"
    scala = texts(nb.cells[4])
    jvms = {int(p) for p in scala.split("scala-jvms ")[1].split()[0].split(",")}
    assert jvms <= executors and str(placed["driver"]) in scala.split("scala-driver ")[1], (scala, executors)
    # Every task of the notebook's jobs (PySpark, SQL, -o, Scala) ran in an executor, none in the driver.
    by_executor, stage_tasks = json.loads(texts(nb.cells[5]).strip().splitlines()[-1])
    assert by_executor.get("driver", 0) == 0 and sum(by_executor.values()) == stage_tasks >= 4 + 4 + 4 + 4
    timing = nb.cells[2].metadata.get("execution", {})
    if {"shell.execute_reply", "iopub.execute_input"} <= set(timing):
        took = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00")) - (
            datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        )
        figure("notebook_sql_o_1e6_rows_s", round(took.total_seconds(), 2))
    wait_no_new_sessions(cluster_server, before)


# -- the warm pool and recovery -------------------------------------------------------------------------


def test_a_pooled_driver_and_recovery_on_the_cluster(
    spark_cluster: StandaloneCluster, tmp_path: Path
) -> None:
    """A server with a pool of one on the cluster: a default session takes the pooled driver, whose
    executors wait with it; after the server is killed, the next one on its state dir brings the session
    back, still on the cluster, and stops the pooled driver the crash left. Its drivers are reached at
    this machine's own address, as an edge node's would be (--driver-host), when it has one."""
    state_dir = tmp_path / "state"
    host = own_address()
    cluster_args = ("--master", spark_cluster.url, *(("--driver-host", host) if host else ()))
    first = Server(state_dir, cluster_args, pool=1)
    try:
        wait_until(lambda: first.get("/pool").json()["ready"] >= 1, "the pooled driver to be ready", 180, 0.5)
        created = first.create(kind="pyspark", name="pooled-on-cluster")
        assert created["state"] == "idle"  # the pooled driver, executors and all
        assert first.run(created["id"], PROBE)["status"] == "ok"
        assert_remote(spark_cluster, where(first, created["id"]))
        pid = driver_pid(first, created["id"])
        shown = first.run(created["id"], "print(sc.getConf().get('spark.driver.host'))")
        assert printed(shown).strip() == (host or "127.0.0.1")
        # The UI stays on the loopback, whatever address executors use.
        assert created["appInfo"]["sparkUiUrl"].startswith("http://127.0.0.1:")
    finally:
        first.stop(signal.SIGKILL)
    left_in_pool = [int(f.read_text()) for f in state_dir.glob("pool/*/driver.pid")]

    second = Server(state_dir, cluster_args)
    try:
        recovered = second.wait_state(created["id"], ("idle",), timeout=60)
        assert recovered["appId"] == created["appId"] and driver_pid(second, created["id"]) == pid
        assert_remote(spark_cluster, where(second, created["id"]))
        assert all(wait_gone(p, timeout=30) for p in left_in_pool), "the crashed server's pool outlived it"
        assert second.delete(f"/sessions/{created['id']}").status_code == 200
    finally:
        second.stop()
    assert wait_gone(pid)


# -- a worker dies mid-job -----------------------------------------------------------------------------


def test_a_worker_killed_mid_job(
    cluster_server: Server, spark_cluster: StandaloneCluster, remote: dict, shipped: dict[str, Path]
) -> None:
    """Last in the module: it leaves the cluster one Worker short."""
    markers = shipped["markers"] / "kill"
    markers.mkdir()
    code = f"""
def _slow(i):
    import os, time
    open(os.path.join({str(markers)!r}, f"{{i}}-{{_task_jvm(0)}}"), "w").close()
    time.sleep(8)
    return i

print(sum(sc.parallelize(range(4), 4).map(_slow).collect()))
"""
    statement = cluster_server.submit(remote["id"], code)
    victim = spark_cluster.workers[0]
    assert victim is not None
    victim_executors = set(executor_pids(victim.pid))
    wait_until(
        lambda: any(int(p.name.split("-")[1]) in victim_executors for p in markers.iterdir()),
        "a task to run on the first worker's executor",
        120,
        0.2,
    )
    killed = spark_cluster.kill_worker(0)
    at = time.monotonic()
    assert victim_executors <= set(killed)
    done = cluster_server.wait_statement(remote["id"], statement["id"], timeout=180)
    figure(
        "worker_killed_statement",
        {
            "state": done["state"],
            "status": done["output"]["status"],
            "s_after_kill": round(time.monotonic() - at, 1),
            "executors_after": len(spark_cluster.executors_of(remote["appId"])),
        },
    )
    if done["output"]["status"] == "ok":  # Spark ran the lost tasks again on the other worker
        assert done["output"]["data"]["text/plain"].strip() == "6"
    else:
        assert done["output"]["ename"] and done["output"]["evalue"]
    session = cluster_server.get(f"/sessions/{remote['id']}").json()
    assert session["state"] == "idle"
    placed = where(cluster_server, remote["id"])
    assert_remote(spark_cluster, placed)
    assert not set(placed["tasks"]) & set(killed)  # on the worker that is left
    figure("worker_killed_session", session["state"])
