"""The endpoints behind the routes: Livy's session and statement paths, served the same way under the DLI
prefix, where only the create request and the session's JSON differ (``Family``).

Each endpoint gathers what the request says on the event loop, then does its work (parsing the body, the
manager's calls, which take its lock, and file reads) in one worker thread, so a slow manager or a large
body never stalls other requests. Only a long-poll's wait happens on the loop.

Nothing that can fail comes after a change is made: the path is checked first (``_endpoint``), the body is
read in full before the manager is asked, and a ``Location`` is built from the path before the change, so
a request either changes nothing and says why, or changes what it asked and says so.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse

from dli_kernel import __version__
from dli_kernel.protocol import ARROW_STREAM_MIME, EXTENSIONS, STATEMENT_DONE
from dli_kernel.server.answers import JSONAnswer
from dli_kernel.server.links import BrowserLinks
from dli_kernel.server.longpoll import hold
from dli_kernel.server.manager import Invalid, ManagedSession, SessionManager, Statement
from dli_kernel.server.output_http import statement_response
from dli_kernel.server.params import (
    CompletionRequest,
    SessionFilter,
    StatementRequest,
    int_param,
    optional_int,
    parse_json,
    requested_session,
    wait_param,
)
from dli_kernel.server.principal import Principal
from dli_kernel.server.views import dli_session, livy_session, statement_json
from dli_kernel.spec import SessionSpec, is_project_id, shown

# The `livy` PyPI client switches to a legacy protocol below 0.5; we speak the current one.
LIVY_VERSION = "0.8.0"
DLI_PREFIX = "/v2.0/{project_id}"
LOG_CHUNK = 64 * 1024  # bytes of the driver log page read and sent at once


@dataclass(frozen=True)
class Family:
    """What differs between the Livy and the DLI paths."""

    name: str
    prefix: str
    parse_spec: Callable[[Any], SessionSpec]
    render: Callable[[ManagedSession, str], dict[str, Any]]
    public_id: Callable[[ManagedSession], int | str]  # the "id" of its session JSON


LIVY = Family("livy", "", SessionSpec.from_livy, livy_session, lambda session: session.id)
DLI = Family("dli", DLI_PREFIX, SessionSpec.from_dli, dli_session, lambda session: session.uuid)


def _manager(request: Request) -> SessionManager:
    return request.app.state.manager


def _base_url(request: Request) -> str:
    return request.app.state.base_url


def _viewer(request: Request) -> Principal:
    """Who sent the request (the token check put them there): the manager shows them only what they see."""
    user = request.user
    assert isinstance(user, Principal)
    return user


Endpoint = Callable[[Request, Family], Awaitable[Response]]


def _endpoint(handler: Endpoint) -> Endpoint:
    """``handler``, once the path's own parts are checked: a DLI project id that is none is refused
    before anything is read or made (it would be written back in a Location and in session JSON)."""

    @functools.wraps(handler)
    async def checked(request: Request, family: Family) -> Response:
        project_id = request.path_params.get("project_id")
        if project_id is not None and not is_project_id(project_id):
            raise Invalid(
                f"the project id {shown(project_id)} in the path is not one: a DLI project id is 1 to 64 "
                "ASCII letters, digits, '.', '_' and '-', starting with a letter or digit."
            )
        return await handler(request, family)

    return checked


def _sessions_path(request: Request, family: Family) -> str:
    """The path of the family's sessions, as a Location header can carry it (RFC 3986, in ASCII)."""
    parts = {key: quote(value, safe="") for key, value in request.path_params.items()}
    return f"{family.prefix.format(**parts)}/sessions"


def _find_statement(
    manager: SessionManager, session_id: str, statement_id: str, viewer: Principal
) -> tuple[ManagedSession, Statement]:
    session = requested_session(manager, session_id, viewer)
    return session, manager.statement(session, statement_id)


# -- the server ----------------------------------------------------------------------------------


async def version(request: Request) -> JSONAnswer:
    return JSONAnswer({"version": LIVY_VERSION, "dli_kernel": __version__, "extensions": list(EXTENSIONS)})


async def pool_status(request: Request) -> JSONAnswer:
    if not _viewer(request).admin:
        # Its counts move when anyone's session takes a pooled driver: on a shared server, that tells a
        # user that another made a session.
        return JSONAnswer({"msg": "the warm pool's status is for the server's admins."}, status_code=403)
    pool = _manager(request).pool
    if pool is None:
        return JSONAnswer({"size": 0, "ready": 0, "starting": 0})
    return JSONAnswer(await run_in_threadpool(pool.status))


# -- sessions ------------------------------------------------------------------------------------


@_endpoint
async def list_sessions(request: Request, family: Family) -> JSONAnswer:
    query = request.query_params
    start = int_param(query, "from", minimum=0, default=0)
    size = int_param(query, "size", minimum=1, default=100)
    wanted = SessionFilter.from_query(query)
    manager, base_url, viewer = _manager(request), _base_url(request), _viewer(request)

    def page() -> dict[str, Any]:
        sessions = manager.list(
            wanted.states,
            kind=wanted.kind,
            name=wanted.name,
            cluster=wanted.cluster,
            owner=wanted.owner,
            viewer=viewer,
        )
        rendered = [family.render(s, base_url) for s in sessions[start : start + size]]
        return {"from": start, "total": len(sessions), "sessions": rendered}

    return JSONAnswer(await run_in_threadpool(page))


@_endpoint
async def create_session(request: Request, family: Family) -> JSONAnswer:
    raw = await request.body()
    project_id = request.path_params.get("project_id")
    manager, base_url, owner = _manager(request), _base_url(request), _viewer(request)

    sessions_path = _sessions_path(request, family)

    def create() -> JSONAnswer:
        spec = family.parse_spec(parse_json(raw))
        session = manager.create(spec, project_id, owner)
        body = family.render(session, base_url)
        return JSONAnswer(body, status_code=201, headers={"Location": f"{sessions_path}/{body['id']}"})

    return await run_in_threadpool(create)


async def _session_after_wait(request: Request) -> ManagedSession:
    """The path's session, once its state changed or ``?wait=`` ran out (at once without one)."""
    manager = _manager(request)
    session = await run_in_threadpool(
        requested_session, manager, request.path_params["session_id"], _viewer(request)
    )
    wait = wait_param(request.query_params)
    if wait and not session.ended:
        await hold(request.app, manager, session, None, session.state, wait)
    return session


@_endpoint
async def get_session(request: Request, family: Family) -> JSONAnswer:
    session = await _session_after_wait(request)
    return JSONAnswer(await run_in_threadpool(family.render, session, _base_url(request)))


@_endpoint
async def session_state(request: Request, family: Family) -> JSONAnswer:
    session = await _session_after_wait(request)
    return JSONAnswer({"id": family.public_id(session), "state": session.state})


@_endpoint
async def delete_session(request: Request, family: Family) -> JSONAnswer:
    manager, viewer = _manager(request), _viewer(request)

    def delete() -> None:
        manager.delete(requested_session(manager, request.path_params["session_id"], viewer))

    await run_in_threadpool(delete)
    return JSONAnswer({"msg": "deleted"})


@_endpoint
async def session_log(request: Request, family: Family) -> JSONAnswer:
    manager, query, viewer = _manager(request), request.query_params, _viewer(request)

    def log() -> dict[str, Any]:
        session = requested_session(manager, request.path_params["session_id"], viewer)
        start = optional_int(query, "from", minimum=0)
        start, total, lines = session.log_lines(start, int_param(query, "size", minimum=0, default=100))
        return {"id": family.public_id(session), "from": start, "total": total, "log": lines}

    return JSONAnswer(await run_in_threadpool(log))


# -- a browser's pages (dli_kernel.server.links: the links that open them without a token) ---------------


@_endpoint
async def session_links(request: Request, family: Family) -> JSONAnswer:
    """``POST .../sessions/{id}/links``: signed browser links to the session's Spark UI and driver log."""
    manager, viewer, base_url = _manager(request), _viewer(request), _base_url(request)
    links: BrowserLinks = request.app.state.links

    def issue() -> dict[str, Any]:
        session = requested_session(manager, request.path_params["session_id"], viewer)
        return {"id": family.public_id(session), **links.issue(viewer, session, base_url)}

    return JSONAnswer(await run_in_threadpool(issue))


async def driver_log(request: Request) -> Response:
    """``GET /sessions/{id}/driver-log``: the session's whole log as text, or its last ``?lines=N``."""
    manager, viewer = _manager(request), _viewer(request)
    lines = optional_int(request.query_params, "lines", minimum=1)
    session = await run_in_threadpool(requested_session, manager, request.path_params["session_id"], viewer)
    headers = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
    if lines is not None:
        _, _, found = await run_in_threadpool(session.log_lines, None, lines)
        return PlainTextResponse("".join(line + "\n" for line in found), headers=headers)
    return StreamingResponse(
        _file_chunks(session.log_path), media_type="text/plain; charset=utf-8", headers=headers
    )


def _file_chunks(path: Path) -> Iterator[bytes]:
    """The file as it is now (Starlette reads a plain iterator in a worker thread): a log that grows
    meanwhile does not keep the answer open."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed when the generator ends
    except OSError:
        return
    with handle:
        left = os.fstat(handle.fileno()).st_size
        while left > 0:
            chunk = handle.read(min(LOG_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


# -- statements ----------------------------------------------------------------------------------


@_endpoint
async def list_statements(request: Request, family: Family) -> Response:
    manager, session_id, viewer = _manager(request), request.path_params["session_id"], _viewer(request)
    descending = request.query_params.get("order") == "desc"

    def page() -> Response:
        # In the worker thread too: a session's statements may hold megabytes of output to encode.
        session = requested_session(manager, session_id, viewer)
        statements = [statement_json(s) for s in list(session.statements)]
        if descending:
            statements.reverse()
        return statement_response({"total_statements": len(statements), "statements": statements})

    return await run_in_threadpool(page)


@_endpoint
async def submit_statement(request: Request, family: Family) -> JSONAnswer:
    raw = await request.body()
    manager, session_id, viewer = _manager(request), request.path_params["session_id"], _viewer(request)

    # The path as the client named the session (a name may be any text): encoded before the statement is.
    statements_path = f"{_sessions_path(request, family)}/{quote(session_id, safe='')}/statements"

    def submit() -> JSONAnswer:
        session = requested_session(manager, session_id, viewer)
        wanted = StatementRequest.from_body(parse_json(raw))
        statement = manager.submit(session, wanted.code, wanted.kind, wanted.max_rows, wanted.result_format)
        location = f"{statements_path}/{statement.id}"
        return JSONAnswer(statement_json(statement), status_code=201, headers={"Location": location})

    return await run_in_threadpool(submit)


@_endpoint
async def get_statement(request: Request, family: Family) -> Response:
    manager = _manager(request)
    session_id, statement_id = request.path_params["session_id"], request.path_params["statement_id"]
    session, statement = await run_in_threadpool(
        _find_statement, manager, session_id, statement_id, _viewer(request)
    )
    wait = wait_param(request.query_params)
    if not wait:
        # Encoded in the worker thread: an output may be a megabyte of JSON.
        return await run_in_threadpool(lambda: statement_response(statement_json(statement)))
    if statement.state not in STATEMENT_DONE:
        await hold(request.app, manager, session, statement, statement.state, wait)

    def answer() -> Response:
        # Only clients that long-poll get logSize: with it they skip log requests when nothing was logged.
        latest = manager.statement(session, statement_id)
        return statement_response({**statement_json(latest), "logSize": manager.log_size(session)})

    return await run_in_threadpool(answer)


@_endpoint
async def statement_result(request: Request, family: Family) -> FileResponse:
    manager, viewer = _manager(request), _viewer(request)

    def find_result() -> str:
        session, statement = _find_statement(
            manager, request.path_params["session_id"], request.path_params["statement_id"], viewer
        )
        return str(manager.arrow_result(session, statement))

    return FileResponse(await run_in_threadpool(find_result), media_type=ARROW_STREAM_MIME)


@_endpoint
async def cancel_statement(request: Request, family: Family) -> JSONAnswer:
    manager, viewer = _manager(request), _viewer(request)
    session_id, statement_id = request.path_params["session_id"], request.path_params["statement_id"]

    def cancel() -> None:
        manager.cancel(*_find_statement(manager, session_id, statement_id, viewer))

    await run_in_threadpool(cancel)
    return JSONAnswer({"msg": "canceled"})


@_endpoint
async def completion(request: Request, family: Family) -> JSONAnswer:
    raw = await request.body()
    manager, viewer = _manager(request), _viewer(request)

    def complete() -> list[str]:
        session = requested_session(manager, request.path_params["session_id"], viewer)
        wanted = CompletionRequest.from_body(parse_json(raw))
        return manager.completion(session, wanted.code, wanted.kind, wanted.cursor)

    return JSONAnswer({"candidates": await run_in_threadpool(complete)})
