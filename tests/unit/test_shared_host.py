"""Sessions that share a driver (--share-driver), with fake drivers: which sessions share, one host per
owner, a release on every end of a session, a host's death, the pool of attached kernels, and the views."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dli_kernel import embedded
from dli_kernel.cli import build_parser
from dli_kernel.config import load_settings
from dli_kernel.server.driver_process import DriverDied, DriverError
from dli_kernel.server.manager import SessionManager
from dli_kernel.server.principal import Principal, operator_name
from dli_kernel.server.shared_host import HOST_LEFT_BEHIND, SERVER_STOPPED, SHARED_DIR, host_dir
from dli_kernel.server.views import dli_session, livy_session
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import (
    FakeDriver,
    FakeLauncher,
    RecordingStore,
    make_manager,
    pool_has,
    wait_state,
)

KEY = re.compile(r"[0-9a-f]{16}")
BOB = Principal("bob")


class SharingDriver(FakeDriver):
    """A fake driver kernel that plays a shared host (opens and releases gateways) or an attached kernel."""

    def __init__(self, workdir: Path, launcher: FakeLauncher) -> None:
        super().__init__(workdir, launcher)
        self.gateways: dict[str, str] = {}  # open key -> secret (as a host)
        self.released: list[str] = []
        self.attached: dict[str, Any] | None = None  # the settings it was attached with
        self.secrets = 0

    def call(self, expression: str, setup: str = "", timeout: float | None = None) -> Any:
        if "release_session(" in expression:
            key = _key(expression)
            self.released.append(key)
            return json.dumps({"released": self.gateways.pop(key, None) is not None, "uncached": 0})
        if "open_sessions(" in expression:
            return len(self.gateways)
        if "open_session(" in expression:
            key = _key(expression)
            assert key not in self.gateways, "a key was opened twice"
            self.secrets += 1
            self.gateways[key] = f"secret-{key}-{self.secrets}"
            return json.dumps({"port": 40000 + self.secrets, "secret": self.gateways[key]})
        if "attach(" in expression:
            self.calls.append(expression)
            argument = expression[expression.index("(") + 1 : expression.rindex(")")]
            self.attached = json.loads(ast.literal_eval(argument))
            self.booted = True
            return json.dumps(
                {"appId": "local-shared", "sparkUiUrl": "http://127.0.0.1:4040", "sharedDriver": True}
            )
        return super().call(expression, setup, timeout)


def _key(expression: str) -> str:
    found = KEY.search(expression)
    assert found, f"no key in {expression!r}"
    return found.group()


class SharingLauncher(FakeLauncher):
    def __call__(self, workdir: Path, log_path: Path, env: dict[str, str]) -> FakeDriver:
        workdir.mkdir(parents=True, exist_ok=True)
        driver = SharingDriver(workdir, self)
        self.drivers.append(driver)
        self.launched.put(driver)
        return driver

    def hosts(self) -> list[SharingDriver]:
        return [
            d for d in self.drivers if isinstance(d, SharingDriver) and d.workdir.parent.name == SHARED_DIR
        ]


@pytest.fixture
def launcher() -> SharingLauncher:
    return SharingLauncher()


@pytest.fixture
def manager(tmp_path: Path, launcher: SharingLauncher) -> Iterator[SessionManager]:
    manager = make_manager(tmp_path, launcher, share_driver=True)
    try:
        yield manager
    finally:
        manager.close()


def _attached(manager: SessionManager, session: Any) -> SharingDriver:
    wait_state(manager, session, "idle")
    driver = session.driver
    assert isinstance(driver, SharingDriver) and driver.attached is not None
    return driver


def test_which_sessions_share(manager: SessionManager, tmp_path: Path, launcher: SharingLauncher) -> None:
    starter = manager._starter
    assert starter.shares(SessionSpec(kind="pyspark"))
    assert starter.shares(SessionSpec(kind="sql"))
    assert not starter.shares(SessionSpec(kind="spark"))  # Scala needs a driver of its own
    assert not starter.shares(SessionSpec(kind="pyspark", proxy_user="alice"))
    assert not starter.shares(SessionSpec(kind="pyspark", conf={"spark.sql.shuffle.partitions": "3"}))
    assert not starter.shares(SessionSpec(kind="pyspark", driver_memory_mb=8192))
    own = manager.create(SessionSpec(kind="spark"))
    shared = manager.create(SessionSpec(kind="pyspark"))
    wait_state(manager, own, "idle")
    _attached(manager, shared)
    assert (own.shared_driver, shared.shared_driver) == (False, True)
    assert "_dli.bootstrap(" in own.driver.calls[0]  # type: ignore[union-attr]
    (tmp_path / "other").mkdir()
    unshared = make_manager(tmp_path / "other", FakeLauncher())
    try:
        assert not unshared._starter.shares(SessionSpec(kind="pyspark"))
    finally:
        unshared.close()


def test_one_host_per_owner_and_the_attach(manager: SessionManager, launcher: SharingLauncher) -> None:
    first = _attached(manager, manager.create(SessionSpec(kind="pyspark")))
    second = _attached(manager, manager.create(SessionSpec(kind="sql")))
    (host,) = launcher.hosts()
    assert host.workdir == host_dir(manager.settings.state_dir / SHARED_DIR, operator_name())
    assert "dli-kernel-shared-driver" in host.calls[0]  # bootstrapped with the shared app name
    keys = [first.attached["key"], second.attached["key"]]  # type: ignore[index]
    assert sorted(host.gateways) == sorted(keys) and keys[0] != keys[1]
    assert first.attached["gateway"] == {"port": 40001, "secret": host.gateways[keys[0]]}  # type: ignore[index]
    bobs = _attached(manager, manager.create(SessionSpec(kind="pyspark"), owner=BOB))
    assert len(launcher.hosts()) == 2
    assert bobs.attached["key"] in launcher.hosts()[1].gateways  # type: ignore[index]


def test_the_session_log_names_the_shared_application_and_never_the_secret(
    manager: SessionManager, launcher: SharingLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    driver = _attached(manager, session)
    log = session.log_path.read_text()
    assert "attached to the shared driver: Spark application local-shared" in log
    assert "Spark UI shows the jobs of every session sharing it" in log
    assert driver.attached["gateway"]["secret"] not in log  # type: ignore[index]
    assert session.app_id == "local-shared"


def test_delete_releases_the_session_on_its_host(manager: SessionManager, launcher: SharingLauncher) -> None:
    gone = manager.create(SessionSpec(kind="pyspark"))
    kept = manager.create(SessionSpec(kind="pyspark"))
    gone_driver, kept_driver = _attached(manager, gone), _attached(manager, kept)
    (host,) = launcher.hosts()
    manager.delete(gone)
    assert host.released == [gone_driver.attached["key"]]  # type: ignore[index]
    assert gone_driver.stopped.is_set() and not kept_driver.stopped.is_set()
    assert list(host.gateways) == [kept_driver.attached["key"]]  # type: ignore[index]
    assert kept.state == "idle" and host.is_alive()


def test_a_dead_attached_kernel_is_released(manager: SessionManager, launcher: SharingLauncher) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    driver = _attached(manager, session)
    (host,) = launcher.hosts()
    driver.alive = False  # os._exit in the session: the reaper finds it
    wait_state(manager, session, "dead")
    assert host.released == [driver.attached["key"]]  # type: ignore[index]
    assert not host.gateways


def test_a_statement_whose_kernel_dies_releases_it(
    manager: SessionManager, launcher: SharingLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    driver = _attached(manager, session)
    statement = manager.submit(session, "import os; os._exit(1)", None, 5)
    run = driver.next_run()
    driver.alive = False
    run.fail(DriverDied("the driver process exited while running the statement"))
    wait_state(manager, session, "dead")
    assert statement.state == "error"
    assert launcher.hosts()[0].released == [driver.attached["key"]]  # type: ignore[index]


def test_an_idle_timeout_releases_it(manager: SessionManager, launcher: SharingLauncher) -> None:
    session = manager.create(SessionSpec(kind="pyspark", idle_timeout_s=1))
    driver = _attached(manager, session)
    session.last_activity -= 5
    wait_state(manager, session, "dead")
    assert launcher.hosts()[0].released == [driver.attached["key"]]  # type: ignore[index]


def test_the_host_s_death_ends_its_sessions_and_the_next_session_starts_a_new_host(
    manager: SessionManager, launcher: SharingLauncher
) -> None:
    sessions = [manager.create(SessionSpec(kind="pyspark")) for _ in range(2)]
    for session in sessions:
        _attached(manager, session)
    (host,) = launcher.hosts()
    host.alive = False
    for session in sessions:
        wait_state(manager, session, "dead")
        assert "the shared driver this session ran on (Spark application" in session.log_path.read_text()
        assert session.driver.stopped.is_set()  # type: ignore[union-attr]
    later = _attached(manager, manager.create(SessionSpec(kind="pyspark")))
    old, new = launcher.hosts()
    assert old is host and new.is_alive() and later.attached["key"] in new.gateways  # type: ignore[index]


def test_a_host_that_fails_to_start_fails_the_session_and_the_next_one_tries_again(
    tmp_path: Path, launcher: SharingLauncher
) -> None:
    launcher.boot_error = DriverError("Java gateway process exited")  # only a host bootstraps Spark
    manager = make_manager(tmp_path, launcher, share_driver=True)
    try:
        failed = manager.create(SessionSpec(kind="pyspark"))
        wait_state(manager, failed, "error")
        assert "the shared driver failed to start: Java gateway process exited" in failed.log_path.read_text()
        assert failed.driver.stopped.is_set() and launcher.hosts()[0].stopped.is_set()  # type: ignore[union-attr]
        launcher.boot_error = None
        _attached(manager, manager.create(SessionSpec(kind="pyspark")))
        assert len(launcher.hosts()) == 2
    finally:
        manager.close()


def test_server_stop_ends_shared_sessions_and_stops_the_host(
    tmp_path: Path, launcher: SharingLauncher
) -> None:
    manager = make_manager(tmp_path, launcher, share_driver=True, keep_sessions_on_exit=True)
    shared = manager.create(SessionSpec(kind="pyspark"))
    own = manager.create(SessionSpec(kind="spark"))
    shared_driver = _attached(manager, shared)
    wait_state(manager, own, "idle")
    (host,) = launcher.hosts()
    manager.close()
    # A shared session cannot outlive its host, --keep-sessions or not; the session with its own driver can.
    assert shared.state == "success" and SERVER_STOPPED in shared.log_path.read_text()
    assert shared_driver.stopped.is_set() and host.stopped.is_set()
    assert own.state == "idle" and own.driver.closed and not own.driver.stopped.is_set()  # type: ignore[union-attr]
    assert not manager._starter.shared.holds(shared_driver)  # type: ignore[union-attr]


def test_server_stop_releases_before_it_stops_the_host(
    manager: SessionManager, launcher: SharingLauncher
) -> None:
    session = manager.create(SessionSpec(kind="pyspark"))
    driver = _attached(manager, session)
    manager.close()
    assert session.state == "success" and driver.stopped.is_set()
    assert launcher.hosts()[0].stopped.is_set()
    assert manager._starter.shared.status() == {"hosts": 0, "attached": 0}  # type: ignore[union-attr]


def test_a_restarted_server_ends_shared_sessions_rather_than_reattach_them(
    tmp_path: Path, launcher: SharingLauncher
) -> None:
    (tmp_path / "state").mkdir()
    store = RecordingStore(tmp_path / "state" / "sessions.db")
    first = make_manager(tmp_path, launcher, store=store, share_driver=True)
    session = first.create(SessionSpec(kind="pyspark"))
    _attached(first, session)
    record = session.record()  # as a crashed server left it: live, and shared
    first.close()
    store = RecordingStore(tmp_path / "state" / "sessions.db")
    store.save_session(session.id, record)
    left = FakeDriver(session.workdir)
    restarted = make_manager(tmp_path, launcher, store=store, share_driver=True, attach=lambda workdir: left)
    try:
        again = restarted.get(str(session.id))
        wait_state(restarted, again, "dead")
        assert again.shared_driver and HOST_LEFT_BEHIND in again.log_path.read_text()
        assert left.stopped.is_set()  # its kernel is stopped, not left half alive
    finally:
        restarted.close()


def test_the_pool_holds_attached_kernels(tmp_path: Path, launcher: SharingLauncher) -> None:
    manager = make_manager(tmp_path, launcher, share_driver=True, pool_size=1, pool_refill_delay=0.0)
    try:
        pool_has(manager, ready=1)
        (host,) = launcher.hosts()  # started with the server, for the pool
        pooled = next(d for d in launcher.drivers if d is not host)
        session = manager.create(SessionSpec(kind="sql"))
        assert session.state == "idle" and session.driver is pooled and session.shared_driver
        assert "took an attached driver from the warm pool" in session.log_path.read_text()
        pool_has(manager, ready=1)  # refilled, on the same host
        assert len(launcher.hosts()) == 1 and len(host.gateways) == 2
        # Another user's session never takes a kernel attached to the operator's host.
        bobs = manager.create(SessionSpec(kind="pyspark"), owner=BOB)
        _attached(manager, bobs)
        assert len(launcher.hosts()) == 2 and bobs.driver is not pooled
        manager.delete(session)
        assert pooled.attached["key"] in host.released  # type: ignore[index]
    finally:
        manager.close()
    assert host.stopped.is_set()


def test_views_say_whether_a_session_shares(manager: SessionManager) -> None:
    shared = manager.create(SessionSpec(kind="pyspark"))
    own = manager.create(SessionSpec(kind="spark"))
    for render in (livy_session, dli_session):
        assert render(shared, "http://x")["sharedDriver"] is True
        assert render(own, "http://x")["sharedDriver"] is False


def test_the_embedded_server_shares_when_configured(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    assert load_settings(env={"DLI_KERNEL_SHARE_DRIVER": "1"}, config_file=missing).share_driver
    assert not load_settings(env={}, config_file=missing).share_driver
    config = tmp_path / "dli_kernel.json"
    config.write_text('{"share_driver": true}')
    assert load_settings(env={}, config_file=config).share_driver
    assert not load_settings(env={"DLI_KERNEL_SHARE_DRIVER": "no"}, config_file=config).share_driver


def test_the_setting_refuses_a_non_boolean(tmp_path: Path) -> None:
    config = tmp_path / "dli_kernel.json"
    config.write_text('{"share_driver": "sometimes"}')
    with pytest.raises(Exception, match="share_driver must be true or false"):
        load_settings(env={}, config_file=config)


def test_the_server_flag() -> None:
    assert build_parser().parse_args(["server", "--share-driver"]).share_driver is True
    assert build_parser().parse_args(["server"]).share_driver is False


def test_a_kernel_starts_its_embedded_server_sharing_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    class Started(Exception):
        pass

    def popen(command: list[str], **kwargs: Any) -> Any:
        commands.append(command)
        raise Started

    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr(embedded.subprocess, "Popen", popen)
    for setting in ("1", "0"):
        monkeypatch.setenv("DLI_KERNEL_SHARE_DRIVER", setting)
        with pytest.raises(Started):
            embedded._start_server(tmp_path, deadline=0.0, timeout=1.0)
    assert commands[0][-1] == "--share-driver" and "--share-driver" not in commands[1]
