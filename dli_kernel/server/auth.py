"""The server's token check, as ASGI middleware in front of every route."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dli_kernel.protocol import DLC_PATH

REFUSED = (
    "missing or wrong token: send 'Authorization: Bearer <token>' (the token is in the server's server.json)."
)
DLI_PATHS = "/v2.0/"  # where DLI clients send the token as X-Auth-Token


class TokenAuth:
    """Every request carries the token: ``Authorization: Bearer``, or ``X-Auth-Token`` on DLI paths.

    DLC's actions (``POST /``) are the one exception: they carry a TC3 signature made with the token,
    which their endpoint verifies, and answer a bad one in DLC's own error shape.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._dlc_action(scope) and not self._authorized(scope):
            response = JSONResponse({"msg": REFUSED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _dlc_action(scope: Scope) -> bool:
        return scope["method"] == "POST" and scope["path"] == DLC_PATH

    def _authorized(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        offered = credentials.strip() if scheme.lower() == "bearer" else ""
        if not offered and scope["path"].startswith(DLI_PATHS):
            offered = headers.get("x-auth-token", "")
        # Constant time: how long a refusal takes says nothing about how much of the token was right.
        return bool(offered) and hmac.compare_digest(offered.encode(), self._token)
