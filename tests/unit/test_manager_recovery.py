"""A restarted manager brings back what the store knows: live drivers are reattached, gone ones are dead."""

from __future__ import annotations

from pathlib import Path

from dli_kernel.server.manager import ManagedSession, Statement
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import FakeDriver, FakeLauncher, RecordingStore, make_manager, wait_state


def saved(store: RecordingStore, tmp_path: Path, session_id: int, state: str, *statements: Statement) -> Path:
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
    )
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
