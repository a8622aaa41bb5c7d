"""The embedded sessions server's ASGI app: its route table, its error answers and its token check.

Two path families serve one registry: Livy's (``/sessions/...``) and DLI's (``/v2.0/{project_id}/sessions
/...``). Both have the same routes; ``endpoints.Family`` holds what differs between them. Tencent DLC's
signed actions (``POST /``, ``dlc_actions``) serve the same registry too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Match, Route
from starlette.types import Lifespan, Scope

from dli_kernel.protocol import DLC_PATH, LINK_SECRET_FILE
from dli_kernel.server import endpoints, openapi, output_http
from dli_kernel.server.auth import TokenAuth
from dli_kernel.server.body_limit import BodyLimit
from dli_kernel.server.dlc_actions import DlcActions
from dli_kernel.server.endpoints import DLI, LIVY, Family
from dli_kernel.server.errors import EXCEPTION_HANDLERS
from dli_kernel.server.links import BrowserLinks, LinkSigner
from dli_kernel.server.manager import SessionManager
from dli_kernel.server.principal import operator_name
from dli_kernel.server.ui_proxy import ui_routes
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
        route(statement + "/output", output_http.statement_output, "GET"),
        route(statement + "/cancel", endpoints.cancel_statement, "POST"),
        route(session + "/completion", endpoints.completion, "POST"),
        route(session + "/links", endpoints.session_links, "POST"),
    ]


def body_limits(manager: SessionManager, large: list[Route]) -> Callable[[Scope], int]:
    """How many bytes of body a request may send: a statement's code (and DLC's actions, which carry it)
    may be long, anything else is small. Read at each request from the manager's settings."""

    def limit_for(scope: Scope) -> int:
        settings = manager.settings
        if any(route.matches(scope)[0] is Match.FULL for route in large):
            return settings.max_statement_body
        return settings.max_body

    return limit_for


def create_app(
    manager: SessionManager,
    token: str,
    base_url: str,
    lifespan: Lifespan[Starlette] | None = None,
    users: Users | None = None,
    signer: LinkSigner | None = None,
) -> Starlette:
    """The ASGI app; the caller owns the manager's start and close (``lifespan`` is where to do them).

    ``users`` says who may use it; without it, ``token`` opens everything as the server's OS user.
    ``signer`` signs browser links; by default with a key kept in the state dir, made on first need."""
    users = users or SingleToken(token, operator_name())
    signer = signer or LinkSigner(manager.settings.state_dir / LINK_SECRET_FILE)
    links = BrowserLinks(signer, users)
    livy, dli = session_routes(LIVY), session_routes(DLI)
    dlc = Route(DLC_PATH, DlcActions().dispatch, methods=["POST"])
    app = Starlette(
        routes=[
            Route("/version", endpoints.version, methods=["GET"]),
            Route("/pool", endpoints.pool_status, methods=["GET"]),
            Route("/openapi.json", openapi.serve, methods=["GET"]),
            *livy,
            *dli,
            # The browser's view of the log: the Livy path only, as the UI's (the links name it).
            Route("/sessions/{session_id}/driver-log", endpoints.driver_log, methods=["GET"]),
            *ui_routes(),
            dlc,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.base_url = base_url
    app.state.users = users  # DLC's actions find their signing key and user there
    app.state.links = links
    statements = [r for r in (*livy, *dli) if r.path.endswith("/statements") and "POST" in (r.methods or ())]
    # The last added runs first: the token check, then the body's size.
    app.add_middleware(BodyLimit, limit_for=body_limits(manager, [*statements, dlc]))
    app.add_middleware(TokenAuth, users=users, links=links)
    return app
