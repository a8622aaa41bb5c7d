"""The session registry and its state machine.

Each session has one worker thread that starts its driver and then runs its statements one at a time,
in order. A reaper thread ends sessions whose heartbeat, ttl or idle timeout ran out, and notices
drivers that died. Everything a client can see is saved to the store, so a restarted server can
bring live sessions back (``recovering`` -> ``idle``) and report the others ``dead``.

All state changes happen under one lock; the slow work (starting drivers, running statements,
stopping processes) happens outside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_kernel.protocol import (
    DEFAULT_MAX_ROWS,
    DRIVER_LOG,
    ENDED_STATES,
    KINDS,
    PROGRESS_FILE,
    RESULT_FORMATS,
    RESULTS_DIR,
    SESSION_STATES,
    job_group,
    result_path,
)
from dli_kernel.server import driver_code
from dli_kernel.server.driver_process import Driver, DriverError, ExecutionResult, PortTaken
from dli_kernel.server.pool import REFILL_DELAY, DriverPool, PooledDriver, stop_leftovers
from dli_kernel.spec import SessionSpec, normalize_kind, spark_memory

log = logging.getLogger("dli_kernel.server")

STATEMENT_KINDS = KINDS
POOLED_KINDS = ("pyspark", "sql")  # kinds whose driver is the Python kernel the pool starts
KEPT_ENDED_SESSIONS = 500
REPEAT_INTERRUPT_AFTER = 3.0
LAUNCH_ATTEMPTS = 3  # a driver that lost a port of its connection file is started again
SCALA_COMPLETION_TIMEOUT = 60.0  # an idle session's first Scala completion starts its interpreter


class ManagerError(Exception):
    """A request the manager cannot honour; ``str()`` is the sentence the client sees."""


class UnknownId(ManagerError):
    pass


class WrongState(ManagerError):
    """The session exists but is in a state that does not allow the request."""


class Invalid(ManagerError):
    pass


@dataclass
class ServerSettings:
    state_dir: Path
    master: str = "local[*]"
    start_timeout: float = 180.0
    parallel_starts: int = max(2, os.cpu_count() or 2)  # drivers starting at once; more wait their turn
    keep_sessions_on_exit: bool = False
    python: str = sys.executable
    pool_size: int = 0  # drivers started ahead for sessions with the default spec
    pool_refill_delay: float = REFILL_DELAY


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Statement:
    id: int
    code: str
    kind: str
    max_rows: int = DEFAULT_MAX_ROWS
    state: str = "waiting"
    output: dict[str, Any] | None = None
    progress: float = 0.0
    started: int = 0
    completed: int = 0
    result_format: str = "json"
    job_group: str | None = field(default=None, repr=False)
    cancel_sent: float = field(default=0.0, repr=False)  # monotonic time of the last interrupt

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ManagedSession:
    id: int
    uuid: str
    spec: SessionSpec
    owner: str
    project_id: str | None
    workdir: Path
    state: str = "not_started"
    created: int = field(default_factory=now_ms)
    updated: int = 0
    app_id: str | None = None
    ui_url: str | None = None
    ended_reason: str | None = None
    statements: list[Statement] = field(default_factory=list)
    # Runtime only, never saved:
    queue: deque[Statement] = field(default_factory=deque, repr=False)
    driver: Driver | None = field(default=None, repr=False)
    stopping: bool = field(default=False, repr=False)
    last_touch: float = field(default_factory=time.monotonic, repr=False)
    last_activity: float = field(default_factory=time.monotonic, repr=False)
    # The session's worker waits on it; made with the manager's lock when the worker starts.
    wakeup: threading.Condition | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / DRIVER_LOG

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    def record(self) -> dict[str, Any]:
        spec = dataclasses.asdict(self.spec)
        return {
            "id": self.id,
            "uuid": self.uuid,
            "spec": spec,
            "owner": self.owner,
            "project_id": self.project_id,
            "workdir": str(self.workdir),
            "state": self.state,
            "created": self.created,
            "updated": self.updated,
            "app_id": self.app_id,
            "ui_url": self.ui_url,
            "ended_reason": self.ended_reason,
        }

    def log_lines(self, start: int | None = None, size: int = 100) -> tuple[int, int, list[str]]:
        """(from, total, lines) of the driver log; no ``start`` means the last ``size`` lines."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        total = len(lines)
        if start is None:
            start = max(0, total - size)
        return start, total, lines[start : start + size]


class SessionManager:
    def __init__(self, settings: ServerSettings, store: Any) -> None:
        self.settings = settings
        self._store = store
        self._lock = threading.RLock()
        self._start_slots = threading.Semaphore(settings.parallel_starts)
        self._sessions: dict[int, ManagedSession] = {}
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._owner = getpass.getuser()
        self._reaper = threading.Thread(target=self._reap, name="dli-reaper", daemon=True)
        # Who to tell when a statement (key (session id, statement id)) or a session (key (id, None))
        # changes state: the HTTP requests that long-poll for it.
        self._watchers: dict[tuple[int, int | None], set[Callable[[], None]]] = {}
        self.pool: DriverPool | None = None
        if settings.pool_size > 0:
            self.pool = DriverPool(
                settings.pool_size,
                settings.state_dir / "pool",
                self._settings_for(SessionSpec(kind="pyspark"), "dli-kernel-pooled-driver"),
                launch=lambda workdir: Driver.launch(workdir, workdir / DRIVER_LOG, self._driver_env()),
                boot=self._boot,
                refill_delay=settings.pool_refill_delay,
            )

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Load what the store knows, bring back live sessions, start the reaper."""
        for record, statement_records in self._store.load():
            session = _session_from_record(record, statement_records)
            self._sessions[session.id] = session
            if not session.ended:
                self._set_state(session, "recovering", "the server restarted; reconnecting to the driver")
                self._spawn(session, recover=True)
        self._reaper.start()
        if self.pool:
            self.pool.start()  # it stops what a crashed server left in the pool first
        elif (self.settings.state_dir / "pool").is_dir():
            cleaner = threading.Thread(
                target=stop_leftovers, args=(self.settings.state_dir / "pool",), name="dli-pool-leftovers"
            )
            self._threads.append(cleaner)
            cleaner.start()

    def close(self) -> None:
        """Stop the reaper and the sessions (or leave their drivers for the next server)."""
        self._closing.set()
        with self._lock:
            for session in self._sessions.values():
                self._notify(session)
        if self._reaper.is_alive():
            self._reaper.join(timeout=5)
        live = [s for s in self._sessions.values() if not s.ended]
        if self.settings.keep_sessions_on_exit:
            for session in live:
                self._log(session, "the server stopped; the driver keeps running for the next server")
                if session.driver:
                    session.driver.close()
            stoppers = []
        else:
            stoppers = [
                threading.Thread(target=self._end, args=(s, "success", "the server stopped")) for s in live
            ]
        if self.pool:
            # Pooled drivers are no sessions: whatever --keep-sessions says, they stop with the server.
            stoppers.append(threading.Thread(target=self.pool.close))
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout=30)
        for thread in self._threads:
            thread.join(timeout=5)
        self._store.close()

    # -- sessions ----------------------------------------------------------------------------

    def create(self, spec: SessionSpec, project_id: str | None = None) -> ManagedSession:
        # Outside the lock: it may wait a moment for a pooled driver that was just launched.
        reserved = self._reserve_pooled(spec)
        try:
            return self._create(spec, project_id, reserved)
        except BaseException:
            if reserved is not None and not reserved.claimed_by:
                self.pool.release(reserved)
            raise

    def _create(
        self, spec: SessionSpec, project_id: str | None, reserved: PooledDriver | None
    ) -> ManagedSession:
        with self._lock:
            if self._closing.is_set():
                raise WrongState("the server is shutting down; no new sessions are started.")
            if spec.name and any(s.spec.name == spec.name for s in self._live()):
                raise Invalid(f"a session named {spec.name!r} already exists; session names must be unique.")
            session_id = max(self._sessions, default=-1) + 1
            session = ManagedSession(
                id=session_id,
                uuid=str(uuid.uuid4()),
                spec=spec,
                owner=self._owner,
                project_id=project_id,
                workdir=self.settings.state_dir / "sessions" / str(session_id),
            )
            pooled = reserved if reserved is not None and self.pool.move(reserved, session.workdir) else None
            if pooled is not None:
                pooled.claimed_by = session_id
            session.workdir.mkdir(parents=True, exist_ok=True)  # there already when a pooled driver moved in
            self._sessions[session_id] = session
            self._set_state(session, "not_started", f"session {session_id} accepted ({spec.kind})")
            if pooled is not None:
                session.driver = pooled.driver  # from now on the session's end stops it
                if pooled.ready:
                    self._adopted(session, pooled)
            self._prune()
        self._spawn(session, recover=False, pooled=pooled)
        return session

    def get(self, key: str) -> ManagedSession:
        """A session by Livy id, DLI uuid or name."""
        with self._lock:
            if key.isdigit() and int(key) in self._sessions:
                return self._sessions[int(key)]
            for session in self._sessions.values():
                if key == session.uuid:
                    return session
            named = [s for s in self._sessions.values() if s.spec.name == key]
            if named:
                return max(named, key=lambda s: (not s.ended, s.id))
        raise UnknownId(f"session {key!r} does not exist; list sessions to see the ids there are.")

    def list(
        self,
        states: Iterable[str] = (),
        kind: str | None = None,
        name: str | None = None,
        cluster: str | None = None,
        owner: str | None = None,
    ) -> list[ManagedSession]:
        """Live sessions, or those in ``states`` (ended ones included) when given, oldest first."""
        wanted = set(states)
        unknown = wanted - set(SESSION_STATES)
        if unknown:
            raise Invalid(
                f"unknown session state {sorted(unknown)[0]!r}; states are: {', '.join(SESSION_STATES)}."
            )
        if kind is not None:
            kind = normalize_kind(kind)
        with self._lock:
            found = []
            for session in self._sessions.values():
                if (wanted and session.state not in wanted) or (not wanted and session.ended):
                    continue
                if kind and session.spec.kind != kind:
                    continue
                if name and name.lower() not in (session.spec.name or "").lower():
                    continue
                if cluster and session.spec.cluster_name != cluster:
                    continue
                if owner and session.owner != owner:
                    continue
                found.append(session)
            return found

    def touch(self, session: ManagedSession) -> None:
        session.last_touch = time.monotonic()

    def delete(self, session: ManagedSession) -> None:
        """End a session at the user's request; returns once its driver is gone."""
        with self._lock:
            if session.ended or session.stopping:
                raise UnknownId(f"session {session.id} has already ended ({session.state}).")
        self._end(session, "killed", "deleted by the user")

    # -- statements --------------------------------------------------------------------------

    def submit(
        self, session: ManagedSession, code: str, kind: str | None, max_rows: int, result_format: str = "json"
    ) -> Statement:
        kind = normalize_kind(kind, "kind") if kind else session.spec.kind
        if kind not in STATEMENT_KINDS:
            raise Invalid(
                f"statement kind {kind!r} is not supported by this server yet; "
                f"use one of {', '.join(STATEMENT_KINDS)}."
            )
        if result_format not in RESULT_FORMATS:
            raise Invalid(
                f"'resultFormat' must be one of {', '.join(RESULT_FORMATS)} (got {result_format!r})."
            )
        with self._lock:
            if session.state == "error":
                raise WrongState(
                    f"session {session.id} failed to start; see its log and start a new session."
                )
            if session.ended or session.stopping:
                raise WrongState(
                    f"session {session.id} is {session.state} and cannot run statements; start a new session."
                )
            statement = Statement(
                id=len(session.statements),
                code=code,
                kind=kind,
                max_rows=max_rows,
                result_format=result_format,
            )
            session.statements.append(statement)
            session.queue.append(statement)
            session.last_activity = time.monotonic()
            self._save_statement(session, statement)
            self._notify(session)
            return statement

    def statement(self, session: ManagedSession, statement_id: str) -> Statement:
        if statement_id.isdigit() and int(statement_id) < len(session.statements):
            statement = session.statements[int(statement_id)]
            if statement.state == "running":
                self._refresh_progress(session, statement)
            return statement
        raise UnknownId(f"statement {statement_id!r} does not exist in session {session.id}.")

    def cancel(self, session: ManagedSession, statement: Statement) -> None:
        with self._lock:
            if statement.state == "waiting":
                session.queue.remove(statement)
                self._finish(session, statement, "cancelled", None)
                return
            if statement.state != "running":
                return  # done or already cancelling: cancelling twice changes nothing
            statement.state = "cancelling"
            self._save_statement(session, statement)
            if statement.job_group is None:
                return  # sent but not started: _started interrupts it as soon as it starts
            statement.cancel_sent = time.monotonic()
            # Under the lock: the statement cannot finish, nor the next one start, before the signal is
            # sent, so it never lands in the next statement (a long-polling client sends that one at once).
            if session.driver:
                session.driver.interrupt()

    def arrow_result(self, session: ManagedSession, statement: Statement) -> Path:
        """The file holding a finished statement's Arrow IPC stream."""
        if statement.result_format != "arrow":
            raise UnknownId(
                f'statement {statement.id} has no Arrow result; submit it with "resultFormat": "arrow".'
            )
        if statement.state != "available" or (statement.output or {}).get("status") != "ok":
            raise WrongState(f"statement {statement.id} is {statement.state} and has no result to fetch.")
        path = session.workdir / result_path(statement.id)
        if not path.is_file():
            raise UnknownId(
                f"the Arrow result of statement {statement.id} is gone (a session keeps its two newest); "
                "run the statement again."
            )
        return path

    @contextlib.contextmanager
    def watch(
        self, session: ManagedSession, statement: Statement | None, wake: Callable[[], None]
    ) -> Iterator[None]:
        """Call ``wake()`` whenever ``statement`` (or, without one, the session) changes state, until the
        block ends. It is called from the manager's threads with the lock held, so it must not block."""
        key = (session.id, None if statement is None else statement.id)
        with self._lock:
            self._watchers.setdefault(key, set()).add(wake)
        try:
            yield
        finally:
            with self._lock:
                watchers = self._watchers.get(key, set())
                watchers.discard(wake)
                if not watchers:
                    self._watchers.pop(key, None)

    def log_size(self, session: ManagedSession) -> int:
        """The session log's size in bytes: it says whether there are new lines without reading them."""
        try:
            return session.log_path.stat().st_size
        except OSError:
            return 0

    def completion(self, session: ManagedSession, code: str, kind: str | None, cursor: int) -> list[str]:
        kind = normalize_kind(kind) if kind else session.spec.kind
        driver = session.driver
        if driver is None or session.state not in ("idle", "busy"):
            return []
        if kind == "spark":
            timeout = SCALA_COMPLETION_TIMEOUT if session.state == "idle" else 2.0
            return driver.complete_scala(code, cursor, timeout)
        if kind != "pyspark":
            return []
        return driver.complete(code, cursor)

    # -- the worker: one thread per session ---------------------------------------------------

    def _spawn(self, session: ManagedSession, recover: bool, pooled: PooledDriver | None = None) -> None:
        # One condition per session: a change to one session wakes its worker only, not all of them.
        session.wakeup = threading.Condition(self._lock)
        thread = threading.Thread(
            target=self._work, args=(session, recover, pooled), name=f"dli-session-{session.id}", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _work(self, session: ManagedSession, recover: bool, pooled: PooledDriver | None = None) -> None:
        try:
            if recover:
                self._reconnect(session)
            elif pooled is not None:
                self._wait_pooled(session, pooled)
            else:
                self._start_driver(session)
        except DriverError as err:
            if not session.stopping:
                self._end(session, "dead" if recover else "error", f"start-up failed: {err}")
            return
        while True:
            with self._lock:
                session.wakeup.wait_for(lambda: session.queue or session.stopping or self._closing.is_set())
                if session.stopping or self._closing.is_set():
                    return
                statement = session.queue.popleft()
                statement.state = "running"
                statement.started = now_ms()
                self._save_statement(session, statement)
                self._set_state(session, "busy")
            started = functools.partial(self._started, session, statement)
            try:
                if statement.kind == "spark":
                    result = session.driver.execute_scala(statement.code, on_started=started)
                else:
                    result = session.driver.execute(self._code_for(statement), on_started=started)
            except DriverError as err:
                with self._lock:
                    if not session.stopping:
                        self._finish(
                            session, statement, "error", _error_output(statement, "SessionDied", err)
                        )
                if not session.stopping:
                    self._end(session, "dead", f"the driver stopped: {err}")
                return
            with self._lock:
                cancelled = statement.state == "cancelling" and result.status == "error"
                self._finish(
                    session, statement, "cancelled" if cancelled else "available", _output(statement, result)
                )
                session.last_activity = time.monotonic()
                if not session.queue and not session.stopping:
                    self._set_state(session, "idle")

    def _started(self, session: ManagedSession, statement: Statement, msg_id: str) -> None:
        """The kernel began running the statement: a cancel that came before now takes effect.

        A SIGINT sent earlier could land while ipykernel itself is handling the request, where it is
        ignored or swallows the request, so cancels wait for this moment.
        """
        with self._lock:
            statement.job_group = job_group(msg_id)
            if statement.state != "cancelling":
                return
            statement.cancel_sent = time.monotonic()
        session.driver.interrupt()

    def _reserve_pooled(self, spec: SessionSpec) -> PooledDriver | None:
        """A pooled driver for a session with this spec, if it is one the pool's drivers were started with."""
        if self.pool is None or spec.kind not in POOLED_KINDS:
            return None
        return self.pool.reserve(self._settings_for(spec, ""))

    def _adopted(self, session: ManagedSession, pooled: PooledDriver) -> None:
        with self._lock:
            session.app_id, session.ui_url = pooled.info["appId"], pooled.info["sparkUiUrl"]
            self._set_state(
                session,
                "busy" if session.queue else "idle",
                f"took a driver from the warm pool (Spark application {session.app_id})",
            )

    def _wait_pooled(self, session: ManagedSession, pooled: PooledDriver) -> None:
        """Wait for a pooled driver still starting; if it fails, start one of our own."""
        if pooled.ready:
            return  # adopted in create()
        with self._lock:
            if session.stopping:
                return
            self._set_state(session, "starting", "waiting for a pooled driver that is starting")
        if self.pool.wait(pooled, give_up=lambda: session.stopping):
            with self._lock:
                if session.stopping:
                    return
                self._adopted(session, pooled)
            return
        if session.stopping:
            return
        self._log(session, f"the pooled driver failed to start ({pooled.error}); starting a new one")
        pooled.driver.stop()
        with self._lock:
            session.driver = None
        self._start_driver(session)

    def _boot(self, driver: Driver, settings: dict[str, Any]) -> dict[str, Any]:
        """Start Spark in a driver that answers; its app info."""
        return json.loads(
            driver.call(
                f"_dli.bootstrap({json.dumps(settings)!r})",
                setup="import dli_kernel.driver.runtime as _dli",
                timeout=self.settings.start_timeout,
            )
        )

    def _start_driver(self, session: ManagedSession) -> None:
        with self._lock:
            if session.stopping:
                return
            self._set_state(session, "starting", "starting the driver")
        # Spark drivers started all at once on a small machine share its cores until every one of them
        # is too slow to meet the start timeout; a few at a time, each is up in seconds.
        if not self._start_slots.acquire(blocking=False):
            at_once = f"at most {self.settings.parallel_starts} at once"
            self._log(session, f"waiting for a start slot: other drivers are starting ({at_once})")
            while not self._start_slots.acquire(timeout=0.5):
                if session.stopping or self._closing.is_set():
                    return
        try:
            info = self._launch_and_boot(session)
        finally:
            self._start_slots.release()
        with self._lock:
            if info is None or session.stopping:
                return
            session.app_id, session.ui_url = info["appId"], info["sparkUiUrl"]
            self._set_state(
                session, "busy" if session.queue else "idle", f"Spark application {session.app_id}"
            )

    def _launch_and_boot(self, session: ManagedSession) -> dict[str, Any] | None:
        """Start the session's driver kernel and Spark in it; None if the session is stopped meanwhile."""
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            with self._lock:
                if session.stopping:
                    return None
                session.driver = Driver.launch(session.workdir, session.log_path, self._driver_env())
            try:
                session.driver.wait_ready(timeout=60)
                break
            except PortTaken:
                session.driver.stop()
                if attempt == LAUNCH_ATTEMPTS:
                    raise
                self._log(session, "a port picked for the driver was taken before it started; trying again")
        return self._boot(session.driver, self._spark_settings(session))

    def _reconnect(self, session: ManagedSession) -> None:
        driver = Driver.attach(session.workdir)
        if driver is None:
            raise DriverError("the driver process did not survive the server restart")
        session.driver = driver
        driver.wait_ready(timeout=30)
        with self._lock:
            for statement in session.statements:
                if statement.state in ("running", "cancelling"):
                    output = _error_output(
                        statement, "StatementLost", "the server restarted while this statement ran"
                    )
                    self._finish(session, statement, "error", output)
                elif statement.state == "waiting":
                    session.queue.append(statement)
        try:
            info = json.loads(
                driver.call("_dli.app_info()", setup="import dli_kernel.driver.runtime as _dli")
            )
        except DriverError:
            # The previous server died while this driver was still starting Spark: finish the job.
            self._log(session, "the driver had not finished starting; starting Spark again")
            settings = json.dumps(self._spark_settings(session))
            info = json.loads(
                driver.call(f"_dli.bootstrap({settings!r})", timeout=self.settings.start_timeout)
            )
        with self._lock:
            session.app_id, session.ui_url = info["appId"], info["sparkUiUrl"]
            self._set_state(session, "busy" if session.queue else "idle", "reconnected to the driver")
            self._notify(session)

    def _code_for(self, statement: Statement) -> str:
        if statement.result_format == "arrow":
            return driver_code.arrow_statement(
                statement.code, statement.kind, statement.max_rows, statement.id
            )
        if statement.kind == "sql":
            # repr() of a str is a Python literal of exactly that string: nothing in it can escape.
            return f"_dli.run_sql({statement.code!r}, max_rows={int(statement.max_rows)})"
        return statement.code

    def _driver_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SPARK_LOCAL_IP="127.0.0.1",  # the Spark UI binds here, not on every interface
            PYSPARK_PYTHON=self.settings.python,
            PYSPARK_DRIVER_PYTHON=self.settings.python,
        )
        env.pop("JPY_PARENT_PID", None)
        return env

    def _spark_settings(self, session: ManagedSession) -> dict[str, Any]:
        return self._settings_for(session.spec, session.spec.name or f"dli-session-{session.id}")

    def _settings_for(self, spec: SessionSpec, app_name: str) -> dict[str, Any]:
        res = spec.effective_resources()
        master = self.settings.master
        if master.startswith("local"):
            master = f"local[{res.executor_cores * res.num_executors}]"
        conf = {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.showConsoleProgress": "false",
            "spark.port.maxRetries": "100",
            "spark.driver.memory": spark_memory(res.driver_memory_mb),
            "spark.driver.cores": str(res.driver_cores),
            "spark.executor.memory": spark_memory(res.executor_memory_mb),
            "spark.executor.cores": str(res.executor_cores),
            "spark.executor.instances": str(res.num_executors),
            "spark.sql.warehouse.dir": str(self.settings.state_dir / "warehouse"),
        }
        for key, values in (
            ("spark.jars", spec.jars),
            ("spark.submit.pyFiles", spec.py_files),
            ("spark.files", spec.files),
            ("spark.archives", spec.archives),
        ):
            if values:
                conf[key] = ",".join(values)
        conf.update(spec.conf)  # the user's conf wins over ours
        return {"master": master, "app_name": app_name, "conf": conf}

    # -- the reaper ---------------------------------------------------------------------------

    def _reap(self) -> None:
        while not self._closing.wait(1.0):
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.ended or session.stopping:
                    continue
                self._repeat_interrupts(session, now)
                reason = self._expired(session, now)
                if reason:
                    self._end(session, "dead", reason)
                elif session.state == "idle" and session.driver and not session.driver.is_alive():
                    self._end(session, "dead", "the driver process exited")

    def _repeat_interrupts(self, session: ManagedSession, now: float) -> None:
        """A first interrupt lets a Spark call fail on its own; code that ignores it gets another.

        Checked and sent under the lock, so that it cannot reach a statement that started in between."""
        with self._lock:
            for statement in session.statements[-1:]:
                if (
                    statement.state == "cancelling"
                    and statement.job_group
                    and now - statement.cancel_sent > REPEAT_INTERRUPT_AFTER
                ):
                    statement.cancel_sent = now
                    if session.driver:
                        session.driver.interrupt()

    @staticmethod
    def _expired(session: ManagedSession, now: float) -> str | None:
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

    # -- state changes (all under the lock) ---------------------------------------------------

    def _end(self, session: ManagedSession, final_state: str, reason: str) -> None:
        """Stop the driver and everything it started, then record the final state and why."""
        with self._lock:
            if session.ended:
                return
            session.stopping = True
            session.ended_reason = reason
            running = [s for s in session.statements if s.state in ("running", "cancelling")]
            self._set_state(session, "shutting_down", f"shutting down: {reason}")
            self._notify(session)
            driver = session.driver
        if driver:
            if running:
                driver.interrupt()
            driver.stop()
        with self._lock:
            for statement in session.statements:
                if statement.state in ("waiting", "running", "cancelling"):
                    output = _error_output(statement, "SessionEnded", f"the session ended: {reason}")
                    self._finish(session, statement, "cancelled", output)
            session.queue.clear()
            self._set_state(session, final_state, reason)
        # Arrow results can be large; an ended session's are of no further use.
        shutil.rmtree(session.workdir / RESULTS_DIR, ignore_errors=True)

    def _set_state(self, session: ManagedSession, state: str, message: str | None = None) -> None:
        with self._lock:
            if message:
                self._log(session, message)
            session.state = state
            session.updated = now_ms()
            self._store.save_session(session.id, session.record())
            self._notify(session)
            self._wake((session.id, None))

    def _finish(self, session: ManagedSession, statement: Statement, state: str, output: dict | None) -> None:
        statement.state = state
        statement.output = output
        statement.progress = 1.0
        statement.completed = now_ms()
        self._save_statement(session, statement)
        self._notify(session)

    def _notify(self, session: ManagedSession) -> None:
        if session.wakeup is not None:
            session.wakeup.notify_all()

    def _save_statement(self, session: ManagedSession, statement: Statement) -> None:
        # Every state change of a statement is saved, so this is where long-polls learn of them.
        self._store.save_statement(session.id, statement.id, statement.record())
        self._wake((session.id, statement.id))

    def _wake(self, key: tuple[int, int | None]) -> None:
        with self._lock:
            for wake in list(self._watchers.get(key, ())):
                wake()

    def _log(self, session: ManagedSession, message: str) -> None:
        stamp = time.strftime("%y/%m/%d %H:%M:%S")
        with open(session.log_path, "a") as log_file:
            log_file.write(f"{stamp} INFO dli-kernel: {message}\n")

    def _refresh_progress(self, session: ManagedSession, statement: Statement) -> None:
        """Finished tasks / all tasks of the statement's Spark jobs, as the driver last wrote them."""
        try:
            counts = json.loads((session.workdir / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return  # progress is a hint; keep the last value rather than fail the request
        if counts.get("group") == statement.job_group and counts.get("total"):
            statement.progress = min(counts["done"] / counts["total"], 0.99)

    def _live(self) -> list[ManagedSession]:
        return [s for s in self._sessions.values() if not s.ended]

    def _prune(self) -> None:
        ended = [s for s in self._sessions.values() if s.ended]
        for session in ended[: max(0, len(ended) - KEPT_ENDED_SESSIONS)]:
            del self._sessions[session.id]
            self._store.delete_session(session.id)
            shutil.rmtree(session.workdir, ignore_errors=True)


def _output(statement: Statement, result: ExecutionResult) -> dict[str, Any]:
    if result.status == "ok":
        return {"status": "ok", "execution_count": statement.id, "data": result.data}
    traceback = result.traceback
    if statement.kind == "sql":
        # The Python frames of our SQL runner are not the user's business; the message is.
        traceback = [line + "\n" for line in f"{result.ename}: {result.evalue}".splitlines()]
    return {
        "status": "error",
        "execution_count": statement.id,
        "ename": result.ename,
        "evalue": result.evalue,
        "traceback": traceback,
    }


def _error_output(statement: Statement, ename: str, evalue: object) -> dict[str, Any]:
    return {
        "status": "error",
        "execution_count": statement.id,
        "ename": ename,
        "evalue": str(evalue),
        "traceback": [f"{ename}: {evalue}\n"],
    }


def _session_from_record(record: dict[str, Any], statement_records: list[dict[str, Any]]) -> ManagedSession:
    spec_fields = {
        key: tuple(value) if isinstance(value, list) else value for key, value in record["spec"].items()
    }
    session = ManagedSession(
        id=record["id"],
        uuid=record["uuid"],
        spec=SessionSpec(**spec_fields),
        owner=record["owner"],
        project_id=record["project_id"],
        workdir=Path(record["workdir"]),
        state=record["state"],
        created=record["created"],
        updated=record["updated"],
        app_id=record["app_id"],
        ui_url=record["ui_url"],
        ended_reason=record["ended_reason"],
    )
    session.statements = [Statement(**st) for st in statement_records]
    return session
