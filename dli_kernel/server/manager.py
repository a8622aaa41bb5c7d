"""The session registry: what the HTTP routes ask of sessions and statements.

Each session has a worker thread (``worker``) that gets it a driver (``starter``: new, pooled or, after a
restart, the one it had) and then runs its statements one at a time, in order. A reaper (``reaper``) ends
sessions whose time ran out or whose driver died. Every change of state goes through ``states``, under its
one lock, and is saved to the store, so a restarted server brings live sessions back (``recovering`` ->
``idle``) and reports the others ``dead``. Slow work (starting and stopping drivers, running statements,
removing directories) happens outside the lock.

Who sees what is decided here, so that every path (Livy, DLI, DLC) gets the same rule: a session is only
ever handed out by ``get``, ``list`` and ``create``, and those give a viewer (a ``Principal``) only the
sessions it ``sees``. The other calls act on a session one of them handed out. A session the viewer may not
see is answered exactly as one that does not exist.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from dli_kernel.protocol import KINDS, RESULT_FORMATS, SESSION_STATES, result_path
from dli_kernel.server.driver_process import Driver
from dli_kernel.server.pool import DriverPool, PooledDriver
from dli_kernel.server.principal import Principal, operator
from dli_kernel.server.progress import read_progress
from dli_kernel.server.reaper import Reaper
from dli_kernel.server.records import ManagedSession, Statement, now_ms, session_from_record
from dli_kernel.server.settings import ServerSettings
from dli_kernel.server.shared_host import SERVER_STOPPED
from dli_kernel.server.spark_conf import driver_memory_mb
from dli_kernel.server.starter import Attach, DriverStarter, Launch
from dli_kernel.server.states import RecordStore, SessionStates
from dli_kernel.server.worker import SessionWorker
from dli_kernel.spec import SessionSpec, normalize_kind, parse_id, shown

__all__ = [
    "Invalid",
    "LimitReached",
    "ManagedSession",
    "ManagerError",
    "ServerSettings",
    "SessionManager",
    "Statement",
    "UnknownId",
    "WrongState",
]

STATEMENT_KINDS = KINDS
DELETED = "deleted by the user"  # the reason of a session's end at its owner's request
STARTING_STATES = ("not_started", "starting")  # sessions whose driver is starting (max_starting)
# Livy ids are drawn from here at random: counting up, each id would tell how many sessions others made.
# Six digits stay easy to type (%session kill 482193) and leave room to spare for the sessions kept.
SESSION_IDS = range(100_000, 1_000_000)
SCALA_COMPLETION_TIMEOUT = 60.0  # an idle session's first Scala completion starts its interpreter
COMPLETION_TIMEOUT = 2.0
THREAD_JOIN = 5.0
STOP_JOIN = 30.0


class ManagerError(Exception):
    """A request the manager cannot honour; ``str()`` is the sentence the client sees."""


class UnknownId(ManagerError):
    pass


class WrongState(ManagerError):
    """The session exists but is in a state that does not allow the request."""


class Invalid(ManagerError):
    pass


class LimitReached(ManagerError):
    """A limit of the server refuses a new session for now: the user's live sessions, the sessions
    starting at once, or the driver memory of the live sessions. Waiting (or ending a session) helps, so
    the HTTP paths answer 429, all three alike; a request no wait would help is ``Invalid`` instead."""


class Store(RecordStore, Protocol):
    """What the manager needs of a store: ``store.Store``, or a test's stand-in."""

    def delete_session(self, session_id: int) -> None: ...
    def load(self) -> builtins.list[tuple[dict[str, Any], builtins.list[dict[str, Any]]]]: ...
    def close(self) -> None: ...


class SessionManager:
    """``launch`` and ``attach`` make and find driver processes (``Driver.launch``/``Driver.attach``);
    a test passes its own to run the state machine without a kernel or Spark."""

    def __init__(
        self,
        settings: ServerSettings,
        store: Store,
        launch: Launch = Driver.launch,
        attach: Attach = Driver.attach,
    ) -> None:
        self.settings = settings
        self._store = store
        self._states = SessionStates(store, settings.output_spill_bytes)
        self._lock = self._states.lock
        self._sessions: dict[int, ManagedSession] = {}
        self._workers: builtins.list[SessionWorker] = []
        self._enders: builtins.list[threading.Thread] = []  # ends a crashed server left half done
        # Who a caller that names nobody is: the server's operator (tests, the embedded server's own calls).
        self._operator = operator()
        self._starter = DriverStarter(settings, self._states, launch, attach)
        self._reaper = Reaper(self._snapshot, self._states, settings.reap_every, self._starter.host_gone)
        self.pool: DriverPool | None = self._starter.pool

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Load what the store knows, bring back live sessions, start the reaper."""
        for record, statement_records in self._store.load():
            session = session_from_record(record, statement_records)
            self._sessions[session.id] = session
            if session.state == "shutting_down":
                self._carry_out_end(session)
            elif not session.ended:
                self._states.set_state(
                    session, "recovering", "the server restarted; reconnecting to the driver"
                )
                self._spawn(session, recover=True)
        # Ended sessions that aged out while no server ran go now, not at the next create.
        with self._lock:
            pruned = self._prune()
        for workdir in pruned:
            shutil.rmtree(workdir, ignore_errors=True)
        self._reaper.start()
        self._starter.open()  # the pool stops what a crashed server left in it first

    def close(self) -> None:
        """Stop the reaper and the sessions (or leave their drivers for the next server)."""
        self._states.closing.set()
        with self._lock:
            for session in self._sessions.values():
                self._states.notify(session)
        self._reaper.join(timeout=THREAD_JOIN)
        live = [s for s in self._snapshot() if not s.ended]
        keep = self.settings.keep_sessions_on_exit
        # A session that shares a driver cannot outlive it, and shared drivers stop with the server.
        for session in (s for s in live if keep and not s.shared_driver):
            self._states.log(session, "the server stopped; the driver keeps running for the next server")
            if session.driver:
                session.driver.close()
        stoppers = [
            threading.Thread(
                target=self._states.end,
                args=(s, "success", SERVER_STOPPED if keep else "the server stopped"),
            )
            for s in live
            if s.shared_driver or not keep
        ]
        # Pooled drivers are no sessions: whatever --keep-sessions says, they stop with the server.
        stoppers.append(threading.Thread(target=self._starter.close))
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout=STOP_JOIN)
        for worker in self._workers:
            worker.thread.join(timeout=THREAD_JOIN)
        for thread in self._enders:
            thread.join(timeout=STOP_JOIN)
        self._store.close()

    # -- sessions ----------------------------------------------------------------------------

    def create(
        self, spec: SessionSpec, project_id: str | None = None, owner: Principal | None = None
    ) -> ManagedSession:
        """A new session, owned by ``owner`` (who sent the request) or else by the server's operator."""
        owner = owner or self._operator
        _check_proxy_user(spec, owner)
        with self._lock:
            self._check_new(spec, owner, starts_driver=False)  # before a pooled driver is touched
        # Outside the lock: it may wait a moment for a pooled driver that was just launched.
        reserved = self._starter.reserve(spec, owner.name)
        pooled: PooledDriver | None = None
        try:
            session, pooled, pruned = self._register(spec, project_id, reserved, owner)
        finally:
            if reserved is not None and pooled is None and self.pool is not None:
                self.pool.release(reserved)  # it may stop the driver: outside the lock
        for workdir in pruned:
            shutil.rmtree(workdir, ignore_errors=True)
        self._spawn(session, recover=False, pooled=pooled)
        return session

    def _register(
        self, spec: SessionSpec, project_id: str | None, reserved: PooledDriver | None, owner: Principal
    ) -> tuple[ManagedSession, PooledDriver | None, builtins.list[Path]]:
        """A new session in the registry, with the reserved pooled driver if it could move in; and the
        workdirs of ended sessions it pushed out of the registry, to remove."""
        with self._lock:
            if self._states.closing.is_set():
                raise WrongState("the server is shutting down; no new sessions are started.")
            # Again under the lock that registers it: two creates at once cannot both pass a check.
            self._check_new(spec, owner, starts_driver=reserved is None or not reserved.ready)
            session_id = self._new_id()
            session = ManagedSession(
                id=session_id,
                uuid=str(uuid.uuid4()),
                spec=spec,
                owner=owner.name,
                project_id=project_id,
                workdir=self.settings.state_dir / "sessions" / str(session_id),
                shared_driver=self._starter.shares(spec),
            )
            pooled = None
            # A rename: quick, and under the lock so that nobody sees the session without its directory.
            if reserved is not None and self.pool is not None and self.pool.move(reserved, session.workdir):
                pooled = reserved
                pooled.claimed_by = session_id
            session.workdir.mkdir(parents=True, exist_ok=True)  # there already when a pooled driver moved in
            self._sessions[session_id] = session
            self._states.set_state(session, "not_started", f"session {session_id} accepted ({spec.kind})")
            if pooled is not None:
                session.driver = pooled.driver  # from now on the session's end stops it
                if pooled.ready:
                    self._starter.adopt(session, pooled)
            return session, pooled, self._prune()

    def get(self, key: str, viewer: Principal | None = None) -> ManagedSession:
        """A session ``viewer`` sees (by default the operator, who sees all), by Livy id, DLI uuid or
        name. Of two sessions of one name (an admin sees several users'), the viewer's own comes first,
        then a live one, then the newest."""
        viewer = viewer or self._operator
        with self._lock:
            visible = {n: s for n, s in self._sessions.items() if viewer.sees(s.owner)}
            number = parse_id(key)
            if number is not None and number in visible:
                return visible[number]
            for session in visible.values():
                if key == session.uuid:
                    return session
            named = [s for s in visible.values() if s.spec.name == key]
            if named:
                # Of equals, the later made: reversed, as max keeps the first of equals.
                return max(reversed(named), key=lambda s: (s.owner == viewer.name, not s.ended, s.created))
        # The same answer for a session that does not exist and for one the viewer may not see.
        raise UnknownId(f"session {shown(key)} does not exist; list sessions to see the ids there are.")

    def list(
        self,
        states: Iterable[str] = (),
        kind: str | None = None,
        name: str | None = None,
        cluster: str | None = None,
        owner: str | None = None,
        viewer: Principal | None = None,
    ) -> builtins.list[ManagedSession]:
        """Live sessions ``viewer`` sees (by default all), or those in ``states`` (ended ones included)
        when given, oldest first."""
        viewer = viewer or self._operator
        wanted = set(states)
        unknown = wanted - set(SESSION_STATES)
        if unknown:
            raise Invalid(
                f"unknown session state {sorted(unknown)[0]!r}; states are: {', '.join(SESSION_STATES)}."
            )
        if kind is not None:
            kind = normalize_kind(kind)
        found = []
        for session in self._snapshot():
            if not viewer.sees(session.owner):
                continue
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
        self._states.end(session, "killed", DELETED)

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
            self._states.add(session, statement)
            return statement

    def statement(self, session: ManagedSession, statement_id: str) -> Statement:
        number = parse_id(statement_id)
        if number is None or number >= len(session.statements):
            raise UnknownId(f"statement {shown(statement_id)} does not exist in session {session.id}.")
        statement = session.statements[number]
        if statement.state == "running":
            progress = read_progress(session.workdir, statement.job_group)  # a file read: outside the lock
            with self._lock:
                # It may have finished during the read, and a finished statement's 1.0 stands.
                if progress is not None and statement.state == "running":
                    statement.progress = progress
        return statement

    def cancel(self, session: ManagedSession, statement: Statement) -> None:
        with self._lock:
            if statement.state == "waiting":
                session.queue.remove(statement)
                self._states.finish(session, statement, "cancelled", None)
                return
            if statement.state != "running":
                return  # done or already cancelling: cancelling twice changes nothing
            statement.state = "cancelling"
            self._states.save_statement(session, statement)
            if statement.job_group is None:
                return  # sent but not started: the worker interrupts it as soon as it starts
            statement.cancel_sent = time.monotonic()
            # Under the lock (a signal is no slow work): the statement cannot finish, nor the next one
            # start, before it is sent, so it never lands in the next statement (a long-polling client
            # sends that one at once).
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

    def output(self, session: ManagedSession, statement: Statement) -> dict[str, Any]:
        """A finished statement's output: the output itself, or the stub of its spilled file."""
        output = statement.output
        if output is None:
            raise WrongState(f"statement {statement.id} is {statement.state} and has no output.")
        return output

    def watch(
        self, session: ManagedSession, statement: Statement | None, wake: Callable[[], None]
    ) -> contextlib.AbstractContextManager[None]:
        """Call ``wake()`` whenever ``statement`` (or, without one, the session) changes state, until the
        block ends. It is called from the manager's threads with the lock held, so it must not block."""
        return self._states.watch(session, statement, wake)

    def log_size(self, session: ManagedSession) -> int:
        """The session log's size in bytes: it says whether there are new lines without reading them."""
        return session.log.size()

    def completion(
        self, session: ManagedSession, code: str, kind: str | None, cursor: int
    ) -> builtins.list[str]:
        kind = normalize_kind(kind) if kind else session.spec.kind
        driver = session.driver
        if driver is None or session.state not in ("idle", "busy"):
            return []
        if kind == "spark":
            timeout = SCALA_COMPLETION_TIMEOUT if session.state == "idle" else COMPLETION_TIMEOUT
            return driver.complete_scala(code, cursor, timeout)
        if kind != "pyspark":
            return []
        return driver.complete(code, cursor)

    # -- the registry ------------------------------------------------------------------------

    def _spawn(self, session: ManagedSession, recover: bool, pooled: PooledDriver | None = None) -> None:
        worker = SessionWorker(session, self._states, self._starter)
        with self._lock:
            self._workers = [w for w in self._workers if w.thread.is_alive()]
            self._workers.append(worker)
        worker.start(recover, pooled)

    def _carry_out_end(self, session: ManagedSession) -> None:
        """A session the previous server was ending when it died: stop what is left of its driver and
        record the end, rather than bring back a session its owner deleted."""
        final = "killed" if session.ended_reason == DELETED else "dead"
        reason = session.ended_reason or "the server stopped while ending it"

        def end() -> None:
            try:
                session.driver = self._starter.leftover(session)
            except Exception as err:  # its connection file is unreadable: the end is recorded all the same
                self._states.log(session, f"the driver left could not be reached ({type(err).__name__})")
            self._states.end(session, final, reason)

        thread = threading.Thread(target=end, name=f"dli-end-{session.id}", daemon=True)
        self._enders.append(thread)
        thread.start()

    def _snapshot(self) -> builtins.list[ManagedSession]:
        with self._lock:
            return list(self._sessions.values())

    def _new_id(self) -> int:
        """A Livy id no session has, nor any directory; call with the lock held."""
        sessions = self.settings.state_dir / "sessions"
        while True:
            candidate = SESSION_IDS[secrets.randbelow(len(SESSION_IDS))]
            if candidate not in self._sessions and not (sessions / str(candidate)).exists():
                return candidate

    def _live(self) -> builtins.list[ManagedSession]:
        return [s for s in self._sessions.values() if not s.ended]

    def _check_new(self, spec: SessionSpec, owner: Principal, starts_driver: bool) -> None:
        """Refuse a new session of ``owner`` whose name the owner uses already (Invalid) or that would go
        over one of the server's limits (LimitReached); call with the lock held. ``starts_driver``: the
        session starts a driver (it has no ready pooled one)."""
        live = self._live()
        # Names are unique per owner: a clash with another user's session must not tell it exists.
        if spec.name and any(s.spec.name == spec.name and s.owner == owner.name for s in live):
            raise Invalid(
                f"a session named {spec.name!r} already exists among yours; a user's session names must be "
                "unique."
            )
        settings = self.settings
        most = owner.max_sessions if owner.max_sessions is not None else settings.max_sessions_per_user
        _check_sessions_per_user(live, owner, most)
        if starts_driver and settings.max_starting is not None:
            starting = sum(1 for s in live if s.state in STARTING_STATES)
            if starting >= settings.max_starting:
                # Counts of other users' sessions are theirs: the sentence names only the limit.
                raise LimitReached(
                    "this server is starting as many sessions as it starts at once "
                    f"({settings.max_starting}); try again when one of them is up."
                )
        _check_driver_memory(live, spec, settings.max_driver_memory_mb)

    def _prune(self) -> builtins.list[Path]:
        """Forget the ended sessions older than ``keep_ended_for`` and the oldest beyond
        ``keep_ended_sessions``, records and all; their workdirs (spilled outputs included), to remove."""
        settings = self.settings
        # Oldest ended first: a session's last update is its end.
        ended = sorted((s for s in self._sessions.values() if s.ended), key=lambda s: s.updated)
        too_old = now_ms() - int(settings.keep_ended_for * 1000)
        gone = [s for s in ended if s.updated < too_old]
        kept = ended[len(gone) :]
        gone += kept[: max(0, len(kept) - settings.keep_ended_sessions)]
        for session in gone:
            del self._sessions[session.id]
            self._store.delete_session(session.id)
        return [session.workdir for session in gone]


def _check_proxy_user(spec: SessionSpec, owner: Principal) -> None:
    """Only an admin may run a session as someone else: anyone else names only themselves, or nobody."""
    if spec.proxy_user and not spec.proxy_user.isprintable():
        # It becomes the driver's HADOOP_USER_NAME, where a control character fails the launch.
        raise Invalid(f"proxyUser must be a user name of printable characters (got {spec.proxy_user!r}).")
    if spec.proxy_user and not owner.admin and spec.proxy_user != owner.name:
        raise Invalid(
            f"proxyUser may only be your own user name ({owner.name!r}) or left out; only an admin may "
            f"run a session as another user (got {spec.proxy_user!r})."
        )


def _check_sessions_per_user(live: Iterable[ManagedSession], owner: Principal, most: int | None) -> None:
    if most is None:
        return
    held = sum(1 for s in live if s.owner == owner.name)
    if held >= most:
        raise LimitReached(
            f"you have {held} live sessions, the most this server allows a user ({most}); "
            "delete one of them to start another."
        )


def _check_driver_memory(live: Iterable[ManagedSession], spec: SessionSpec, most_mb: int | None) -> None:
    if most_mb is None:
        return
    wanted = driver_memory_mb(spec)
    if wanted is None:
        raise Invalid(
            "conf spark.driver.memory must be a size such as 4g or 4096m, which this server counts against "
            f"its total driver memory (got {shown(spec.conf['spark.driver.memory'])})."
        )
    if wanted > most_mb:
        raise Invalid(
            f"the session asks for {wanted} MB of driver memory, more than this server allows all sessions "
            f"together ({most_mb} MB); ask for less driverMemory."
        )
    held = sum(driver_memory_mb(s.spec) or s.spec.effective_resources().driver_memory_mb for s in live)
    if held + wanted > most_mb:
        # How much the others hold is theirs to know: the sentence names only this request and the limit.
        raise LimitReached(
            f"the live sessions leave less driver memory than this session's {wanted} MB of the server's "
            f"total of {most_mb} MB; try again when sessions have ended, or ask for less."
        )
