"""Fake drivers for the manager's unit tests: no kernel process, no Java, timing controlled with Events.

A ``FakeDriver`` does what ``driver_process.Driver`` does as far as the manager can tell: it answers (or
not), boots (when its ``boot_gate`` opens), runs each statement as a ``Run`` the test finishes, and reacts to
interrupts and stops the way a kernel does.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dli_kernel.server.driver_process import DriverDied, DriverError, ExecutionResult
from dli_kernel.server.manager import ManagedSession, ServerSettings, SessionManager, Statement
from dli_kernel.server.store import Store

WAIT = 5.0  # seconds a test waits for something that takes milliseconds; only a failing test waits it out
POLL = 0.01


def opened() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


class Run:
    """One statement in a fake driver; the test ends it with ``finish``, or the driver's end or an
    interrupt does."""

    def __init__(self, code: str, data: dict[str, Any] | None, msg_id: str) -> None:
        self.code, self.data, self.msg_id = code, data, msg_id
        self.started = threading.Event()
        self._result: ExecutionResult | None = None
        self._error: DriverError | None = None
        self._ended = threading.Event()

    def finish(self, result: ExecutionResult | None = None, text: str = "") -> None:
        """End the statement with ``result`` (by default ok, printing ``text``); it ends only once."""
        if not self._ended.is_set():
            self._result = result or ExecutionResult(status="ok", data={"text/plain": text})
            self._ended.set()

    def fail(self, error: DriverError) -> None:
        if not self._ended.is_set():
            self._error = error
            self._ended.set()

    def wait(self) -> ExecutionResult:
        self._ended.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class FakeDriver:
    def __init__(self, workdir: Path, launcher: FakeLauncher | None = None) -> None:
        self.workdir = workdir
        self.pid = 0
        self.alive = True
        self.stopped = threading.Event()
        self.closed = False
        self.interrupts = 0
        self.calls: list[str] = []
        self.runs: queue.Queue[Run] = queue.Queue()
        self.executed: list[str] = []
        self.ready_error: DriverError | None = launcher.next_ready_error() if launcher else None
        self.boot_gate = launcher.boot_gate if launcher else opened()
        self.boot_error: DriverError | None = launcher.boot_error if launcher else None
        self.booted = False  # a driver found after a restart may not have finished its bootstrap
        self.app_id = f"local-{id(self)}"
        self.start_gate = opened()  # clear it to hold the kernel before it starts a statement's code
        self._current: Run | None = None
        self._count = 0

    # -- what the manager calls --------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        if self.ready_error is not None:
            raise self.ready_error

    def call(self, expression: str, setup: str = "", timeout: float | None = None) -> Any:
        self.calls.append(expression)
        info = json.dumps({"appId": self.app_id, "sparkUiUrl": "http://127.0.0.1:4040"})
        if expression.startswith("_dli.bootstrap("):
            while not self.boot_gate.wait(0.01):
                if self.stopped.is_set():
                    raise DriverDied("the driver process exited")
            if self.boot_error is not None:
                raise self.boot_error
            self.booted = True
            return info
        if expression == "_dli.app_info()":
            if not self.booted:
                raise DriverError("RuntimeError: the driver's SparkSession is not started")
            return info
        raise AssertionError(f"unexpected call {expression!r}")

    def execute(
        self,
        code: str,
        on_text: Callable[[str], None] | None = None,
        on_started: Callable[[str], None] | None = None,
        data: dict[str, Any] | None = None,
        keep_final_newline: bool = False,
    ) -> ExecutionResult:
        if not self.alive:
            raise DriverDied("the driver process exited while running the statement")
        self._count += 1
        run = Run(code, data, f"msg-{self._count}")
        self.executed.append(code)
        self._current = run
        self.runs.put(run)
        try:
            while not self.start_gate.wait(0.01):
                if self.stopped.is_set():
                    raise DriverDied("the driver process exited")
            run.started.set()  # an interrupt from now on lands in the statement's code
            if on_started:
                on_started(run.msg_id)
            return run.wait()
        finally:
            self._current = None

    def execute_scala(
        self,
        code: str,
        on_text: Callable[[str], None] | None = None,
        on_started: Callable[[str], None] | None = None,
    ) -> ExecutionResult:
        return self.execute("_dli.run_scala()", on_text, on_started, data={"code": code})

    def interrupt(self) -> None:
        """Like SIGINT to a kernel running Python code: the statement ends in KeyboardInterrupt."""
        self.interrupts += 1
        run = self._current
        if run is not None and run.started.is_set():
            run.finish(ExecutionResult(status="error", ename="KeyboardInterrupt", evalue=""))

    def stop(self, grace: float = 5.0) -> None:
        self.alive = False
        self.stopped.set()
        run = self._current
        if run is not None:
            run.fail(DriverDied("the driver process exited while running the statement"))

    def close(self) -> None:
        self.closed = True

    def is_alive(self) -> bool:
        return self.alive

    def complete(self, code: str, cursor: int, timeout: float = 2.0) -> list[str]:
        return [code[:cursor] + "_done"]

    def complete_scala(self, code: str, cursor: int, timeout: float) -> list[str]:
        return [code[:cursor] + "_scala"]

    # -- for the test ------------------------------------------------------------------------

    def next_run(self) -> Run:
        return self.runs.get(timeout=WAIT)


class FakeLauncher:
    """Stands in for ``Driver.launch``; every driver it made is in ``drivers``, in order."""

    def __init__(self) -> None:
        self.drivers: list[FakeDriver] = []
        self.launched: queue.Queue[FakeDriver] = queue.Queue()
        self.boot_gate = opened()  # shared by its drivers: clear it to hold them in Spark's start
        self.boot_error: DriverError | None = None
        self.ready_errors: list[DriverError] = []  # for the next drivers, in order
        self.launch_gate = opened()  # clear it to hold a launch (a Popen that takes its time)
        self.launching = threading.Event()
        self.launch_error: Exception | None = None

    def next_ready_error(self) -> DriverError | None:
        return self.ready_errors.pop(0) if self.ready_errors else None

    def __call__(self, workdir: Path, log_path: Path, env: dict[str, str]) -> FakeDriver:
        self.launching.set()
        assert self.launch_gate.wait(WAIT), "the test never let the launch go on"
        if self.launch_error is not None:
            raise self.launch_error
        workdir.mkdir(parents=True, exist_ok=True)
        driver = FakeDriver(workdir, self)
        self.drivers.append(driver)
        self.launched.put(driver)
        return driver

    def next_driver(self) -> FakeDriver:
        return self.launched.get(timeout=WAIT)


class RecordingStore(Store):
    """The real SQLite store, also keeping each session's saved states in order."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.history: dict[int, list[str]] = {}

    def save_session(self, session_id: int, record: dict[str, Any]) -> None:
        self.history.setdefault(session_id, []).append(record["state"])
        super().save_session(session_id, record)

    def states(self, session_id: int) -> list[str]:
        """The states session ``session_id`` went through, each once per stay (a save without a change of
        state, such as a second statement while busy, is no new stay)."""
        seen: list[str] = []
        for state in self.history.get(session_id, []):
            if not seen or seen[-1] != state:
                seen.append(state)
        return seen


def state_history(manager: SessionManager, session_id: int) -> list[str]:
    """The states a session of ``manager`` (made with a RecordingStore) went through, in order."""
    store = manager._store
    assert isinstance(store, RecordingStore)
    return store.states(session_id)


def make_manager(
    tmp_path: Path,
    launcher: FakeLauncher,
    attach: Callable[[Path], FakeDriver | None] = lambda workdir: None,
    store: Store | None = None,
    **settings: Any,
) -> SessionManager:
    state_dir = tmp_path / "state"
    state_dir.mkdir(exist_ok=True)
    settings.setdefault("reap_every", 0.01)
    manager = SessionManager(
        ServerSettings(state_dir, **settings),
        store or RecordingStore(state_dir / "sessions.db"),
        launch=launcher,  # type: ignore[arg-type]
        attach=attach,  # type: ignore[arg-type]
    )
    manager.start()
    return manager


def pool_has(manager: SessionManager, **counts: int) -> None:
    """Wait until the manager's pool has these counts (``ready=1``...)."""
    assert manager.pool is not None
    deadline = time.monotonic() + WAIT
    while any(manager.pool.status()[key] != value for key, value in counts.items()):
        assert time.monotonic() < deadline, f"the pool has {manager.pool.status()}, not {counts}"
        time.sleep(POLL)


def wait_until(
    manager: SessionManager,
    session: ManagedSession,
    done: Callable[[], bool],
    statement: Statement | None = None,
    what: str = "",
) -> None:
    """Wait, on the manager's own announcements, until ``done()``; fail after WAIT seconds."""
    changed = threading.Event()
    deadline = time.monotonic() + WAIT
    with manager.watch(session, statement, changed.set):
        while not done():
            left = deadline - time.monotonic()
            state = (statement or session).state
            assert left > 0, f"still {state} after {WAIT} s: {what or 'the expected change'} never came"
            changed.wait(min(left, POLL))  # log lines are no state changes: look now and then
            changed.clear()


def wait_state(
    manager: SessionManager, session: ManagedSession, *states: str, statement: Statement | None = None
) -> None:
    thing = statement or session
    wait_until(manager, session, lambda: thing.state in states, statement, f"state {' or '.join(states)}")
