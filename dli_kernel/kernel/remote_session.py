"""``RemoteSession``: one notebook's session, from background creation to deletion.

Blocking methods, meant to be called from the kernel's worker threads; every wait has a deadline and
ends in a sentence that says what happened.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dli_kernel.client import (
    ClientError,
    Conflict,
    DataFrameResult,
    NotFound,
    SessionInfo,
    SessionsClient,
    StatementInfo,
)
from dli_kernel.client.errors import with_note
from dli_kernel.client.polling import Pacer
from dli_kernel.client.results import require_arrow
from dli_kernel.protocol import DEFAULT_MAX_ROWS, EXT_WAIT
from dli_kernel.spec import SessionSpec

START_TIMEOUT = 600.0
LOG_EVERY = 0.5
HEARTBEAT_EVERY, MIN_BEAT_EVERY = 30.0, 1.0
# Seconds a statement GET may be held by a server that long-polls: short while someone wants progress,
# log lines or a cancel to go out (they happen between requests), longer when nobody does.
LONG_POLL, QUIET_LONG_POLL = 0.25, 5.0
# Seconds a session GET may be held while the session starts: the status line counts whole seconds.
START_LONG_POLL = 1.0
_UNFOLLOWED = (
    "Statement {statement} was started on session {session} and may still be running; this cell stopped "
    "following it, so its output is not shown here."
)


class SessionFailed(Exception):
    """The session could not start, or ended under the notebook; ``str()`` says why with its last log."""


@dataclass
class Progress:
    state: str
    progress: float
    elapsed: float


class RemoteSession:
    def __init__(self, client: SessionsClient, spec: SessionSpec) -> None:
        self.client = client
        self.spec = spec
        self.info: SessionInfo | None = None
        self._create_error: Exception | None = None
        self._created = threading.Event()
        self._closing = threading.Event()
        self._creator: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self.statements_run = 0
        # Where the next statement's log lines begin, carried from one statement to the next so that a
        # statement costs no log request before it starts: (session id, line, log size in bytes or None).
        self._log_mark: tuple[str, int, int | None] | None = None
        # Seen ready at least once (in a create or attach answer, or while waiting): if it ends now, it
        # "ended" rather than "failed to start".
        self.ever_ready = False
        self._waited = False  # wait_ready saw it ready: later calls trust that without a GET
        self.owned = True  # False for a session the notebook attached to: closing leaves it running

    @classmethod
    def attach(cls, client: SessionsClient, info: SessionInfo, spec: SessionSpec) -> RemoteSession:
        """Use a session someone else started; ``close`` stops using it without deleting it."""
        session = cls(client, spec)
        session.info, session.owned = info, False
        session.ever_ready = info.ready
        client.track(info.id)  # so an ambiguous submit on it can still be resolved
        session._created.set()
        session._start_heartbeat()
        return session

    @property
    def id(self) -> str | None:
        return self.info.id if self.info else None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Ask for the session in the background; ``wait_ready`` waits for it."""
        self._creator = threading.Thread(target=self._create, name="dli-session-create", daemon=True)
        self._creator.start()

    def _create(self) -> None:
        try:
            self.info = self.client.create_session(self.spec)
            self.ever_ready = self.info.ready
        except Exception as err:  # handed to whoever waits for the session
            self._create_error = err
        finally:
            self._created.set()
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        if self.info and not self._closing.is_set():
            self._heartbeat = threading.Thread(target=self._beat, name="dli-session-heartbeat", daemon=True)
            self._heartbeat.start()

    def beat_every(self) -> float:
        """Seconds between beats: every 30 s, or four per timeout when the session's (heartbeat or ttl) is
        shorter than two minutes, so that two lost beats in a row still leave it alive."""
        reported = self.info.raw.get("heartbeatTimeoutInSecond") if self.info else None
        heartbeat = self.spec.heartbeat_timeout_s
        if isinstance(reported, int) and not isinstance(reported, bool):
            heartbeat = reported  # an attached session's own, or what the server made of ours
        limits = [limit for limit in (heartbeat, self.spec.ttl_s or 0) if limit > 0]
        # Not below a second: another server's tiny timeout is kept up as well as a beat a second can.
        return max(MIN_BEAT_EVERY, min([HEARTBEAT_EVERY, *(limit / 4 for limit in limits)]))

    def _beat(self) -> None:
        """Any request naming the session is a heartbeat; this keeps an idle notebook's session alive."""
        while not self._closing.wait(self.beat_every()):
            info = self.info
            # A missed beat is retried; an ended session is reported by the next cell.
            with contextlib.suppress(ClientError):
                if info is not None:
                    self.client.get_session(info.id)

    def wait_ready(
        self, on_state: Callable[[Progress], None] | None = None, timeout: float = START_TIMEOUT
    ) -> SessionInfo:
        began = time.monotonic()
        if not self._created.wait(timeout):
            raise SessionFailed(f"the session was not created within {timeout:.0f} s.")
        if self._create_error is not None:
            raise SessionFailed(f"the session could not be created: {self._create_error}")
        info = self._info()
        if self._waited:
            # No GET on every cell's hot path: a session that ended since is found out by the statement
            # POST itself (404 or 409), which ``run`` reports as lost.
            return info
        pacer = Pacer(
            EXT_WAIT in self.client.server_extensions(), START_LONG_POLL, timeout - (time.monotonic() - began)
        )
        wait: float | None = None  # the first look answers at once
        while True:
            info = self.info = self.client.get_session(info.id, wait=wait)
            if on_state:
                on_state(Progress(info.state, 0.0, time.monotonic() - began))
            if info.ready:
                self.ever_ready = self._waited = True
                return info
            if info.ended:
                what = "ended" if self.ever_ready else "failed to start"
                raise SessionFailed(self._ended_message(info, what))
            if pacer.expired:
                raise SessionFailed(f"session {info.id} is still {info.state} after {timeout:.0f} s.")
            wait = pacer.pace()

    def close(self) -> None:
        """Delete the session (if this notebook started it), also while it is still being created.

        Safe to call twice.
        """
        self._closing.set()
        if self._creator is not None:
            self._creator.join(timeout=60)
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if self.info is not None and self.owned:
            # If the server is gone, its heartbeat reaper ends the session.
            with contextlib.suppress(ClientError):
                self.client.delete_session(self.info.id)
            self.info = None

    # -- statements ----------------------------------------------------------------------------

    def run(
        self,
        code: str,
        kind: str | None = None,
        max_rows: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_log: Callable[[list[str]], None] | None = None,
        interrupted: threading.Event | None = None,
    ) -> tuple[StatementInfo, bool]:
        """Run one statement to its end; (statement, whether it ended cancelled).

        ``interrupted`` set asks the server to cancel it; the final state still decides, so a statement
        that finished before its cancel landed comes back with its output.
        """
        session_id = self._info().id
        return self._follow(
            session_id,
            lambda: self.client.submit(session_id, code, kind=kind, max_rows=max_rows),
            on_progress,
            on_log,
            interrupted,
        )

    def run_dataframe(
        self,
        query: str,
        max_rows: int = DEFAULT_MAX_ROWS,
        kind: str = "sql",
        on_progress: Callable[[Progress], None] | None = None,
        on_log: Callable[[list[str]], None] | None = None,
        interrupted: threading.Event | None = None,
        *,
        on_bytes: Callable[[int, int], None] | None = None,
        to_parquet: str | None = None,
        available_memory: Callable[[], int | None] | None = None,
    ) -> tuple[StatementInfo, bool, DataFrameResult | None]:
        """Run ``query`` (SQL, or with ``kind="pyspark"`` an expression for a DataFrame) as ``run`` does and
        bring its rows back as a pandas DataFrame, through Arrow; or with ``to_parquet``, write them to that
        Parquet file and give a lazy dataset over it.

        Returns (statement, cancelled, result); result is None when the statement failed or was cancelled,
        and the statement's output then holds the error. Raises MissingDependency, before running
        anything, if pyarrow or pandas is missing here. ``on_bytes(read, total)`` follows the download;
        ResultTooLarge (before any transfer) if the frame would not fit in the bytes ``available_memory()``
        gives once the query is done (default: what is free here); ``interrupted`` set during the download
        stops it (TransferStopped).
        """
        require_arrow()
        session_id = self._info().id
        statement, cancelled = self._follow(
            session_id,
            lambda: self.client.submit_dataframe(session_id, query, max_rows, kind),
            on_progress,
            on_log,
            interrupted,
        )
        output = statement.output or {}
        if cancelled or statement.state != "available" or output.get("status") != "ok":
            return statement, cancelled, None
        result = self.client.dataframe_result(
            session_id,
            statement,
            progress=on_bytes,
            to_parquet=to_parquet,
            available_memory=None if available_memory is None else available_memory(),
            stop=None if interrupted is None else interrupted.is_set,
        )
        return statement, cancelled, result

    def _follow(
        self,
        session_id: str,
        submit: Callable[[], StatementInfo],
        on_progress: Callable[[Progress], None] | None,
        on_log: Callable[[list[str]], None] | None,
        interrupted: threading.Event | None,
    ) -> tuple[StatementInfo, bool]:
        """Submit a statement and follow it to its end: progress, log lines, cancel on ``interrupted``."""
        mark = self._log_start(session_id) if on_log else None
        self._log_mark = None  # whatever happens next, the old mark is used up
        try:
            statement = submit()
        except (NotFound, Conflict) as err:
            raise SessionFailed(self._lost_message(err)) from None
        self.statements_run += 1
        # Servers that long-poll answer the moment the statement is done; others are polled, starting
        # fast because most statements are done within milliseconds.
        hold = LONG_POLL if (on_progress or on_log or interrupted) else QUIET_LONG_POLL
        pacer = Pacer(EXT_WAIT in self.client.server_extensions(), hold)
        last_log = time.monotonic()
        cancel_sent = False
        while not statement.done:
            try:
                if interrupted is not None and interrupted.is_set() and not cancel_sent:
                    self.client.cancel(session_id, statement.id)
                    cancel_sent = True
                wait = pacer.pace()
                statement = self.client.get_statement(session_id, statement.id, wait=wait)
            except NotFound as err:
                raise SessionFailed(self._lost_message(err)) from None
            except ClientError as err:
                # Retries (GETs) gave up: the statement itself was sent once and goes on, unwatched.
                raise with_note(err, _UNFOLLOWED.format(statement=statement.id, session=session_id)) from None
            if on_progress and statement.state == "running":
                on_progress(Progress(statement.state, statement.progress, pacer.elapsed))
            if on_log and time.monotonic() - last_log > LOG_EVERY:
                mark = self._stream_log(session_id, mark, on_log, statement.log_size)
                last_log = time.monotonic()
        if on_log:
            self._log_mark = self._stream_log(session_id, mark, on_log, statement.log_size)
        # The final state decides, not the cancel: a statement that finished before its cancel landed
        # keeps its output.
        return statement, statement.state == "cancelled"

    def complete(self, code: str, cursor: int, kind: str) -> list[str]:
        if not self.info or not self.info.ready:
            return []
        try:
            return self.client.complete(self.info.id, code, kind, cursor)
        except ClientError:
            return []  # completion is a convenience: never an error in the notebook

    # -- helpers -------------------------------------------------------------------------------

    def _info(self) -> SessionInfo:
        if self.info is None:
            raise SessionFailed("this session was closed; the next cell starts a new one.")
        return self.info

    def _log_start(self, session_id: str) -> tuple[str, int, int | None] | None:
        """Where this statement's log lines begin: where the last one's ended, or else the log's end."""
        if self._log_mark is not None and self._log_mark[0] == session_id:
            return self._log_mark
        try:
            return session_id, self.client.logs(session_id, size=0).total, None
        except ClientError:
            return None

    def _stream_log(
        self,
        session_id: str,
        mark: tuple[str, int, int | None] | None,
        on_log: Callable[[list[str]], None],
        log_size: int | None,
    ) -> tuple[str, int, int | None] | None:
        """Hand new log lines to ``on_log``; the mark to go on from. A server that long-polls tells the
        log's size with the statement, and an unchanged size needs no request."""
        if mark is None:
            return None
        start, seen_size = mark[1], mark[2]
        if log_size is not None and log_size == seen_size:
            return mark
        try:
            page = self.client.logs(session_id, start=start, size=1000)
        except ClientError:
            return mark
        if page.lines:
            on_log(list(page.lines))
        end = page.start + len(page.lines)
        # The size was read before this request, so lines added since are never skipped; a log not read
        # to its end keeps no size, so the next call reads on.
        return session_id, end, log_size if end >= page.total else None

    def _lost_message(self, err: ClientError) -> str:
        session_id = self._info().id
        try:
            info = self.client.get_session(session_id)
        except ClientError:
            return f"session {session_id} is gone (it may have expired or the server restarted): {err}"
        return self._ended_message(info, "ended")

    def _ended_message(self, info: SessionInfo, what: str) -> str:
        tail = "\n".join(info.log[-10:])
        return f"session {info.id} {what} (state {info.state})." + (
            f" Its last log lines:\n{tail}" if tail else ""
        )
