"""Cold start: a kernel started with no server running, to its first `1+1` reply, with and without the
class-data sharing archive of Spark's classes (dli_kernel/server/cds.py); and a bare SparkSession's start.

    .venv/bin/python benchmarks/cold_start.py [--runs 3] [--json]

Each kernel run has a fresh Jupyter runtime dir, so the kernel starts its own embedded server (with its
default warm pool of one) and its first cell waits for that server's first driver; the server and
everything it started are stopped after each run. Without the archive is ``DLI_KERNEL_CDS=0`` (the
user's way out too). The archive is built first if this machine has none (a minute or two). The phases
of a run come from file times in the server's state dir: server.json written (server up), the first
driver's connection file (driver kernel launched) and its jvm.pid (SparkSession up). Runs alternate
with and without. The issue's target (<= 3 s) is printed beside the figures, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernels import Kernel

from dli_kernel.install import install
from dli_kernel.processes import descendants, process_id, stop_all
from dli_kernel.server import cds
from dli_kernel.server.spark_conf import driver_env, spark_settings
from dli_kernel.spec import SessionSpec

TARGET_S = 3.0
KERNEL = "dli_pyspark"
# A bare SparkSession as a driver starts it (the server's default settings), timed inside a fresh Python.
BARE_SESSION = """
import json, os, sys, time
began = time.perf_counter()
from pyspark import SparkContext
from pyspark.sql import SparkSession
imported = time.perf_counter()
settings = json.loads(sys.argv[1])
builder = SparkSession.builder.master(settings["master"]).appName(settings["app_name"])
for key, value in settings["conf"].items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
ready = time.perf_counter()
jvm = SparkContext._gateway.proc
# CPU the JVM (and spark-class's launcher JVM, a waited-for child) used to get here: load barely moves it.
fields = open(f"/proc/{jvm.pid}/stat").read().rsplit(")", 1)[1].split()
cpu = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
spark.stop()
jvm.stdin.close()
jvm.wait()
print(json.dumps({"import": imported - began, "session": ready - imported, "jvm_cpu": cpu}))
"""


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ensure_archive() -> Path:
    """This machine's archive, built now (in the foreground) if there is none."""
    env = {key: value for key, value in os.environ.items() if key != cds.CDS_ENV}
    archive = cds.prepare(env, delay=0)
    if archive.path is not None:
        return archive.path
    if archive.build is None:
        raise RuntimeError("no archive can be built here (no JDK or Spark jars, or a build failed today)")
    log("building the class-data archive (once per JDK and Spark version)")
    archive.start()
    archive.build.join()
    again = cds.prepare(env, delay=0)
    if again.path is None:
        raise RuntimeError(
            f"the archive build ended {archive.build.outcome}; see its log in {cds.cache_dir()}"
        )
    return again.path


def bare_session(tmp: Path, archive: Path | None) -> dict[str, float]:
    """Seconds to import PySpark and to start a SparkSession with the server's default settings."""
    settings = spark_settings(
        SessionSpec(kind="pyspark"), "cold-start-bare", "local[*]", tmp, cds_archive=archive
    )
    env = driver_env(sys.executable, cds_archive=archive)
    answer = subprocess.run(
        [sys.executable, "-c", BARE_SESSION, json.dumps(settings)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(answer.stdout.strip().splitlines()[-1])


def _mtime(paths: list[Path]) -> float | None:
    times = [path.stat().st_mtime for path in paths if path.exists()]
    return min(times) if times else None


def _phases(state_dir: Path, began_wall: float) -> dict[str, float | None]:
    """When (seconds after the kernel's start) the server was up, its first driver launched, Spark up."""
    marks = {
        "server_up": _mtime([state_dir / "server.json"]),
        "driver_launched": _mtime(list(state_dir.rglob("kernel.json"))),
        "spark_up": _mtime(list(state_dir.rglob("jvm.pid"))),
    }
    return {name: None if at is None else at - began_wall for name, at in marks.items()}


@contextlib.contextmanager
def _server_stopped(state_dir: Path) -> Iterator[None]:
    """Stop the embedded server the kernel started (it is detached, so it outlives the kernel), and
    everything below it."""
    try:
        yield
    finally:
        try:
            pid = json.loads((state_dir / "server.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pid = None
        server = None if pid is None else process_id(int(pid))
        if server is not None:
            below = descendants(server[0])
            os.kill(server[0], signal.SIGTERM)
            deadline = time.monotonic() + 60
            while process_id(server[0]) == server and time.monotonic() < deadline:
                time.sleep(0.2)
            stop_all({server, *below}, grace=10)


def kernel_first_result(tmp: Path, kernels_dir: Path, with_archive: bool) -> dict[str, Any]:
    """Kernel start -> first `1+1` reply with no server running; the run's phases."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp))
    env = {key: value for key, value in os.environ.items() if not key.startswith("DLI_KERNEL_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(run_dir / "config"),  # no dli_kernel.json: the embedded server
        JUPYTER_RUNTIME_DIR=str(run_dir / "runtime"),  # a state dir no server has
    )
    if not with_archive:
        env[cds.CDS_ENV] = "0"
    state_dir = run_dir / "runtime" / "dli-kernel"
    kernel = Kernel("cold", KERNEL, kernels_dir, env)
    with _server_stopped(state_dir):
        try:
            began_wall = time.time()
            kernel.start()
            cell = kernel.run("1+1", timeout=600)
            if not cell.ok or "2" not in cell.text:
                raise RuntimeError(f"the first cell failed: {cell.status} {cell.error or cell.text!r}")
            seconds = cell.replied_at - kernel.started_at
            return {"seconds": seconds, **_phases(state_dir, began_wall)}
        finally:
            kernel.shutdown()


def _stat(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def measure(tmp: Path, runs: int = 3) -> dict[str, Any]:
    """The figures: ``seconds`` (cold first result with the archive), ``seconds_without``, the bare
    SparkSession's start with and without, and each kernel run's phases."""
    tmp.mkdir(parents=True, exist_ok=True)
    archive = ensure_archive()
    install(prefix=str(tmp))
    kernels_dir = tmp / "share" / "jupyter" / "kernels"
    figures: dict[str, Any] = {
        "archive": str(archive),
        "seconds": [],
        "seconds_without": [],
        "bare_with": [],
        "bare_without": [],
        "cpu_with": [],
        "cpu_without": [],
        "runs": [],
    }
    for run in range(runs):
        for with_archive in (True, False) if run % 2 == 0 else (False, True):
            label = "with" if with_archive else "without"
            log(f"bare SparkSession, {label} the archive, run {run + 1}")
            bare = bare_session(tmp, archive if with_archive else None)
            figures["bare_with" if with_archive else "bare_without"].append(bare["session"])
            figures["cpu_with" if with_archive else "cpu_without"].append(bare["jvm_cpu"])
            log(f"kernel cold first result, {label} the archive, run {run + 1}")
            result = kernel_first_result(tmp, kernels_dir, with_archive)
            figures["seconds" if with_archive else "seconds_without"].append(result["seconds"])
            figures["runs"].append({"archive": with_archive, "bare": bare, **result})
    return figures


def table(figures: dict[str, Any]) -> str:
    rows = [
        ("kernel start -> first 1+1, no server (s)", figures["seconds"], figures["seconds_without"]),
        ("bare SparkSession start (s)", figures["bare_with"], figures["bare_without"]),
        ("  its JVMs' CPU time to ready (s)", figures["cpu_with"], figures["cpu_without"]),
    ]
    lines = [f"{'figure':44} {'with archive':38} {'without':38} target"]
    for name, with_cds, without in rows:
        target = f"<= {TARGET_S:g} s" if with_cds is figures["seconds"] else ""
        lines.append(f"{name:44} {_stat(with_cds):38} {_stat(without):38} {target}")
    lines.append("")
    lines.append(
        "phases of each kernel run (s after kernel start): server up / driver launched / Spark up / reply"
    )
    for run in figures["runs"]:
        marks = [run.get(name) for name in ("server_up", "driver_launched", "spark_up")]
        shown = " / ".join("?" if mark is None else f"{mark:.2f}" for mark in marks)
        lines.append(f"  {'with' if run['archive'] else 'without':8} {shown} / {run['seconds']:.2f}")
    lines.append(f"archive: {figures['archive']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs with and without the archive (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON after the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dli-cold-") as tmp:
        figures = measure(Path(tmp), args.runs)
    print(table(figures))
    if args.json:
        print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
