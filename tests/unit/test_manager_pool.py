"""Sessions that take a driver from the warm pool, with fake drivers: ready, still starting, or failing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dli_kernel.server.driver_process import DriverError
from dli_kernel.server.manager import SessionManager
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import (
    FakeLauncher,
    make_manager,
    pool_has,
    state_history,
    wait_state,
)


@contextlib.contextmanager
def pooled_manager(tmp_path: Path, launcher: FakeLauncher, held: bool = False) -> Iterator[SessionManager]:
    """A manager with a pool of one; ``held`` holds its pooled drivers in Spark's start from the first (the
    pool starts one as soon as the manager starts)."""
    if held:
        launcher.boot_gate.clear()
    manager = make_manager(tmp_path, launcher, pool_size=1, pool_refill_delay=0.0)
    try:
        yield manager
    finally:
        manager.close()


@pytest.fixture
def manager(tmp_path: Path, launcher: FakeLauncher) -> Iterator[SessionManager]:
    with pooled_manager(tmp_path, launcher) as manager:
        yield manager


@pytest.fixture
def held(tmp_path: Path, launcher: FakeLauncher) -> Iterator[SessionManager]:
    with pooled_manager(tmp_path, launcher, held=True) as manager:
        yield manager


def test_a_session_takes_a_ready_pooled_driver_at_once(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    pool_has(manager, ready=1)
    pooled = launcher.drivers[0]
    session = manager.create(SessionSpec(kind="sql"))
    assert session.state == "idle"  # ready when the create request returns
    assert session.driver is pooled and pooled.workdir == session.workdir
    assert state_history(manager, session.id) == ["not_started", "idle"]
    assert "took a driver from the warm pool" in session.log_path.read_text()
    statement = manager.submit(session, "select 1", None, 5)
    pooled.next_run().finish()
    wait_state(manager, session, "available", statement=statement)
    pool_has(manager, ready=1)  # refilled
    assert len(launcher.drivers) == 2


def test_a_session_waits_for_a_pooled_driver_still_starting(
    held: SessionManager, launcher: FakeLauncher
) -> None:
    pool_has(held, starting=1)
    session = held.create(SessionSpec(kind="pyspark"))
    wait_state(held, session, "starting")
    assert "waiting for a pooled driver that is starting" in session.log_path.read_text()
    launcher.boot_gate.set()
    wait_state(held, session, "idle")
    assert session.driver is launcher.drivers[0]


def test_a_pooled_driver_that_fails_is_replaced_by_the_session_s_own(
    held: SessionManager, launcher: FakeLauncher
) -> None:
    pool_has(held, starting=1)
    session = held.create(SessionSpec(kind="pyspark"))
    wait_state(held, session, "starting")
    launcher.drivers[0].boot_error = DriverError("Java gateway process exited")
    launcher.boot_gate.set()
    wait_state(held, session, "idle")
    pooled, own = launcher.drivers[:2]
    assert pooled.stopped.is_set() and session.driver is own
    assert "the pooled driver failed to start (Java gateway process exited)" in session.log_path.read_text()


def test_a_session_with_its_own_spec_does_not_take_a_pooled_driver(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    pool_has(manager, ready=1)
    session = manager.create(SessionSpec(kind="pyspark", conf={"spark.sql.shuffle.partitions": "3"}))
    wait_state(manager, session, "idle")
    assert session.driver is not launcher.drivers[0]
    assert state_history(manager, session.id) == ["not_started", "starting", "idle"]
    pool_has(manager, ready=1)
