"""Getting a session a running driver: a new one (a few at a time, again when a port was taken), one from
the warm pool, or, after a server restart, the one it had. With ``--share-driver`` a session of the default
spec gets a driver kernel attached to its owner's shared driver instead (``shared_host``).

Everything here is slow (processes, sockets, a JVM and a SparkContext) and runs in the session's worker
thread, never under the state machine's lock; the lock is taken only to look at ``stopping`` and to hand
the driver to the session, so that a session ended meanwhile always gets its driver stopped.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dli_kernel.protocol import DRIVER_LOG
from dli_kernel.server import driver_code, forked_drivers
from dli_kernel.server.driver_process import (
    JVM_PID_FILE,
    Driver,
    DriverDied,
    DriverError,
    PortTaken,
    jvm_exit_reason,
    jvm_exited,
    note_jvm,
)
from dli_kernel.server.forked_drivers import ForkedDrivers
from dli_kernel.server.pool import DriverPool, PooledDriver, same_spark, stop_leftovers
from dli_kernel.server.principal import operator_name
from dli_kernel.server.records import ManagedSession
from dli_kernel.server.settings import ServerSettings
from dli_kernel.server.shared_host import (
    HOST_APP_NAME,
    HOST_LEFT_BEHIND,
    SHARED_DIR,
    SharedDrivers,
    attached_message,
    stop_leftover_hosts,
)
from dli_kernel.server.spark_conf import driver_env, executors_asked, expects_executors, spark_settings
from dli_kernel.server.states import SessionStates
from dli_kernel.spec import SessionSpec

# Starts a driver process: (workdir, log path, environment) -> a driver that will soon answer.
Launch = Callable[[Path, Path, dict[str, str]], Driver]
# Finds the driver a previous server left in a workdir, or None if it is gone.
Attach = Callable[[Path], Driver | None]
# Where a start's progress is told: the session's log, or for a pooled driver the server's.
Note = Callable[[str], None]

log = logging.getLogger("dli_kernel.server")

POOLED_KINDS = ("pyspark", "sql")  # kinds whose driver is the Python kernel the pool starts
LAUNCH_ATTEMPTS = 3  # a driver that lost a port of its connection file is started again
READY_TIMEOUT = 60.0  # for a new kernel to answer
# A driver that outlived the previous server is asked this often whether it answers, and meanwhile
# checked for being alive (with its JVM): one busy with a long statement answers only once it is done.
REATTACH_CHECK = 5.0
SLOT_CHECK = 0.5  # seconds between looks at whether a session waiting for a start slot was ended
EXECUTOR_CHECK = 0.5  # seconds between asks whether the cluster has granted an executor yet


class DriverStarter:
    def __init__(
        self,
        settings: ServerSettings,
        states: SessionStates,
        launch: Launch = Driver.launch,
        attach: Attach = Driver.attach,
    ) -> None:
        self.settings = settings
        self._states = states
        self._launch = launch
        self._attach = attach
        # Spark drivers started all at once on a small machine share its cores until every one of them
        # is too slow to meet the start timeout; a few at a time, each is up in seconds.
        self._slots = threading.Semaphore(settings.parallel_starts)
        self._leftovers: threading.Thread | None = None
        self.pool: DriverPool | None = None
        self.shared: SharedDrivers | None = None
        self._pool_env = driver_env(settings.python, cds_archive=settings.cds_archive)
        self.forks: ForkedDrivers | None = None
        if settings.share_driver and launch == Driver.launch and forked_drivers.usable():
            # A shared session is ready as soon as its kernel is: one forked is, in a fraction of the time.
            self.forks = ForkedDrivers(settings.state_dir, self._pool_env)
            self._launch = self.forks.launch
        self._default = self.spark_settings(SessionSpec(kind="pyspark"), "")
        if settings.share_driver:
            root = settings.state_dir / SHARED_DIR
            self.shared = SharedDrivers(root, self._launch_nobodys, self._boot_host)
            # Every end of a session passes there: a shared session's end releases it on its host.
            states.before_stop = self.shared.release
        if settings.pool_size > 0:
            self.pool = DriverPool(
                settings.pool_size,
                settings.state_dir / "pool",
                self.spark_settings(SessionSpec(kind="pyspark"), "dli-kernel-pooled-driver"),
                # Pooled drivers have no proxy user: sessions with one never take them (see reserve).
                launch=self._launch_nobodys,
                # Sharing, the pool holds kernels attached to the operator's host (see reserve).
                boot=self._boot_attached if self.shared else self._boot_pooled,
                refill_delay=settings.pool_refill_delay,
                discard=self.shared.release if self.shared else lambda driver: None,
            )

    def open(self) -> None:
        """Start the pool and the shared drivers; each first stops the drivers of its kind a crashed server
        left, and a thread of its own does that for those this server does not run."""
        if self.forks:
            self.forks.start()
        if self.pool:
            self.pool.start()
        if self.shared:
            self.shared.open()
        state_dir = self.settings.state_dir
        left = [
            (stop, root)
            for stop, root, ours in (
                (stop_leftovers, state_dir / "pool", self.pool),
                (stop_leftover_hosts, state_dir / SHARED_DIR, self.shared),
            )
            if ours is None and root.is_dir()
        ]
        if left:

            def stop_all() -> None:
                for stop, root in left:
                    stop(root)

            self._leftovers = threading.Thread(target=stop_all, name="dli-leftovers")
            self._leftovers.start()

    def close(self) -> None:
        """Stop the pooled drivers and the shared ones (they are no sessions: they never outlive the
        server); the shared ones once their sessions, ending meanwhile, have let go of them."""
        # At once: the hosts stop as soon as the pooled drivers (and the sessions) have let go of them.
        parts = [part for part in (self.pool, self.shared) if part is not None]
        closers = [threading.Thread(target=part.close) for part in parts]
        for thread in closers:
            thread.start()
        for thread in closers:
            thread.join()
        if self.forks:
            self.forks.close()
        if self._leftovers is not None:
            self._leftovers.join(timeout=5)

    def spark_settings(self, spec: SessionSpec, app_name: str) -> dict[str, Any]:
        settings = self.settings
        return spark_settings(
            spec, app_name, settings.master, settings.state_dir, settings.driver_host, settings.cds_archive
        )

    def session_settings(self, session: ManagedSession) -> dict[str, Any]:
        return self.spark_settings(session.spec, session.spec.name or f"dli-session-{session.id}")

    def boot(
        self,
        driver: Driver,
        settings: dict[str, Any],
        started: float,
        note: Note,
        give_up: Callable[[], bool] = lambda: False,
    ) -> dict[str, Any]:
        """Start Spark in a driver that answers, and on a cluster wait for its first executor; its app info.

        Both must be done by the start timeout, counted from ``started`` (monotonic: the driver's launch).
        """
        info = self._bootstrap(driver, settings, started)
        self._wait_for_executors(driver, settings, started, note, give_up)
        return info

    def _launch_nobodys(self, workdir: Path) -> Driver:
        """A driver kernel started before anyone asks (pooled, or a shared host): with no proxy user."""
        return self._launch(workdir, workdir / DRIVER_LOG, self._pool_env)

    def _boot_host(self, driver: Driver, started: float) -> dict[str, Any]:
        """``boot`` for a shared host: the default spec's Spark settings; the server's log tells how."""
        settings = self.spark_settings(SessionSpec(kind="pyspark"), HOST_APP_NAME)
        return self.boot(driver, settings, started, lambda line: log.info("shared driver: %s", line))

    def _boot_attached(self, driver: Driver, settings: dict[str, Any], started: float) -> dict[str, Any]:
        """``boot`` for the pool of a server that shares drivers: attach to the operator's host."""
        return self._attach_to_host(driver, operator_name(), started)

    def _attach_to_host(self, driver: Driver, owner: str, started: float) -> dict[str, Any]:
        """Attach a driver kernel that answers to ``owner``'s host (started first if need be), by the
        start timeout counted from ``started``; the shared Spark's app info."""
        assert self.shared is not None
        left = started + self.settings.start_timeout - time.monotonic()
        info = self.shared.attach(driver, owner, left)
        note_jvm(driver.workdir, info)  # the host's JVM: the session's health includes it
        return info

    def shares(self, spec: SessionSpec) -> bool:
        """Whether a session with this spec attaches to its owner's shared driver: the server shares, its
        kind runs on a Python driver, it runs as nobody else, and its Spark settings are the default's."""
        if self.shared is None or spec.kind not in POOLED_KINDS or spec.proxy_user:
            return False
        return same_spark(self.spark_settings(spec, ""), self._default)

    def host_gone(self, driver: Driver) -> str | None:
        """Why the session of ``driver`` must end because its shared driver died; None if it need not."""
        return self.shared.host_gone(driver) if self.shared else None

    def _boot_pooled(self, driver: Driver, settings: dict[str, Any], started: float) -> dict[str, Any]:
        """``boot`` for the pool, which tells the server's log how it goes (it has no session log)."""
        return self.boot(
            driver, settings, started, lambda line: log.info("pooled driver %s: %s", driver.pid, line)
        )

    def _bootstrap(self, driver: Driver, settings: dict[str, Any], started: float) -> dict[str, Any]:
        """Start Spark in a driver that answers; its app info."""
        left = started + self.settings.start_timeout - time.monotonic()
        call = driver_code.bootstrap(settings)
        info = json.loads(driver.call(call, setup=driver_code.RUNTIME_IMPORT, timeout=max(left, 1.0)))
        note_jvm(driver.workdir, info)
        return info

    def _wait_for_executors(
        self,
        driver: Driver,
        settings: dict[str, Any],
        started: float,
        note: Note,
        give_up: Callable[[], bool],
    ) -> None:
        """On a cluster master, return once an executor has registered, or ``give_up()`` or the server
        stops; raise DriverError when none has by the start timeout.

        A cluster master starts the SparkContext before it grants anything, and one that cannot grant the
        request (too much memory per executor, no free worker) just waits: the first job would hang, the
        user none the wiser. A start that fails with the reason is something to act on.
        """
        if not expects_executors(settings):
            return
        deadline = started + self.settings.start_timeout
        what = executors_asked(settings)
        waiting = False
        while not give_up():
            left = deadline - time.monotonic()
            call = driver_code.executor_count()
            count = driver.call(call, setup=driver_code.RUNTIME_IMPORT, timeout=max(left, 1.0))
            if count > 0:
                if waiting:
                    note(f"the cluster granted {count} executor{'' if count == 1 else 's'}")
                return
            if left <= 0:
                raise DriverError(
                    f"the cluster granted no executor within {self.settings.start_timeout:.0f} s "
                    f"(asked: {what}); ask for less (executorMemory, executorCores, numExecutors) "
                    "or check that the cluster has free workers"
                )
            if not waiting:
                note(f"waiting for the cluster to grant executors (asked: {what})")
                waiting = True
            if self._states.closing.wait(min(EXECUTOR_CHECK, left)):
                return

    def _session_wait(self, session: ManagedSession, driver: Driver, started: float) -> None:
        """Wait for the session's first executor, telling its log; a session ended meanwhile stops it."""
        note = functools.partial(self._states.log, session)
        settings = self.session_settings(session)
        self._wait_for_executors(driver, settings, started, note, lambda: session.stopping)

    # -- a new driver ------------------------------------------------------------------------

    def start(self, session: ManagedSession) -> None:
        """Start the session's own driver and Spark in it; the session is then idle (or busy)."""
        with self._states.lock:
            if session.stopping:
                return
            self._states.set_state(session, "starting", "starting the driver")
        if not self._slots.acquire(blocking=False):
            at_once = f"at most {self.settings.parallel_starts} at once"
            self._states.log(session, f"waiting for a start slot: other drivers are starting ({at_once})")
            while not self._slots.acquire(timeout=SLOT_CHECK):
                if session.stopping or self._states.closing.is_set():
                    return
        started = time.monotonic()
        try:
            booted = self._launch_and_boot(session, started)
        finally:
            self._slots.release()
        if booted is None:
            return
        driver, info = booted
        if session.shared_driver:
            self._ready(session, info, attached_message(info))
            return
        # Outside the start slot: a cluster taking its time costs this machine nothing.
        self._session_wait(session, driver, started)
        self._ready(session, info, f"Spark application {info['appId']}")

    def _ready(self, session: ManagedSession, info: dict[str, Any], message: str) -> None:
        """The session is ready, unless it was ended meanwhile; checked under the lock that ``end`` takes,
        so an end never finds its session made ``idle`` again."""
        with self._states.lock:
            # A server stopping meanwhile may have ended the wait for executors: not ready, then.
            if session.stopping or self._states.closing.is_set():
                return
            self._states.ready(session, info, message)

    def _launch_and_boot(
        self, session: ManagedSession, started: float
    ) -> tuple[Driver, dict[str, Any]] | None:
        """Start the session's driver kernel and Spark in it; None if the session is stopped meanwhile."""
        env = driver_env(self.settings.python, session.spec.proxy_user, self.settings.cds_archive)
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            if session.stopping:
                return None
            driver = self._launch(session.workdir, session.log_path, env)
            if not self._hand_over(session, driver):
                return None
            try:
                driver.wait_ready(timeout=READY_TIMEOUT)
                break
            except PortTaken:
                driver.stop()
                if attempt == LAUNCH_ATTEMPTS:
                    raise
                self._states.log(
                    session, "a port picked for the driver was taken before it started; trying again"
                )
        if session.shared_driver:
            return driver, self._attach_to_host(driver, session.owner, started)
        return driver, self._bootstrap(driver, self.session_settings(session), started)

    def _hand_over(self, session: ManagedSession, driver: Driver) -> bool:
        """Make ``driver`` the session's, so that its end stops it; a session ended meanwhile did not see
        it, so it is stopped here (and False returned)."""
        with self._states.lock:
            stopped = session.stopping
            if not stopped:
                session.driver = driver
        if stopped:
            driver.stop()
        return not stopped

    # -- a pooled driver ---------------------------------------------------------------------

    def reserve(self, spec: SessionSpec, owner: str | None = None) -> PooledDriver | None:
        """A pooled driver for a session of ``owner`` (None: the operator) with this spec, if it is one
        the pool's drivers were started with. It may wait a moment for a driver just launched: call
        without the lock."""
        # A proxy user is in the driver's environment (HADOOP_USER_NAME), set when it launches; pooled
        # drivers are launched before anyone asks, so as nobody in particular.
        if self.pool is None or spec.kind not in POOLED_KINDS or spec.proxy_user:
            return None
        if self.shared is not None and owner not in (None, operator_name()):
            return None  # pooled drivers are attached to the operator's host: no one else's JVM
        return self.pool.reserve(self.spark_settings(spec, ""))

    def adopt(self, session: ManagedSession, pooled: PooledDriver) -> None:
        """The session takes a pooled driver whose Spark is up."""
        assert pooled.info is not None
        message = f"took a driver from the warm pool (Spark application {pooled.info['appId']})"
        if session.shared_driver:
            message = f"took an attached driver from the warm pool; {attached_message(pooled.info)}"
        self._states.ready(session, pooled.info, message)

    def wait_pooled(self, session: ManagedSession, pooled: PooledDriver) -> None:
        """Wait for a pooled driver still starting; if it fails, start one of our own."""
        if pooled.ready or self.pool is None:
            return  # adopted when the session was created
        with self._states.lock:
            if session.stopping:
                return
            self._states.set_state(session, "starting", "waiting for a pooled driver that is starting")
        if self.pool.wait(pooled, give_up=lambda: session.stopping):
            with self._states.lock:
                if not session.stopping:
                    self.adopt(session, pooled)
            return
        if session.stopping:
            return
        self._states.log(session, f"the pooled driver failed to start ({pooled.error}); starting a new one")
        pooled.driver.stop()
        with self._states.lock:
            session.driver = None
        self.start(session)

    # -- the driver a previous server left ---------------------------------------------------

    def leftover(self, session: ManagedSession) -> Driver | None:
        """The driver a previous server left in the session's workdir, if it still runs."""
        return self._attach(session.workdir)

    def reconnect(self, session: ManagedSession) -> None:
        """Attach to the session's driver after a server restart; raises DriverError if it is gone.

        A driver still running a statement the previous server sent answers only once it is done: the
        session stays ``recovering`` for as long as that takes, while the driver and its JVM live.
        """
        started = time.monotonic()
        driver = self._attach(session.workdir)
        if session.shared_driver:
            # Its host stopped with the previous server (or is stopped now, see open): its kernel is
            # stopped by the session's end rather than left half alive.
            session.driver = driver
            raise DriverError(HOST_LEFT_BEHIND)
        if driver is None:
            raise DriverError("the driver process did not survive the server restart")
        session.driver = driver
        if not self._wait_answer(session, driver):
            return
        self._states.requeue(session)
        try:
            info = json.loads(driver.call(driver_code.app_info(), setup=driver_code.RUNTIME_IMPORT))
            note_jvm(driver.workdir, info)
        except DriverError:
            # The previous server died while this driver was still starting Spark: finish the job.
            self._states.log(session, "the driver had not finished starting; starting Spark again")
            info = self._bootstrap(driver, self.session_settings(session), started)
        # It may also have stopped while the cluster was still to grant the first executor.
        self._session_wait(session, driver, started)
        self._ready(session, info, "reconnected to the driver")

    def _wait_answer(self, session: ManagedSession, driver: Driver) -> bool:
        """Wait until a reattached driver answers; False if the session or the server stops first.
        Raises DriverError once the driver process, or its JVM, is gone."""
        said = False
        # Without a JVM recorded, the driver was still starting Spark, never running a statement: it has
        # the start timeout to answer (and a pid reused by another process cannot hold the session).
        deadline = time.monotonic() + self.settings.start_timeout
        while True:
            try:
                driver.wait_ready(timeout=REATTACH_CHECK)
                return True
            except (DriverDied, PortTaken):
                raise
            except DriverError:
                pass  # alive but busy: asked again below, unless it died meanwhile
            jvm = jvm_exited(driver.workdir)
            if jvm is not None:
                raise DriverError(jvm_exit_reason(jvm))
            if not (driver.workdir / JVM_PID_FILE).exists() and time.monotonic() > deadline:
                took = self.settings.start_timeout
                raise DriverError(f"the driver, still starting Spark, did not answer within {took:.0f} s")
            if not driver.is_alive():
                raise DriverDied("the driver process exited while it was being reattached")
            if session.stopping or self._states.closing.is_set():
                return False
            if not said:
                self._states.log(
                    session,
                    f"the driver has not answered for {REATTACH_CHECK:.0f} s: it is still running a "
                    "statement the previous server sent (or the machine is busy); waiting for as long as "
                    "the driver and its Spark JVM run",
                )
                said = True
