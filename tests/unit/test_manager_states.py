"""The manager's state machine with fake drivers: no kernel, no Java; each test takes milliseconds."""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path

import pytest

from dli_kernel.server.driver_process import DriverDied, DriverError, ExecutionResult, PortTaken
from dli_kernel.server.manager import SessionManager, UnknownId, WrongState
from dli_kernel.server.spark_conf import spark_settings
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import (
    WAIT,
    FakeLauncher,
    make_manager,
    state_history,
    wait_state,
    wait_until,
)


def log_text(session) -> str:
    return session.log_path.read_text()


# -- start ----------------------------------------------------------------------------------------


def test_create_starts_a_driver_and_the_session_becomes_idle(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    launcher.boot_gate.clear()
    session = manager.create(SessionSpec(kind="pyspark", name="etl"))
    wait_state(manager, session, "starting")
    driver = launcher.next_driver()
    wait_until(manager, session, lambda: session.driver is driver, what="the driver handed to the session")
    launcher.boot_gate.set()
    wait_state(manager, session, "idle")
    assert state_history(manager, session.id) == ["not_started", "starting", "idle"]
    assert session.app_id == driver.app_id
    assert session.ui_url == "http://127.0.0.1:4040"
    # Spark was started with the session's own settings, its name as the application's.
    (boot,) = driver.calls
    assert boot.startswith("_dli.bootstrap(")
    expected = spark_settings(session.spec, "etl", "local[*]", manager.settings.state_dir)
    assert json.loads(ast.literal_eval(boot.removeprefix("_dli.bootstrap(")[:-1])) == expected
    assert f"Spark application {driver.app_id}" in log_text(session)


def test_a_statement_makes_the_session_busy_then_idle(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "idle")
    driver = launcher.next_driver()
    statement = manager.submit(session, "1 + 1", None, 10)
    run = driver.next_run()
    wait_state(manager, session, "busy")
    assert (run.code, statement.state, statement.job_group) == ("1 + 1", "running", "dli-msg-1")
    assert statement.started > 0
    run.finish(text="2")
    wait_state(manager, session, "idle")
    assert statement.state == "available"
    assert statement.output == {"status": "ok", "execution_count": 0, "data": {"text/plain": "2"}}
    assert statement.progress == 1.0
    assert state_history(manager, session.id) == ["not_started", "starting", "idle", "busy", "idle"]


def test_statements_run_in_order_and_sql_goes_through_the_runner(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="sql"))
    first = manager.submit(session, "select 1", None, 5)  # queued while the session starts
    second = manager.submit(session, "x = 1", "pyspark", 5)
    driver = launcher.next_driver()
    driver.next_run().finish()
    driver.next_run().finish()
    wait_state(manager, session, "available", statement=second)
    assert driver.executed == ["_dli.run_sql('select 1', max_rows=5)", "x = 1"]
    assert first.state == "available"


def test_a_scala_statement_travels_as_data(manager: SessionManager, launcher: FakeLauncher) -> None:
    session = manager.create(SessionSpec(kind="spark"))
    statement = manager.submit(session, 'println("hi")', None, 5)
    run = launcher.next_driver().next_run()
    assert (run.code, run.data) == ("_dli.run_scala()", {"code": 'println("hi")'})
    run.finish()
    wait_state(manager, session, "available", statement=statement)


def test_a_failed_start_is_error_and_takes_no_statements(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    launcher.boot_error = DriverError("Java gateway process exited")
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "error")
    assert session.ended_reason == "start-up failed: Java gateway process exited"
    assert launcher.drivers[0].stopped.is_set()
    with pytest.raises(WrongState, match="failed to start"):
        manager.submit(session, "1", None, 5)


def test_a_launch_that_raises_is_error_not_a_session_stuck_starting(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    launcher.launch_error = OSError("No space left on device")
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "error")
    assert session.ended_reason == "start-up failed: No space left on device"


def test_a_driver_that_lost_a_port_is_started_again(manager: SessionManager, launcher: FakeLauncher) -> None:
    launcher.ready_errors = [PortTaken("a port of the driver's connection file was taken")]
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "idle")
    first, second = launcher.drivers
    assert first.stopped.is_set() and not second.stopped.is_set()
    assert session.driver is second
    assert "was taken before it started; trying again" in log_text(session)


def test_a_driver_that_keeps_losing_ports_is_an_error(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    launcher.ready_errors = [PortTaken("taken")] * 3
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "error")
    assert len(launcher.drivers) == 3
    assert all(driver.stopped.is_set() for driver in launcher.drivers)


def test_drivers_beyond_the_start_slots_wait_their_turn(tmp_path: Path, launcher: FakeLauncher) -> None:
    manager = make_manager(tmp_path, launcher, parallel_starts=1)
    try:
        launcher.boot_gate.clear()
        first = manager.create(SessionSpec(kind="pyspark"))
        launcher.next_driver()
        second = manager.create(SessionSpec(kind="pyspark"))
        wait_until(
            manager, second, lambda: "waiting for a start slot" in log_text(second), what="a slot wait"
        )
        assert len(launcher.drivers) == 1  # the second is not launched while the first starts
        launcher.boot_gate.set()
        wait_state(manager, first, "idle")
        wait_state(manager, second, "idle")
        assert "(at most 1 at once)" in log_text(second)
        assert "waiting for a start slot" not in log_text(first)
    finally:
        manager.close()


# -- delete ---------------------------------------------------------------------------------------


def test_delete_during_start_stops_the_driver(manager: SessionManager, launcher: FakeLauncher) -> None:
    launcher.boot_gate.clear()
    session = manager.create(SessionSpec(kind="pyspark"))
    driver = launcher.next_driver()
    wait_state(manager, session, "starting")
    queued = manager.submit(session, "1", None, 5)
    manager.delete(session)
    assert session.state == "killed" and session.ended_reason == "deleted by the user"
    assert driver.stopped.is_set()
    assert queued.state == "cancelled"
    assert queued.output["ename"] == "SessionEnded"
    assert state_history(manager, session.id)[-2:] == ["shutting_down", "killed"]
    with pytest.raises(UnknownId, match="has already ended"):
        manager.delete(session)
    with pytest.raises(WrongState, match="cannot run statements"):
        manager.submit(session, "1", None, 5)


def test_a_slow_launch_holds_no_lock_and_a_delete_meanwhile_stops_its_driver(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    launcher.launch_gate.clear()
    session = manager.create(SessionSpec(kind="pyspark"))
    assert launcher.launching.wait(WAIT)
    # While the driver process is being started, the manager answers, and a delete completes.
    deleted = threading.Thread(target=manager.delete, args=(session,))
    deleted.start()
    deleted.join(WAIT)
    assert not deleted.is_alive(), "delete waited for a driver launch"
    assert [s.id for s in manager.list(states=["killed"])] == [session.id]
    launcher.launch_gate.set()
    driver = launcher.next_driver()
    assert driver.stopped.wait(WAIT), "the driver launched for a deleted session was left running"
    assert session.state == "killed" and not driver.calls


def test_delete_while_running_cancels_the_statement(manager: SessionManager, launcher: FakeLauncher) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    statement = manager.submit(session, "while True: pass", None, 5)
    driver = launcher.next_driver()
    driver.next_run()
    wait_state(manager, session, "busy")
    manager.delete(session)
    assert driver.interrupts == 1 and driver.stopped.is_set()
    assert statement.state == "cancelled"
    assert statement.output["evalue"] == "the session ended: deleted by the user"


# -- cancel ---------------------------------------------------------------------------------------


def test_cancel_while_waiting_never_runs_the_statement(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    driver = launcher.next_driver()
    first = manager.submit(session, "first", None, 5)
    second = manager.submit(session, "second", None, 5)
    run = driver.next_run()
    manager.cancel(session, second)
    assert (second.state, second.output, second.progress) == ("cancelled", None, 1.0)
    run.finish()
    wait_state(manager, session, "idle")
    assert first.state == "available"
    assert driver.executed == ["first"]
    assert driver.interrupts == 0


def test_cancel_while_running_interrupts_the_driver(manager: SessionManager, launcher: FakeLauncher) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    statement = manager.submit(session, "import time; time.sleep(60)", None, 5)
    driver = launcher.next_driver()
    driver.next_run()
    wait_until(manager, session, lambda: statement.job_group is not None, what="the statement's start")
    manager.cancel(session, statement)
    assert driver.interrupts == 1
    wait_state(manager, session, "cancelled", statement=statement)
    assert statement.output["ename"] == "KeyboardInterrupt"
    wait_state(manager, session, "idle")
    manager.cancel(session, statement)  # cancelling a cancelled statement changes nothing
    assert driver.interrupts == 1


def test_a_cancel_sent_before_the_kernel_starts_the_code_waits_for_it(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "idle")
    driver = launcher.next_driver()
    driver.start_gate.clear()
    statement = manager.submit(session, "x", None, 5)
    driver.next_run()
    wait_state(manager, session, "running", statement=statement)
    manager.cancel(session, statement)
    assert statement.state == "cancelling"
    assert driver.interrupts == 0  # a SIGINT now would land in ipykernel, not in the statement
    driver.start_gate.set()
    wait_state(manager, session, "cancelled", statement=statement)
    assert driver.interrupts == 1


def test_a_statement_that_finished_as_its_cancel_landed_ends_cancelled(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    driver = launcher.next_driver()
    driver.start_gate.clear()
    statement = manager.submit(session, "x", None, 5)
    run = driver.next_run()
    wait_state(manager, session, "running", statement=statement)
    manager.cancel(session, statement)
    run.finish(text="done")
    driver.start_gate.set()
    wait_state(manager, session, "cancelled", statement=statement)
    assert session.state == "idle"  # the session goes on


# -- timeouts and dying drivers -------------------------------------------------------------------


def test_heartbeat_expiry_ends_the_session(manager: SessionManager, launcher: FakeLauncher) -> None:
    session = manager.create(SessionSpec(kind="pyspark", heartbeat_timeout_s=60))
    wait_state(manager, session, "idle")
    manager.touch(session)
    assert session.state == "idle"  # a touched session stays (the reaper runs every 10 ms here)
    session.last_touch -= 61
    wait_state(manager, session, "dead")
    assert session.ended_reason == "no request for 61 s (heartbeatTimeoutInSecond=60)"
    assert launcher.drivers[0].stopped.is_set()


def test_an_idle_session_whose_driver_died_is_dead(manager: SessionManager, launcher: FakeLauncher) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "idle")
    launcher.drivers[0].alive = False
    wait_state(manager, session, "dead")
    assert session.ended_reason == "the driver process exited"


def test_a_driver_that_dies_during_a_statement_ends_the_session(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    statement = manager.submit(session, "import os; os._exit(1)", None, 5)
    waiting = manager.submit(session, "never", None, 5)
    driver = launcher.next_driver()
    driver.next_run().fail(DriverDied("the driver process exited while running the statement"))
    wait_state(manager, session, "dead")
    assert statement.state == "error"
    assert statement.output["ename"] == "SessionDied"
    assert session.ended_reason == "the driver stopped: the driver process exited while running the statement"
    assert waiting.state == "cancelled"
    assert driver.executed == ["import os; os._exit(1)"]


# -- the server's stop ----------------------------------------------------------------------------


def test_close_ends_live_sessions(tmp_path: Path, launcher: FakeLauncher) -> None:
    manager = make_manager(tmp_path, launcher)
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "idle")
    manager.close()
    assert session.state == "success" and session.ended_reason == "the server stopped"
    assert launcher.drivers[0].stopped.is_set()


def test_close_with_keep_sessions_leaves_the_drivers_running(tmp_path: Path, launcher: FakeLauncher) -> None:
    manager = make_manager(tmp_path, launcher, keep_sessions_on_exit=True)
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "idle")
    manager.close()
    driver = launcher.drivers[0]
    assert session.state == "idle"
    assert driver.closed and not driver.stopped.is_set()
    assert "the driver keeps running for the next server" in log_text(session)
    with pytest.raises(WrongState, match="shutting down"):
        manager.create(SessionSpec(kind="pyspark"))


# -- the registry ---------------------------------------------------------------------------------


def test_sessions_are_found_by_id_uuid_and_name(manager: SessionManager) -> None:
    session = manager.create(SessionSpec(kind="pyspark", name="nightly"))
    assert manager.get(str(session.id)) is session
    assert manager.get(session.uuid) is session
    assert manager.get("nightly") is session
    with pytest.raises(UnknownId):
        manager.get("nope")
    with pytest.raises(Exception, match="already exists"):
        manager.create(SessionSpec(kind="sql", name="nightly"))


def test_completion_asks_the_driver_of_a_ready_session(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    launcher.boot_gate.clear()
    session = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, session, "starting")
    assert manager.completion(session, "spark.ra", None, 8) == []  # not ready: no candidates, no wait
    launcher.boot_gate.set()
    wait_state(manager, session, "idle")
    assert manager.completion(session, "spark.ra", None, 8) == ["spark.ra_done"]
    assert manager.completion(session, "spark.ra", "scala", 8) == ["spark.ra_scala"]
    assert manager.completion(session, "sel", "sql", 3) == []


def test_a_finished_statement_s_result_stays_as_it_was(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    statement = manager.submit(session, "1", None, 5)
    launcher.next_driver().next_run().finish(ExecutionResult(status="ok", data={"text/plain": "1"}))
    wait_state(manager, session, "available", statement=statement)
    assert manager.statement(session, "0") is statement
    with pytest.raises(UnknownId):
        manager.statement(session, "1")
