"""Starting sessions on a cluster master, with fake drivers: the wait for the first executor (granted,
never granted, given up), the settings and environment drivers get, and which sessions take pooled drivers."""

from __future__ import annotations

import ast
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dli_kernel.protocol import SERVER_TOKEN_ENV
from dli_kernel.server.manager import Invalid, ManagedSession, SessionManager
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import (
    POLL,
    WAIT,
    FakeDriver,
    FakeLauncher,
    make_manager,
    pool_has,
    state_history,
    wait_state,
    wait_until,
)

MASTER = "spark://127.0.0.1:7077"
COUNT = "_dli.executor_count()"
SMALL = SessionSpec(kind="pyspark", executor_memory_mb=1024, executor_cores=1, num_executors=2)
WAITING = "waiting for the cluster to grant executors (asked: 2 × 1g, 1 core each (spark.cores.max=2))"


class ClusterDriver(FakeDriver):
    """A fake driver whose cluster has granted ``executors`` executors (the test sets how many)."""

    def __init__(self, workdir: Path, launcher: ClusterLauncher, env: dict[str, str]) -> None:
        super().__init__(workdir, launcher)
        self.env = env
        self.executors = launcher.executors

    def call(self, expression: str, setup: str = "", timeout: float | None = None) -> Any:
        if expression == COUNT:
            self.calls.append(expression)
            return self.executors
        return super().call(expression, setup, timeout)

    def boot_settings(self) -> dict[str, Any]:
        boot = next(call for call in self.calls if call.startswith("_dli.bootstrap("))
        return json.loads(ast.literal_eval(boot.removeprefix("_dli.bootstrap(")[:-1]))


class ClusterLauncher(FakeLauncher):
    def __init__(self, executors: int = 1) -> None:
        super().__init__()
        self.executors = executors  # what each new driver's cluster has granted at first

    def __call__(self, workdir: Path, log_path: Path, env: dict[str, str]) -> ClusterDriver:
        assert self.launch_gate.wait(WAIT), "the test never let the launch go on"
        workdir.mkdir(parents=True, exist_ok=True)
        driver = ClusterDriver(workdir, self, env)
        self.drivers.append(driver)
        self.launched.put(driver)
        return driver


@contextlib.contextmanager
def cluster_manager(tmp_path: Path, launcher: ClusterLauncher, **settings: Any) -> Iterator[SessionManager]:
    settings.setdefault("master", MASTER)
    manager = make_manager(tmp_path, launcher, **settings)
    try:
        yield manager
    finally:
        manager.close()


def log_text(session: ManagedSession) -> str:
    return session.log_path.read_text()


def driver_of(session: ManagedSession) -> ClusterDriver:
    assert isinstance(session.driver, ClusterDriver)
    return session.driver


def wait_for_log(manager: SessionManager, session: ManagedSession, text: str) -> None:
    wait_until(manager, session, lambda: text in log_text(session), what=f"the log line {text!r}")


def wait_for_polls(driver: ClusterDriver, polls: int) -> None:
    deadline = time.monotonic() + WAIT
    while driver.calls.count(COUNT) < polls:
        assert time.monotonic() < deadline, "the start stopped asking for executors"
        time.sleep(POLL)


def test_a_granted_executor_makes_the_session_idle(tmp_path: Path) -> None:
    with cluster_manager(tmp_path, ClusterLauncher(executors=2)) as manager:
        session = manager.create(SMALL)
        wait_state(manager, session, "idle")
        driver = driver_of(session)
        assert driver.calls[-1] == COUNT  # asked after Spark started, before the session took statements
        assert "waiting for the cluster" not in log_text(session)
        assert state_history(manager, session.id) == ["not_started", "starting", "idle"]


def test_the_session_is_starting_with_one_line_until_the_cluster_grants_an_executor(tmp_path: Path) -> None:
    with cluster_manager(tmp_path, ClusterLauncher(executors=0)) as manager:
        session = manager.create(SMALL)
        wait_for_log(manager, session, WAITING)
        driver = driver_of(session)
        wait_for_polls(driver, 3)
        assert session.state == "starting"
        assert log_text(session).count("waiting for the cluster") == 1  # one line, however long it waits
        driver.executors = 1
        wait_state(manager, session, "idle")
        assert "the cluster granted 1 executor" in log_text(session)
        assert state_history(manager, session.id) == ["not_started", "starting", "idle"]


def test_a_request_the_cluster_never_grants_fails_with_the_reason(tmp_path: Path) -> None:
    launcher = ClusterLauncher(executors=0)
    with cluster_manager(tmp_path, launcher, start_timeout=0.5) as manager:
        spec = SMALL.replace(executor_memory_mb=8192)
        session = manager.create(spec)
        wait_state(manager, session, "error")
        reason = session.ended_reason or ""
        assert "the cluster granted no executor within" in reason
        assert "asked: 2 × 8g, 1 core each (spark.cores.max=2)" in reason
        assert "ask for less" in reason and "free workers" in reason
        assert reason in log_text(session)
        assert launcher.drivers[0].stopped.is_set()  # no driver left holding a place in the cluster's queue


def test_a_session_deleted_while_waiting_stops_waiting(tmp_path: Path) -> None:
    with cluster_manager(tmp_path, ClusterLauncher(executors=0)) as manager:
        session = manager.create(SMALL)
        wait_for_log(manager, session, WAITING)
        driver = driver_of(session)
        manager.delete(session)
        assert session.state == "killed" and driver.stopped.is_set()
        (worker,) = [worker for worker in manager._workers if worker.session is session]
        worker.thread.join(WAIT)
        assert not worker.thread.is_alive(), "the start went on waiting for executors after the delete"
        assert state_history(manager, session.id)[-2:] == ["shutting_down", "killed"]
        assert "start-up failed" not in log_text(session)


def test_a_local_master_never_waits_for_executors(tmp_path: Path) -> None:
    with cluster_manager(tmp_path, ClusterLauncher(executors=0), master="local[*]") as manager:
        session = manager.create(SMALL)
        wait_state(manager, session, "idle")
        assert COUNT not in driver_of(session).calls


def test_the_driver_gets_the_cluster_settings_and_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVER_TOKEN_ENV, "server-secret")
    monkeypatch.setenv("DLI_KERNEL_TOKEN", "a-kernels-token")  # a kernel that started the server has one
    with cluster_manager(tmp_path, ClusterLauncher(), driver_host="10.1.2.3") as manager:
        session = manager.create(SMALL.replace(proxy_user="alice"))
        wait_state(manager, session, "idle")
        driver = driver_of(session)
        settings = driver.boot_settings()
        assert settings["master"] == MASTER
        conf = settings["conf"]
        assert (conf["spark.driver.host"], conf["spark.driver.bindAddress"]) == ("10.1.2.3", "0.0.0.0")
        assert (conf["spark.executor.memory"], conf["spark.cores.max"]) == ("1g", "2")
        assert driver.env["HADOOP_USER_NAME"] == "alice"
        assert SERVER_TOKEN_ENV not in driver.env
        assert "a-kernels-token" not in driver.env.values()
        # The Spark UI stays on the loopback, and its address says so.
        assert (driver.env["SPARK_LOCAL_IP"], driver.env["SPARK_PUBLIC_DNS"]) == ("127.0.0.1", "127.0.0.1")


def test_a_proxy_user_that_no_environment_can_hold_is_refused_before_anything_starts(tmp_path: Path) -> None:
    launcher = ClusterLauncher()
    with cluster_manager(tmp_path, launcher) as manager:
        for name in ("alice\nbob", "nul\x00"):
            with pytest.raises(Invalid, match="proxyUser must be a user name of printable characters"):
                manager.create(SMALL.replace(proxy_user=name))
        assert (manager.list(), launcher.drivers) == ([], [])


# -- the warm pool ------------------------------------------------------------------------------------


def test_a_session_with_a_proxy_user_never_takes_a_pooled_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HADOOP_USER_NAME", raising=False)
    launcher = ClusterLauncher()
    with cluster_manager(
        tmp_path, launcher, master="local[*]", pool_size=1, pool_refill_delay=0.0
    ) as manager:
        pool_has(manager, ready=1)
        pooled = launcher.drivers[0]
        assert "HADOOP_USER_NAME" not in pooled.env  # started before anyone asked: as nobody in particular
        session = manager.create(SessionSpec(kind="pyspark", proxy_user="alice"))
        wait_state(manager, session, "idle")
        own = driver_of(session)
        assert own is not pooled and own.env["HADOOP_USER_NAME"] == "alice"
        pool_has(manager, ready=1)  # still there for the next session without one
        other = manager.create(SessionSpec(kind="pyspark"))
        assert other.state == "idle" and other.driver is pooled


def test_a_pooled_driver_on_a_cluster_is_ready_once_it_has_an_executor(tmp_path: Path) -> None:
    launcher = ClusterLauncher(executors=0)
    with cluster_manager(tmp_path, launcher, pool_size=1, pool_refill_delay=0.0) as manager:
        pool_has(manager, starting=1)
        pooled = launcher.next_driver()
        wait_for_polls(pooled, 2)
        assert manager.pool is not None and manager.pool.status()["ready"] == 0
        pooled.executors = 1
        pool_has(manager, ready=1)
