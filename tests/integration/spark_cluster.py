"""A real Spark standalone cluster on 127.0.0.1 for the cluster tests: a Master and Workers started from
pyspark's own distribution (``bin/spark-class``), each in its own process group with its work and local
dirs under a tmp path, so that stopping a group also stops the executors (and their Python workers) the
Worker started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyspark
import pytest
import requests

from tests.integration.conftest import pid_alive, poll, wait_until

SPARK_HOME = Path(pyspark.__file__).resolve().parent


def own_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: any routable address would do
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class WorkerSize:
    cores: int
    memory: str  # as a Worker's --memory takes it: 1g, 512m


@dataclass
class Daemon:
    """A Master or Worker JVM: spark-class execs java, so the process is the JVM and leads its group."""

    name: str
    process: subprocess.Popen[bytes]
    webui_port: int
    log_path: Path
    pgids: list[int] = field(default_factory=list)  # every group it ever had (a restarted worker: two)

    @property
    def pid(self) -> int:
        return self.process.pid


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live processes of the group ``pgid``: (pid, command line)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        members.append((int(stat.parent.name), cmdline))
    return members


def family(pgids: list[int]) -> set[int]:
    """The live processes of the groups ``pgids`` and all their descendants: executors' Python daemons make
    groups of their own (pyspark's daemon.py calls setpgid)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found = {pid for pgid in pgids for pid, _ in group_members(pgid)}
    while grown := {pid for pid, parent in parents.items() if parent in found and pid not in found}:
        found |= grown
    return found


def executor_pids(pgid: int) -> list[int]:
    """The executor JVMs a Worker (leading group ``pgid``) started."""
    return [pid for pid, cmd in group_members(pgid) if "CoarseGrainedExecutorBackend" in cmd]


class StandaloneCluster:
    """``spark://127.0.0.1:PORT`` with one Worker per ``WorkerSize``. JSON state from the Master's web UI."""

    def __init__(self, root: Path, workers: list[WorkerSize]) -> None:
        self.root = root
        self.sizes = workers
        self.port = free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        conf_dir = root / "conf"  # empty: no spark-defaults.conf of the user's gets in
        conf_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        for key in [k for k in self.env if k.startswith(("SPARK_", "PYSPARK_", "DLI_KERNEL_"))]:
            del self.env[key]
        self.env.update(
            SPARK_HOME=str(SPARK_HOME),
            SPARK_CONF_DIR=str(conf_dir),
            SPARK_LOCAL_IP="127.0.0.1",  # web UIs on the loopback, not every interface
            # No REST submission server: it takes port 6066, shared by every cluster on the machine.
            SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false",
            # A Worker whose connection drops is gone at once; one that stops answering, after 10 s. Both
            # sides read it: the Master to time out, the Worker to heartbeat (every quarter of it).
            SPARK_DAEMON_JAVA_OPTS="-Dspark.worker.timeout=10",
        )
        self.master: Daemon | None = None
        self.started_in = 0.0  # seconds from launch to every Worker ALIVE
        self.workers: list[Daemon | None] = [None] * len(workers)

    # -- processes -----------------------------------------------------------------------------

    def _launch(self, name: str, cls: str, args: list[str], webui_port: int, **env: str) -> Daemon:
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), cls, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **env},
                cwd=self.root,
                start_new_session=True,  # its own group: executors it starts stay in it
            )
        return Daemon(name, process, webui_port, log_path, [process.pid])

    def start(self, timeout: float = 120) -> None:
        started = time.monotonic()
        webui = free_port()
        self.master = self._launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            ["--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(webui)],
            webui,
        )
        wait_until(lambda: self._json(webui).get("status") == "ALIVE", self._said("master"), timeout, 0.5)
        for index in range(len(self.sizes)):
            self.start_worker(index, wait=False)
        wait_until(
            lambda: len(self.alive_workers()) == len(self.sizes), self._said("the workers"), timeout, 0.5
        )
        self.started_in = time.monotonic() - started

    def start_worker(self, index: int, wait: bool = True, timeout: float = 120) -> Daemon:
        size = self.sizes[index]
        work_dir = self.root / f"worker{index}"
        local_dir = self.root / f"worker{index}-local"
        work_dir.mkdir(exist_ok=True)
        local_dir.mkdir(exist_ok=True)
        webui = free_port()
        worker = self._launch(
            f"worker{index}",
            "org.apache.spark.deploy.worker.Worker",
            [
                *("--host", "127.0.0.1", "--cores", str(size.cores), "--memory", size.memory),
                *("--webui-port", str(webui), "--work-dir", str(work_dir), self.url),
            ],
            webui,
            SPARK_LOCAL_DIRS=str(local_dir),  # executors' shuffle and block files
        )
        old = self.workers[index]
        if old is not None:
            worker.pgids = [*old.pgids, *worker.pgids]
        self.workers[index] = worker
        if wait:
            wait_until(lambda: self.worker_alive(index), self._said(worker.name), timeout, 0.5)
        return worker

    def kill_worker(self, index: int) -> list[int]:
        """SIGKILL the Worker and, with it, its executors and their Python workers, as if its machine
        died; the pids killed."""
        worker = self.workers[index]
        assert worker is not None
        pids = family([worker.pid])
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.process.wait(timeout=30)
        return sorted(pids)

    def stop(self, timeout: float = 30) -> list[tuple[int, str]]:
        """Stop the workers (a Worker stops its executors as it exits), then the master; SIGKILL what is
        left of them and their descendants after ``timeout``. What was still running after that."""
        daemons = [w for w in self.workers if w is not None]
        if self.master is not None:
            daemons.append(self.master)
        pids = family([pgid for daemon in daemons for pgid in daemon.pgids])
        for daemon in daemons:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGTERM)
        poll(lambda: not any(pid_alive(pid) for pid in pids), timeout, 0.2)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for daemon in daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.process.wait(timeout=10)
        poll(lambda: not any(pid_alive(pid) for pid in pids), 10, 0.2)
        return [(pid, cmd) for pid, cmd in self._commands(pids) if pid_alive(pid)]

    @staticmethod
    def _commands(pids: set[int]) -> list[tuple[int, str]]:
        commands = []
        for pid in sorted(pids):
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                commands.append((pid, cmd[:200]))
        return commands

    # -- state ---------------------------------------------------------------------------------

    @staticmethod
    def _json(port: int) -> dict[str, Any]:
        try:
            return requests.get(f"http://127.0.0.1:{port}/json/", timeout=10).json()
        except (requests.RequestException, ValueError):
            return {}

    def _said(self, what: str) -> Any:
        """For wait_until: what was awaited, with the daemons' last log lines, so a failed start says why."""

        def tail() -> str:
            lines = [
                f"{path.name}: {line}"
                for path in sorted(self.root.glob("*.log"))
                for line in path.read_text(errors="replace").splitlines()[-10:]
            ]
            return f"{what} of {self.url} to come up; last log lines:\n" + "\n".join(lines)

        return tail

    def state(self) -> dict[str, Any]:
        """The Master's JSON: workers, activeapps, completedapps..."""
        assert self.master is not None
        return self._json(self.master.webui_port)

    def alive_workers(self) -> list[dict[str, Any]]:
        return [w for w in self.state().get("workers", []) if w["state"] == "ALIVE"]

    def worker_alive(self, index: int) -> bool:
        worker = self.workers[index]
        assert worker is not None
        address = f"http://127.0.0.1:{worker.webui_port}"
        return any(w["webuiaddress"] == address for w in self.alive_workers())

    def worker_state(self, index: int) -> dict[str, Any]:
        """A Worker's own JSON: its executors (appid, execid, cores, memory)."""
        worker = self.workers[index]
        assert worker is not None
        return self._json(worker.webui_port)

    def app(self, app_id: str) -> dict[str, Any] | None:
        """The Master's entry for a running application: cores granted, memory per executor."""
        return next((a for a in self.state().get("activeapps", []) if a["id"] == app_id), None)

    def app_executor_pids(self, app_id: str) -> set[int]:
        """Every executor JVM the Workers ever started for ``app_id``, alive or not: each executor's log in
        its Worker's work dir names its pid (``Started daemon with process name: PID@host``)."""
        pids = set()
        for log in self.root.glob(f"worker*/{app_id}/*/stderr"):
            for match in re.finditer(
                r"Started daemon with process name: (\d+)@", log.read_text(errors="replace")
            ):
                pids.add(int(match.group(1)))
        return pids

    def executors_of(self, app_id: str) -> list[dict[str, Any]]:
        """Every executor the Workers run for ``app_id``, with the index of its Worker."""
        found = []
        for index, worker in enumerate(self.workers):
            if worker is None or worker.process.poll() is not None:
                continue
            for executor in self.worker_state(index).get("executors", []):
                if executor.get("appid") == app_id:
                    found.append({**executor, "worker": index})
        return found


def wait_executors(cluster: StandaloneCluster, app_id: str, count: int, timeout: float = 60) -> list[dict]:
    def enough() -> list[dict[str, Any]] | None:
        found = cluster.executors_of(app_id)
        return found if len(found) >= count else None

    return wait_until(enough, f"{count} executors of {app_id} on the workers", timeout, 0.5)


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A Master and two Workers of 2 cores each. Their memory fits sessions that ask for 512m executors and
    one of the default tier (A: 4g executors), never the 64g a test asks for to see a refusal."""
    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"), [WorkerSize(2, "5g")] * 2)
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
    assert not left, f"cluster processes outlived the cluster: {left}"


# Python a session runs once: ``_task_jvm`` is, inside a task, the pid of the JVM whose Python worker runs
# it (the executor's, on a cluster; the driver's own in local mode), found by walking up the process tree.
PROBE = '''
import json, os, time
def _task_jvm(_):
    import os
    pid = os.getpid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().split(b"\\0")[0].endswith(b"java"):
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return None
def _where(partitions=4):
    """The driver's JVM pid and the JVMs the tasks of one job ran in."""
    jvms = sc.parallelize(range(partitions), partitions).map(_task_jvm).collect()
    driver = spark._jvm.java.lang.ProcessHandle.current().pid()
    print(json.dumps({"app": sc.applicationId, "driver": driver, "tasks": sorted(set(jvms))}))
'''
