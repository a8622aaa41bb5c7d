"""The reaper keeps sweeping after a sweep fails: one session's failed end must not end the heartbeat
checks and cancel escalation of every other session."""

from __future__ import annotations

import threading

from dli_kernel.server.reaper import Reaper
from dli_kernel.server.records import ManagedSession
from dli_kernel.server.states import SessionStates


class _NoStore:
    def save_session(self, session_id: int, record: dict[str, object]) -> None:
        pass

    def save_statement(self, session_id: int, statement_id: int, record: dict[str, object]) -> None:
        pass


def test_a_failed_sweep_does_not_stop_the_reaper() -> None:
    states = SessionStates(_NoStore())
    calls = 0
    swept_again = threading.Event()

    def sessions() -> list[ManagedSession]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("the store's disk is full")
        swept_again.set()
        return []

    reaper = Reaper(sessions, states, every=0.01)
    reaper.start()
    try:
        assert swept_again.wait(10.0), "the reaper stopped after its first sweep failed"
    finally:
        states.closing.set()
        reaper.join(5.0)
    assert calls >= 2
