"""The class-data sharing archive with a real JVM: a driver started with it loads Spark's classes from it
and answers, with nothing about the archive in its output; a broken archive only loses the gain.

The archive is this machine's (``~/.cache/dli-kernel/cds``, as servers use it), built here first if there
is none: a minute or two, once per JDK and Spark version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dli_kernel.server import cds
from dli_kernel.server.spark_conf import driver_env, launcher_archive, spark_settings
from dli_kernel.spec import SessionSpec

from .conftest import Server

DRIVER = """
import json, sys
from pyspark import SparkContext
from pyspark.sql import SparkSession
settings = json.loads(sys.argv[1])
builder = SparkSession.builder.master(settings["master"]).appName(settings["app_name"])
for key, value in settings["conf"].items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
print("count", spark.range(5).count(), flush=True)
jvm = SparkContext._gateway.proc
spark.stop()
jvm.stdin.close()
jvm.wait()
"""
# What a JVM says about an archive it cannot use, or a dump: none of it may reach a driver's output.
BUILD_WAIT = 600.0  # seconds to wait for a build another process is making
CDS_NOISE = ("[cds", "shared archive", "SharedArchiveFile")


@pytest.fixture(scope="module")
def archive() -> Path:
    prepared = cds.prepare(delay=0)
    if prepared.path is None and prepared.build is not None:
        prepared.start()
        prepared.build.join()
        # "busy": another server (the suite's own, 30 s after it started) holds the build's lock.
        deadline = time.monotonic() + BUILD_WAIT
        while prepared.build.outcome == "busy" and time.monotonic() < deadline:
            time.sleep(2)
            prepared = cds.prepare(delay=0)
            if prepared.path is not None or prepared.build is None:
                break
            prepared.start()
            prepared.build.join()
        prepared = cds.prepare(delay=0)
    if prepared.path is None:
        pytest.skip(f"no class-data archive could be built on this machine (see {cds.cache_dir()})")
    return prepared.path


def run_driver(tmp_path: Path, archive: Path, conf: dict[str, str] | None = None) -> str:
    """A SparkSession started as the server starts a driver's, with ``archive``; its whole output."""
    spec = SessionSpec(kind="pyspark", conf=conf or {})
    settings = spark_settings(spec, "cds-test", "local[1]", tmp_path, cds_archive=archive)
    answer = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(settings)],
        env=driver_env(sys.executable, cds_archive=archive),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = answer.stdout + answer.stderr
    assert answer.returncode == 0, output
    assert "count 5" in answer.stdout, output
    return output


def test_a_driver_loads_spark_from_the_archive_quietly(tmp_path: Path, archive: Path) -> None:
    classes = tmp_path / "classes.log"
    output = run_driver(
        tmp_path, archive, {"spark.driver.extraJavaOptions": f"-Xlog:class+load=info:file={classes}"}
    )
    assert not [line for line in output.splitlines() if any(noise in line for noise in CDS_NOISE)]
    loaded = [line for line in classes.read_text().splitlines() if " org.apache.spark.SparkContext " in line]
    assert loaded and "shared objects file (top)" in loaded[0]


def test_an_archive_that_does_not_fit_only_loses_the_gain(tmp_path: Path, archive: Path) -> None:
    # The launcher's archive is a sound one, of another classpath: the driver's JVM cannot use it.
    other = tmp_path / "other.jsa"
    shutil.copyfile(launcher_archive(archive), other)
    shutil.copyfile(launcher_archive(archive), launcher_archive(other))
    output = run_driver(tmp_path, other)
    assert len([line for line in output.splitlines() if any(noise in line for noise in CDS_NOISE)]) <= 1


def test_a_servers_session_runs_with_the_archive(tmp_path: Path, archive: Path) -> None:
    server = Server(tmp_path / "state")
    try:
        session = server.create(kind="pyspark")
        ready = server.wait_state(session["id"], ("idle",))
        output = server.run(session["id"], "print(spark.conf.get('spark.driver.extraJavaOptions'))")
        assert str(archive) in output["data"]["text/plain"]
        assert not [line for line in ready["log"] if any(noise in line for noise in CDS_NOISE)]
        server.delete(f"/sessions/{session['id']}")
    finally:
        server.stop()
