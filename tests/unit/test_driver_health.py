"""A session's health includes its JVM, recovery waits for a busy driver, a cancel that is ignored ends the
session after a grace period: the state logic with fake drivers (no kernel, no Java)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dli_kernel.processes import process_id
from dli_kernel.server import reaper
from dli_kernel.server.driver_process import JVM_PID_FILE, DriverError, jvm_exit_reason, jvm_exited, note_jvm
from dli_kernel.server.manager import SessionManager, Statement
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import (
    FakeDriver,
    FakeLauncher,
    RecordingStore,
    make_manager,
    wait_state,
    wait_until,
)
from tests.unit.test_manager_recovery import saved


def gone_jvm(workdir: Path) -> int:
    """Record in ``workdir`` a JVM that has exited (a real process, started and ended here); its pid."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    note_jvm(workdir, {"jvmPid": process.pid})
    process.kill()
    process.wait()
    return process.pid


# -- the JVM -------------------------------------------------------------------------------------


def test_a_recorded_jvm_is_checked_by_pid_and_start_time(tmp_path: Path) -> None:
    assert jvm_exited(tmp_path) is None  # none recorded: nothing to say
    note_jvm(tmp_path, {"jvmPid": None})
    assert not (tmp_path / JVM_PID_FILE).exists()
    note_jvm(tmp_path, {"jvmPid": 1})  # init: alive
    assert jvm_exited(tmp_path) is None
    pid = gone_jvm(tmp_path)
    assert jvm_exited(tmp_path) == pid
    # A later process that got the same pid is not the JVM: its start time differs.
    pid_and_start = process_id(1)
    assert pid_and_start is not None
    (tmp_path / JVM_PID_FILE).write_text(f"1 {pid_and_start[1] + 1}")
    assert jvm_exited(tmp_path) == 1


def test_an_idle_session_whose_jvm_died_is_dead_saying_why(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "idle")
    driver = launcher.next_driver()
    pid = gone_jvm(session.workdir)
    wait_state(manager, session, "dead")
    assert session.ended_reason == jvm_exit_reason(pid)
    assert f"the session's Spark JVM (pid {pid}) exited; start a new session" in session.log_path.read_text()
    assert driver.stopped.is_set()


def test_a_busy_session_whose_jvm_died_ends_its_statement_error(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    running = manager.submit(session, "import time; time.sleep(60)", None, 5)
    waiting = manager.submit(session, "1 + 1", None, 5)
    driver = launcher.next_driver()
    driver.next_run()
    wait_state(manager, session, "running", statement=running)
    pid = gone_jvm(session.workdir)
    wait_state(manager, session, "dead")
    assert running.state == "error"
    assert running.output["ename"] == "SessionDied"
    assert running.output["evalue"] == jvm_exit_reason(pid)
    assert waiting.state == "cancelled"
    assert driver.stopped.is_set()
    assert driver.executed == ["import time; time.sleep(60)"]  # the queued one never ran


# -- cancel ----------------------------------------------------------------------------------------


class DeafDriver(FakeDriver):
    """A driver whose statement ignores SIGINT (``signal.signal(SIGINT, SIG_IGN)``)."""

    def interrupt(self) -> None:
        self.interrupts += 1


@pytest.fixture
def quick_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper, "CANCEL_GRACE", 0.5)
    monkeypatch.setattr(reaper, "REPEAT_INTERRUPT_AFTER", 0.1)


def test_a_cancel_the_code_ignores_ends_the_session_after_the_grace_period(
    tmp_path: Path, quick_grace: None
) -> None:
    deaf: list[DeafDriver] = []

    def launch(workdir: Path, log_path: Path, env: dict[str, str]) -> DeafDriver:
        workdir.mkdir(parents=True, exist_ok=True)
        deaf.append(DeafDriver(workdir))
        return deaf[-1]

    manager = make_manager(tmp_path, launch)  # type: ignore[arg-type]
    try:
        session = manager.create(SessionSpec(kind="pyspark"))
        statement = manager.submit(session, "ignore_sigint(); time.sleep(60)", None, 5)
        wait_until(manager, session, lambda: statement.job_group is not None, what="the statement's start")
        manager.cancel(session, statement)
        wait_state(manager, session, "dead")
        driver = deaf[0]
        assert driver.interrupts >= 2  # interrupted again before the driver was stopped
        assert driver.stopped.is_set()
        assert statement.state == "cancelled"  # never available, never left cancelling
        assert "still running 0 s after its cancel" in statement.output["evalue"]
        assert "start a new session" in session.ended_reason
        assert "ignores interrupts" in session.log_path.read_text()
    finally:
        manager.close()


def test_a_cancel_that_works_within_the_grace_period_keeps_the_session(
    manager: SessionManager, launcher: FakeLauncher, quick_grace: None
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    statement = manager.submit(session, "import time; time.sleep(60)", None, 5)
    launcher.next_driver().next_run()
    wait_until(manager, session, lambda: statement.job_group is not None, what="the statement's start")
    manager.cancel(session, statement)
    wait_state(manager, session, "cancelled", statement=statement)
    time.sleep(1.0)  # past the grace period: nothing more happens to the session
    assert session.state == "idle"


# -- recovery ---------------------------------------------------------------------------------------


class BusyDriver(FakeDriver):
    """A reattached driver still running a statement the previous server sent: it answers once ``done``."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.booted = True
        self.done = threading.Event()
        self.asked = 0

    def wait_ready(self, timeout: float) -> None:
        self.asked += 1
        if not self.done.wait(0.02):
            raise DriverError(f"the driver did not answer within {timeout:.0f} s")


def recovering(tmp_path: Path) -> tuple[SessionManager, BusyDriver]:
    (tmp_path / "state").mkdir()
    store = RecordingStore(tmp_path / "state" / "sessions.db")
    running = Statement(id=0, code="long_job()", kind="pyspark", state="running")
    workdir = saved(
        store, tmp_path, 100_000, "busy", running, Statement(id=1, code="after()", kind="pyspark")
    )
    driver = BusyDriver(workdir)
    return make_manager(tmp_path, FakeLauncher(), attach={workdir: driver}.get, store=store), driver


def test_recovery_waits_for_a_driver_busy_with_a_long_statement(tmp_path: Path) -> None:
    manager, driver = recovering(tmp_path)
    try:
        session = manager.get("100000")
        wait_until(manager, session, lambda: driver.asked >= 20, what="several unanswered asks")
        assert session.state == "recovering"  # not dead: its driver lives
        assert "waiting for as long as the driver and its Spark JVM run" in session.log_path.read_text()
        driver.done.set()
        run = driver.next_run()
        assert run.code == "after()"
        run.finish(text="ok")
        wait_state(manager, session, "idle")
        assert session.statements[0].output["ename"] == "StatementLost"
        assert session.statements[1].state == "available"
    finally:
        manager.close()


def test_recovery_of_a_busy_driver_whose_jvm_dies_is_dead(tmp_path: Path) -> None:
    manager, driver = recovering(tmp_path)
    try:
        session = manager.get("100000")
        wait_until(manager, session, lambda: driver.asked >= 3, what="unanswered asks")
        pid = gone_jvm(session.workdir)
        wait_state(manager, session, "dead")
        assert session.ended_reason == f"start-up failed: {jvm_exit_reason(pid)}"
    finally:
        manager.close()


def test_recovery_of_a_busy_driver_that_exits_is_dead(tmp_path: Path) -> None:
    manager, driver = recovering(tmp_path)
    try:
        session = manager.get("100000")
        wait_until(manager, session, lambda: driver.asked >= 3, what="unanswered asks")
        driver.alive = False
        wait_state(manager, session, "dead")
        assert "the driver process exited" in (session.ended_reason or "")
    finally:
        manager.close()


def test_a_session_deleted_while_recovering_stops_waiting(tmp_path: Path) -> None:
    manager, driver = recovering(tmp_path)
    try:
        session = manager.get("100000")
        wait_until(manager, session, lambda: driver.asked >= 3, what="unanswered asks")
        manager.delete(session)
        assert session.state == "killed"
        assert driver.stopped.is_set()
    finally:
        manager.close()
