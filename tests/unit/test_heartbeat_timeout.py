"""A heartbeat timeout the kernel cannot keep up is refused (the spec, so the server and the client; the
magic before it replaces a session), and the kernel beats often enough that the shortest allowed one never
ends its idle session, even with two beats lost (a fake clock against the reaper's own rule)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from starlette.testclient import TestClient

from dli_kernel.client import SessionInfo
from dli_kernel.kernel.magics import args
from dli_kernel.kernel.magics.session import session_parser
from dli_kernel.kernel.remote_session import HEARTBEAT_EVERY, RemoteSession
from dli_kernel.server.app import create_app
from dli_kernel.server.manager import ManagedSession
from dli_kernel.server.reaper import expired
from dli_kernel.spec import MIN_HEARTBEAT_TIMEOUT_S, SessionSpec, SpecError
from tests.unit.fake_manager import FakeManager

TOKEN = "heartbeat-test-token"
SHORT = (
    "heartbeatTimeoutInSecond must be 0 (off) or at least 60 seconds, as clients beat every 30 s (got 20)."
)


# -- refused where it is written ------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1, 20, 30, MIN_HEARTBEAT_TIMEOUT_S - 1])
def test_a_timeout_below_the_minimum_is_refused_in_one_sentence(seconds: int) -> None:
    with pytest.raises(SpecError) as info:
        SessionSpec(heartbeat_timeout_s=seconds)
    assert str(info.value) == SHORT.replace("(got 20)", f"(got {seconds})")
    for parse, body in ((SessionSpec.from_livy, {}), (SessionSpec.from_dli, {"cluster_name": "q"})):
        with pytest.raises(SpecError, match="at least 60 seconds"):
            parse({"kind": "pyspark", "heartbeatTimeoutInSecond": seconds, **body})


@pytest.mark.parametrize("seconds", [0, MIN_HEARTBEAT_TIMEOUT_S, 3600])
def test_off_and_the_minimum_and_above_are_kept(seconds: int) -> None:
    assert SessionSpec(heartbeat_timeout_s=seconds).heartbeat_timeout_s == seconds
    assert SessionSpec.from_livy({"heartbeatTimeoutInSecond": seconds}).heartbeat_timeout_s == seconds


@pytest.mark.parametrize(("prefix", "extra"), [("", {}), ("/v2.0/p", {"cluster_name": "c1"})])
def test_the_server_answers_400_naming_the_minimum_and_makes_nothing(
    tmp_path: Path, prefix: str, extra: dict[str, Any]
) -> None:
    manager = FakeManager(tmp_path)
    with TestClient(
        create_app(manager, TOKEN, "http://x"), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as c:
        reply = c.post(
            f"{prefix}/sessions", json={"kind": "pyspark", "heartbeatTimeoutInSecond": 20, **extra}
        )
    assert reply.status_code == 400
    assert reply.json() == {"msg": SHORT}
    assert manager.sessions == [] and "create" not in manager.calls.names


def test_the_magic_refuses_it_before_touching_the_session() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        args.heartbeat("20")
    assert str(info.value) == (
        "must be 0 (off) or at least 60 seconds, as the kernel beats every 30 s and a shorter timeout ends "
        "its idle session (got '20')"
    )
    with pytest.raises(UsageError, match="--heartbeat-timeout: must be 0 \\(off\\) or at least 60"):
        args.parse(session_parser(), "configure --heartbeat-timeout 20")
    parsed = args.parse(session_parser(), "configure --heartbeat-timeout 60")
    assert parsed is not None and parsed.heartbeat_timeout == 60
    assert args.heartbeat("0") == 0


# -- and the kernel keeps up with the shortest allowed one ----------------------------------------


def remote(spec: SessionSpec, raw: dict[str, Any] | None = None) -> RemoteSession:
    session = RemoteSession(client=None, spec=spec)  # type: ignore[arg-type]  # beat_every asks no server
    session.info = SessionInfo(id="7", state="idle", raw=raw or {})
    return session


@pytest.mark.parametrize(
    ("spec", "raw", "every"),
    [
        (SessionSpec(heartbeat_timeout_s=60), None, 15.0),
        (SessionSpec(heartbeat_timeout_s=120), None, 30.0),
        (SessionSpec(heartbeat_timeout_s=3600), None, HEARTBEAT_EVERY),
        (SessionSpec(), None, HEARTBEAT_EVERY),  # no timeout: the usual pace
        (SessionSpec(ttl_s=80), None, 20.0),  # Livy's ttl ends a quiet session the same way
        # An attached session's own timeout, as its server reports it, wins over the notebook's spec.
        (SessionSpec(heartbeat_timeout_s=3600), {"heartbeatTimeoutInSecond": 60}, 15.0),
        (SessionSpec(), {"heartbeatTimeoutInSecond": 2}, 1.0),  # another server's tiny one: a beat a second
        (SessionSpec(), {"heartbeatTimeoutInSecond": True}, HEARTBEAT_EVERY),
    ],
)
def test_the_kernel_beats_four_times_per_short_timeout(
    spec: SessionSpec, raw: dict[str, Any] | None, every: float
) -> None:
    assert remote(spec, raw).beat_every() == every


class Calls:
    def __init__(self) -> None:
        self.got: list[str] = []

    def get_session(self, session_id: str) -> SessionInfo:
        self.got.append(session_id)
        return SessionInfo(id=session_id, state="idle")


class Clock:
    """The heartbeat thread's ``_closing``: each wait moves a fake clock instead of sleeping."""

    def __init__(self, until: float) -> None:
        self.now, self.until = 0.0, until
        self.waits: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.now += timeout
        return self.now >= self.until  # "closing" once the notebook has idled long enough


def test_the_heartbeat_thread_waits_what_beat_every_says() -> None:
    session = remote(SessionSpec(heartbeat_timeout_s=MIN_HEARTBEAT_TIMEOUT_S))
    calls, clock = Calls(), Clock(until=120.0)
    session.client, session._closing = calls, clock  # type: ignore[assignment]
    session._beat()
    assert clock.waits == [15.0] * 8
    assert calls.got == ["7"] * 7  # a beat after every wait but the one that saw the notebook close


def reaped_while_idle(timeout: int, every: float, lost: set[int], idle_for: float = 600.0) -> str | None:
    """Replays an idle notebook on a fake clock: beat ``k`` lands at ``k × every`` unless it is in ``lost``;
    the reaper looks every second, by its own rule. Why it ended the session, or None."""
    spec = SessionSpec(heartbeat_timeout_s=timeout)
    session = ManagedSession(id=1, uuid="u", spec=spec, owner="o", project_id=None, workdir=Path("w"))
    session.state, session.last_touch, session.last_activity = "idle", 0.0, 0.0
    beats = [k * every for k in range(1, int(idle_for / every) + 1) if k not in lost]
    for second in range(1, int(idle_for) + 1):
        while beats and beats[0] <= second:
            session.last_touch = beats.pop(0)
        reason = expired(session, float(second))
        if reason:
            return reason
    return None


def test_the_shortest_allowed_timeout_survives_two_lost_beats_in_a_row() -> None:
    every = remote(SessionSpec(heartbeat_timeout_s=MIN_HEARTBEAT_TIMEOUT_S)).beat_every()
    assert reaped_while_idle(MIN_HEARTBEAT_TIMEOUT_S, every, lost=set()) is None
    assert reaped_while_idle(MIN_HEARTBEAT_TIMEOUT_S, every, lost={3, 4}) is None
    # At the former pace of one beat every 30 s, the same two lost beats ended it.
    assert reaped_while_idle(MIN_HEARTBEAT_TIMEOUT_S, 30.0, lost={3, 4}) == (
        "no request for 61 s (heartbeatTimeoutInSecond=60)"
    )
