"""The reaper: ends sessions whose heartbeat, ttl or idle timeout ran out, and sessions whose driver died
while idle (a busy session learns that from its statement), and repeats interrupts that were ignored."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dli_kernel.server.records import ManagedSession
from dli_kernel.server.states import SessionStates

REPEAT_INTERRUPT_AFTER = 3.0


class Reaper:
    def __init__(
        self, sessions: Callable[[], list[ManagedSession]], states: SessionStates, every: float = 1.0
    ) -> None:
        self._sessions = sessions
        self._states = states
        self._every = every
        self._thread = threading.Thread(target=self._run, name="dli-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread, which ends once the state machine's ``closing`` is set."""
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._states.closing.wait(self._every):
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        for session in self._sessions():
            if session.ended or session.stopping:
                continue
            self._repeat_interrupts(session, now)
            reason = expired(session, now)
            if reason:
                self._states.end(session, "dead", reason)
            elif session.state == "idle" and session.driver and not session.driver.is_alive():
                self._states.end(session, "dead", "the driver process exited")

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
