"""Getting a session a running driver: a new one (a few at a time, again when a port was taken), one from
the warm pool, or, after a server restart, the one it had.

Everything here is slow (processes, sockets, a JVM and a SparkContext) and runs in the session's worker
thread, never under the state machine's lock; the lock is taken only to look at ``stopping`` and to hand
the driver to the session, so that a session ended meanwhile always gets its driver stopped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dli_kernel.protocol import DRIVER_LOG
from dli_kernel.server import driver_code
from dli_kernel.server.driver_process import Driver, DriverError, PortTaken
from dli_kernel.server.pool import DriverPool, PooledDriver, stop_leftovers
from dli_kernel.server.records import ManagedSession
from dli_kernel.server.settings import ServerSettings
from dli_kernel.server.spark_conf import driver_env, spark_settings
from dli_kernel.server.states import SessionStates
from dli_kernel.spec import SessionSpec

# Starts a driver process: (workdir, log path, environment) -> a driver that will soon answer.
Launch = Callable[[Path, Path, dict[str, str]], Driver]
# Finds the driver a previous server left in a workdir, or None if it is gone.
Attach = Callable[[Path], Driver | None]

POOLED_KINDS = ("pyspark", "sql")  # kinds whose driver is the Python kernel the pool starts
LAUNCH_ATTEMPTS = 3  # a driver that lost a port of its connection file is started again
READY_TIMEOUT = 60.0  # for a new kernel to answer
REATTACH_TIMEOUT = 30.0  # for a driver that outlived the previous server to answer
SLOT_CHECK = 0.5  # seconds between looks at whether a session waiting for a start slot was ended


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
        self._env = driver_env(settings.python)
        # Spark drivers started all at once on a small machine share its cores until every one of them
        # is too slow to meet the start timeout; a few at a time, each is up in seconds.
        self._slots = threading.Semaphore(settings.parallel_starts)
        self._leftovers: threading.Thread | None = None
        self.pool: DriverPool | None = None
        if settings.pool_size > 0:
            self.pool = DriverPool(
                settings.pool_size,
                settings.state_dir / "pool",
                self.spark_settings(SessionSpec(kind="pyspark"), "dli-kernel-pooled-driver"),
                launch=lambda workdir: self._launch(workdir, workdir / DRIVER_LOG, self._env),
                boot=self.boot,
                refill_delay=settings.pool_refill_delay,
            )

    def open(self) -> None:
        """Start the pool; it, or without one a thread of its own, first stops what a crashed server left."""
        if self.pool:
            self.pool.start()
        elif (self.settings.state_dir / "pool").is_dir():
            self._leftovers = threading.Thread(
                target=stop_leftovers, args=(self.settings.state_dir / "pool",), name="dli-pool-leftovers"
            )
            self._leftovers.start()

    def close(self) -> None:
        """Stop the pooled drivers (they are no sessions: they never outlive the server)."""
        if self.pool:
            self.pool.close()
        if self._leftovers is not None:
            self._leftovers.join(timeout=5)

    def spark_settings(self, spec: SessionSpec, app_name: str) -> dict[str, Any]:
        return spark_settings(spec, app_name, self.settings.master, self.settings.state_dir)

    def session_settings(self, session: ManagedSession) -> dict[str, Any]:
        return self.spark_settings(session.spec, session.spec.name or f"dli-session-{session.id}")

    def boot(self, driver: Driver, settings: dict[str, Any]) -> dict[str, Any]:
        """Start Spark in a driver that answers; its app info."""
        return json.loads(
            driver.call(
                driver_code.bootstrap(settings),
                setup=driver_code.RUNTIME_IMPORT,
                timeout=self.settings.start_timeout,
            )
        )

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
        try:
            info = self._launch_and_boot(session)
        finally:
            self._slots.release()
        with self._states.lock:
            if info is None or session.stopping:
                return
            self._states.ready(session, info, f"Spark application {info['appId']}")

    def _launch_and_boot(self, session: ManagedSession) -> dict[str, Any] | None:
        """Start the session's driver kernel and Spark in it; None if the session is stopped meanwhile."""
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            if session.stopping:
                return None
            driver = self._launch(session.workdir, session.log_path, self._env)
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
        return self.boot(driver, self.session_settings(session))

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

    def reserve(self, spec: SessionSpec) -> PooledDriver | None:
        """A pooled driver for a session with this spec, if it is one the pool's drivers were started
        with. It may wait a moment for a driver just launched: call without the lock."""
        if self.pool is None or spec.kind not in POOLED_KINDS:
            return None
        return self.pool.reserve(self.spark_settings(spec, ""))

    def adopt(self, session: ManagedSession, pooled: PooledDriver) -> None:
        """The session takes a pooled driver whose Spark is up."""
        assert pooled.info is not None
        message = f"took a driver from the warm pool (Spark application {pooled.info['appId']})"
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

    def reconnect(self, session: ManagedSession) -> None:
        """Attach to the session's driver after a server restart; raises DriverError if it is gone."""
        driver = self._attach(session.workdir)
        if driver is None:
            raise DriverError("the driver process did not survive the server restart")
        session.driver = driver
        driver.wait_ready(timeout=REATTACH_TIMEOUT)
        self._states.requeue(session)
        try:
            info = json.loads(driver.call(driver_code.app_info(), setup=driver_code.RUNTIME_IMPORT))
        except DriverError:
            # The previous server died while this driver was still starting Spark: finish the job.
            self._states.log(session, "the driver had not finished starting; starting Spark again")
            info = self.boot(driver, self.session_settings(session))
        self._states.ready(session, info, "reconnected to the driver")
