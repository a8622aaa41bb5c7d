"""Shared-driver sessions against a real server started with ``--share-driver``: default sessions attach to
one host JVM and SparkContext, each with its own driver process and SparkSession; the tests check what
stays separate between them (temp views, SQL conf, UDFs, cancel, a crash, a delete, ``spark.stop()``)
and which sessions keep a driver of their own."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dli_kernel.processes import descendants
from dli_kernel.protocol import ENDED_STATES, FORK_SERVER_MODULE
from tests.integration.conftest import (
    Server,
    driver_pid,
    driver_pids,
    pid_alive,
    wait_gone,
    wait_until,
)
from tests.integration.test_fast_paths import wait_pool_ready

pytestmark = pytest.mark.timeout(600)

DLI = "/v2.0/proj-1"
LONG_JOB = "spark.range(10**11).selectExpr('sum(id)').collect()"  # holds every core until cancelled
IN_BACKGROUND = f"import threading\nthreading.Thread(target=lambda: {LONG_JOB}, daemon=True).start()"


def forked_by(state_dir: Path) -> list[int]:
    """The fork server of the server on ``state_dir`` and every kernel it forked: all have its command
    line, which names the state dir."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if FORK_SERVER_MODULE.encode() in arguments and str(state_dir).encode() in arguments:
            found.append(int(entry.name))
    return found


def host_pids(state_dir: Path) -> list[int]:
    return [int(path.read_text()) for path in state_dir.glob("shared/*/driver.pid")]


def stop_server(server: Server) -> None:
    """Delete what a test left, stop the server, and check that none of its processes outlived it."""
    leaked = server.live_sessions()
    for session in leaked:
        server.delete(f"/sessions/{session['id']}")
    drivers = driver_pids(server.state_dir)
    hosts = host_pids(server.state_dir)
    forked = forked_by(server.state_dir)
    assert hosts, "the server ran no shared host"
    assert forked, "the server forked no kernel"
    assert server.stop() in (0, -signal.SIGTERM)
    assert not leaked, f"tests left sessions behind: {[s['id'] for s in leaked]}"
    assert all(wait_gone(pid, timeout=30) for pid in drivers), "a driver outlived the server"
    assert all(wait_gone(pid, timeout=30) for pid in hosts), "a shared host outlived the server"
    assert all(wait_gone(pid, timeout=30) for pid in forked), "the fork server outlived the server"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("shared") / "state", ("--share-driver",), pool=0)
    try:
        yield server
    finally:
        stop_server(server)


def new_session(server: Server, name: str, **body: Any) -> dict[str, Any]:
    """A session of kind pyspark (unless ``body`` says otherwise), once it is idle."""
    created = server.create(
        kind=body.pop("kind", "pyspark"), name=name, heartbeatTimeoutInSecond=3600, **body
    )
    return server.wait_state(created["id"], ("idle",))


@pytest.fixture(scope="module")
def a(server: Server) -> Iterator[dict[str, Any]]:
    session = new_session(server, "shared-a")
    yield session
    server.delete(f"/sessions/{session['id']}")


@pytest.fixture(scope="module")
def b(server: Server) -> Iterator[dict[str, Any]]:
    session = new_session(server, "shared-b")
    yield session
    server.delete(f"/sessions/{session['id']}")


@pytest.fixture(scope="module")
def observer(server: Server) -> Iterator[dict[str, Any]]:
    """A third shared session that only looks at the shared SparkContext's jobs."""
    session = new_session(server, "shared-observer")
    yield session
    server.delete(f"/sessions/{session['id']}")


def text(server: Server, session_id: object, code: str, **extra: Any) -> str:
    """The text/plain result of a statement that must succeed."""
    output = server.run(session_id, code, **extra)
    assert output["status"] == "ok", output
    return output["data"]["text/plain"]


def error(server: Server, session_id: object, code: str, **extra: Any) -> dict[str, Any]:
    """The output of a statement that must fail."""
    output = server.run(session_id, code, **extra)
    assert output["status"] == "error", output
    return output


def active_jobs(server: Server, observer_id: object) -> int:
    """How many jobs the shared SparkContext runs now, seen from a session attached to it."""
    return int(text(server, observer_id, "len(sc.statusTracker().getActiveJobsIds())"))


def wait_active_jobs(server: Server, observer_id: object, count: int, what: str) -> None:
    wait_until(lambda: active_jobs(server, observer_id) == count, what, 120, 0.2)


def log_of(server: Server, session_id: object) -> str:
    return "\n".join(server.get(f"/sessions/{session_id}/log", params={"size": 1000}).json()["log"])


def has_java(pid: int) -> bool:
    """Whether a Java process runs below the driver ``pid``: a driver with a JVM of its own."""
    for child, _ in descendants(pid):
        try:
            if "java" in Path(f"/proc/{child}/comm").read_text():
                return True
        except OSError:
            continue
    return False


# -- who shares --------------------------------------------------------------------------------------


def test_default_sessions_share_one_application(server: Server, a: dict, b: dict) -> None:
    assert a["sharedDriver"] is True and b["sharedDriver"] is True
    assert a["appId"] == b["appId"] and a["appId"].startswith("local-")
    jvm_pid = "sc._jvm.java.lang.ProcessHandle.current().pid()"
    assert text(server, a["id"], jvm_pid) == text(server, b["id"], jvm_pid)
    # Each has a Python driver of its own, without a JVM of its own.
    a_pid, b_pid = driver_pid(server, a["id"]), driver_pid(server, b["id"])
    assert a_pid != b_pid and not has_java(a_pid) and not has_java(b_pid)
    # Forked by the server's fork server, which is what makes a shared session ready in a fraction of a
    # second (benchmarks/scale.py).
    assert {a_pid, b_pid} <= set(forked_by(server.state_dir))
    assert text(server, a["id"], "sc.applicationId") == text(server, b["id"], "sc.applicationId")
    # Every view says so: the Livy list and the DLI one.
    listed = {s["id"]: s for s in server.live_sessions()}
    assert listed[a["id"]]["sharedDriver"] is True and listed[b["id"]]["sharedDriver"] is True
    assert server.get(f"{DLI}/sessions/{a['uuid']}").json()["sharedDriver"] is True
    assert "shar" in log_of(server, a["id"]).lower()  # the log says the application is shared


@pytest.mark.parametrize(
    ("body", "code", "expected"),
    [
        (
            {"conf": {"spark.sql.shuffle.partitions": "3"}},
            "spark.conf.get('spark.sql.shuffle.partitions')",
            "'3'",
        ),
        ({"kind": "spark"}, "1 + 1", "res0: Int = 2\n"),
    ],
    ids=["own-conf", "scala"],
)
def test_sessions_with_settings_of_their_own_get_their_own_application(
    server: Server, a: dict, body: dict, code: str, expected: str
) -> None:
    session = new_session(server, f"own-{body.get('kind', 'conf')}", **body)
    try:
        assert session["sharedDriver"] is False
        assert session["appId"] != a["appId"]
        assert has_java(driver_pid(server, session["id"]))
        assert text(server, session["id"], code) == expected
    finally:
        assert server.delete(f"/sessions/{session['id']}").status_code == 200


# -- isolation ---------------------------------------------------------------------------------------


def test_temp_views_are_per_session(server: Server, a: dict, b: dict) -> None:
    text(server, a["id"], "spark.range(3).createOrReplaceTempView('numbers')")
    text(server, b["id"], "spark.range(5).createOrReplaceTempView('numbers')")
    assert text(server, a["id"], "spark.table('numbers').count()") == "3"
    assert text(server, b["id"], "spark.table('numbers').count()") == "5"
    rows = server.run(b["id"], "SELECT COUNT(*) AS n FROM numbers", kind="sql")
    assert rows["data"]["application/json"]["data"] == [[5]]


def test_sql_conf_is_per_session(server: Server, a: dict, b: dict) -> None:
    read = "spark.conf.get('spark.sql.shuffle.partitions')"
    before = text(server, b["id"], read)
    assert before != "'7'"
    text(server, a["id"], "spark.conf.set('spark.sql.shuffle.partitions', '7')")
    assert text(server, a["id"], read) == "'7'"
    assert text(server, b["id"], read) == before


def test_udfs_are_per_session(server: Server, a: dict, b: dict) -> None:
    text(server, a["id"], "spark.udf.register('plus_one', lambda x: x + 1, 'int')")
    assert text(server, a["id"], "spark.sql('SELECT plus_one(41)').first()[0]") == "42"
    failed = error(server, b["id"], "spark.sql('SELECT plus_one(41)').first()[0]")
    assert "plus_one" in failed["evalue"]


def test_cancel_ends_only_its_sessions_job(server: Server, a: dict, b: dict, observer: dict) -> None:
    wait_active_jobs(server, observer["id"], 0, "the shared context to be quiet")
    long = server.submit(a["id"], LONG_JOB)
    wait_active_jobs(server, observer["id"], 1, "A's long job to run")
    # A's tasks hold every core: B's job waits for them, so it is still running when A's is cancelled.
    queued = server.submit(b["id"], "spark.range(1000).selectExpr('sum(id)').first()[0]")
    wait_active_jobs(server, observer["id"], 2, "B's job to be submitted beside A's")

    reply = server.post(f"/sessions/{a['id']}/statements/{long['id']}/cancel")
    assert reply.status_code == 200, reply.text
    assert server.wait_statement(a["id"], long["id"])["state"] == "cancelled"
    done = server.wait_statement(b["id"], queued["id"])
    assert done["state"] == "available" and done["output"]["data"]["text/plain"] == "499500"
    wait_active_jobs(server, observer["id"], 0, "no job left running")
    assert text(server, a["id"], "spark.range(4).count()") == "4"  # A is still usable


def test_scala_in_a_shared_session_fails_clearly_and_the_session_goes_on(server: Server, a: dict) -> None:
    failed = error(server, a["id"], "val x = 1 + 1", kind="spark")
    message = f"{failed['ename']}: {failed['evalue']}"
    assert "driver of its own" in message and "\n" not in failed["evalue"].strip()
    assert server.get(f"/sessions/{a['id']}").json()["state"] == "idle"
    assert text(server, a["id"], "1 + 1") == "2"


# -- ends --------------------------------------------------------------------------------------------


def test_a_crashed_session_ends_alone_and_its_jobs_are_cancelled(
    server: Server, b: dict, observer: dict
) -> None:
    doomed = new_session(server, "shared-crash")
    pid = driver_pid(server, doomed["id"])
    wait_active_jobs(server, observer["id"], 0, "the shared context to be quiet")
    text(server, doomed["id"], IN_BACKGROUND)
    wait_active_jobs(server, observer["id"], 1, "the crashing session's background job to run")

    server.submit(doomed["id"], "import os\nos._exit(1)")
    ended = wait_until(
        lambda: (s := server.get(f"/sessions/{doomed['id']}").json())["state"] in ENDED_STATES and s,
        "the crashed session to end",
        120,
        0.2,
    )
    assert ended["state"] == "dead"
    assert wait_gone(pid)
    wait_active_jobs(server, observer["id"], 0, "the dead session's job to be cancelled")
    assert text(server, b["id"], "spark.range(6).count()") == "6"
    assert server.get(f"/sessions/{b['id']}").json()["state"] == "idle"


def test_delete_and_spark_stop_leave_the_others_working(server: Server, b: dict) -> None:
    deleted = new_session(server, "shared-deleted")
    stopper = new_session(server, "shared-stopper")
    pid = driver_pid(server, deleted["id"])
    text(server, deleted["id"], "spark.range(7).cache().count()")

    assert server.delete(f"/sessions/{deleted['id']}").status_code == 200
    assert server.get(f"/sessions/{deleted['id']}").json()["state"] == "killed"
    assert wait_gone(pid)
    assert text(server, b["id"], "spark.range(8).count()") == "8"

    try:
        assert server.run(stopper["id"], "spark.stop()")["status"] == "ok"
        assert "shared" in log_of(server, stopper["id"]).lower()
        assert text(server, b["id"], "spark.range(9).count()") == "9"
        assert text(server, b["id"], "sc.statusTracker().getActiveJobsIds() is not None") == "True"
    finally:
        assert server.delete(f"/sessions/{stopper['id']}").status_code == 200


# -- the pool ----------------------------------------------------------------------------------------


def test_a_pooled_shared_session_is_idle_at_once(tmp_path: Path) -> None:
    pooled = Server(tmp_path / "state", ("--share-driver",), pool=1)
    try:
        wait_pool_ready(pooled)
        created = pooled.create(kind="pyspark", name="pooled-shared")
        assert created["state"] == "idle" and created["sharedDriver"] is True
        assert not has_java(driver_pid(pooled, created["id"]))
        assert text(pooled, created["id"], "spark.range(3).count()") == "3"
        assert "warm pool" in log_of(pooled, created["id"])
        assert pid_alive(driver_pid(pooled, created["id"]))
        assert pooled.delete(f"/sessions/{created['id']}").status_code == 200
    finally:
        stop_server(pooled)


def test_after_a_crash_the_next_server_ends_the_forked_kernels_left(tmp_path: Path) -> None:
    """Killed -9, the server leaves its host and its sessions' kernels running, as it would drivers started
    as processes of their own (a restart must not end them); its fork server goes (its stdin closed).
    The next server knows the kernels as its own by their command line, and stops them with the host."""
    state_dir = tmp_path / "state"
    first = Server(state_dir, ("--share-driver",), pool=0)
    session = new_session(first, "crash-left")
    kernel = driver_pid(first, session["id"])
    hosts = host_pids(state_dir)
    fork_server = [pid for pid in forked_by(state_dir) if pid not in (kernel, *hosts)]
    assert len(fork_server) == 1 and hosts and kernel in forked_by(state_dir)
    first.stop(signal.SIGKILL)
    assert wait_gone(fork_server[0], timeout=30), "the fork server outlived its server"
    assert pid_alive(kernel) and all(pid_alive(pid) for pid in hosts)
    second = Server(state_dir, ("--share-driver",), pool=0)
    try:
        ended = wait_until(
            lambda: (s := second.get(f"/sessions/{session['id']}").json())["state"] in ENDED_STATES and s,
            "the session left by the crash to end",
            120,
            0.2,
        )
        assert ended["state"] == "dead", ended
        assert wait_gone(kernel, timeout=60), "the session's forked kernel was left running"
        assert all(wait_gone(pid, timeout=60) for pid in hosts), "the shared host was left running"
    finally:
        assert second.stop() in (0, -signal.SIGTERM)
