"""Who sent each request: the user its token belongs to (``Users``), as ASGI middleware in front of every
route. The routes read that user (a ``Principal``) as ``request.user`` and show them only what they see.

A browser has no token: on a session's Spark UI and driver log pages alone, a signed link or the cookie it
left names the user instead (``dli_kernel.server.links``)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dli_kernel.protocol import DLC_PATH
from dli_kernel.server.links import BrowserLinks
from dli_kernel.server.principal import Principal
from dli_kernel.server.users import Users

REFUSED = (
    "missing or wrong token: send 'Authorization: Bearer <token>' (your own token from the server's "
    "operator, or the one in its server.json)."
)
DLI_PATHS = "/v2.0/"  # where DLI clients send the token as X-Auth-Token


class TokenAuth:
    """Every request carries the token: ``Authorization: Bearer``, or ``X-Auth-Token`` on DLI paths.

    DLC's actions (``POST /``) are the one exception: they carry a TC3 signature made with the signer's
    SecretKey, which their endpoint verifies (it finds the user there), and answer a bad one in DLC's own
    error shape.
    """

    def __init__(self, app: ASGIApp, users: Users, links: BrowserLinks | None = None) -> None:
        self.app = app
        self._users = users
        self._links = links

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._dlc_action(scope):
            principal: Principal | Response | None = self._principal(scope)
            if principal is None and self._links is not None:
                principal = self._links.admit(scope)
            if isinstance(principal, Response):  # a link's redirect, or why a link or cookie opens nothing
                await principal(scope, receive, send)
                return
            if principal is None:
                response = JSONResponse(
                    {"msg": REFUSED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
            scope["user"] = principal  # what Starlette's request.user reads
        await self.app(scope, receive, send)

    @staticmethod
    def _dlc_action(scope: Scope) -> bool:
        return scope["method"] == "POST" and scope["path"] == DLC_PATH

    def _principal(self, scope: Scope) -> Principal | None:
        headers = Headers(scope=scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        offered = credentials.strip() if scheme.lower() == "bearer" else ""
        if not offered and scope["path"].startswith(DLI_PATHS):
            offered = headers.get("x-auth-token", "")
        return self._users.bearer(offered) if offered else None
