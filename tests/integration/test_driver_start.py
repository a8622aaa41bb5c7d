"""A driver whose port was taken between picking it and binding it is started again, not reported dead.

The server picks a driver's ports when it writes the connection file; the kernel binds them a few seconds
later. A machine starting many sessions at once has Spark JVMs binding ports in between, and one may take
ours. Here a port is taken on purpose: a real kernel process, a real Spark start, no mock.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dli_kernel.server import driver_process as driver_module
from dli_kernel.server.driver_process import Driver, DriverDied, PortTaken
from dli_kernel.server.manager import ManagedSession, ServerSettings, SessionManager
from dli_kernel.server.store import Store
from dli_kernel.spec import SessionSpec
from tests.integration.conftest import wait_until


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def giving_the_taken_port(port: int, times: int) -> Callable[..., Any]:
    """write_connection_file, with ``port`` as the shell port of its first ``times`` files."""
    real = driver_module.write_connection_file
    calls = {"n": 0}

    def write(fname: str, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            kwargs["shell_port"] = port
        return real(fname, **kwargs)

    return write


def test_a_driver_that_lost_a_port_says_so(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "write_connection_file", giving_the_taken_port(taken_port, 1))
    driver = Driver.launch(tmp_path / "driver", tmp_path / "driver.log", dict(os.environ))
    try:
        with pytest.raises(PortTaken, match="was taken before it could bind it"):
            driver.wait_ready(timeout=60)
    finally:
        driver.stop()


def test_a_driver_that_died_otherwise_is_not_mistaken_for_one(tmp_path: Path) -> None:
    # `python -m` looks in the working directory first, and the driver's is its workdir.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSAFEPATH"}
    (tmp_path / "ipykernel_launcher.py").write_text("raise SystemExit('broken on purpose')\n")
    driver = Driver.launch(tmp_path, tmp_path / "driver.log", env)
    try:
        with pytest.raises(DriverDied) as info:
            driver.wait_ready(timeout=60)
        assert not isinstance(info.value, PortTaken)
    finally:
        driver.stop()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[SessionManager]:
    """An in-process manager (so a test can patch what its drivers are given) that starts one at a time."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    settings = ServerSettings(state_dir, master="local[1]", parallel_starts=1)
    manager = SessionManager(settings, Store(state_dir / "sessions.db"))
    manager.start()
    try:
        yield manager
    finally:
        manager.close()


def wait_started(session: ManagedSession, timeout: float = 300) -> str:
    """The session's state once it is up or has failed, and its log."""
    wait_until(
        lambda: session.state in ("idle", "error", "dead"),
        lambda: f"the driver to start or fail; log: {session.log_path.read_text()[-2000:]}",
        timeout,
        0.2,
    )
    log = session.log_path.read_text()
    assert session.state == "idle", log[-2000:]
    return log


def test_the_manager_starts_the_driver_again(
    manager: SessionManager, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "write_connection_file", giving_the_taken_port(taken_port, 1))
    log = wait_started(manager.create(SessionSpec(kind="pyspark")))
    assert "was taken before it started; trying again" in log
    assert "Address already in use" in log


def test_drivers_beyond_the_start_slots_wait_their_turn(manager: SessionManager) -> None:
    first, second = manager.create(SessionSpec(kind="pyspark")), manager.create(SessionSpec(kind="sql"))
    logs = [wait_started(first), wait_started(second)]
    waited = "waiting for a start slot: other drivers are starting (at most 1 at once)"
    assert sum(waited in log for log in logs) == 1
