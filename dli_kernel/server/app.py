"""HTTP routes of the embedded sessions server: the Livy paths and the DLI paths over one registry.

The two families differ only in where they live, how a create request is read and how a session is
written back (``Family``); every other route is shared and follows Livy's shapes and status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dli_kernel import __version__
from dli_kernel.protocol import ARROW_STREAM_MIME, DEFAULT_MAX_ROWS, EXTENSIONS, MAX_WAIT, STATEMENT_DONE
from dli_kernel.server.manager import (
    Invalid,
    ManagedSession,
    ManagerError,
    SessionManager,
    Statement,
    UnknownId,
    WrongState,
)
from dli_kernel.spec import SessionSpec, SpecError, format_memory, unknown_names

log = logging.getLogger("dli_kernel.server")

LOG_LINES_IN_SESSION = 10
STATEMENT_FIELDS = ("code", "kind", "maxRows", "resultFormat")
# What this server adds to Livy, listed in GET /version for clients that look; plain Livy clients never do:
# - wait: GET on a statement or session with ?wait=<seconds> answers as soon as its state changes;
# - arrow: "resultFormat": "arrow" on a statement, and GET .../statements/{id}/result for the stream.
DLI_PREFIX = "/v2.0/{project_id}"


@dataclass(frozen=True)
class Family:
    """What differs between the Livy and the DLI paths."""

    name: str
    prefix: str
    parse_spec: Callable[[Any], SessionSpec]
    render: Callable[[ManagedSession, str], dict[str, Any]]


def _resources(session: ManagedSession) -> dict[str, Any]:
    """The fields both families report: effective resources (tier merged with overrides) and the rest."""
    spec, res = session.spec, session.spec.effective_resources()
    return {
        "sc_type": spec.reported_sc_type,
        "cluster_name": spec.cluster_name,
        "driverMemory": format_memory(res.driver_memory_mb),
        "driverCores": res.driver_cores,
        "executorMemory": format_memory(res.executor_memory_mb),
        "executorCores": res.executor_cores,
        "numExecutors": res.num_executors,
        "conf": dict(spec.conf),
        "jars": list(spec.jars),
        "pyFiles": list(spec.py_files),
        "files": list(spec.files),
        "archives": list(spec.archives),
        "modules": list(spec.modules),
        "heartbeatTimeoutInSecond": spec.heartbeat_timeout_s,
        "ttl": spec.ttl_s,
        "idleTimeout": spec.idle_timeout_s,
        "create_time": session.created,
        "update_time": session.updated,
    }


def livy_session(session: ManagedSession, base_url: str) -> dict[str, Any]:
    return {
        "id": session.id,
        "name": session.spec.name,
        "appId": session.app_id,
        "owner": session.owner,
        "proxyUser": session.spec.proxy_user,
        "state": session.state,
        "kind": session.spec.kind,
        "appInfo": {"driverLogUrl": f"{base_url}/sessions/{session.id}/log", "sparkUiUrl": session.ui_url},
        "log": session.log_lines(size=LOG_LINES_IN_SESSION)[2],
        "queue": session.spec.cluster_name,
        "uuid": session.uuid,
        **_resources(session),
    }


def dli_session(session: ManagedSession, base_url: str) -> dict[str, Any]:
    return {
        "id": session.uuid,
        "appId": session.app_id,
        "name": session.spec.name,
        "owner": session.owner,
        "proxyUser": session.spec.proxy_user,
        "kind": session.spec.kind,
        "log": session.log_lines(size=LOG_LINES_IN_SESSION)[2],
        "state": session.state,
        "livy_id": session.id,
        "project_id": session.project_id,
        "appInfo": {"driverLogUrl": f"{base_url}/sessions/{session.id}/log", "sparkUiUrl": session.ui_url},
        **_resources(session),
    }


LIVY = Family("livy", "", SessionSpec.from_livy, livy_session)
DLI = Family("dli", DLI_PREFIX, SessionSpec.from_dli, dli_session)


def statement_json(statement: Statement) -> dict[str, Any]:
    return {
        "id": statement.id,
        "code": statement.code,
        "kind": statement.kind,
        "state": statement.state,
        "output": statement.output,
        "progress": statement.progress,
        "started": statement.started,
        "completed": statement.completed,
    }


# -- request helpers ----------------------------------------------------------------------------


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as err:
        raise Invalid(f"the request body is not valid JSON: {err}.") from None


def _int_param(request: Request, name: str, default: int | None, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise Invalid(f"query parameter {name!r} must be an integer >= {minimum} (got {raw!r}).")
    return value


def _wait_param(request: Request) -> float:
    """``?wait=`` in seconds (fractions allowed), capped at MAX_WAIT; 0 when not given."""
    raw = request.query_params.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise Invalid(f"query parameter 'wait' must be a number of seconds >= 0 (got {raw!r}).")
    return min(value, MAX_WAIT)


async def _hold(
    request: Request, session: ManagedSession, statement: Statement | None, seen: str, seconds: float
) -> None:
    """Return once the statement (or the session) is no longer in state ``seen``, after ``seconds``, or
    when the server begins to stop, whichever comes first. The manager's threads wake us through the
    event loop, so a held request costs no thread."""
    thing = session if statement is None else statement
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(changed.set)

    stopping: asyncio.Event | None = getattr(request.app.state, "stopping", None)
    with _manager(request).watch(session, statement, wake):
        if thing.state != seen:
            return
        waiters = [asyncio.ensure_future(changed.wait())]
        if stopping is not None:
            waiters.append(asyncio.ensure_future(stopping.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def release_held_requests(app: Starlette) -> None:
    """End every long-poll now (the server is stopping). Safe from a signal handler or another thread."""
    loop, stopping = getattr(app.state, "loop", None), getattr(app.state, "stopping", None)
    if loop is not None and stopping is not None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stopping.set)


def prepare_held_requests(app: Starlette) -> None:
    """Call on the event loop at start-up, so that ``release_held_requests`` can reach it."""
    app.state.loop = asyncio.get_running_loop()
    app.state.stopping = asyncio.Event()


def _manager(request: Request) -> SessionManager:
    return request.app.state.manager


def _session(request: Request) -> ManagedSession:
    """The session the path names; every such request counts as a heartbeat."""
    manager = _manager(request)
    session = manager.get(request.path_params["session_id"])
    manager.touch(session)
    return session


def _render(request: Request, family: Family, session: ManagedSession) -> dict[str, Any]:
    return family.render(session, request.app.state.base_url)


# -- endpoints ----------------------------------------------------------------------------------


async def version(request: Request) -> JSONResponse:
    # The `livy` PyPI client switches to a legacy protocol below 0.5; we speak the current one.
    return JSONResponse({"version": "0.8.0", "dli_kernel": __version__, "extensions": list(EXTENSIONS)})


async def pool_status(request: Request) -> JSONResponse:
    pool = _manager(request).pool
    return JSONResponse(pool.status() if pool else {"size": 0, "ready": 0, "starting": 0})


async def list_sessions(request: Request, family: Family) -> JSONResponse:
    start = _int_param(request, "from", 0, 0)
    size = _int_param(request, "size", 100, 1)
    params = request.query_params
    states = [s for s in params.get("state", "").split(",") if s]
    sessions = _manager(request).list(
        states=states,
        kind=params.get("kind"),
        name=params.get("name"),
        cluster=params.get("cluster_name") or params.get("queue"),
        owner=params.get("owner"),
    )
    page = sessions[start : start + size]
    return JSONResponse(
        {"from": start, "total": len(sessions), "sessions": [_render(request, family, s) for s in page]}
    )


async def create_session(request: Request, family: Family) -> JSONResponse:
    spec = family.parse_spec(await _body(request))
    session = await run_in_threadpool(_manager(request).create, spec, request.path_params.get("project_id"))
    body = _render(request, family, session)
    location = f"{family.prefix.format(**request.path_params)}/sessions/{body['id']}"
    return JSONResponse(body, status_code=201, headers={"Location": location})


async def get_session(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    wait, seen = _wait_param(request), session.state
    if wait and not session.ended:
        await _hold(request, session, None, seen, wait)
    return JSONResponse(_render(request, family, session))


async def session_state(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    wait, seen = _wait_param(request), session.state
    if wait and not session.ended:
        await _hold(request, session, None, seen, wait)
    return JSONResponse({"id": _render(request, family, session)["id"], "state": session.state})


async def delete_session(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    await run_in_threadpool(_manager(request).delete, session)
    return JSONResponse({"msg": "deleted"})


async def session_log(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    start = _int_param(request, "from", None, 0)
    size = _int_param(request, "size", 100, 0)
    start, total, lines = session.log_lines(start, size)
    return JSONResponse(
        {"id": _render(request, family, session)["id"], "from": start, "total": total, "log": lines}
    )


async def list_statements(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    statements = [statement_json(s) for s in session.statements]
    if request.query_params.get("order") == "desc":
        statements.reverse()
    return JSONResponse({"total_statements": len(statements), "statements": statements})


async def submit_statement(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object with a 'code' string.")
    unknown = sorted(set(body) - set(STATEMENT_FIELDS))
    if unknown:
        raise Invalid(f"{unknown_names(unknown, STATEMENT_FIELDS)}.")
    code, kind, max_rows = body.get("code"), body.get("kind"), body.get("maxRows", DEFAULT_MAX_ROWS)
    if not isinstance(code, str):
        raise Invalid("'code' is required and must be a string.")
    if kind is not None and not isinstance(kind, str):
        raise Invalid(f"'kind' must be a string such as 'pyspark', 'spark' or 'sql' (got {kind!r}).")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < -1:
        raise Invalid(f"'maxRows' must be an integer >= 0, or -1 for all rows (got {max_rows!r}).")
    result_format = body.get("resultFormat", "json")
    if not isinstance(result_format, str):
        raise Invalid(f"'resultFormat' must be 'json' or 'arrow' (got {result_format!r}).")
    statement = _manager(request).submit(session, code, kind, max_rows, result_format)
    location = f"{family.prefix.format(**request.path_params)}/sessions/{request.path_params['session_id']}"
    return JSONResponse(
        statement_json(statement),
        status_code=201,
        headers={"Location": f"{location}/statements/{statement.id}"},
    )


async def get_statement(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    manager = _manager(request)
    statement_id = request.path_params["statement_id"]
    statement = await run_in_threadpool(manager.statement, session, statement_id)
    wait, seen = _wait_param(request), statement.state
    if not wait:
        return JSONResponse(statement_json(statement))
    if seen not in STATEMENT_DONE:
        await _hold(request, session, statement, seen, wait)
        statement = await run_in_threadpool(manager.statement, session, statement_id)
    # Only clients that long-poll get it: with it they skip log requests when nothing was logged.
    return JSONResponse({**statement_json(statement), "logSize": manager.log_size(session)})


async def statement_result(request: Request, family: Family) -> FileResponse:
    session = _session(request)
    manager = _manager(request)
    statement = manager.statement(session, request.path_params["statement_id"])
    return FileResponse(manager.arrow_result(session, statement), media_type=ARROW_STREAM_MIME)


async def cancel_statement(request: Request, family: Family) -> JSONResponse:
    manager = _manager(request)
    session = _session(request)
    statement = manager.statement(session, request.path_params["statement_id"])
    manager.cancel(session, statement)
    return JSONResponse({"msg": "canceled"})


async def completion(request: Request, family: Family) -> JSONResponse:
    session = _session(request)
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise Invalid(
            "the request body must be a JSON object with a 'code' string (and optional kind, cursor)."
        )
    code = body["code"]
    cursor = body.get("cursor", len(code))
    if isinstance(cursor, str) and cursor.isdigit():
        cursor = int(cursor)  # Livy's own client sends it as a string
    if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(code):
        raise Invalid(f"'cursor' must be an integer between 0 and the length of code (got {cursor!r}).")
    kind = body.get("kind")
    candidates = await run_in_threadpool(_manager(request).completion, session, code, kind, cursor)
    return JSONResponse({"candidates": candidates})


def _routes(family: Family) -> list[Route]:
    p = family.prefix + "/sessions"
    s = p + "/{session_id}"

    def route(path: str, endpoint: Callable, method: str) -> Route:
        return Route(path, functools.partial(endpoint, family=family), methods=[method])

    return [
        route(p, list_sessions, "GET"),
        route(p, create_session, "POST"),
        route(s, get_session, "GET"),
        route(s, delete_session, "DELETE"),
        route(s + "/state", session_state, "GET"),
        route(s + "/log", session_log, "GET"),
        route(s + "/statements", list_statements, "GET"),
        route(s + "/statements", submit_statement, "POST"),
        route(s + "/statements/{statement_id}", get_statement, "GET"),
        route(s + "/statements/{statement_id}/result", statement_result, "GET"),
        route(s + "/statements/{statement_id}/cancel", cancel_statement, "POST"),
        route(s + "/completion", completion, "POST"),
    ]


# -- errors and auth ----------------------------------------------------------------------------


def _error(status: int) -> Callable:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"msg": str(exc)}, status_code=status)

    return handler


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        msg = f"no such endpoint: {request.method} {request.url.path}."
    elif exc.status_code == 405:
        msg = f"method {request.method} is not allowed on {request.url.path}."
    else:
        msg = str(exc.detail)
    return JSONResponse({"msg": msg}, status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"msg": f"internal server error ({type(exc).__name__}); see the server log."}, 500)


class TokenAuth:
    """Every request carries the token: ``Authorization: Bearer``, or ``X-Auth-Token`` on DLI paths."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            response = JSONResponse(
                {
                    "msg": "missing or wrong token: send 'Authorization: Bearer <token>' (the token is in "
                    "the server's server.json)."
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        offered = credentials.strip() if scheme.lower() == "bearer" else ""
        if not offered and scope["path"].startswith("/v2.0/"):
            offered = headers.get("x-auth-token", "")
        return bool(offered) and hmac.compare_digest(offered.encode(), self._token)


def create_app(manager: SessionManager, token: str, base_url: str) -> Starlette:
    """The ASGI app; the caller owns the manager's start and close."""
    app = Starlette(
        routes=[
            Route("/version", version, methods=["GET"]),
            Route("/pool", pool_status, methods=["GET"]),
            *_routes(LIVY),
            *_routes(DLI),
        ],
        exception_handlers={
            SpecError: _error(400),
            Invalid: _error(400),
            UnknownId: _error(404),
            WrongState: _error(409),
            ManagerError: _error(400),
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.manager = manager
    app.state.base_url = base_url
    app.add_middleware(TokenAuth, token=token)
    return app
