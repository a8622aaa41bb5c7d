"""A warm pool of session drivers: started before anyone asks, handed to sessions with the pool's spec.

A driver start is a JVM and a SparkContext, about 8 s of CPU on a small machine; a session that can use a
pooled driver (same Spark master and start-time conf, see ``matches``) is ready at once instead. On a server
that shares drivers, the pooled drivers are kernels attached to the operator's shared driver (``boot``
attaches them; ``discard`` lets go of a driver the pool stops). Pooled drivers are not sessions: nobody
lists them, nobody can run code on them, and the pool stops them when the server stops. A server that
crashed leaves its pooled drivers behind; the next server on the same state dir stops them before it
starts its own.

Ownership: an entry the pool has not handed out is the pool's to stop. Once claimed, its driver is the
session's driver and the session's end stops it, also while it is still starting.

One driver starts at a time, and a refill waits until the driver just handed out is ready and
``refill_delay`` has passed, so the new session's first statements do not compete with a JVM start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_kernel.server.driver_process import CONNECTION_FILE, Driver, jvm_exited, started_with

log = logging.getLogger("dli_kernel.server")

REFILL_DELAY = 2.0
CHECK_EVERY = 5.0  # seconds between checks that the pooled drivers are still alive
FAILURE_BACKOFF = (5.0, 30.0, 120.0, 300.0)  # after 1, 2, 3, 4+ failed starts in a row


@dataclass(eq=False)
class PooledDriver:
    workdir: Path
    driver: Driver
    started: float = field(default_factory=time.monotonic)  # launched at: its start timeout counts from here
    done: threading.Event = field(default_factory=threading.Event)
    # The kernel answered, so it has read its connection file: from now on its directory may move.
    kernel_up: bool = False
    info: dict[str, Any] | None = None  # appId and sparkUiUrl, once started
    error: str | None = None
    claimed: bool = False  # reserved by a session being created
    claimed_by: int | None = None  # the session that took it, once its directory moved there

    @property
    def ready(self) -> bool:
        return self.done.is_set() and self.info is not None


class DriverPool:
    """Keeps ``size`` drivers started with ``settings`` (the manager's Spark settings for a default spec).

    ``launch(workdir)`` starts a driver process there; ``boot(driver, settings, started)`` starts Spark in
    it once it answers (by the start timeout, counted from ``started``), returning app info; on a cluster
    master that includes waiting for the first executor. Both come from the manager, so pooled drivers
    start exactly as others do.
    """

    def __init__(
        self,
        size: int,
        root: Path,
        settings: dict[str, Any],
        launch: Callable[[Path], Driver],
        boot: Callable[[Driver, dict[str, Any], float], dict[str, Any]],
        refill_delay: float = REFILL_DELAY,
        discard: Callable[[Driver], None] = lambda driver: None,
    ) -> None:
        self.size = size
        self.root = root
        self.settings = settings
        self._launch = launch
        self._boot = boot
        self.refill_delay = refill_delay
        self._discarded = discard  # told of each driver the pool stops, before it stops it
        self._cond = threading.Condition()
        self._entries: list[PooledDriver] = []  # not handed out, oldest first
        self._handing_out: set[PooledDriver] = set()  # claimed while still starting
        self._next_start = 0.0
        self._failures = 0
        self._closing = False
        self._filler = threading.Thread(target=self._fill, name="dli-pool", daemon=True)

    # -- the manager's side ------------------------------------------------------------------

    def start(self) -> None:
        self._filler.start()

    def matches(self, settings: dict[str, Any]) -> bool:
        """Whether a session with these Spark settings can run on a pooled driver (the app name aside)."""
        return same_spark(settings, self.settings)

    def reserve(self, settings: dict[str, Any], timeout: float = 10.0) -> PooledDriver | None:
        """Take a driver for a session with these Spark settings, ready ones first; None if there is none.

        A driver still starting is worth taking: it is further along than a new one would be, and a second
        JVM start at the same time would slow both down. One launched a moment ago is waited for (up to
        ``timeout``) until its kernel has read its connection file, after which its directory can move.
        Call without the manager's lock held; then ``move`` it into the session's directory.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            if not self.matches(settings):
                return None
            while not self._closing:
                usable = [e for e in self._entries if not e.error and e.kernel_up]
                ready = [e for e in usable if e.ready and e.driver.is_alive()]
                starting = [e for e in usable if not e.done.is_set()]
                candidates = ready or starting
                if candidates:
                    entry = candidates[0]
                    entry.claimed = True
                    self._entries.remove(entry)
                    if entry.done.is_set():
                        self._hold_refill()
                    else:
                        self._handing_out.add(entry)
                    self._cond.notify_all()
                    return entry
                coming = any(not e.kernel_up and not e.done.is_set() for e in self._entries)
                left = deadline - time.monotonic()
                if not coming or left <= 0:
                    return None
                self._cond.wait(left)
            return None

    def move(self, entry: PooledDriver, workdir: Path) -> bool:
        """Move a reserved driver's directory to ``workdir`` (which must not exist yet); False if it can't,
        and then the caller ``release``s it (outside its own lock: that may stop the driver)."""
        try:
            workdir.parent.mkdir(parents=True, exist_ok=True)
            # The driver's working directory, log file and sockets follow the rename: the session's
            # workdir looks exactly as if it had started the driver itself.
            os.rename(entry.workdir, workdir)
        except OSError as err:
            log.warning("cannot move pooled driver %s to %s: %s", entry.workdir, workdir, err)
            return False
        entry.workdir = entry.driver.workdir = workdir
        return True

    def release(self, entry: PooledDriver) -> None:
        """Give back a reserved driver the session did not take after all."""
        with self._cond:
            entry.claimed = False
            self._handing_out.discard(entry)
            keep = not self._closing and not entry.error
            if keep:
                self._entries.insert(0, entry)
            self._cond.notify_all()
        if not keep:
            self._discard(entry)

    def wait(self, entry: PooledDriver, give_up: Callable[[], bool]) -> bool:
        """Wait for a claimed driver to finish starting; False if it failed or ``give_up()`` said so."""
        while not entry.done.wait(0.2):
            if give_up():
                return False
        return entry.ready

    def close(self) -> None:
        """Stop every driver not handed out and the filler; returns once they are gone."""
        with self._cond:
            self._closing = True
            entries, self._entries = self._entries, []
            self._cond.notify_all()
        for entry in entries:
            if not entry.done.is_set():
                _kill_group(entry.driver)  # ends its start at once rather than after Spark is up
        if self._filler.is_alive():
            self._filler.join(timeout=30)
        stoppers = [threading.Thread(target=self._discard, args=(entry,)) for entry in entries]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout=30)

    def status(self) -> dict[str, int]:
        """How many drivers the pool keeps, how many are ready to hand out and how many are starting."""
        with self._cond:
            ready = sum(1 for entry in self._entries if entry.ready)
            return {"size": self.size, "ready": ready, "starting": len(self._entries) - ready}

    # -- the filler thread -------------------------------------------------------------------

    def _fill(self) -> None:
        stop_leftovers(self.root)
        while True:
            with self._cond:
                entry = None if self._closing else self._next()
                if self._closing:
                    return
            if entry is None:
                continue
            if entry.done.is_set():  # a pooled driver that died while waiting
                self._discard(entry)
                continue
            try:
                entry.driver.wait_ready(timeout=60)
                with self._cond:
                    entry.kernel_up = True
                    self._cond.notify_all()
                entry.info = self._boot(entry.driver, self.settings, entry.started)
            except Exception as err:  # recorded; a session waiting for it starts its own
                entry.error = str(err) or type(err).__name__
            with self._cond:
                entry.done.set()
                self._handing_out.discard(entry)
                if entry.claimed:
                    self._hold_refill()
                unwanted = False
                if entry.error:
                    if not self._closing:
                        log.warning("a pooled driver failed to start: %s", entry.error)
                    self._failed()
                    unwanted = not entry.claimed and entry in self._entries
                    if unwanted:
                        self._entries.remove(entry)
                else:
                    self._failures = 0
                self._cond.notify_all()
            if unwanted:
                self._discard(entry)

    def _next(self) -> PooledDriver | None:
        """Under the lock: a dead entry to discard, a newly launched one to start, or None on closing."""
        while not self._closing:
            for entry in self._entries:
                if entry.ready and (not entry.driver.is_alive() or jvm_exited(entry.workdir) is not None):
                    log.warning("pooled driver %s exited while waiting; starting another", entry.driver.pid)
                    self._entries.remove(entry)
                    return entry
            wait = self._next_start - time.monotonic()
            if wait <= 0 and self._wanted() and not self._handing_out:
                workdir = self.root / uuid.uuid4().hex[:12]
                launched = time.monotonic()
                try:
                    # Under the lock: a claim must never see the directory before the pid file is in it.
                    driver = self._launch(workdir)
                except Exception as err:  # any failure to start is retried later
                    log.warning("could not start a pooled driver: %s", err)
                    self._failed()
                    shutil.rmtree(workdir, ignore_errors=True)
                    continue
                entry = PooledDriver(workdir, driver, launched)
                self._entries.append(entry)
                return entry
            self._cond.wait(timeout=min(max(wait, 0.05), CHECK_EVERY) if wait > 0 else CHECK_EVERY)
        return None

    def _wanted(self) -> bool:
        return len(self._entries) < self.size

    def _hold_refill(self) -> None:
        self._next_start = max(self._next_start, time.monotonic() + self.refill_delay)

    def _failed(self) -> None:
        delay = FAILURE_BACKOFF[min(self._failures, len(FAILURE_BACKOFF) - 1)]
        self._failures += 1
        self._next_start = max(self._next_start, time.monotonic() + delay)

    def _discard(self, entry: PooledDriver) -> None:
        try:
            self._discarded(entry.driver)
        except Exception:  # the driver is stopped all the same
            log.exception("letting go of pooled driver %s failed", entry.driver.pid)
        entry.driver.stop()
        shutil.rmtree(entry.workdir, ignore_errors=True)


def stop_leftovers(root: Path) -> None:
    """Stop the pooled drivers a crashed server left in ``root``, then forget them. Any server on the
    state dir does this, also one without a pool of its own."""
    if not root.is_dir():
        return
    for workdir in root.iterdir():
        driver = Driver.attach(workdir) if workdir.is_dir() else None
        if driver is not None:
            # Attach refuses a pid now another process's; without /proc it cannot tell, and then the
            # driver is left rather than risk stopping an unrelated process.
            if started_with(driver.pid, workdir / CONNECTION_FILE):
                log.info("stopping pooled driver %s left by a previous server", driver.pid)
                driver.stop()
            else:
                driver.close()  # the pid was reused by an unrelated process: not ours to stop
        shutil.rmtree(workdir, ignore_errors=True)


def same_spark(settings: dict[str, Any], others: dict[str, Any]) -> bool:
    """Whether two sets of Spark settings start the same driver: all but the app name are equal."""
    return _without_name(settings) == _without_name(others)


def _without_name(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key != "app_name"}


def _kill_group(driver: Driver) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(driver.pid, signal.SIGTERM)
