"""Faults in a session's processes, with real drivers: its Spark JVM killed, a cancel its code ignores,
processes its code started in sessions of their own, a server crash while a long statement runs. Each
test ends with no process of the session left."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dli_kernel.processes import ProcessId, descendants, is_running, process_id
from dli_kernel.server.driver_process import JVM_PID_FILE
from tests.integration.conftest import Server, driver_pid, driver_pids, wait_gone, wait_until

pytestmark = pytest.mark.timeout(300)

# Starts what a user's code might leave behind: a child in a session of its own, and a daemon (a double
# fork, orphaned at once). Prints their pids.
LEAVE_PROCESSES = """
import subprocess
own = subprocess.Popen(["sleep", "600"], start_new_session=True)
daemon = subprocess.run(["sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!"],
                        capture_output=True, text=True).stdout.strip()
print(own.pid, daemon)
"""
IGNORES_SIGINT = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep({seconds})"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("faults") / "state")
    try:
        yield server
    finally:
        for session in server.live_sessions():
            server.delete(f"/sessions/{session['id']}")
        server.stop()
        assert all(wait_gone(pid, timeout=10) for pid in driver_pids(server.state_dir))


def session_tree(server: Server, session_id: int) -> set[ProcessId]:
    """The driver kernel of the session and every process below it, as they are now."""
    pid = driver_pid(server, session_id)
    kernel = process_id(pid)
    return descendants(pid) | ({kernel} if kernel else set())


def jvm_pid(server: Server, session_id: int) -> int:
    """The session's Spark JVM, as its server recorded it ("pid start-time")."""
    recorded = server.state_dir / "sessions" / str(session_id) / JVM_PID_FILE
    return int(recorded.read_text().split()[0])


def assert_all_gone(processes: set[ProcessId], timeout: float = 30) -> None:
    wait_until(
        lambda: not any(is_running(p) for p in processes),
        lambda: f"processes {[p[0] for p in processes if is_running(p)]} to exit",
        timeout,
    )


def new_session(server: Server, name: str) -> int:
    session_id = server.create(kind="pyspark", name=name)["id"]
    server.wait_state(session_id, ("idle",))
    return session_id


def log_of(server: Server, session_id: int) -> str:
    return "\n".join(server.get(f"/sessions/{session_id}/log", params={"size": 1000}).json()["log"])


def cancel(server: Server, session_id: int, statement_id: int) -> None:
    response = server.post(f"/sessions/{session_id}/statements/{statement_id}/cancel")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "code",
    ["import time\ntime.sleep(120)", "spark.range(10**11).selectExpr('sum(id)').collect()"],
    ids=["in-python", "in-a-spark-job"],
)
def test_a_dead_jvm_ends_the_session_and_its_running_statement(server: Server, code: str) -> None:
    session_id = new_session(server, "jvm-killed")
    tree = session_tree(server, session_id)
    jvm = jvm_pid(server, session_id)
    statement = server.submit(session_id, code)
    server.wait_statement(session_id, statement["id"], states=("running",))
    time.sleep(1)  # into the statement
    os.kill(jvm, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: server.get(f"/sessions/{session_id}").json()["state"] not in ("idle", "busy"),
        "the session to end",
        60,
        0.05,
    )
    noticed = time.monotonic() - killed
    ended = wait_until(
        lambda: (s := server.get(f"/sessions/{session_id}").json())["state"] in ("dead", "killed") and s,
        "the session to end",
        60,
        0.05,
    )
    print(
        f"a dead JVM was noticed {noticed:.1f} s after its kill, the session dead after "
        f"{time.monotonic() - killed:.1f} s"
    )
    assert ended["state"] == "dead"
    reason = f"the session's Spark JVM (pid {jvm}) exited; start a new session"
    assert reason in log_of(server, session_id)
    done = server.statement(session_id, statement["id"])
    assert done["state"] == "error" and reason in done["output"]["evalue"]
    assert_all_gone(tree)


def test_cancels_end_cancelled_and_code_that_ignores_them_ends_the_session(server: Server) -> None:
    session_id = new_session(server, "cancel-ignored")
    tree = session_tree(server, session_id)
    # A cancel Python code hears: cancelled at once, the session lives on.
    statement = server.submit(session_id, "import time\ntime.sleep(120)")
    server.wait_statement(session_id, statement["id"], states=("running",))
    asked = time.monotonic()
    cancel(server, session_id, statement["id"])
    assert server.wait_statement(session_id, statement["id"])["state"] == "cancelled"
    print(f"a cancel heard by the code took {time.monotonic() - asked:.1f} s")

    # Code that ignores SIGINT and ends within the grace period: still cancelled, never available.
    statement = server.submit(session_id, IGNORES_SIGINT.format(seconds=4))
    server.wait_statement(session_id, statement["id"], states=("running",))
    time.sleep(0.5)  # into the sleep, past the line that ignores SIGINT
    cancel(server, session_id, statement["id"])
    done = server.wait_statement(session_id, statement["id"])
    assert done["state"] == "cancelled", done
    assert server.wait_state(session_id, ("idle",))["state"] == "idle"
    assert server.run(session_id, "1 + 1")["data"]["text/plain"] == "2"

    # Code that ignores SIGINT past the grace period: the driver is stopped, the session says why.
    statement = server.submit(session_id, IGNORES_SIGINT.format(seconds=120))
    server.wait_statement(session_id, statement["id"], states=("running",))
    time.sleep(0.5)
    asked = time.monotonic()
    cancel(server, session_id, statement["id"])
    done = server.wait_statement(session_id, statement["id"], timeout=60)
    print(f"a cancel ignored by the code ended the statement after {time.monotonic() - asked:.1f} s")
    assert done["state"] == "cancelled"
    assert "ignores interrupts" in done["output"]["evalue"]
    session = wait_until(
        lambda: (s := server.get(f"/sessions/{session_id}").json())["state"] == "dead" and s, "dead", 30
    )
    assert "start a new session" in log_of(server, session_id)
    assert session["state"] == "dead"
    assert_all_gone(tree)


def leave_processes(server: Server, session_id: int) -> set[ProcessId]:
    text = server.run(session_id, LEAVE_PROCESSES)["data"]["text/plain"]
    started = {p for p in map(process_id, map(int, text.split())) if p}
    assert len(started) == 2, text
    return started


def test_delete_leaves_no_process_the_session_started(server: Server) -> None:
    session_id = new_session(server, "leaves-processes")
    started = leave_processes(server, session_id)
    tree = session_tree(server, session_id)
    assert started <= tree  # the daemon was adopted by the kernel, not by init
    assert server.delete(f"/sessions/{session_id}").status_code == 200
    assert_all_gone(tree | started)


def test_a_killed_kernel_leaves_no_process_the_session_started(server: Server) -> None:
    session_id = new_session(server, "kernel-killed")
    started = leave_processes(server, session_id)
    tree = session_tree(server, session_id)
    time.sleep(3)  # the reaper notes the processes below each driver every 2 s
    os.kill(driver_pid(server, session_id), signal.SIGKILL)
    wait_until(lambda: server.get(f"/sessions/{session_id}").json()["state"] == "dead", "dead", 60)
    assert_all_gone(tree | started)


def test_recovery_waits_for_a_statement_longer_than_30_s(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = Server(state_dir)
    second: Server | None = None
    tree: set[ProcessId] = set()
    try:
        session_id = new_session(first, "long-statement")
        first.run(session_id, "a = 41")
        marker = tmp_path / "started"
        statement = first.submit(
            session_id, f"import time\nopen({str(marker)!r}, 'w').close()\ntime.sleep(45)"
        )
        wait_until(marker.exists, "the long statement to start", 60, 0.05)
        tree = session_tree(first, session_id)
        first.stop(signal.SIGKILL)
        second = Server(state_dir)
        restarted = time.monotonic()
        seen: list[str] = []

        def idle() -> bool:
            state = second.get(f"/sessions/{session_id}").json()["state"]
            seen.append(state)
            assert state not in ("dead", "error", "killed"), log_of(second, session_id)
            return state == "idle"

        wait_until(idle, "the session to be idle again", 120, 0.5)
        print(f"recovered after {time.monotonic() - restarted:.1f} s, through {sorted(set(seen))}")
        assert "recovering" in seen
        lost = second.statement(session_id, statement["id"])
        assert lost["state"] == "error" and lost["output"]["ename"] == "StatementLost"
        assert second.run(session_id, "a + 1")["data"]["text/plain"] == "42"  # its variables are kept
        assert second.delete(f"/sessions/{session_id}").status_code == 200
        assert_all_gone(tree)
    finally:
        for server in (first, second):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        for pid, _ in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert all(wait_gone(pid, timeout=5) for pid, _ in tree)
