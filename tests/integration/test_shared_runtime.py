"""Sessions on a shared driver, driver side: real kernels on one real Spark JVM, without the HTTP server.

One host kernel (``runtime.bootstrap``) holds the JVM; session kernels attach to it (``runtime.attach``)
through a py4j server the host opens for each (``shared.open_session``), exactly as the server does it,
through the snippets of ``driver_code``.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dli_kernel.protocol import PROGRESS_FILE
from dli_kernel.server import driver_code
from dli_kernel.server.driver_process import Driver, DriverDied, ExecutionResult
from dli_kernel.server.spark_conf import driver_env, spark_settings
from dli_kernel.spec import SessionSpec
from tests.integration.conftest import wait_until

START_TIMEOUT = 180.0
# Runs until cancelled: minutes of sleeping tasks.
ENDLESS_JOB = "sc.parallelize(range(4000), 4).map(lambda x: (__import__('time').sleep(0.2), x)[1]).count()"


@dataclass
class Attached:
    """A session kernel attached to the host's JVM."""

    key: str
    driver: Driver
    info: dict[str, Any]
    secret: str

    def run(self, code: str) -> ExecutionResult:
        return self.driver.execute(code)

    def text(self, code: str) -> str:
        result = self.driver.execute(code)
        assert result.status == "ok", f"{result.ename}: {result.evalue}"
        return str(result.data.get("text/plain", ""))

    @property
    def log(self) -> str:
        return (self.driver.workdir / "driver.log").read_text(errors="replace")


@dataclass
class SharedDriver:
    """The host kernel, and the session kernels attached to it."""

    root: Path
    env: dict[str, str]
    host: Driver
    info: dict[str, Any]
    drivers: list[Driver] = field(default_factory=list)

    def host_value(self, expression: str) -> Any:
        return self.host.call(expression, setup=driver_code.SHARED_IMPORT)

    def attach(self, name: str) -> Attached:
        key = secrets.token_hex(8)
        gateway = json.loads(self.host_value(driver_code.open_shared(key)))
        workdir = self.root / name
        driver = Driver.launch(workdir, workdir / "driver.log", self.env)
        self.drivers.append(driver)
        driver.wait_ready(START_TIMEOUT)
        settings = {"gateway": gateway, "key": key}
        call = driver_code.attach(settings)
        info = json.loads(driver.call(call, setup=driver_code.RUNTIME_IMPORT, timeout=START_TIMEOUT))
        return Attached(key, driver, info, gateway["secret"])

    def release(self, key: str) -> dict[str, Any]:
        return json.loads(self.host_value(driver_code.release_shared(key)))

    def active_jobs(self) -> int:
        return int(self.host_value("len(_dli._spark.sparkContext.statusTracker().getActiveJobsIds())"))


def start_host(root: Path) -> SharedDriver:
    root.mkdir(parents=True, exist_ok=True)
    env = driver_env(sys.executable)
    host = Driver.launch(root / "host", root / "host" / "driver.log", env)
    try:
        host.wait_ready(START_TIMEOUT)
        settings = spark_settings(SessionSpec(kind="pyspark"), "dli-kernel-shared-driver", "local[*]", root)
        call = driver_code.bootstrap(settings)
        info = json.loads(host.call(call, setup=driver_code.RUNTIME_IMPORT, timeout=START_TIMEOUT))
    except BaseException:
        host.stop()
        raise
    return SharedDriver(root, env, host, info)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedDriver]:
    shared = start_host(tmp_path_factory.mktemp("shared"))
    try:
        yield shared
    finally:
        for driver in shared.drivers:
            driver.stop()
        shared.host.stop()


@pytest.fixture(scope="module")
def a(shared: SharedDriver) -> Attached:
    return shared.attach("a")


@pytest.fixture(scope="module")
def b(shared: SharedDriver) -> Attached:
    return shared.attach("b")


def in_thread(run: Any, code: str) -> tuple[threading.Thread, dict[str, ExecutionResult]]:
    result: dict[str, ExecutionResult] = {}
    thread = threading.Thread(target=lambda: result.setdefault("result", run(code)), daemon=True)
    thread.start()
    return thread, result


def test_attached_sessions_share_the_application(shared: SharedDriver, a: Attached, b: Attached) -> None:
    assert a.info["sharedDriver"] is True and b.info["sharedDriver"] is True
    assert a.info["appId"] == b.info["appId"] == shared.info["appId"]
    assert a.info["jvmPid"] == shared.info["jvmPid"]
    assert shared.host_value(driver_code.open_shared_count()) >= 2
    assert a.text("spark.sparkContext.applicationId") == repr(shared.info["appId"])
    # Attaching leaves the host's session the JVM's default one.
    default = "_dli._spark._jvm.org.apache.spark.sql.classic.SparkSession.getDefaultSession().get()"
    assert shared.host_value(f"{default}.equals(_dli._spark._jsparkSession)") is True
    # Every job of the session carries its tag, from any of its threads.
    a.text(
        "import threading\ntags = []\n"
        "thread = threading.Thread(target=lambda: tags.extend(sc.getJobTags()))\n"
        "thread.start()\nthread.join()"
    )
    assert a.text("tags") == repr([f"dli-session-{a.key}"])


def test_temp_views_sql_conf_and_udfs_are_the_sessions_own(a: Attached, b: Attached) -> None:
    a.text("spark.range(3).createOrReplaceTempView('numbers')")
    b.text("spark.range(5).createOrReplaceTempView('numbers')")
    assert a.text("spark.sql('select count(*) from numbers').first()[0]") == "3"
    assert b.text("spark.sql('select count(*) from numbers').first()[0]") == "5"

    a.text("spark.conf.set('spark.sql.shuffle.partitions', '7')")
    assert a.text("spark.conf.get('spark.sql.shuffle.partitions')") == "'7'"
    assert b.text("spark.conf.get('spark.sql.shuffle.partitions')") != "'7'"

    a.text("spark.udf.register('plus_one', lambda x: x + 1, 'long')")
    assert a.text("spark.sql('select plus_one(1)').first()[0]") == "2"
    missing = b.run("spark.sql('select plus_one(1)').first()")
    assert missing.status == "error" and "plus_one" in missing.evalue


def test_stop_leaves_the_shared_context_running(a: Attached, b: Attached) -> None:
    a.text("spark.stop()\nsc.stop()")
    assert "this session's Spark driver is shared with other sessions" in a.log
    assert a.text("spark.range(4).count()") == "4"
    assert b.text("spark.range(6).count()") == "6"


def test_scala_needs_a_driver_of_its_own(a: Attached) -> None:
    result = a.driver.execute_scala("1 + 1")
    assert result.status == "error"
    assert result.ename == "ScalaUnavailable"
    assert "Scala needs a session with a driver of its own" in result.evalue


def test_cancel_reaches_only_the_sessions_own_jobs(shared: SharedDriver, a: Attached, b: Attached) -> None:
    progress = a.driver.workdir / PROGRESS_FILE
    progress.unlink(missing_ok=True)
    a_thread, a_result = in_thread(a.run, ENDLESS_JOB)
    # The statement's progress is written as in a driver of its own.
    wait_until(lambda: progress.exists() and json.loads(progress.read_text())["total"] > 0, "A's progress")

    # B cancelling all jobs cancels its own; its next job runs after that cancel (Spark keeps their order).
    assert b.text("sc.cancelAllJobs()\nspark.range(1).count()") == "1"
    assert shared.active_jobs() >= 1 and a_thread.is_alive()

    b_thread, b_result = in_thread(b.run, "sc.parallelize(range(8), 2).map(lambda x: x * 2).sum()")
    a.driver.interrupt()
    a_thread.join(timeout=120)
    b_thread.join(timeout=120)
    assert a_result["result"].status == "error"
    assert b_result["result"].status == "ok" and b_result["result"].data["text/plain"] == "56"
    assert a.text("spark.range(2).count()") == "2"


def test_the_secret_stays_out_of_the_sessions_environment(a: Attached) -> None:
    environment = a.driver.call("dict(__import__('os').environ)")
    assert not [name for name in environment if name.startswith("PYSPARK_GATEWAY")]
    assert not [name for name, value in environment.items() if a.secret in value]
    child_env = a.text("print(__import__('subprocess').run(['env'], capture_output=True, text=True).stdout)")
    assert a.secret not in child_env and "PYSPARK_GATEWAY" not in child_env
    assert a.secret not in a.log


def test_a_killed_session_leaves_the_others_working(shared: SharedDriver, b: Attached) -> None:
    c = shared.attach("c")
    assert c.text("spark.range(3).count()") == "3"
    with pytest.raises(DriverDied):
        c.run("import os; os._exit(3)")
    assert shared.release(c.key)["released"] is True
    assert b.text("spark.range(9).count()") == "9"
    assert shared.release(c.key) == {"released": False, "uncached": 0}


def test_release_cancels_the_sessions_jobs_and_uncaches_only_its_tables(
    shared: SharedDriver, a: Attached, b: Attached
) -> None:
    a.text("mine = spark.range(50).selectExpr('id * 3 as x').cache()\nmine.count()")
    b.text("theirs = spark.range(70).selectExpr('id * 5 as y').cache()\ntheirs.count()")
    open_before = shared.host_value(driver_code.open_shared_count())
    a_thread, a_result = in_thread(a.run, ENDLESS_JOB)
    wait_until(lambda: shared.active_jobs() > 0, "A's job to start")

    assert shared.release(a.key) == {"released": True, "uncached": 1}
    a_thread.join(timeout=120)
    assert a_result["result"].status == "error"
    assert shared.active_jobs() == 0
    assert shared.host_value(driver_code.open_shared_count()) == open_before - 1
    assert a.run("spark.range(3).count()").status == "error"

    cached = "spark._jsparkSession.sharedState().cacheManager().lookupCachedData(theirs._jdf).isDefined()"
    assert b.text(cached) == "True"
    assert b.text("theirs.count()") == "70"
