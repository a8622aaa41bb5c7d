"""How each backend spells the uniform calls: the one seam between ``SessionsClient`` and a wire form.

A dialect turns each call (create, get, list, delete a session; submit, get, list, cancel a statement; the
log; completion) into a :class:`Call`, and turns the answer back into the client's models. The client
keeps what is the same everywhere: timeouts, retries, never sending a statement twice, waiting.

``RestDialect`` speaks Livy's paths (Livy, and with a ``/v2.0/{project}`` prefix DLI and the embedded
server); ``dli_kernel.client.dlc.DlcDialect`` speaks Tencent Cloud DLC's signed actions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dli_kernel.client.errors import ConfigError
from dli_kernel.client.models import LogPage, SessionInfo, StatementInfo
from dli_kernel.spec import SessionSpec

DIALECTS = ("livy", "dli", "dlc", "local")
LOCAL_PROJECT = "local"
LOCAL_CLUSTER = "local"

# Sends one call and returns its answer's JSON (already unwrapped by the dialect); what a dialect that
# needs several requests for one result (DLC's paged SQL results) is given.
Send = Callable[["Call"], Any]


@dataclass(frozen=True)
class SessionLinks:
    """Browser links to a session's pages that open without the token, for ``expires_in`` seconds (the
    embedded server's ``links`` extension); a page the session has none of now is None."""

    spark_ui: str | None
    driver_log: str | None
    expires_in: int

    @classmethod
    def from_json(cls, body: Any) -> SessionLinks:
        body = body if isinstance(body, dict) else {}

        def url(name: str) -> str | None:
            value = body.get(name)
            return value if isinstance(value, str) and value.startswith(("http://", "https://")) else None

        expires = body.get("expiresIn")
        valid = isinstance(expires, int) and not isinstance(expires, bool) and expires > 0
        return cls(url("sparkUiUrl"), url("driverLogUrl"), expires if valid else 0)


@dataclass(frozen=True)
class Call:
    """One request: ``retry`` says whether sending it twice is harmless (None: GET and DELETE are)."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    retry: bool | None = None
    label: str | None = None  # what messages call it instead of the method (DLC: the action's name)


class Dialect:
    """The uniform calls; each method returns the Call, and ``read_*`` turn answers into models."""

    name: str = ""
    prefix: str = ""
    # The embedded server's additions: `maxRows` on statements, `GET /version`, long-polls, Arrow results.
    extensions: bool = False
    # GET of a session by its name works (Livy and DLI): an ambiguous create is resolved that way.
    names_are_ids: bool = True
    # ``GET /version`` may be asked for the server's extensions.
    has_version: bool = True
    # The endpoint when none is given (DLC: Tencent Cloud's); None: a URL is required.
    default_url: str | None = None
    # SQL DataFrames come from the backend's own result call (``sql_result``), not from printed rows.
    has_sql_results: bool = False
    # A 5xx answer to a statement create means the backend recorded nothing, so after the statement list
    # shows it absent it may be sent again (Livy, DLI, the embedded server answer only after recording).
    # DLC's InternalError may come from the gateway in front of Livy while the statement is being made.
    error_means_not_recorded: bool = True

    def unwrap(self, body: Any, what: str) -> Any:
        """The answer's payload; raises the client's error for an error the answer carries."""
        return body

    def create_session(self, spec: SessionSpec) -> Call:
        raise NotImplementedError

    def get_session(self, session_id: str | int, params: dict[str, Any] | None = None) -> Call:
        raise NotImplementedError

    def list_sessions(self, filters: dict[str, Any]) -> Call:
        raise NotImplementedError

    def delete_session(self, session_id: str | int) -> Call:
        raise NotImplementedError

    def read_session(self, body: Any) -> SessionInfo:
        raise NotImplementedError

    def read_created(self, body: Any, spec: SessionSpec) -> SessionInfo:
        """The answer to ``create_session(spec)``."""
        return self.read_session(body)

    def read_sessions(self, body: Any) -> list[SessionInfo]:
        raise NotImplementedError

    def list_all(self, send: Send, filters: dict[str, Any]) -> list[SessionInfo]:
        """The sessions ``filters`` select: one request, unless the backend pages its lists (DLC)."""
        return self.read_sessions(send(self.list_sessions(filters)))

    def submit(self, session_id: str | int, body: dict[str, Any]) -> Call:
        """``body`` is the statement in Livy's form: ``code``, and maybe ``kind``, ``maxRows``..."""
        raise NotImplementedError

    def get_statement(
        self, session_id: str | int, statement_id: int, params: dict[str, Any] | None = None
    ) -> Call:
        raise NotImplementedError

    def list_statements(self, session_id: str | int) -> Call:
        raise NotImplementedError

    def cancel(self, session_id: str | int, statement_id: int) -> Call:
        raise NotImplementedError

    def read_statement(self, body: Any) -> StatementInfo:
        raise NotImplementedError

    def read_statements(self, body: Any) -> list[StatementInfo]:
        raise NotImplementedError

    def logs(self, session_id: str | int, start: int | None, size: int) -> Call:
        raise NotImplementedError

    def read_logs(self, body: Any, start: int | None, size: int) -> LogPage:
        raise NotImplementedError

    def log_page(self, send: Send, session_id: str | int, start: int | None, size: int) -> LogPage:
        """The log page: one request, unless the backend needs more (DLC tells no total)."""
        return self.read_logs(send(self.logs(session_id, start, size)), start, size)

    def complete(self, session_id: str | int, code: str, kind: str, cursor: int) -> Call | None:
        """The completion request, or None when the backend has no completion."""
        return None

    def links(self, session_id: str | int) -> Call | None:
        """The request for a session's signed browser links, or None where the backend has none."""
        return None

    def statement_body(self, code: str, kind: str | None, max_rows: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code}
        if kind:
            body["kind"] = kind
        if max_rows is not None and self.extensions:
            body["maxRows"] = max_rows
        return body

    def sql_result(self, send: Send, statement: StatementInfo, max_rows: int) -> Any:
        """A SQL statement's rows as a DataFrameResult, read through the backend's own result call; None
        when the backend has none (its statements print their results)."""
        return None


@dataclass(frozen=True)
class RestDialect(Dialect):
    """Livy's paths under ``prefix``: Livy (no prefix), DLI and the embedded server (``/v2.0/{project}``)."""

    name: str
    prefix: str
    extensions: bool = False

    def create_body(self, spec: SessionSpec) -> dict[str, Any]:
        if self.name == "livy":
            return spec.to_livy()
        if self.name == "local" and not spec.cluster_name:
            spec = spec.replace(cluster_name=LOCAL_CLUSTER)
        return spec.to_dli()

    def _sessions(self) -> str:
        return f"{self.prefix}/sessions"

    def _session(self, session_id: str | int) -> str:
        return f"{self._sessions()}/{session_id}"

    def create_session(self, spec: SessionSpec) -> Call:
        return Call("POST", self._sessions(), json=self.create_body(spec), retry=False)

    def get_session(self, session_id: str | int, params: dict[str, Any] | None = None) -> Call:
        return Call("GET", self._session(session_id), params=params)

    def list_sessions(self, filters: dict[str, Any]) -> Call:
        params = {key.rstrip("_"): value for key, value in filters.items() if value is not None}
        return Call("GET", self._sessions(), params=params)

    def delete_session(self, session_id: str | int) -> Call:
        return Call("DELETE", self._session(session_id))

    def read_session(self, body: Any) -> SessionInfo:
        return SessionInfo.from_json(body)

    def read_sessions(self, body: Any) -> list[SessionInfo]:
        return [SessionInfo.from_json(item) for item in body.get("sessions", [])]

    def submit(self, session_id: str | int, body: dict[str, Any]) -> Call:
        return Call("POST", f"{self._session(session_id)}/statements", json=body, retry=False)

    def get_statement(
        self, session_id: str | int, statement_id: int, params: dict[str, Any] | None = None
    ) -> Call:
        return Call("GET", f"{self._session(session_id)}/statements/{statement_id}", params=params)

    def list_statements(self, session_id: str | int) -> Call:
        return Call("GET", f"{self._session(session_id)}/statements")

    def cancel(self, session_id: str | int, statement_id: int) -> Call:
        # Cancelling twice is harmless, so this POST may be retried.
        return Call("POST", f"{self._session(session_id)}/statements/{statement_id}/cancel", retry=True)

    def read_statement(self, body: Any) -> StatementInfo:
        return StatementInfo.from_json(body)

    def read_statements(self, body: Any) -> list[StatementInfo]:
        return [StatementInfo.from_json(item) for item in body.get("statements", [])]

    def logs(self, session_id: str | int, start: int | None, size: int) -> Call:
        params: dict[str, int] = {"size": size}
        if start is not None:
            params["from"] = start
        return Call("GET", f"{self._session(session_id)}/log", params=params)

    def read_logs(self, body: Any, start: int | None, size: int) -> LogPage:
        lines = tuple(body.get("log") or ())
        return LogPage(
            start=int(body.get("from") or 0), total=int(body.get("total") or len(lines)), lines=lines
        )

    def complete(self, session_id: str | int, code: str, kind: str, cursor: int) -> Call | None:
        body = {"code": code, "kind": kind, "cursor": cursor}
        return Call("POST", f"{self._session(session_id)}/completion", json=body, retry=True)

    def links(self, session_id: str | int) -> Call | None:
        # Asking twice only signs two links: harmless, so it may be retried.
        return Call("POST", f"{self._session(session_id)}/links", retry=True)


def make_dialect(name: str, project_id: str | None = None, region: str | None = None) -> Dialect:
    """The dialect called ``name``; DLI needs the project id its paths carry, DLC the region it signs."""
    if name == "livy":
        return RestDialect("livy", "")
    if name == "dli":
        if not project_id:
            raise ConfigError(
                "the dli dialect needs a project id (DLI_KERNEL_PROJECT_ID or project_id in the config)."
            )
        return RestDialect("dli", f"/v2.0/{project_id}")
    if name == "local":
        return RestDialect("local", f"/v2.0/{LOCAL_PROJECT}", extensions=True)
    if name == "dlc":
        from dli_kernel.client.dlc import DlcDialect

        if not region:
            raise ConfigError(
                "the dlc dialect needs a region such as ap-guangzhou (DLI_KERNEL_REGION or region in the "
                "config)."
            )
        return DlcDialect(region)
    raise ConfigError(f"dialect must be one of {', '.join(DIALECTS)} (got {name!r}).")
