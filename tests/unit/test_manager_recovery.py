"""A restarted manager brings back what the store knows: live drivers are reattached, gone ones are dead."""

from __future__ import annotations

import itertools
from pathlib import Path

from dli_kernel.server.manager import SESSION_IDS, ManagedSession, Statement
from dli_kernel.server.records import now_ms
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import FakeDriver, FakeLauncher, RecordingStore, make_manager, wait_state


def saved(
    store: RecordingStore,
    tmp_path: Path,
    session_id: int,
    state: str,
    *statements: Statement,
    created: int | None = None,
) -> Path:
    workdir = tmp_path / "state" / "sessions" / str(session_id)
    workdir.mkdir(parents=True)
    session = ManagedSession(
        id=session_id,
        uuid=f"uuid-{session_id}",
        spec=SessionSpec(kind="pyspark", name=f"s{session_id}"),
        owner="alice",
        project_id=None,
        workdir=workdir,
        state=state,
        app_id="local-old",
        updated=now_ms(),  # ended just now: not yet old enough to be pruned
    )
    if created is not None:
        session.created = created
    store.save_session(session_id, session.record())
    for statement in statements:
        store.save_statement(session_id, statement.id, statement.record())
    return workdir


def test_recovery_reattaches_live_drivers_and_reports_gone_ones_dead(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    store = RecordingStore(tmp_path / "state" / "sessions.db")
    live = saved(
        store,
        tmp_path,
        0,
        "busy",
        Statement(id=0, code="a = 41", kind="pyspark", state="available", progress=1.0),
        Statement(id=1, code="slow()", kind="pyspark", state="running"),
        Statement(id=2, code="a + 1", kind="pyspark"),
    )
    gone = saved(store, tmp_path, 1, "idle", Statement(id=0, code="lost", kind="pyspark"))
    saved(store, tmp_path, 2, "killed")
    half_started = saved(store, tmp_path, 3, "starting")
    drivers = {live: FakeDriver(live), half_started: FakeDriver(half_started)}
    drivers[live].booted = True
    store.history.clear()

    launcher = FakeLauncher()
    manager = make_manager(tmp_path, launcher, attach=drivers.get, store=store)
    try:
        survivor, victim, ended, restarted = (manager.get(str(n)) for n in range(4))

        # The waiting statement runs on the reattached driver; the running one was lost with the server.
        run = drivers[live].next_run()
        assert run.code == "a + 1"
        run.finish(text="42")
        wait_state(manager, survivor, "idle")
        assert store.states(0) == ["recovering", "busy", "idle"]
        assert survivor.app_id == drivers[live].app_id
        assert [s.state for s in survivor.statements] == ["available", "error", "available"]
        assert survivor.statements[1].output["ename"] == "StatementLost"
        assert survivor.statements[2].output["data"] == {"text/plain": "42"}
        assert "reconnected to the driver" in survivor.log_path.read_text()

        wait_state(manager, victim, "dead")
        assert store.states(1) == ["recovering", "shutting_down", "dead"]
        assert victim.ended_reason == "start-up failed: the driver process did not survive the server restart"
        assert victim.statements[0].state == "cancelled"
        assert "did not survive the server restart" in (gone / "driver.log").read_text()

        assert ended.state == "killed" and 2 not in store.history  # ended sessions stay as they were

        # A driver the crashed server left while Spark was starting gets its start finished.
        wait_state(manager, restarted, "idle")
        assert drivers[half_started].calls[0] == "_dli.app_info()"
        assert drivers[half_started].calls[1].startswith("_dli.bootstrap(")
        assert "starting Spark again" in restarted.log_path.read_text()

        assert launcher.drivers == []  # nothing was started anew
        assert [s.id for s in manager.list()] == [0, 3]
    finally:
        manager.close()



def test_a_restarted_manager_lists_sessions_in_the_order_they_were_made(tmp_path: Path) -> None:
    """Livy ids are random, so the order sessions were made in is their creation times', not their ids'."""
    (tmp_path / "state").mkdir()
    store = RecordingStore(tmp_path / "state" / "sessions.db")
    for session_id, created in ((900_000, 1), (100_000, 3), (500_000, 2)):
        saved(store, tmp_path, session_id, "killed", created=created)
    manager = make_manager(tmp_path, FakeLauncher(), store=store)
    try:
        assert [s.id for s in manager.list(["killed"])] == [900_000, 500_000, 100_000]
    finally:
        manager.close()


def test_livy_ids_are_random_and_say_nothing_of_how_many_sessions_were_made(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, FakeLauncher())
    try:
        ids = [manager.create(SessionSpec(kind="pyspark")).id for _ in range(5)]
        assert all(session_id in SESSION_IDS for session_id in ids)
        assert len(set(ids)) == 5
        # Counting up would give differences of 1: the chance that random ids do is one in 10**23.
        assert [b - a for a, b in itertools.pairwise(ids)] != [1] * 4
        assert [s.id for s in manager.list()] == ids  # still listed in the order they were made
    finally:
        manager.close()


def test_a_session_being_deleted_when_the_server_died_is_ended_not_recovered(tmp_path: Path) -> None:
    """The next server carries out an end the previous one left half done: it stops the driver that is
    left and records the end (killed, for a delete), rather than bring the session back."""
    (tmp_path / "state").mkdir()
    store = RecordingStore(tmp_path / "state" / "sessions.db")
    deleting = saved(store, tmp_path, 0, "shutting_down", Statement(id=0, code="x", kind="pyspark"))
    stopping = saved(store, tmp_path, 1, "shutting_down")
    for session_id, reason in ((0, "deleted by the user"), (1, None)):
        record = next(r for r, _ in store.load() if r["id"] == session_id)
        store.save_session(session_id, {**record, "ended_reason": reason})
    drivers = {deleting: FakeDriver(deleting), stopping: FakeDriver(stopping)}
    store.history.clear()

    manager = make_manager(tmp_path, FakeLauncher(), attach=drivers.get, store=store)
    try:
        deleted, ended = manager.get("0"), manager.get("1")
        wait_state(manager, deleted, "killed")
        wait_state(manager, ended, "dead")
        assert "recovering" not in store.states(0) + store.states(1)
        assert all(driver.stopped.is_set() for driver in drivers.values())
        assert deleted.statements[0].state == "cancelled"
        assert ended.ended_reason == "the server stopped while ending it"
    finally:
        manager.close()
