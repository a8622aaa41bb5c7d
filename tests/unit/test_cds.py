"""The class-data sharing archive: its key, when a server uses or builds one, the build (with a fake child
in place of Python and Spark), and the Java options drivers get from it."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import pytest

from dli_kernel.server import cds
from dli_kernel.server.spark_conf import driver_env, launcher_archive, spark_settings
from dli_kernel.spec import SessionSpec

DUMP_BOTH = 'printf archive > "$3"; printf archive > "$4"'


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """An environment with a fake JDK and Spark home, and a cache dir of its own."""
    java_home, spark = tmp_path / "jdk", tmp_path / "spark"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text("#!/bin/sh\n")
    (java_home / "bin" / "java").chmod(0o755)
    (java_home / "release").write_text('JAVA_VERSION="17.0.15"\n')
    (spark / "jars").mkdir(parents=True)
    for name in ("spark-core_2.13-4.0.0.jar", "scala-library-2.13.16.jar"):
        (spark / "jars" / name).write_bytes(b"jar")
    return {
        "JAVA_HOME": str(java_home),
        "SPARK_HOME": str(spark),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PATH": os.environ.get("PATH", ""),
    }


def fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in for the build's ``python -m dli_kernel.server.cds DRIVER LAUNCHER``: $3 and $4."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def paths_of(env: dict[str, str]) -> cds.ArchivePaths:
    key = cds.archive_key(env)
    assert key is not None
    return cds.ArchivePaths.of(cds.cache_dir(env), key)


def built(env: dict[str, str]) -> cds.ArchivePaths:
    """The paths of an archive a build has published."""
    paths = paths_of(env)
    paths.driver.parent.mkdir(parents=True, exist_ok=True)
    driver, launcher = paths.driver.with_name("driver.tmp"), paths.driver.with_name("launcher.tmp")
    driver.write_bytes(b"archive")
    launcher.write_bytes(b"launcher archive")
    paths.publish(driver, launcher)
    return paths


def run_build(env: dict[str, str], python: str) -> cds.ArchiveBuild:
    paths = paths_of(env)
    paths.driver.parent.mkdir(parents=True, exist_ok=True)
    build = cds.ArchiveBuild(paths, python, delay=0)
    build.start()
    build.join(timeout=30)
    assert not build.is_alive()
    return build


# -- on or off, and where -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "enabled"), [("", True), ("1", True), ("0", False), ("off", False), (" No ", False)]
)
def test_the_variable_turns_the_archive_off(value: str, enabled: bool) -> None:
    assert cds.cds_enabled({cds.CDS_ENV: value}) is enabled


def test_the_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert cds.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "dli-kernel" / "cds"
    assert cds.cache_dir({}) == Path.home() / ".cache" / "dli-kernel" / "cds"


# -- the key ----------------------------------------------------------------------------------------


def test_the_key_is_stable_and_names_no_path(machine: dict[str, str]) -> None:
    key = cds.archive_key(machine)
    assert key is not None and len(key) == 16
    assert cds.archive_key(dict(machine)) == key


@pytest.mark.parametrize("change", ["jar size", "new jar", "jdk release", "classpath env"])
def test_what_changes_the_classpath_or_jdk_changes_the_key(machine: dict[str, str], change: str) -> None:
    before = cds.archive_key(machine)
    jars = Path(machine["SPARK_HOME"]) / "jars"
    if change == "jar size":
        (jars / "spark-core_2.13-4.0.0.jar").write_bytes(b"a bigger jar")
    elif change == "new jar":
        (jars / "extra.jar").write_bytes(b"jar")
    elif change == "jdk release":
        (Path(machine["JAVA_HOME"]) / "release").write_text('JAVA_VERSION="21.0.1"\n')
    else:
        machine["SPARK_CLASSPATH"] = "/opt/extra/*"
    assert cds.archive_key(machine) != before


def test_no_key_without_a_jdk_or_spark_jars(machine: dict[str, str], tmp_path: Path) -> None:
    assert cds.archive_key({**machine, "JAVA_HOME": str(tmp_path / "nowhere")}) is None
    assert cds.archive_key({**machine, "SPARK_HOME": str(tmp_path / "nowhere")}) is None


# -- what a server decides at its start ------------------------------------------------------------


def test_turned_off_neither_uses_nor_builds(machine: dict[str, str]) -> None:
    built(machine)
    archive = cds.prepare({**machine, cds.CDS_ENV: "0"}, python="/nonexistent", delay=0)
    assert archive.path is None and archive.build is None


def test_a_ready_archive_is_used_and_nothing_built(machine: dict[str, str]) -> None:
    paths = built(machine)
    archive = cds.prepare(machine, python="/nonexistent", delay=0)
    assert archive.path == paths.driver and archive.build is None


def test_a_missing_archive_is_built_for_the_next_server(machine: dict[str, str], tmp_path: Path) -> None:
    archive = cds.prepare(machine, python=fake_python(tmp_path, DUMP_BOTH), delay=0)
    assert archive.path is None  # this server's drivers start without: it was not there at its start
    assert archive.build is not None
    archive.start()
    archive.build.join(timeout=30)
    assert archive.build.outcome == "built"
    following = cds.prepare(machine, python="/nonexistent", delay=0)
    assert following.path == paths_of(machine).driver
    assert paths_of(machine).launcher.read_bytes() == b"archive"


def test_an_archive_cut_short_is_not_used_but_built_again(machine: dict[str, str], tmp_path: Path) -> None:
    # A JVM maps an archive cut short and dies of it (SIGBUS): no driver may get one.
    paths = built(machine)
    paths.driver.write_bytes(b"arch")
    archive = cds.prepare(machine, python=fake_python(tmp_path, DUMP_BOTH), delay=0)
    assert archive.path is None and archive.build is not None
    archive.start()
    archive.build.join(timeout=30)
    assert archive.build.outcome == "built"
    assert cds.prepare(machine, python="/nonexistent", delay=0).path == paths.driver


def test_a_whitespace_cache_path_gets_no_archive(machine: dict[str, str], tmp_path: Path) -> None:
    # spark-class splits SPARK_LAUNCHER_OPTS on blanks: such a path cannot be passed to the launcher.
    archive = cds.prepare({**machine, "XDG_CACHE_HOME": str(tmp_path / "my cache")}, python="/x", delay=0)
    assert archive.path is None and archive.build is None


def test_a_stopped_server_stops_its_build(machine: dict[str, str], tmp_path: Path) -> None:
    archive = cds.prepare(machine, python=fake_python(tmp_path, "sleep 30"), delay=0)
    assert archive.build is not None
    archive.start()
    while not any(paths_of(machine).driver.parent.glob(f"{cds.BUILD_PREFIX}*")):
        time.sleep(0.05)  # the build is running its child
    began = time.monotonic()
    archive.close()
    assert not archive.build.is_alive() and time.monotonic() - began < 10
    assert archive.build.outcome == "stopped"
    assert not paths_of(machine).failed.exists()  # a stop is no failure: the next server builds
    assert not any(paths_of(machine).driver.parent.glob(f"{cds.BUILD_PREFIX}*"))


# -- the build ----------------------------------------------------------------------------------------


def test_a_server_that_stops_before_the_delay_builds_nothing(machine: dict[str, str], tmp_path: Path) -> None:
    archive = cds.prepare(machine, python=fake_python(tmp_path, DUMP_BOTH), delay=30)
    archive.close()  # never started: stopping is a no-op
    archive = cds.prepare(machine, python=fake_python(tmp_path, DUMP_BOTH), delay=30)
    archive.start()
    archive.close()
    assert archive.build is not None and archive.build.outcome == "stopped"
    assert not paths_of(machine).driver.exists()


def test_a_failed_build_is_logged_once_and_not_tried_again_for_a_day(
    machine: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dli_kernel.server"):
        build = run_build(machine, fake_python(tmp_path, "echo no java here; exit 3"))
    assert build.outcome == "failed"
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "exited with code 3" in warnings[0]
    paths = paths_of(machine)
    assert "no java here" in paths.build_log.read_text()
    assert not paths.driver.exists()
    caplog.clear()
    again = cds.prepare(machine, python=fake_python(tmp_path, DUMP_BOTH), delay=0)
    assert again.path is None and again.build is None and not caplog.records
    day_ago = time.time() - cds.FAILED_RETRY_AFTER - 60
    os.utime(paths.failed, (day_ago, day_ago))
    later = cds.prepare(machine, python=fake_python(tmp_path, DUMP_BOTH), delay=0)
    assert later.build is not None
    later.start()
    later.build.join(timeout=30)
    assert later.build.outcome == "built" and not paths.failed.exists()


def test_a_build_clears_what_a_killed_one_left(machine: dict[str, str], tmp_path: Path) -> None:
    left = paths_of(machine).driver.parent / f"{cds.BUILD_PREFIX}killed"
    left.mkdir(parents=True)
    (left / "driver.jsa").write_bytes(b"half an archive")
    assert run_build(machine, fake_python(tmp_path, DUMP_BOTH)).outcome == "built"
    assert not left.exists()


def test_a_build_that_writes_one_archive_only_fails(machine: dict[str, str], tmp_path: Path) -> None:
    build = run_build(machine, fake_python(tmp_path, 'printf archive > "$3"'))
    assert build.outcome == "failed"
    assert not paths_of(machine).driver.exists() and not paths_of(machine).launcher.exists()


def test_a_build_another_server_holds_is_left_to_it(machine: dict[str, str], tmp_path: Path) -> None:
    paths = paths_of(machine)
    paths.driver.parent.mkdir(parents=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        build = run_build(machine, fake_python(tmp_path, DUMP_BOTH))
    finally:
        os.close(fd)
    assert build.outcome == "busy"
    assert not paths.driver.exists() and not paths.failed.exists()


# -- what drivers are started with ----------------------------------------------------------------------


ARCHIVE = Path("/cache/dli-kernel/cds/0123456789abcdef.jsa")


def test_drivers_map_the_archive(tmp_path: Path) -> None:
    conf = spark_settings(SessionSpec(kind="pyspark"), "app", "local[*]", tmp_path, cds_archive=ARCHIVE)[
        "conf"
    ]
    assert conf["spark.driver.extraJavaOptions"] == f"-XX:SharedArchiveFile={ARCHIVE} -Xshare:auto"


def test_without_an_archive_the_java_options_are_the_users(tmp_path: Path) -> None:
    plain = spark_settings(SessionSpec(kind="pyspark"), "app", "local[*]", tmp_path)["conf"]
    assert "spark.driver.extraJavaOptions" not in plain
    spec = SessionSpec(kind="pyspark", conf={"spark.driver.extraJavaOptions": "-Dx=1"})
    assert (
        spark_settings(spec, "app", "local[*]", tmp_path)["conf"]["spark.driver.extraJavaOptions"] == "-Dx=1"
    )


def test_the_users_java_options_come_after_the_archive_and_win(tmp_path: Path) -> None:
    spec = SessionSpec(kind="pyspark", conf={"spark.driver.extraJavaOptions": " -Xshare:off -Dmine=1 "})
    options = spark_settings(spec, "app", "local[*]", tmp_path, cds_archive=ARCHIVE)["conf"][
        "spark.driver.extraJavaOptions"
    ]
    # The JVM takes the last of a repeated option: the user's -Xshare:off turns sharing off.
    assert options == f"-XX:SharedArchiveFile={ARCHIVE} -Xshare:auto -Xshare:off -Dmine=1"


def test_a_classpath_of_the_users_own_gets_no_archive(tmp_path: Path) -> None:
    # It goes before Spark's jars, so the archive could not fit: the JVM would say so in every session log.
    spec = SessionSpec(kind="pyspark", conf={"spark.driver.extraClassPath": "/opt/lib/*"})
    conf = spark_settings(spec, "app", "local[*]", tmp_path, cds_archive=ARCHIVE)["conf"]
    assert "spark.driver.extraJavaOptions" not in conf


def test_the_launcher_jvm_gets_its_archive_and_the_quick_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_LAUNCHER_OPTS", "-Dmine=1")
    env = driver_env("/opt/python3", cds_archive=ARCHIVE)
    assert env["SPARK_LAUNCHER_OPTS"] == (
        f"-XX:TieredStopAtLevel=1 -XX:SharedArchiveFile={launcher_archive(ARCHIVE)} -Xshare:auto -Dmine=1"
    )
    assert launcher_archive(ARCHIVE).name == "0123456789abcdef.launcher.jsa"
    assert driver_env("/opt/python3")["SPARK_LAUNCHER_OPTS"] == "-Dmine=1"


def test_the_switch_does_not_reach_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cds.CDS_ENV, "0")
    assert cds.CDS_ENV not in driver_env("/opt/python3", cds_archive=ARCHIVE)
