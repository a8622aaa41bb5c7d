"""A class-data sharing (AppCDS) archive of Spark's classes: drivers' JVMs map it instead of loading and
verifying some 15,000 classes from Spark's jars, which is most of a SparkSession's start.

The archive belongs to one JDK, one set of Spark jars and one classpath (``archive_key``), and lives in
``$XDG_CACHE_HOME/dli-kernel/cds/<key>.jsa`` with the launcher JVM's own ``<key>.launcher.jsa``. A server
decides once, when it starts, whether its drivers use it (``prepare``): if it is there, every driver of
that server (pooled or not) gets it, so the pool's settings and a session's stay equal; if not, it is built
in the background by a niced child process that starts a SparkSession with the dump option and runs a few
small queries, for the servers started after. A JVM that finds the archive does not fit (another JDK, a
classpath of its own) says so in one line and starts as it would have without it.

``DLI_KERNEL_CDS=0`` turns all of it off: no archive used, none built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dli_kernel.server.spark_conf import LAUNCHER_OPTS_ENV, driver_env, launcher_archive, spark_settings
from dli_kernel.spec import SessionSpec

CDS_ENV = "DLI_KERNEL_CDS"  # "0", "false", "off" or "no": neither use nor build an archive
OFF_VALUES = ("0", "false", "off", "no")
# Part of the key: a change of what the build runs (and so of what the archive holds) makes a new archive.
BUILD_VERSION = "1"
BUILD_DELAY = 30.0  # seconds after the server starts: its first drivers start first, on a small machine
BUILD_TIMEOUT = 600.0
BUILD_PREFIX = "build-"  # a build's work dir in the cache dir, where its archives are written
FAILED_RETRY_AFTER = 24 * 3600.0  # a failed build is tried again after this long, not at every start
# The environment that changes a driver's classpath, or the conf it reads, besides the jars themselves.
CLASSPATH_ENV = (
    "SPARK_HOME",
    "SPARK_CONF_DIR",
    "SPARK_CLASSPATH",
    "SPARK_DIST_CLASSPATH",
    "HADOOP_CONF_DIR",
    "YARN_CONF_DIR",
    "JAVA_HOME",
)
# What the build logs from the JVM's CDS code: errors only (a dump warns about thousands of classes).
DUMP_LOGGING = "-Xlog:cds*=error"

log = logging.getLogger("dli_kernel.server")


def cds_enabled(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(CDS_ENV, "")
    return value.strip().lower() not in OFF_VALUES


def cache_dir(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Where archives are kept: beside the Scala helper's cache, one per user."""
    env = os.environ if env is None else env
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dli-kernel" / "cds"


def java_home(env: dict[str, str] | os._Environ[str]) -> Path | None:
    """The JDK spark-class runs: ``$JAVA_HOME``'s, else the ``java`` on the PATH's (links followed)."""
    home = env.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java", path=env.get("PATH"))
    if java is None or not Path(java).exists():
        return None
    return Path(java).resolve().parents[1]


def spark_home(env: dict[str, str] | os._Environ[str]) -> Path | None:
    """``$SPARK_HOME``, else the pip-installed PySpark's directory (which holds ``jars/``)."""
    if env.get("SPARK_HOME"):
        return Path(env["SPARK_HOME"])
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _file_sign(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return f"{path.name}:-"
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def archive_key(env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """What an archive fits, hashed: the JDK (its release file, module image and libjvm), PySpark's version,
    the jars' names and sizes, and the classpath environment. None without a JDK or Spark's jars.

    Nothing is run: a server start must not wait for a ``java -version``.
    """
    env = os.environ if env is None else env
    java, spark = java_home(env), spark_home(env)
    if java is None or spark is None or not (spark / "jars").is_dir():
        return None
    digest = hashlib.sha256(f"build {BUILD_VERSION}\n".encode())
    with contextlib.suppress(OSError):
        digest.update((java / "release").read_bytes())
    for part in ("release", "lib/modules", "lib/server/libjvm.so"):
        digest.update(f"{java / part} {_file_sign(java / part)}\n".encode())
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        digest.update(f"pyspark {importlib.metadata.version('pyspark')}\n".encode())
    for jar in sorted((spark / "jars").glob("*.jar")):
        digest.update(f"{_file_sign(jar)}\n".encode())
    conf_dir = Path(env.get("SPARK_CONF_DIR") or spark / "conf")
    with contextlib.suppress(OSError):
        digest.update((conf_dir / "spark-defaults.conf").read_bytes())
    for name in CLASSPATH_ENV:
        digest.update(f"{name}={env.get(name, '')}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ArchivePaths:
    """The files of one key in the cache directory."""

    driver: Path

    @classmethod
    def of(cls, directory: Path, key: str) -> ArchivePaths:
        return cls(directory / f"{key}.jsa")

    @property
    def launcher(self) -> Path:
        return launcher_archive(self.driver)

    @property
    def failed(self) -> Path:
        """Written when a build fails: its time and why; no build is tried again for a day."""
        return self.driver.with_suffix(".failed")

    @property
    def lock(self) -> Path:
        return self.driver.with_suffix(".lock")

    @property
    def build_log(self) -> Path:
        return self.driver.with_suffix(".log")

    @property
    def sizes(self) -> Path:
        """Written last by a build: both archives' sizes. A JVM maps an archive cut short (a full disk, a
        copy) and crashes on it, so one whose size is not this is not used (and is built again)."""
        return self.driver.with_suffix(".sizes")

    def _sizes(self) -> dict[str, int]:
        return {path.name: path.stat().st_size for path in (self.driver, self.launcher)}

    def ready(self) -> bool:
        try:
            return json.loads(self.sizes.read_text()) == self._sizes()
        except (OSError, ValueError):
            return False

    def publish(self, driver_tmp: Path, launcher_tmp: Path) -> None:
        """Move a build's archives in place, then say they are complete."""
        os.replace(launcher_tmp, self.launcher)
        os.replace(driver_tmp, self.driver)
        written = self.sizes.with_name(f"{self.sizes.name}.{os.getpid()}")
        written.write_text(json.dumps(self._sizes()))
        os.replace(written, self.sizes)

    def failed_recently(self, now: float | None = None) -> bool:
        try:
            age = (time.time() if now is None else now) - self.failed.stat().st_mtime
        except OSError:
            return False
        return age < FAILED_RETRY_AFTER


class ClassArchive:
    """The archive a server's drivers use (``path``, or None), and the build it runs if there is none."""

    def __init__(self, path: Path | None, build: ArchiveBuild | None = None) -> None:
        self.path = path
        self.build = build

    def start(self) -> None:
        """Start the build, if one is to be made: once the server runs (it waits ``BUILD_DELAY`` first,
        so a server that stops sooner never builds)."""
        if self.build is not None and self.build.ident is None:
            self.build.start()

    def close(self) -> None:
        """Stop a build still running: the server is stopping (the next one builds again)."""
        if self.build is not None:
            self.build.stop()


def prepare(
    env: dict[str, str] | os._Environ[str] | None = None,
    python: str = sys.executable,
    delay: float = BUILD_DELAY,
) -> ClassArchive:
    """Decide, once at a server's start, which archive its drivers use; if there is none (and none failed
    in the last day, and ``DLI_KERNEL_CDS`` does not turn it off), the build that ``start`` starts."""
    env = os.environ if env is None else env
    if not cds_enabled(env):
        return ClassArchive(None)
    key = archive_key(env)
    directory = cache_dir(env)
    # spark-class splits SPARK_LAUNCHER_OPTS on blanks, quotes or not: a path with one cannot be given.
    if key is None or any(char.isspace() or char in "\"'" for char in str(directory)):
        return ClassArchive(None)
    paths = ArchivePaths.of(directory, key)
    if paths.ready():
        log.info("drivers start with the class-data archive %s", paths.driver)
        return ClassArchive(paths.driver)
    if paths.failed_recently():
        return ClassArchive(None)  # logged when it failed; tried again a day later
    return ClassArchive(None, ArchiveBuild(paths, python, delay))


class ArchiveBuild(threading.Thread):
    """Builds the archive of one key in a child process, under a lock so that servers starting at once
    build it once; the files appear, renamed from temporary ones, only when the child has succeeded."""

    def __init__(self, paths: ArchivePaths, python: str, delay: float) -> None:
        super().__init__(name="dli-cds-build", daemon=True)
        self.paths = paths
        self.python = python
        self.delay = delay
        self.outcome: str | None = None  # "built", "failed", "busy" (another server builds), "stopped"
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # its own group: the child and its JVM
        if self.ident is not None:
            self.join(timeout)

    def run(self) -> None:
        if self._stopping.wait(self.delay):
            self.outcome = "stopped"
            return
        try:
            self.paths.driver.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.outcome = self._build_locked()
        except OSError as err:
            self._failed(f"{type(err).__name__}: {err}")
            self.outcome = "failed"

    def _build_locked(self) -> str:
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "busy"
            if self.paths.ready():  # another server built it between our look and the lock
                return "built"
            # Under the lock no other build runs: these were left by a server killed while building.
            for stale in self.paths.driver.parent.glob(f"{BUILD_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
            return self._build()
        finally:
            os.close(fd)

    def _build(self) -> str:
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=BUILD_PREFIX, dir=self.paths.driver.parent) as work:
            driver_tmp, launcher_tmp = Path(work) / "driver.jsa", Path(work) / "launcher.jsa"
            command = [self.python, "-m", "dli_kernel.server.cds", str(driver_tmp), str(launcher_tmp)]
            log.info(
                "building a class-data archive of Spark's classes in the background (log: %s)",
                self.paths.build_log,
            )
            with open(self.paths.build_log, "wb") as build_log:
                with self._lock:
                    if self._stopping.is_set():
                        return "stopped"
                    self._process = subprocess.Popen(
                        command,
                        cwd=work,
                        env=driver_env(self.python),
                        stdin=subprocess.DEVNULL,
                        stdout=build_log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                code = self._wait(self._process)
            if self._stopping.is_set():
                return "stopped"
            built = all(path.is_file() and path.stat().st_size > 0 for path in (driver_tmp, launcher_tmp))
            if code != 0 or not built:
                reason = "timed out" if code is None else f"exited with code {code}"
                self._failed(f"the build {reason}{'' if built else ' without writing both archives'}")
                return "failed"
            self.paths.publish(driver_tmp, launcher_tmp)
        with contextlib.suppress(OSError):
            self.paths.failed.unlink()
        took = time.monotonic() - began
        log.info(
            "built the class-data archive %s in %.0f s; servers started from now on use it",
            self.paths.driver,
            took,
        )
        return "built"

    def _wait(self, process: subprocess.Popen[bytes]) -> int | None:
        """The child's exit code; None if it took longer than the build timeout (it is then killed)."""
        try:
            return process.wait(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None

    def _failed(self, reason: str) -> None:
        """Logged once; the marker keeps the servers of the next day from trying again."""
        with contextlib.suppress(OSError):
            self.paths.failed.write_text(json.dumps({"at": time.time(), "reason": reason}))
        log.warning(
            "could not build a class-data archive of Spark's classes (%s; see %s): drivers start without "
            "one; the next try is in a day, or remove %s to try at the next server start",
            reason,
            self.paths.build_log,
            self.paths.failed,
        )


# -- the build's child process -----------------------------------------------------------------------


def _workload(spark: Any) -> None:
    """What a first notebook does, so that its classes are in the archive: SQL, a DataFrame, a collect."""
    spark.range(10).collect()
    spark.sql("SELECT 1 AS one, 'a' AS letter").collect()
    frame = spark.createDataFrame([(1, "a"), (2, "b")], ["number", "letter"])
    frame.groupBy("letter").count().orderBy("letter").collect()
    frame.createOrReplaceTempView("numbers")
    spark.sql("SELECT letter, sum(number) FROM numbers GROUP BY letter").collect()
    with contextlib.suppress(ImportError):
        frame.toPandas()  # Arrow's classes, where pandas and pyarrow are installed


def build_main(driver_archive: str, launcher_archive_path: str) -> int:
    """Start a SparkSession as a driver would, with both JVMs dumping their classes at exit; 0 if both
    archives were written."""
    os.nice(10)  # the JVMs inherit it: interactive drivers starting meanwhile go first
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    dump = f"-XX:ArchiveClassesAtExit={launcher_archive_path} {DUMP_LOGGING}"
    os.environ[LAUNCHER_OPTS_ENV] = f"{dump} {os.environ.get(LAUNCHER_OPTS_ENV, '')}".strip()
    with tempfile.TemporaryDirectory(prefix="dli-cds-") as work:
        settings = spark_settings(SessionSpec(kind="pyspark"), "dli-kernel-cds-build", "local[*]", Path(work))
        conf = dict(settings["conf"])
        conf["spark.driver.extraJavaOptions"] = f"-XX:ArchiveClassesAtExit={driver_archive} {DUMP_LOGGING}"
        builder = SparkSession.builder.master(settings["master"]).appName(settings["app_name"])
        for name, value in conf.items():
            builder = builder.config(name, value)
        spark = builder.getOrCreate()
        _workload(spark)
        gateway = SparkContext._gateway
        jvm = getattr(gateway, "proc", None)
        spark.stop()
        if jvm is not None:
            # The JVM exits when its stdin closes, and writes the archive as it exits.
            if jvm.stdin is not None:
                jvm.stdin.close()
            jvm.wait(timeout=BUILD_TIMEOUT)
    written = all(Path(path).is_file() for path in (driver_archive, launcher_archive_path))
    print("wrote both archives" if written else "an archive is missing", flush=True)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(build_main(sys.argv[1], sys.argv[2]))
