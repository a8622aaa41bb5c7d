"""The reaper: ends sessions whose heartbeat, ttl or idle timeout ran out, sessions whose driver died while
idle (a busy session learns that from its statement) or whose Spark JVM or shared driver died, and sessions
whose statement ignored its cancel for longer than ``CANCEL_GRACE``; repeats interrupts that were ignored;
and notes the processes below each driver, so that a session's end stops them all."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dli_kernel.processes import process_table
from dli_kernel.server.driver_process import Driver, jvm_exit_reason, jvm_exited
from dli_kernel.server.records import ManagedSession, error_output
from dli_kernel.server.states import IN_DRIVER, SessionStates

log = logging.getLogger("dli_kernel.server")

REPEAT_INTERRUPT_AFTER = 3.0
# Seconds from a cancel until a statement that has not stopped (its code ignores SIGINT, or is stuck in
# native code) has its driver stopped: its Python state cannot be kept apart from the statement.
CANCEL_GRACE = 10.0
TRACK_EVERY = 2.0  # seconds between looks at the processes below each driver


class Reaper:
    def __init__(
        self,
        sessions: Callable[[], list[ManagedSession]],
        states: SessionStates,
        every: float = 1.0,
        host_gone: Callable[[Driver], str | None] = lambda driver: None,
    ) -> None:
        self._sessions = sessions
        self._host_gone = host_gone  # why a session must end as its shared driver died (shared_host)
        self._states = states
        self._every = every
        self._thread = threading.Thread(target=self._run, name="dli-reaper", daemon=True)
        self._tracked = 0.0  # monotonic time of the last look at the driver's processes
        # (session id, statement id) -> when it was cancelled, for statements seen cancelling.
        self._cancels: dict[tuple[int, int], float] = {}

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread, which ends once the state machine's ``closing`` is set."""
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._states.closing.wait(self._every):
            try:
                self.sweep(time.monotonic())
            except Exception:
                # One session's failed end (its store write, its driver's stop) must not stop the reaping,
                # heartbeat checks and cancel escalation of every other session for the server's lifetime.
                log.exception("a sweep of the reaper failed; it sweeps again in %g s", self._every)

    def sweep(self, now: float) -> None:
        sessions = [s for s in self._sessions() if not (s.ended or s.stopping)]
        cancelling = {(s.id, t.id) for s in sessions for t in s.statements[-1:] if t.state == "cancelling"}
        self._cancels = {key: at for key, at in self._cancels.items() if key in cancelling}
        for session in sessions:
            reason = expired(session, now)
            ignored = None if reason else self._cancel_ignored(session, now)
            self._repeat_interrupts(session, now)
            if reason:
                self._states.end(session, "dead", reason)
            elif ignored:
                # The statement ends now, saying why; the session once its driver is stopped.
                self._end_with_statement(session, ignored, "cancelled", "SessionEnded", "the session ended: ")
            elif session.state in ("idle", "busy") and session.driver:
                jvm = jvm_exited(session.workdir)
                host_gone = self._host_gone(session.driver)
                if host_gone:
                    self._end_with_statement(session, host_gone, "error", "SessionDied")
                elif jvm is not None:
                    self._end_with_statement(session, jvm_exit_reason(jvm), "error", "SessionDied")
                elif session.state == "idle" and not session.driver.is_alive():
                    self._states.end(session, "dead", "the driver process exited")
        if now - self._tracked >= TRACK_EVERY:
            self._tracked = now
            self._track(sessions)

    def _end_with_statement(
        self, session: ManagedSession, reason: str, state: str, ename: str, prefix: str = ""
    ) -> None:
        """End a session whose driver cannot go on; its running statement ends in ``state`` at once,
        its output saying why, before the driver is stopped (which may take seconds)."""
        with self._states.lock:
            if session.ended or session.stopping:
                return
            for statement in session.statements:
                if statement.state in IN_DRIVER:
                    output = error_output(statement, ename, prefix + reason)
                    self._states.finish(session, statement, state, output)
            # From here no next statement starts: the worker sees the session stopping.
            session.stopping = True
        self._states.end(session, "dead", reason)

    def _repeat_interrupts(self, session: ManagedSession, now: float) -> None:
        """A first interrupt lets a Spark call fail on its own; code that ignores it gets another.

        Checked and sent under the lock, so that it cannot reach a statement that started in between."""
        with self._states.lock:
            for statement in session.statements[-1:]:
                if (
                    statement.state == "cancelling"
                    and statement.job_group
                    and now - statement.cancel_sent > REPEAT_INTERRUPT_AFTER
                ):
                    statement.cancel_sent = now
                    if session.driver:
                        session.driver.interrupt()

    def _cancel_ignored(self, session: ManagedSession, now: float) -> str | None:
        """Why the session must end because its statement outlived its cancel by CANCEL_GRACE, or None."""
        with self._states.lock:
            statement = session.statements[-1] if session.statements else None
            if statement is None or statement.state != "cancelling":
                return None
            # The first interrupt's time, or for one not sent yet (the statement has not started in the
            # kernel) the first sweep that sees it; later interrupts move ``cancel_sent``, not this.
            asked = self._cancels.setdefault((session.id, statement.id), statement.cancel_sent or now)
            if now - asked <= CANCEL_GRACE:
                return None
        return (
            f"statement {statement.id} was still running {CANCEL_GRACE:.0f} s after its cancel (its code "
            "ignores interrupts); the driver was stopped, as its Python state cannot be kept without the "
            "statement, and its variables are lost: start a new session"
        )

    def _track(self, sessions: list[ManagedSession]) -> None:
        """Let each driver note the processes below it (one read of the process table for all)."""
        drivers = [s.driver for s in sessions if isinstance(s.driver, Driver)]
        if drivers:
            table = process_table()
            for driver in drivers:
                driver.track(table)


def expired(session: ManagedSession, now: float) -> str | None:
    """Why the session has run out of time at monotonic time ``now``, or None if it has not."""
    spec = session.spec
    quiet = now - session.last_touch
    if spec.heartbeat_timeout_s and quiet > spec.heartbeat_timeout_s:
        return f"no request for {quiet:.0f} s (heartbeatTimeoutInSecond={spec.heartbeat_timeout_s})"
    if spec.ttl_s and quiet > spec.ttl_s:
        return f"no request for {quiet:.0f} s (ttl={spec.ttl_s} s)"
    idle = now - session.last_activity
    if spec.idle_timeout_s and session.state == "idle" and idle > spec.idle_timeout_s:
        return f"no statement for {idle:.0f} s (idleTimeout={spec.idle_timeout_s} s)"
    return None
