"""The embedded sessions server's ASGI app: its route table, its error answers and its token check.

Two path families serve one registry: Livy's (``/sessions/...``) and DLI's (``/v2.0/{project_id}/sessions
/...``). Both have the same routes; ``endpoints.Family`` holds what differs between them. Tencent DLC's
signed actions (``POST /``, ``dlc_actions``) serve the same registry too.
"""

from __future__ import annotations

import functools
import getpass
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Lifespan

from dli_kernel.protocol import DLC_PATH
from dli_kernel.server import endpoints
from dli_kernel.server.auth import TokenAuth
from dli_kernel.server.dlc_actions import DlcActions
from dli_kernel.server.endpoints import DLI, LIVY, Family
from dli_kernel.server.errors import EXCEPTION_HANDLERS
from dli_kernel.server.manager import SessionManager
from dli_kernel.server.users import SingleToken, Users


def session_routes(family: Family) -> list[Route]:
    """Every route of a path family, under its prefix."""
    sessions = family.prefix + "/sessions"
    session = sessions + "/{session_id}"
    statement = session + "/statements/{statement_id}"

    def route(path: str, endpoint: Callable[..., Any], method: str) -> Route:
        return Route(path, functools.partial(endpoint, family=family), methods=[method])

    return [
        route(sessions, endpoints.list_sessions, "GET"),
        route(sessions, endpoints.create_session, "POST"),
        route(session, endpoints.get_session, "GET"),
        route(session, endpoints.delete_session, "DELETE"),
        route(session + "/state", endpoints.session_state, "GET"),
        route(session + "/log", endpoints.session_log, "GET"),
        route(session + "/statements", endpoints.list_statements, "GET"),
        route(session + "/statements", endpoints.submit_statement, "POST"),
        route(statement, endpoints.get_statement, "GET"),
        route(statement + "/result", endpoints.statement_result, "GET"),
        route(statement + "/cancel", endpoints.cancel_statement, "POST"),
        route(session + "/completion", endpoints.completion, "POST"),
    ]


def create_app(
    manager: SessionManager,
    token: str,
    base_url: str,
    lifespan: Lifespan[Starlette] | None = None,
    users: Users | None = None,
) -> Starlette:
    """The ASGI app; the caller owns the manager's start and close (``lifespan`` is where to do them).

    ``users`` says who may use it; without it, ``token`` opens everything as the server's OS user."""
    app = Starlette(
        routes=[
            Route("/version", endpoints.version, methods=["GET"]),
            Route("/pool", endpoints.pool_status, methods=["GET"]),
            *session_routes(LIVY),
            *session_routes(DLI),
            Route(DLC_PATH, DlcActions(token).dispatch, methods=["POST"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.base_url = base_url
    app.add_middleware(TokenAuth, users=users or SingleToken(token, getpass.getuser()))
    return app
