"""``SessionsClient``: one interface over Livy, DLI, Tencent Cloud DLC and the embedded server.

Each call is spelled by the endpoint's dialect (``dialects.py``: paths or DLC's actions); this module keeps
what every backend shares.

Every request has a connect and a read timeout. Requests that are safe to repeat (GET, DELETE) are
retried with backoff on connection errors and 5xx. POSTs that create something are not: after an
ambiguous failure (the request may have reached the server), the client looks before it acts again, so
no statement runs twice and no session is started twice because of a retry.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from urllib3.exceptions import NewConnectionError

from dli_kernel.client import results
from dli_kernel.client.dialects import Call, Dialect, SessionLinks, make_dialect
from dli_kernel.client.errors import (
    ClientError,
    ConfigError,
    ConnectionFailed,
    NotFound,
    ServerError,
    StatementFailed,
    StatementTimeout,
    rejection_for,
    tls_failed,
    with_note,
)
from dli_kernel.client.landing import resolve_submit
from dli_kernel.client.models import LogPage, SessionInfo, StatementInfo
from dli_kernel.client.polling import Pacer
from dli_kernel.client.results import DataFrameResult
from dli_kernel.protocol import (
    ARROW_RESULT_MIME,
    ARROW_STREAM_MIME,
    DEFAULT_MAX_ROWS,
    ENDED_STATES,
    EXT_ARROW,
    EXT_LINKS,
    EXT_WAIT,
)
from dli_kernel.spec import SessionSpec

DEFAULT_TIMEOUT = (5.0, 60.0)  # connect, read (seconds)
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Seconds a backend's clock may run behind ours: a session made by a create sent at t says it was made at
# t - CLOCK_SKEW at the earliest.
CLOCK_SKEW = 300.0
_NOT_ADOPTED = (
    "No live session named {name!r} made by this request could be found, so none was adopted and none was "
    "started again; list the sessions to see."
)
LONG_POLL = 5.0  # seconds a wait_statement request may be held by a server that long-polls


class SessionsClient:
    """A client for one sessions endpoint. Holds one HTTP connection pool; close it when done."""

    def __init__(
        self,
        url: str | None,
        dialect: str | Dialect = "livy",
        *,
        project_id: str | None = None,
        region: str | None = None,
        auth: requests.auth.AuthBase | None = None,
        headers: dict[str, str] | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        verify: bool | str = True,
        extensions: Iterable[str] | None = None,
    ) -> None:
        """``extensions``: the server's additions to Livy to use (``wait``, ``arrow``); None asks the server
        (``GET /version``) once, when one is first wanted; ``()`` uses none, as against plain Livy.
        ``url`` may be None for the dlc dialect: Tencent Cloud's endpoint. ``region``: DLC's region."""
        self.dialect = dialect if isinstance(dialect, Dialect) else make_dialect(dialect, project_id, region)
        if not url:
            url = self.dialect.default_url
            if not url:
                raise ConfigError(f"the {self.dialect.name} dialect needs the endpoint's URL.")
        self.url = url.rstrip("/")
        # What messages and repr show: never a password written into the URL.
        self._shown_url = shown_url(self.url)
        self.timeout = timeout
        self.retry_delays = retry_delays
        self._http = requests.Session()
        self._http.auth = auth
        self._http.verify = verify
        # Livy with CSRF protection refuses non-GET requests without it; others ignore it.
        self._http.headers["X-Requested-By"] = "dli-kernel"
        self._http.headers.update(headers or {})
        self._last_statement: dict[str, int] = {}
        # DataFrame statements read through the dialect's own result call: (session, statement) -> max rows
        self._sql_results: dict[tuple[str, int], int] = {}
        self._extensions = None if extensions is None else frozenset(extensions)
        self._extensions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SessionsClient(url={self._shown_url!r}, dialect={self.dialect.name!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SessionsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions ------------------------------------------------------------------------------

    def create_session(self, spec: SessionSpec) -> SessionInfo:
        """Start a session. Give the spec a name: then an ambiguous failure can be resolved safely."""
        call = self.dialect.create_session(spec)
        sent_at = time.time()
        try:
            session = self.dialect.read_created(self._call(call), spec)
        except (ConnectionFailed, ServerError) as err:
            if not spec.name or not _ambiguous(err):
                raise
            # The server may have created it before the failure: find it rather than start a twin.
            found = find_created_session(self, spec.name, sent_at)
            if found is None:
                raise with_note(err, _NOT_ADOPTED.format(name=spec.name)) from None
            self.track(found.id)
            return found
        self._last_statement[session.id] = -1  # a new session has no statements
        return session

    def get_session(self, session_id: str | int, wait: float | None = None) -> SessionInfo:
        """The session; with ``wait`` (seconds) a server that long-polls answers once its state changes."""
        params, timeout = self._wait(wait)
        return self.dialect.read_session(self._call(self.dialect.get_session(session_id, params), timeout))

    def server_extensions(self) -> frozenset[str]:
        """What the server adds to Livy (``wait``, ``arrow``), as its ``GET /version`` says; asked once."""
        with self._extensions_lock:
            if self._extensions is None and not self.dialect.has_version:
                self._extensions = frozenset()
            if self._extensions is None:
                try:
                    # Not retried: a server that fails it is treated as one without extensions.
                    body = self._request("GET", "/version", retry=False)
                except ConnectionFailed:
                    return frozenset()  # not remembered: the next call asks again
                except ClientError:
                    body = {}  # no /version (DLI, older Livy): a plain server
                listed = body.get("extensions") if isinstance(body, dict) else None
                names = listed if isinstance(listed, list) else []
                self._extensions = frozenset(name for name in names if isinstance(name, str))
            return self._extensions

    def list_sessions(self, **filters: str | int) -> list[SessionInfo]:
        """Sessions on the endpoint; filters go to the server as query parameters (``from``, ``size``,
        ``state``, ``kind``, ``name``, ``cluster_name``, ``owner``) where it supports them (DLC: see
        ``DlcDialect.list_sessions``: it pages through the whole list and matches ``kind`` and ``owner``
        itself)."""
        return self.dialect.list_all(self._call, dict(filters))

    def delete_session(self, session_id: str | int) -> None:
        """End a session. Already gone counts as done (a retried DELETE may find it so)."""
        with contextlib.suppress(NotFound):
            self._call(self.dialect.delete_session(session_id))

    # -- statements ----------------------------------------------------------------------------

    def submit(
        self, session_id: str | int, code: str, kind: str | None = None, max_rows: int | None = None
    ) -> StatementInfo:
        """Start a statement; never sends the same code twice unless the first surely did not land."""
        return self._submit(session_id, code, self.dialect.statement_body(code, kind, max_rows))

    def _submit(self, session_id: str | int, code: str, body: dict[str, Any]) -> StatementInfo:
        key = str(session_id)
        call = self.dialect.submit(session_id, body)
        try:
            statement = self.dialect.read_statement(self._call(call))
        except (ConnectionFailed, ServerError) as err:
            if not _ambiguous(err):
                raise  # nothing reached the server; the caller may simply try again
            resolved = resolve_submit(
                self,
                session_id,
                code,
                err,
                self._last_statement.get(key),
                pauses=self.retry_delays,
                server_answer_means_not_recorded=self.dialect.error_means_not_recorded,
            )
            # None: it did not land, so sending it again is safe
            statement = resolved if resolved is not None else self.dialect.read_statement(self._call(call))
        self._last_statement[key] = statement.id
        return statement

    def track(self, session_id: str | int) -> None:
        """Learn a session's newest statement, so a later ambiguous submit can be resolved.

        Sessions this client created or submitted to are known already; call this after attaching to
        a session someone else started.
        """
        ids = [statement.id for statement in self.list_statements(session_id)]
        self._last_statement[str(session_id)] = max(ids, default=-1)

    def get_statement(
        self, session_id: str | int, statement_id: int, wait: float | None = None
    ) -> StatementInfo:
        """The statement; with ``wait`` (seconds) a server that long-polls holds the request until the
        statement's state changes (or it is done), and others answer at once."""
        params, timeout = self._wait(wait)
        call = self.dialect.get_statement(session_id, statement_id, params)
        return self.dialect.read_statement(self._call(call, timeout))

    def wait_statement(
        self, session_id: str | int, statement_id: int, timeout: float | None = None
    ) -> StatementInfo:
        """Wait for a statement to finish: long-polls where the server has them, else short, growing polls.

        Raises StatementTimeout if it is not done after ``timeout`` seconds (None: no limit); the statement
        goes on running.
        """
        pacer = Pacer(EXT_WAIT in self.server_extensions(), LONG_POLL, timeout)
        statement = self.get_statement(session_id, statement_id)
        while not statement.done:
            if pacer.expired:
                raise StatementTimeout(
                    f"statement {statement_id} of session {session_id} is still {statement.state} "
                    f"after {timeout:g} s."
                )
            statement = self.get_statement(session_id, statement_id, wait=pacer.pace())
        return statement

    # -- DataFrames ------------------------------------------------------------------------------

    def submit_dataframe(
        self, session_id: str | int, query: str, max_rows: int = DEFAULT_MAX_ROWS, kind: str = "sql"
    ) -> StatementInfo:
        """Start a statement whose result ``dataframe_result`` reads as a DataFrame.

        ``query`` is SQL, or with ``kind="pyspark"`` a Python expression for a Spark (or pandas) DataFrame
        in the session; ``max_rows`` caps the rows (-1: all). Servers with the ``arrow`` extension keep the
        result as an Arrow stream; on others the statement prints it base64-encoded.
        """
        results.require_arrow()  # before anything runs: a result nobody can read is not worth computing
        results.check_kind(kind)
        if kind == "sql" and self.dialect.has_sql_results:
            statement = self._submit(session_id, query, {"code": query, "kind": "sql"})
            self._sql_results[(str(session_id), statement.id)] = int(max_rows)
            return statement
        if EXT_ARROW in self.server_extensions():
            body = {"code": query, "kind": kind, "maxRows": int(max_rows), "resultFormat": "arrow"}
            return self._submit(session_id, query, body)
        code = results.inline_code(query, kind, max_rows)
        return self._submit(session_id, code, {"code": code, "kind": "pyspark"})

    def dataframe_result(
        self,
        session_id: str | int,
        statement: StatementInfo,
        *,
        progress: results.Progress | None = None,
        to_parquet: str | os.PathLike[str] | None = None,
        check_memory: bool = True,
        available_memory: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> DataFrameResult:
        """The DataFrame of a statement ``submit_dataframe`` started (options: ``results.read_result``)."""
        output = statement.output or {}
        # Taken before any failure is raised, so that failed queries leave nothing behind.
        max_rows = self._sql_results.pop((str(session_id), statement.id), None)
        if statement.state != "available" or output.get("status") != "ok":
            reason = (
                f"{output.get('ename')}: {output.get('evalue')}" if output.get("ename") else statement.state
            )
            raise StatementFailed(f"the query failed: {reason}", output or None)
        summary = (output.get("data") or {}).get(ARROW_RESULT_MIME)
        if to_parquet is not None:
            results.parquet_target(to_parquet)  # a path that cannot be written fails before the transfer
        # Transports that bring the rows whole, as a frame, before they can go to a file:
        if max_rows is not None:
            return results.to_file(self.dialect.sql_result(self._call, statement, max_rows), to_parquet)
        if summary is None:
            return results.to_file(results.parse_inline(output), to_parquet)
        if check_memory and to_parquet is None:
            results.check_fits(summary, available_memory)
        path = f"{self.dialect.prefix}/sessions/{session_id}/statements/{statement.id}/result"
        response = self._request("GET", path, stream=True)
        try:
            total = int(response.headers.get("Content-Length") or summary.get("bytes") or 0)
            frame, size = results.read_result(response.raw, summary, total, progress, to_parquet, stop)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            raise results.transfer_error(err, f"GET {self._shown_url}{path}", to_parquet) from None
        finally:
            response.close()
        total, truncated = int(summary["total"]), bool(summary["truncated"])
        return DataFrameResult(frame, total, truncated, "arrow", size, results.total_known(summary))

    def fetch_dataframe(
        self,
        session_id: str | int,
        query: str,
        max_rows: int = DEFAULT_MAX_ROWS,
        *,
        kind: str = "sql",
        timeout: float | None = None,
        **options: Any,
    ) -> DataFrameResult:
        """Run ``query`` in the session and return its rows as a pandas DataFrame (see ``submit_dataframe``;
        ``options``: see ``results.read_result``). Raises StatementFailed with the error if the query fails,
        and StatementTimeout (after cancelling it) if it runs longer than ``timeout`` seconds."""
        if options.get("to_parquet") is not None:
            results.parquet_target(options["to_parquet"])  # before the query runs: no cluster time wasted
        statement = self.submit_dataframe(session_id, query, max_rows, kind)
        try:
            statement = self.wait_statement(session_id, statement.id, timeout)
        except StatementTimeout:
            with contextlib.suppress(ClientError):
                self.cancel(session_id, statement.id)
            raise
        return self.dataframe_result(session_id, statement, **options)

    def list_statements(self, session_id: str | int) -> list[StatementInfo]:
        return self.dialect.read_statements(self._call(self.dialect.list_statements(session_id)))

    def cancel(self, session_id: str | int, statement_id: int) -> None:
        self._call(self.dialect.cancel(session_id, statement_id))

    def logs(self, session_id: str | int, start: int | None = None, size: int = 100) -> LogPage:
        """Lines of the session's log from line ``start`` (None: the last ``size``); ``size=0`` asks only
        for ``total``, the log's length in lines."""
        return self.dialect.log_page(self._call, session_id, start, size)

    def complete(self, session_id: str | int, code: str, kind: str, cursor: int) -> list[str]:
        """Completion candidates; none, without a request, where the backend has no completion (DLC)."""
        call = self.dialect.complete(session_id, code, kind, cursor)
        if call is None:
            return []
        reply = self._call(call)
        return list(reply.get("candidates") or [])

    def links(self, session_id: str | int) -> SessionLinks | None:
        """Links to the session's Spark UI and driver log that open in a browser without the token, for a
        while; None from a server without the ``links`` extension (its URLs are the session's own), or
        with an answer that says no lifetime (such links would open nothing)."""
        if EXT_LINKS not in self.server_extensions():
            return None
        call = self.dialect.links(session_id)
        links = None if call is None else SessionLinks.from_json(self._call(call))
        return links if links is not None and links.expires_in > 0 else None

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, call: Call, timeout: tuple[float, float] | None = None) -> Any:
        """Send ``call`` and return its answer's payload as the dialect reads it."""
        return self._request(
            call.method,
            call.path,
            json=call.json,
            params=call.params,
            retry=call.retry,
            timeout=timeout,
            headers=call.headers,
            label=call.label,
        )

    def _wait(self, wait: float | None) -> tuple[dict[str, Any] | None, tuple[float, float] | None]:
        """Query parameters and timeout for a GET that may be held ``wait`` seconds; plain servers never
        get the parameter."""
        if not wait or wait <= 0 or EXT_WAIT not in self.server_extensions():
            return None, None
        return {"wait": f"{wait:g}"}, (self.timeout[0], self.timeout[1] + wait)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        retry: bool | None = None,
        timeout: tuple[float, float] | None = None,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        label: str | None = None,
    ) -> Any:
        """The answer's JSON, or with ``stream`` the response itself, its body unread (close it)."""
        if retry is None:
            retry = method in ("GET", "DELETE")
        attempts = (*self.retry_delays, None) if retry else (None,)
        for delay in attempts:
            try:
                return self._send(method, path, json, params, timeout or self.timeout, stream, headers, label)
            except (ConnectionFailed, ServerError) as err:
                if delay is None or (isinstance(err, ServerError) and err.status not in _RETRY_STATUSES):
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        path: str,
        json: Any,
        params: dict[str, Any] | None,
        timeout: tuple[float, float],
        stream: bool = False,
        headers: dict[str, str] | None = None,
        label: str | None = None,
    ) -> Any:
        what = f"{label} at {self._shown_url}" if label else f"{method} {self._shown_url}{path}"
        sent_headers = dict(headers or {})
        if stream:
            sent_headers["Accept"] = ARROW_STREAM_MIME
        try:
            # No redirects: signed requests (AK/SK) are not re-signed by requests, and a token header
            # must not follow a redirect to another host.
            response = self._http.request(
                method,
                self.url + path,
                json=json,
                params=params,
                timeout=timeout,
                allow_redirects=False,
                headers=sent_headers or None,
                stream=stream,
                # Per request: requests lets REQUESTS_CA_BUNDLE override the session's CA bundle.
                verify=self._http.verify,
            )
        except requests.ConnectTimeout:
            raise _NotSent(f"{what}: could not connect within {timeout[0]:g} s.") from None
        except requests.ReadTimeout:
            raise ConnectionFailed(f"{what}: no answer within {timeout[1]:g} s.") from None
        except requests.exceptions.SSLError as err:
            raise tls_failed(what, err) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
            # The answer was cut short: the request reached the server and may have been carried out.
            raise ConnectionFailed(f"{what}: the answer broke off ({type(err).__name__}).") from None
        except requests.ConnectionError as err:
            if _never_connected(err):
                raise _NotSent(f"{what}: could not connect (is the server running?).") from None
            raise ConnectionFailed(f"{what}: the connection failed ({type(err).__name__}).") from None
        if response.is_redirect:
            target = shown_url(response.headers.get("Location", "?"))
            raise ClientError(f"{what}: the server redirects to {target}; configure that URL instead.")
        if response.status_code >= 400:
            message = f"{what}: {response.status_code} {_error_text(response)}"
            if response.status_code >= 500:
                raise ServerError(message, response.status_code)
            raise rejection_for(response.status_code)(message, response.status_code)
        if stream:
            return response
        try:
            body = response.json()
        except ValueError:
            raise ClientError(f"{what}: the answer is not JSON ({_snippet(response.text)}).") from None
        return self.dialect.unwrap(body, what)


class _NotSent(ConnectionFailed):
    """The request never reached the server, so trying it again cannot run anything twice."""


def shown_url(url: str) -> str:
    """``url`` without any ``user:password@`` part: what messages and reprs may show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL that cannot be parsed>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def find_created_session(client: SessionsClient, name: str, sent_at: float) -> SessionInfo | None:
    """The session an ambiguous create of ``name`` (sent at ``sent_at``, epoch seconds) may have made:
    live, with that name, made by the client's identity where known, and made no earlier than the request
    (less ``CLOCK_SKEW``) where the backend tells when. A dead namesake, or someone else's live one, is
    not it."""
    if client.dialect.names_are_ids:
        try:
            candidates = [client.get_session(name)]
        except NotFound:
            return None
    else:
        candidates = client.list_sessions(name=name)
    me = identity_of(client._http.auth)
    earliest_ms = (sent_at - CLOCK_SKEW) * 1000
    for info in candidates:
        created = info.raw.get("create_time")
        if (
            info.name == name
            and info.state not in ENDED_STATES
            and (me is None or info.owner is None or info.owner == me)
            and ((client.dialect.names_are_ids and created is None) or _at_or_after(created, earliest_ms))
        ):
            return info
    return None


def identity_of(auth: Any) -> str | None:
    """Who requests are made as, where the auth tells (Tencent Cloud: the SecretId); else None."""
    reveal = getattr(auth, "identity", None)
    return reveal() if callable(reveal) else None


def _at_or_after(moment_ms: Any, earliest_ms: float) -> bool:
    return isinstance(moment_ms, int | float) and not isinstance(moment_ms, bool) and moment_ms >= earliest_ms


def _ambiguous(err: ClientError) -> bool:
    return not isinstance(err, _NotSent)


def _never_connected(err: requests.ConnectionError) -> bool:
    """True when no connection was made at all (refused, no route, no such host): nothing was sent."""
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return isinstance(reason, NewConnectionError)


def _error_text(response: requests.Response) -> str:
    """The server's reason: Livy's ``{"msg"}``, a bare JSON string, or the text of an HTML page."""
    try:
        body = response.json()
    except ValueError:
        return _snippet(response.text) or response.reason or "no reason given"
    if isinstance(body, dict):
        for key in ("msg", "message", "error_msg", "Message", "error"):
            if isinstance(body.get(key), str):
                return body[key]
        return _snippet(str(body))
    return _snippet(str(body))


def _snippet(text: str, limit: int = 200) -> str:
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text))
    plain = " ".join(plain.split())
    return plain if len(plain) <= limit else plain[: limit - 1] + "…"
