"""The state machine of sessions and statements: every change of state goes through here.

A change happens under the one lock, is saved to the store (so a restarted server knows it), written to
the session log when it has a message, and announced: to the session's worker (its condition) and to the
HTTP requests long-polling for it (``watch``). Slow work, such as stopping a driver, is done between
changes, never while the lock is held.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from dli_kernel.protocol import RESULTS_DIR
from dli_kernel.server import outputs
from dli_kernel.server.driver_process import Driver
from dli_kernel.server.records import ManagedSession, Statement, error_output, now_ms

log = logging.getLogger("dli_kernel.server")

# Statements that hold the driver until they end; a session that ends interrupts them first.
IN_DRIVER = ("running", "cancelling")


class RecordStore(Protocol):
    """What the state machine needs of a store (``store.Store``, or a test's stand-in)."""

    def save_session(self, session_id: int, record: dict[str, Any]) -> None: ...

    def save_statement(self, session_id: int, statement_id: int, record: dict[str, Any]) -> None: ...


class SessionStates:
    """``spill_above``: bytes of JSON above which a finished statement's output goes to a file in the
    session's directory instead of memory and the store (``outputs``); None keeps every output whole."""

    def __init__(self, store: RecordStore, spill_above: int | None = outputs.DEFAULT_SPILL_BYTES) -> None:
        self.lock = threading.RLock()
        self.closing = threading.Event()  # the server is stopping: workers and the reaper end
        self._store = store
        self._spill_above = spill_above
        # Told of a session's driver before the session's end stops it, outside the lock: whatever else
        # holds resources for that driver lets go (a shared driver's host releases the session's gateway).
        self.before_stop: Callable[[Driver], None] = lambda driver: None
        # Who to tell when a statement (key (session id, statement id)) or a session (key (id, None))
        # changes state: the HTTP requests that long-poll for it.
        self._watchers: dict[tuple[int, int | None], set[Callable[[], None]]] = {}

    # -- sessions ----------------------------------------------------------------------------

    def set_state(self, session: ManagedSession, state: str, message: str | None = None) -> None:
        with self.lock:
            if message:
                self.log(session, message)
            session.state = state
            session.updated = now_ms()
            self._store.save_session(session.id, session.record())
            self.notify(session)
            self._wake((session.id, None))

    def ready(self, session: ManagedSession, info: dict[str, Any], message: str) -> None:
        """The driver runs Spark application ``info``: the session takes its queued statements, if any."""
        with self.lock:
            session.app_id, session.ui_url = info["appId"], info["sparkUiUrl"]
            self.set_state(session, "busy" if session.queue else "idle", message)

    def end(self, session: ManagedSession, final_state: str, reason: str) -> None:
        """Stop the driver and everything it started, then record the final state and why."""
        with self.lock:
            if session.ended:
                return
            session.stopping = True
            session.ended_reason = reason
            running = any(s.state in IN_DRIVER for s in session.statements)
            self.set_state(session, "shutting_down", f"shutting down: {reason}")
            driver = session.driver
        if driver:
            if running:
                driver.interrupt()
            try:
                self.before_stop(driver)
            except Exception:  # the driver is stopped and the end recorded all the same
                log.exception("session %s could not let go of what its driver held", session.id)
            driver.stop()
        with self.lock:
            for statement in session.statements:
                if statement.state == "waiting" or statement.state in IN_DRIVER:
                    output = error_output(statement, "SessionEnded", f"the session ended: {reason}")
                    self.finish(session, statement, "cancelled", output)
            session.queue.clear()
            self.set_state(session, final_state, reason)
        # Arrow results can be large; an ended session's are of no further use.
        shutil.rmtree(session.workdir / RESULTS_DIR, ignore_errors=True)

    def log(self, session: ManagedSession, message: str) -> None:
        session.log.append(message)

    def notify(self, session: ManagedSession) -> None:
        """Wake the session's worker: its queue, or whether it should stop, changed."""
        with self.lock:
            if session.wakeup is not None:
                session.wakeup.notify_all()

    def requeue(self, session: ManagedSession) -> None:
        """After a server restart: statements that were running are lost, waiting ones queue again."""
        with self.lock:
            for statement in session.statements:
                if statement.state in IN_DRIVER:
                    output = error_output(
                        statement, "StatementLost", "the server restarted while this statement ran"
                    )
                    self.finish(session, statement, "error", output)
                elif statement.state == "waiting":
                    session.queue.append(statement)

    # -- statements --------------------------------------------------------------------------

    def add(self, session: ManagedSession, statement: Statement) -> None:
        with self.lock:
            session.statements.append(statement)
            session.queue.append(statement)
            session.last_activity = time.monotonic()
            self.save_statement(session, statement)
            self.notify(session)

    def run(self, session: ManagedSession, statement: Statement) -> None:
        """The worker took ``statement`` off the queue and sends it to the driver."""
        with self.lock:
            statement.state = "running"
            statement.started = now_ms()
            self.save_statement(session, statement)
            self.set_state(session, "busy")

    def finish(
        self, session: ManagedSession, statement: Statement, state: str, output: dict[str, Any] | None
    ) -> None:
        with self.lock:
            # Views read statements without the lock: a done state must never be seen before its output.
            statement.output = output  # a large one was spilled by the worker, before the lock (``spill``)
            statement.progress = 1.0
            statement.completed = now_ms()
            statement.state = state
            self.save_statement(session, statement)
            self.notify(session)

    def spill(
        self, session: ManagedSession, statement: Statement, output: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """What the statement holds of ``output``: itself, or the stub of its spilled file. Called without
        the lock (the file of a large output takes a while to write), before ``finish``; only the worker
        has outputs that may be large, the others (errors, cancels) are a few lines."""
        path = outputs.output_path(session.workdir, statement.id)
        try:
            return outputs.keep(output, path, self._spill_above)
        except OSError as err:
            # The output is the user's result: held whole rather than lost, and the log says why.
            self.log(
                session,
                f"statement {statement.id}'s large output could not be written to its file "
                f"({err.strerror or type(err).__name__}); it is kept in memory",
            )
            return output

    def save_statement(self, session: ManagedSession, statement: Statement) -> None:
        # Every state change of a statement is saved, so this is where long-polls learn of them.
        with self.lock:
            self._store.save_statement(session.id, statement.id, statement.record())
            self._wake((session.id, statement.id))

    # -- long-polls --------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(
        self, session: ManagedSession, statement: Statement | None, wake: Callable[[], None]
    ) -> Iterator[None]:
        """Call ``wake()`` whenever ``statement`` (or, without one, the session) changes state, until the
        block ends. It is called with the lock held, so it must not block."""
        key = (session.id, None if statement is None else statement.id)
        with self.lock:
            self._watchers.setdefault(key, set()).add(wake)
        try:
            yield
        finally:
            with self.lock:
                watchers = self._watchers.get(key, set())
                watchers.discard(wake)
                if not watchers:
                    self._watchers.pop(key, None)

    def _wake(self, key: tuple[int, int | None]) -> None:
        with self.lock:
            for wake in list(self._watchers.get(key, ())):
                wake()
