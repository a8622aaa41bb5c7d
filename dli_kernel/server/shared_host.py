"""Sessions that share a driver (``--share-driver``): one host driver per owner holds the JVM and the
SparkContext, and each sharing session's own driver kernel attaches to it.

A host is an ordinary driver kernel bootstrapped with the default spec's Spark settings, started on first
need in ``<state dir>/shared/<owner hash>/``. It is no session: nobody lists it or runs code on it, and it
stops with the server. For each attached session it opens a gateway of its own (``open``: port and secret,
handed to the session's kernel and never logged); the session's end releases it (``release``: its jobs
cancelled, its cache entries dropped, its gateway shut). Two users never share a host: a gateway gives its
session the whole JVM.

``SharedDrivers`` knows which attached driver holds which key on which host. Hosts start under their own
lock, never the state machine's. A host that dies takes its sessions with it (the reaper asks
``host_gone``), and the next sharing session of its owner starts a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dli_kernel.processes import ProcessId, is_running, process_id
from dli_kernel.server import driver_code
from dli_kernel.server.driver_process import CONNECTION_FILE, Driver, DriverError, started_with

log = logging.getLogger("dli_kernel.server")

HOST_APP_NAME = "dli-kernel-shared-driver"
SHARED_DIR = "shared"  # in the state dir: one directory per owner's host
READY_TIMEOUT = 60.0  # for a new host kernel to answer
CALL_TIMEOUT = 60.0  # for a host to open or release a session's gateway
LEFTOVERS_WAIT = 30.0  # a host starts once the hosts a crashed server left are stopped, or after this
RELEASED_WAIT = 10.0  # the server's stop waits this long for sharing sessions to let go of their hosts
# Why a sharing session ends when the server stops even with --keep-sessions.
SERVER_STOPPED = (
    "the server stopped, and with it the shared driver this session ran on (only sessions with a driver of "
    "their own outlive the server with --keep-sessions)"
)
# Why a sharing session a crashed server left is not brought back: its host is stopped at start.
HOST_LEFT_BEHIND = (
    "a session that shares a driver is not brought back after a server restart (shared drivers stop with "
    "the server that started them); start a new session"
)

# Starts a host's kernel in a directory; boots Spark in it (driver, launched at) -> app info.
HostLaunch = Callable[[Path], Driver]
HostBoot = Callable[[Driver, float], dict[str, Any]]


def attached_message(info: dict[str, Any]) -> str:
    """What a session's log says once its kernel is attached to the shared driver of ``info``."""
    return (
        f"attached to the shared driver: Spark application {info.get('appId')}, whose JVM, executors and "
        "SparkContext conf this session shares with its owner's other sessions that share a driver (its "
        "Python namespace, temp views, SQL conf and UDFs are its own); the application's Spark UI shows the "
        "jobs of every session sharing it"
    )


def host_dir(root: Path, owner: str) -> Path:
    """Where ``owner``'s host runs: named by a hash, as a user name may hold anything."""
    return root / hashlib.sha256(owner.encode()).hexdigest()[:16]


class SharedHost:
    """One owner's host driver. ``start`` launches and boots it (once; callers after the first wait);
    ``predecessor``, a host of the same owner that died, is stopped first, as the new one takes its
    directory."""

    def __init__(
        self,
        owner: str,
        workdir: Path,
        launch: HostLaunch,
        boot: HostBoot,
        predecessor: SharedHost | None = None,
    ) -> None:
        self.owner = owner
        self.workdir = workdir
        self._launch = launch
        self._boot = boot
        self._predecessor = predecessor
        self._start_lock = threading.Lock()  # held through the slow start
        self._lock = threading.Lock()  # guards the fields below; never held for slow work
        self.driver: Driver | None = None
        self.info: dict[str, Any] | None = None  # app info, once Spark is up
        self.error: str | None = None  # why it failed to start
        self._jvm: ProcessId | None = None
        self._stopped = False

    def start(self) -> dict[str, Any]:
        """The host's app info, starting it first if need be; raises DriverError if it cannot start."""
        with self._start_lock:
            if self.info is not None:
                return self.info
            if self.error is not None or self._stopped:
                raise DriverError(self.error or "the server is stopping")
            if self._predecessor is not None:
                self._predecessor.stop()
                self._predecessor = None
            try:
                info = self._start()
            except Exception as err:
                self.error = f"the shared driver failed to start: {str(err) or type(err).__name__}"
                log.warning("%s (owner %s)", self.error, self.owner)
                self.stop()
                raise DriverError(self.error) from None
            with self._lock:
                self.info = info
                self._jvm = process_id(info["jvmPid"]) if isinstance(info.get("jvmPid"), int) else None
            log.info(
                "started the shared driver of %s: Spark application %s, driver pid %s",
                self.owner,
                info.get("appId"),
                self.driver.pid if self.driver else None,
            )
            return info

    def _start(self) -> dict[str, Any]:
        started = time.monotonic()
        driver = self._launch(self.workdir)
        with self._lock:
            stopped = self._stopped
            self.driver = driver
        if stopped:
            raise DriverError("the server is stopping")
        driver.wait_ready(timeout=READY_TIMEOUT)
        return self._boot(driver, started)

    def alive(self) -> bool:
        """Started, not stopped, and its kernel and JVM running."""
        with self._lock:
            driver, jvm, up = self.driver, self._jvm, self.info is not None and not self._stopped
        return up and driver is not None and driver.is_alive() and (jvm is None or is_running(jvm))

    def gone(self) -> bool:
        """Failed to start, or started and died since: a new host must take its place."""
        return self.error is not None or (self.info is not None and not self.alive())

    def death(self) -> str:
        """What a session of this host that died says in its log."""
        app = (self.info or {}).get("appId")
        return (
            f"the shared driver this session ran on (Spark application {app}) exited, ending every session "
            "that shared it; start a new session"
        )

    def open(self, key: str) -> dict[str, Any]:
        """Open a gateway for the session of ``key``: ``{"port", "secret"}`` (the secret is never logged)."""
        driver = self._running()
        call = driver_code.open_shared(key)
        answer = json.loads(driver.call(call, setup=driver_code.SHARED_IMPORT, timeout=CALL_TIMEOUT))
        return {"port": int(answer["port"]), "secret": str(answer["secret"])}

    def release(self, key: str) -> dict[str, Any]:
        """Cancel the session's jobs, drop its cache entries and shut its gateway (idempotent)."""
        driver = self._running()
        call = driver_code.release_shared(key)
        return dict(json.loads(driver.call(call, setup=driver_code.SHARED_IMPORT, timeout=CALL_TIMEOUT)))

    def open_count(self) -> int:
        """How many gateways the host has open."""
        call = driver_code.open_shared_count()
        return int(self._running().call(call, setup=driver_code.SHARED_IMPORT, timeout=CALL_TIMEOUT))

    def _running(self) -> Driver:
        if not self.alive():
            raise DriverError(self.death() if self.info is not None else "the shared driver is not running")
        assert self.driver is not None
        return self.driver

    def stop(self) -> None:
        """Stop the host's kernel and JVM; a start under way fails."""
        with self._lock:
            self._stopped = True
            driver = self.driver
        if driver is not None:
            driver.stop()


class SharedDrivers:
    """The hosts of a server that shares drivers, one per owner, and the key each attached driver holds.

    ``launch``/``boot`` start a host (see ``SharedHost``); ``root`` is ``<state dir>/shared``.
    """

    def __init__(self, root: Path, launch: HostLaunch, boot: HostBoot) -> None:
        self.root = root
        self._launch = launch
        self._boot = boot
        self._lock = threading.Condition()
        self._hosts: dict[str, SharedHost] = {}
        self._held: dict[Driver, tuple[SharedHost, str]] = {}  # attached driver -> its host and key
        self._closing = False
        self._no_leftovers = threading.Event()

    def open(self) -> None:
        """Stop the hosts a crashed server left, in a thread; hosts start once that is done."""
        threading.Thread(target=self._stop_leftovers, name="dli-shared-leftovers", daemon=True).start()

    def _stop_leftovers(self) -> None:
        try:
            stop_leftover_hosts(self.root)
        finally:
            self._no_leftovers.set()

    def host(self, owner: str) -> SharedHost:
        """``owner``'s host, started (a new one if there was none, or it failed or died)."""
        with self._lock:
            if self._closing:
                raise DriverError("the server is stopping")
            host = self._hosts.get(owner)
            if host is None or host.gone():
                workdir = host_dir(self.root, owner)
                host = SharedHost(owner, workdir, self._launch, self._boot, predecessor=host)
                self._hosts[owner] = host
        self._no_leftovers.wait(LEFTOVERS_WAIT)
        host.start()
        return host

    def attach(self, driver: Driver, owner: str, timeout: float) -> dict[str, Any]:
        """Attach a driver kernel that answers to ``owner``'s host; the app info of the host's Spark, with
        ``sharedDriver``. Until ``release(driver)``, the driver holds a gateway on the host."""
        host = self.host(owner)
        key = secrets.token_hex(8)
        with self._lock:
            self._held[driver] = (host, key)  # before the host opens it: an end meanwhile releases it
        try:
            gateway = host.open(key)
            with self._lock:
                released = self._held.get(driver) != (host, key)
            if released:
                # Ended while the host opened it: released before it was open, so again now.
                host.release(key)
                raise DriverError("the session ended while its driver was being attached")
            settings = {"gateway": gateway, "key": key}
            call = driver_code.attach(settings)
            info = json.loads(driver.call(call, setup=driver_code.RUNTIME_IMPORT, timeout=max(timeout, 1.0)))
        except BaseException:
            self.release(driver)
            raise
        return dict(info)

    def holds(self, driver: Driver) -> bool:
        """Whether ``driver`` is attached to a host (or being attached)."""
        with self._lock:
            return driver in self._held

    def release(self, driver: Driver) -> None:
        """Let go of ``driver``'s gateway on its host, if it holds one: its jobs are cancelled and what it
        cached dropped. Called before the driver is stopped, on every end; a failure is logged."""
        with self._lock:
            held = self._held.pop(driver, None)
            closing = self._closing
            self._lock.notify_all()
        if held is None:
            return
        host, key = held
        if closing or not host.alive():
            return  # the host stops (or has stopped) with everything its sessions held
        try:
            answer = host.release(key)
        except Exception as err:  # its end goes on: the session's kernel is stopped all the same
            log.warning("the shared driver of %s could not release a session: %s", host.owner, err)
            return
        log.info(
            "released a session of the shared driver of %s (cache entries dropped: %s)",
            host.owner,
            answer.get("uncached"),
        )

    def host_gone(self, driver: Driver) -> str | None:
        """Why ``driver``'s session must end because its host died; None if it has no host or it lives."""
        with self._lock:
            held = self._held.get(driver)
        if held is None or held[0].alive():
            return None
        return held[0].death()

    def status(self) -> dict[str, int]:
        """How many hosts run and how many drivers are attached to them."""
        with self._lock:
            hosts = [host for host in self._hosts.values() if host.info is not None]
            attached = len(self._held)
        return {"hosts": sum(1 for host in hosts if host.alive()), "attached": attached}

    def close(self) -> None:
        """Stop the hosts, once their sessions (ending meanwhile) have let go of them, or after a while."""
        with self._lock:
            self._closing = True
            self._lock.wait_for(lambda: not self._held, timeout=RELEASED_WAIT)
            hosts = list(self._hosts.values())
        stoppers = [threading.Thread(target=host.stop) for host in hosts]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout=30)


def stop_leftover_hosts(root: Path) -> None:
    """Stop the hosts a crashed server left in ``root`` (``<state dir>/shared``), then forget them."""
    if not root.is_dir():
        return
    for workdir in root.iterdir():
        driver = Driver.attach(workdir) if workdir.is_dir() else None
        if driver is not None:
            # As for pooled drivers: a pid another process now has is not ours to stop.
            if started_with(driver.pid, workdir / CONNECTION_FILE):
                log.info("stopping the shared driver %s left by a previous server", driver.pid)
                driver.stop()
            else:
                driver.close()
        shutil.rmtree(workdir, ignore_errors=True)
