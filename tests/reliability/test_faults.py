"""kill -9 at chosen moments: of a session's driver kernel, of its Spark JVM, of the user's kernel, and of
the server itself (mid-start, mid-statement, mid-delete). Each has an expected end state, reached in
bounded time, and leaves no process behind (checked by walking /proc from the pids seen before the kill).

Sessions start cold (no warm pool: a refill nobody takes is a JVM's worth of CPU for nothing), all of a
server's at once in one fixture. Times to reach each end state are appended to $RELIABILITY_FIGURES.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Server, driver_pid, driver_pids, poll, wait_gone, wait_until
from tests.reliability.fault_proxy import Kernel, figure, kernel_environment

pytestmark = pytest.mark.integration

HEARTBEAT = 60  # the least heartbeat timeout a session may have (two of the kernel's 30 s beats)
SLEEPY = "import time\ntime.sleep(120)"
# Code that ignores SIGINT, so that a DELETE has to wait out its grace and escalate.
STUBBORN = """import time
while True:
    try:
        time.sleep(0.2)
    except KeyboardInterrupt:
        pass"""
# And a driver that ignores every polite stop: SIGINT, ipykernel's shutdown request, SIGTERM. Only SIGKILL,
# 10 s into a DELETE, ends it, so a server killed in that window surely leaves it running.
UNSTOPPABLE = (
    """import signal

async def _ignored(*args, **kwargs):
    pass

get_ipython().kernel.control_handlers["shutdown_request"] = _ignored
signal.signal(signal.SIGTERM, signal.SIG_IGN)
"""
    + STUBBORN
)

# -- processes, from /proc -----------------------------------------------------------------------------

Proc = tuple[int, int]  # pid, start time: a pid reused later is another process


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """Name, state, parent pid and start time of a live process; None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else (name, fields[0], int(fields[1]), int(fields[19]))


def tree(root: int) -> set[Proc]:
    """``root`` and every live process below it."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    found: set[Proc] = set()
    todo = [root] if root in table else []
    while todo:
        pid = todo.pop()
        found.add((pid, table[pid][3]))
        todo.extend(child for child, stat in table.items() if stat[2] == pid)
    return found


def alive(procs: set[Proc]) -> list[int]:
    """The pids of ``procs`` still running (the same processes, not later ones with their pids)."""
    return sorted(pid for pid, start in procs if (stat := _stat(pid)) is not None and stat[3] == start)


def java_below(pid: int) -> int:
    """The Spark JVM of the driver ``pid``."""

    def find() -> int | None:
        return next((p for p, _ in tree(pid) if (stat := _stat(p)) and stat[0] == "java"), None)

    return wait_until(find, f"the JVM of driver {pid}", 60)


def assert_none_left(procs: set[Proc], what: str, timeout: float = 30) -> None:
    left = poll(lambda: not alive(procs), timeout)
    assert left, f"{what}: processes left behind: {alive(procs)}"


# -- end states --------------------------------------------------------------------------------------


def session_state(server: Server, session_id: int) -> str:
    return server.get(f"/sessions/{session_id}").json()["state"]


def wait_session(server: Server, session_id: int, states: tuple[str, ...], timeout: float = 90) -> float:
    """Wait until the session is in one of ``states``; seconds it took."""
    began = time.monotonic()
    seen: list[str] = []

    def reached() -> bool:
        seen.append(session_state(server, session_id))
        return seen[-1] in states

    wait_until(reached, lambda: f"session {session_id} to be {states}: it is {seen[-1:]}", timeout, 0.1)
    return time.monotonic() - began


def statement_of(server: Server, session_id: int, statement_id: int) -> dict[str, Any]:
    return server.get(f"/sessions/{session_id}/statements/{statement_id}").json()


def log_of(server: Server, session_id: int) -> str:
    return "\n".join(server.get(f"/sessions/{session_id}/log", params={"size": 200}).json()["log"])


def start_statement(server: Server, session_id: int, code: str) -> int:
    """Submit ``code`` and wait until it runs in the driver."""
    statement = server.submit(session_id, code)
    server.wait_statement(session_id, statement["id"], states=("running",), timeout=60)
    time.sleep(0.5)  # into the code itself, past the driver's handling of the request
    return int(statement["id"])


# -- one server, sessions killed under it --------------------------------------------------------------


@dataclass
class Sessions:
    server: Server
    ids: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def faulted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sessions]:
    """A server and the sessions the tests below kill parts of, started together."""
    state_dir = tmp_path_factory.mktemp("faults") / "state"
    server = Server(state_dir)
    sessions = Sessions(server)
    for name in ("driver-mid-statement", "jvm-mid-statement", "jvm-idle", "driver-mid-delete"):
        sessions.ids[name] = server.create(kind="pyspark", name=name, heartbeatTimeoutInSecond=3600)["id"]
    for session_id in sessions.ids.values():
        server.wait_state(session_id, ("idle",))
    yield sessions
    for session in server.live_sessions():
        server.delete(f"/sessions/{session['id']}")
    server.stop()
    assert all(wait_gone(pid, timeout=15) for pid in driver_pids(state_dir)), "a driver outlived the server"


@dataclass
class KilledKernel:
    session_id: int
    statement_id: int
    killed_at: float
    procs: set[Proc]
    last_request: float  # the last request naming the session (the test's own count as heartbeats too)


@pytest.fixture(scope="module")
def killed_kernel(faulted: Sessions, tmp_path_factory: pytest.TempPathFactory) -> KilledKernel:
    """A user's kernel killed -9 while its cell's statement runs: started first, judged last, as its
    session is reaped only a heartbeat timeout after the kernel's last request."""
    server = faulted.server
    root = tmp_path_factory.mktemp("killed-kernel")
    env, kernels = kernel_environment(server.url, server.token, root)
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "dli_kernel.json").write_text(
        json.dumps({"session": {"heartbeatTimeoutInSecond": HEARTBEAT}})
    )
    before = {s["id"] for s in server.live_sessions()}
    kernel = Kernel(env, kernels)
    reply, text = kernel.execute("ran = 0")
    assert reply["status"] == "ok", text
    (session,) = [s for s in server.live_sessions() if s["id"] not in before]
    kernel.client.execute("import time\ntime.sleep(5)\nran += 1")
    listing = f"/sessions/{session['id']}/statements"
    running = wait_until(
        lambda: next((s for s in server.get(listing).json()["statements"] if s["state"] == "running"), None),
        "the cell's statement to run",
        60,
    )
    assert kernel.manager.provisioner is not None
    pid = kernel.manager.provisioner.process.pid  # type: ignore[attr-defined]
    procs = tree(pid)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    kernel.client.stop_channels()
    with contextlib.suppress(Exception):  # whatever jupyter_client makes of a dead kernel: its files go
        kernel.manager.shutdown_kernel(now=True)
    return KilledKernel(session["id"], running["id"], killed_at, procs, killed_at)


def test_user_kernel_killed_mid_statement_leaves_the_statement_to_finish(
    faulted: Sessions, killed_kernel: KilledKernel
) -> None:
    """Its statement is not lost with it: it runs to its end, once."""
    server = faulted.server
    done = server.wait_statement(killed_kernel.session_id, killed_kernel.statement_id, timeout=60)
    assert done["state"] == "available"
    assert_none_left(killed_kernel.procs, "the killed kernel")
    assert server.run(killed_kernel.session_id, "ran")["data"]["text/plain"] == "1"
    killed_kernel.last_request = time.monotonic()


def test_driver_killed_mid_statement_fails_the_statement_and_the_session(faulted: Sessions) -> None:
    server, session_id = faulted.server, faulted.ids["driver-mid-statement"]
    statement_id = start_statement(server, session_id, SLEEPY)
    driver = driver_pid(server, session_id)
    procs = tree(driver)
    os.kill(driver, signal.SIGKILL)
    took = wait_session(server, session_id, ("dead",))
    statement = statement_of(server, session_id, statement_id)
    assert statement["state"] == "error" and statement["output"]["status"] == "error", statement
    assert_none_left(procs, "the killed driver")  # its JVM went with it
    figure(f"driver kill -9 mid-statement: statement error, session dead after {took:.1f} s")


def test_jvm_killed_mid_statement_fails_the_statement_and_the_session(faulted: Sessions) -> None:
    server, session_id = faulted.server, faulted.ids["jvm-mid-statement"]
    code = "sc.parallelize([1], 1).map(lambda x: __import__('time').sleep(120)).count()"
    statement_id = start_statement(server, session_id, code)
    driver = driver_pid(server, session_id)
    procs = tree(driver)
    os.kill(java_below(driver), signal.SIGKILL)
    took = wait_session(server, session_id, ("dead",))
    statement = statement_of(server, session_id, statement_id)
    # Failed, whether the Python code saw the JVM go first (an error output) or the server did.
    assert statement["state"] in ("available", "error"), statement
    assert statement["output"]["status"] == "error", statement
    assert "JVM" in log_of(server, session_id)
    assert_none_left(procs, "the session whose JVM was killed")
    figure(f"JVM kill -9 mid-statement: statement error, session dead after {took:.1f} s")


def test_jvm_killed_while_idle_makes_the_session_dead(faulted: Sessions) -> None:
    """Issue 15 #6: a live Python driver without its JVM is no session that can run Spark."""
    server, session_id = faulted.server, faulted.ids["jvm-idle"]
    driver = driver_pid(server, session_id)
    procs = tree(driver)
    os.kill(java_below(driver), signal.SIGKILL)
    took = wait_session(server, session_id, ("dead",))
    assert "JVM" in log_of(server, session_id)
    assert_none_left(procs, "the idle session whose JVM was killed")
    figure(f"JVM kill -9 while idle: session dead after {took:.1f} s")


def test_driver_killed_mid_delete_still_ends_the_session_killed(faulted: Sessions) -> None:
    server, session_id = faulted.server, faulted.ids["driver-mid-delete"]
    start_statement(server, session_id, STUBBORN)
    driver = driver_pid(server, session_id)
    procs = tree(driver)
    answers: list[int] = []
    deleting = threading.Thread(
        target=lambda: answers.append(server.delete(f"/sessions/{session_id}").status_code)
    )
    deleting.start()
    wait_session(server, session_id, ("shutting_down",), timeout=30)
    with contextlib.suppress(ProcessLookupError):  # (the server may have stopped it already)
        os.kill(driver, signal.SIGKILL)
    began = time.monotonic()
    deleting.join(timeout=60)
    assert answers == [200]
    assert session_state(server, session_id) == "killed"
    assert_none_left(procs, "the driver killed while its session was deleted")
    figure(f"driver kill -9 mid-delete: DELETE 200, session killed {time.monotonic() - began:.1f} s later")


def test_driver_killed_mid_start_ends_the_session_in_error(faulted: Sessions) -> None:
    server = faulted.server
    session_id = server.create(kind="pyspark", name="driver-mid-start")["id"]
    pid_file = server.state_dir / "sessions" / str(session_id) / "driver.pid"
    # Its content, not only the file: the launch creates it, then writes the pid.
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the driver's pid", 60, 0.05)
    driver = driver_pid(server, session_id)
    java_below(driver)  # far enough into the start that a JVM is up, and must go too
    assert session_state(server, session_id) in ("starting", "not_started")
    procs = tree(driver)
    os.kill(driver, signal.SIGKILL)
    took = wait_session(server, session_id, ("error",))
    assert "start-up failed" in log_of(server, session_id)
    assert_none_left(procs, "the driver killed while it started")
    figure(f"driver kill -9 mid-start: session error after {took:.1f} s")


def test_user_kernel_killed_its_session_is_reaped_after_its_heartbeat_timeout(
    faulted: Sessions, killed_kernel: KilledKernel
) -> None:
    """Last in this module: the session of the kernel killed in the first test ends ``dead`` once nobody
    asked for it for HEARTBEAT seconds (the first test's read of ``ran`` was the last request)."""
    server = faulted.server
    procs = tree(driver_pid(server, killed_kernel.session_id))
    left = HEARTBEAT + 30 - (time.monotonic() - killed_kernel.last_request)
    # Only looked at through the list: a GET naming the session would count as a heartbeat.
    wait_until(
        lambda: killed_kernel.session_id not in {s["id"] for s in server.live_sessions()},
        "the killed kernel's session to be reaped",
        max(left, 5),
        1.0,
    )
    took = time.monotonic() - killed_kernel.killed_at
    quiet = time.monotonic() - killed_kernel.last_request
    record = server.get(f"/sessions/{killed_kernel.session_id}").json()
    assert record["state"] == "dead"
    assert f"heartbeatTimeoutInSecond={HEARTBEAT}" in log_of(server, killed_kernel.session_id)
    assert_none_left(procs, "the reaped session")
    figure(
        "user's kernel kill -9 mid-statement: statement ran to its end once; "
        f"session dead {took:.0f} s after the kill, {quiet:.0f} s after the last request "
        f"(heartbeat {HEARTBEAT} s)"
    )


# -- the server killed: one session through three crashes -------------------------------------------------


@dataclass
class Crashes:
    state_dir: Path
    server: Server | None = None
    session_id: int | None = None

    def restart(self) -> Server:
        self.server = Server(self.state_dir)
        return self.server


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashes]:
    """A state dir whose server the tests below kill -9 and start again, in turn."""
    chain = Crashes(tmp_path_factory.mktemp("crashes") / "state")
    yield chain
    if chain.server is not None:
        chain.server.stop()
    assert all(wait_gone(pid, timeout=15) for pid in driver_pids(chain.state_dir)), "a driver was left"


def _crash(server: Server) -> None:
    server.stop(signal.SIGKILL)


def test_server_killed_mid_start_the_next_server_finishes_the_start(crashes: Crashes) -> None:
    server = crashes.restart()
    session_id = crashes.session_id = server.create(kind="pyspark", name="crash-survivor")["id"]
    pid_file = server.state_dir / "sessions" / str(session_id) / "driver.pid"
    # Its content, not only the file: the launch creates it, then writes the pid.
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the driver's pid", 60, 0.05)
    java_below(driver_pid(server, session_id))
    assert session_state(server, session_id) == "starting"
    _crash(server)
    server = crashes.restart()
    took = wait_session(server, session_id, ("idle",), timeout=180)
    assert server.run(session_id, "n = 0")["status"] == "ok"
    figure(f"server kill -9 mid-start: session idle {took:.1f} s after the next server started")


def test_server_killed_mid_statement_recovers_the_session_and_runs_nothing_twice(crashes: Crashes) -> None:
    """Issue 15 #3: a statement longer than 30 s still running when the server restarts does not make
    the session dead; the restarted server waits for it. The running statement's answer went with the old
    server (it is reported lost, not run again); the one queued behind it runs, once."""
    server, session_id = crashes.server, crashes.session_id
    assert server is not None and session_id is not None
    long_one = start_statement(server, session_id, "import time\ntime.sleep(35)\nn += 1")
    queued = server.submit(session_id, "n += 10")["id"]
    _crash(server)
    server = crashes.restart()
    took = wait_session(server, session_id, ("idle",), timeout=120)
    lost = statement_of(server, session_id, long_one)
    # Its answer went with the old server: reported lost, never run again (or, where the driver could
    # still tell, its result).
    assert lost["state"] in ("error", "available"), lost
    assert server.wait_statement(session_id, queued, timeout=60)["state"] == "available"
    assert server.run(session_id, "n")["data"]["text/plain"] == "11"  # each ran once
    figure(f"server kill -9 mid-statement (35 s): session idle {took:.1f} s after the restart, n == 11")


def test_server_killed_mid_delete_the_next_server_ends_the_session(crashes: Crashes) -> None:
    """A DELETE under way when the server died is carried out by the next server, not undone."""
    server, session_id = crashes.server, crashes.session_id
    assert server is not None and session_id is not None
    start_statement(server, session_id, UNSTOPPABLE)
    procs = tree(driver_pid(server, session_id))

    def delete() -> None:
        with contextlib.suppress(OSError):  # the server dies under it
            server.delete(f"/sessions/{session_id}", timeout=30)

    threading.Thread(target=delete, daemon=True).start()
    wait_session(server, session_id, ("shutting_down",), timeout=30)
    _crash(server)
    server = crashes.restart()
    took = wait_session(server, session_id, ("killed", "dead"), timeout=30)
    assert_none_left(procs, "the session deleted while the server died")
    figure(f"server kill -9 mid-delete: session {session_state(server, session_id)} after {took:.1f} s")
