"""One session's thread: it gets the session a driver, then runs its statements one at a time, in order.

A statement that fails in the server's own code (not in the driver) ends as an ``error`` that says so,
and the thread goes on with the next one; anything that goes wrong outside a statement ends the session
``dead`` with the reason, so that no session is left ``busy`` with nobody to run its statements.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from dli_kernel.protocol import job_group
from dli_kernel.server import driver_code
from dli_kernel.server.driver_process import Driver, DriverError, ExecutionResult
from dli_kernel.server.pool import PooledDriver
from dli_kernel.server.records import ManagedSession, Statement, error_output, statement_output
from dli_kernel.server.starter import DriverStarter
from dli_kernel.server.states import IN_DRIVER, SessionStates

log = logging.getLogger("dli_kernel.server")


class SessionWorker:
    def __init__(self, session: ManagedSession, states: SessionStates, starter: DriverStarter) -> None:
        self.session = session
        self._states = states
        self._starter = starter
        # One condition per session: a change to one session wakes its worker only, not all of them.
        session.wakeup = threading.Condition(states.lock)
        self._wakeup = session.wakeup
        self.thread = threading.Thread(target=self._run, name=f"dli-session-{session.id}", daemon=True)
        self._recover = False
        self._pooled: PooledDriver | None = None

    def start(self, recover: bool = False, pooled: PooledDriver | None = None) -> None:
        """Start the thread: reconnect to the driver a previous server left (``recover``), wait for a
        pooled driver, or start a new one; then run statements until the session or the server stops."""
        self._recover, self._pooled = recover, pooled
        self.thread.start()

    def _run(self) -> None:
        session = self.session
        try:
            self._serve()
        except Exception as err:
            log.exception("the worker of session %s failed", session.id)
            try:
                if not session.stopping and not session.ended:
                    reason = f"the session's worker failed ({type(err).__name__}; see the server log)"
                    self._states.end(session, "dead", reason)
            except Exception:  # the store or the driver's stop failed too: the log has it
                log.exception("session %s could not be ended after its worker failed", session.id)

    def _serve(self) -> None:
        session = self.session
        try:
            if self._recover:
                self._starter.reconnect(session)
            elif self._pooled is not None:
                self._starter.wait_pooled(session, self._pooled)
            else:
                self._starter.start(session)
        except Exception as err:  # any failure to start ends the session, rather than leave it starting
            if not session.stopping:
                reason = f"start-up failed: {str(err) or type(err).__name__}"
                self._states.end(session, "dead" if self._recover else "error", reason)
            return
        while True:
            statement = self._next()
            if statement is None:
                return
            driver = session.driver
            assert driver is not None  # the session has one from its start until it stops
            try:
                result = self._execute(driver, statement)
            except DriverError as err:
                with self._states.lock:
                    if not session.stopping:
                        output = error_output(statement, "SessionDied", err)
                        self._states.finish(session, statement, "error", output)
                if not session.stopping:
                    reason = self._starter.host_gone(driver) or f"the driver stopped: {err}"
                    self._states.end(session, "dead", reason)
                return
            except Exception as err:
                self._failed(statement, err)
                continue
            try:
                self._done(statement, result)
            except Exception as err:
                self._failed(statement, err)

    def _next(self) -> Statement | None:
        """The next statement, once there is one, marked running; None when the session or server stops."""
        session, closing = self.session, self._states.closing
        with self._states.lock:
            self._wakeup.wait_for(lambda: session.queue or session.stopping or closing.is_set())
            if session.stopping or closing.is_set():
                return None
            statement = session.queue.popleft()
            self._states.run(session, statement)
            return statement

    def _execute(self, driver: Driver, statement: Statement) -> ExecutionResult:
        started = functools.partial(self._started, driver, statement)
        if statement.kind == "spark":
            return driver.execute_scala(statement.code, on_started=started)
        return driver.execute(code_for(statement), on_started=started)

    def _done(self, statement: Statement, result: ExecutionResult) -> None:
        session = self.session
        # Before the lock: a large output's file takes a while to write, and every request waits on the lock.
        output = self._states.spill(session, statement, statement_output(statement, result))
        with self._states.lock:
            if statement.state not in IN_DRIVER or (session.stopping and result.status == "error"):
                return  # the session's end interrupted it: the end reports it cancelled, and why
            # A cancel the user sent is what they see, even if the code finished as the cancel landed:
            # a cancelled statement never turns available.
            cancelled = statement.state == "cancelling"
            self._states.finish(session, statement, "cancelled" if cancelled else "available", output)
            session.last_activity = time.monotonic()
            if not session.queue and not session.stopping:
                self._states.set_state(session, "idle")

    def _failed(self, statement: Statement, err: Exception) -> None:
        """The server's own code failed to run ``statement`` or to record its result: it ends as an error,
        the session goes on. Only the exception's type is shown: its message may hold the server's paths."""
        log.exception("statement %s of session %s failed in the server", statement.id, self.session.id)
        session = self.session
        with self._states.lock:
            if statement.state not in IN_DRIVER or session.stopping:
                return  # the session's end took care of it
            output = error_output(
                statement,
                "InternalError",
                f"the server failed to run this statement ({type(err).__name__}; see the server log); "
                "the session goes on with its next statement",
            )
            self._states.finish(session, statement, "error", output)
            session.last_activity = time.monotonic()
            if not session.queue:
                self._states.set_state(session, "idle")

    def _started(self, driver: Driver, statement: Statement, msg_id: str) -> None:
        """The kernel began running the statement: a cancel that came before now takes effect.

        A SIGINT sent earlier could land while ipykernel itself is handling the request, where it is
        ignored or swallows the request, so cancels wait for this moment.
        """
        with self._states.lock:
            statement.job_group = job_group(msg_id)
            if statement.state != "cancelling":
                return
            statement.cancel_sent = time.monotonic()
        driver.interrupt()


def code_for(statement: Statement) -> str:
    """What the driver kernel runs for a Python, SQL or Arrow statement (Scala travels as data)."""
    if statement.result_format == "arrow":
        return driver_code.arrow_statement(statement.code, statement.kind, statement.max_rows, statement.id)
    if statement.kind == "sql":
        return driver_code.run_sql(statement.code, statement.max_rows)
    return statement.code
