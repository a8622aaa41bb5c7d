"""What the client gets when a request fails: ``{"msg": <one sentence>}`` with the status it deserves."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dli_kernel.server.answers import JSONAnswer
from dli_kernel.server.manager import Invalid, LimitReached, ManagerError, UnknownId, WrongState
from dli_kernel.server.secret_file import SecretFileError
from dli_kernel.spec import SpecError

log = logging.getLogger("dli_kernel.server")

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _answer(status: int) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        return JSONAnswer({"msg": str(exc)}, status_code=status)

    return handler


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, wrong method), in our words and shape."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    if exc.status_code == 404:
        msg = f"no such endpoint: {request.method} {request.url.path}."
    elif exc.status_code == 405:
        msg = f"method {request.method} is not allowed on {request.url.path}."
    else:
        msg = str(exc.detail)
    return JSONAnswer({"msg": msg}, status_code=exc.status_code)


async def _no_key(request: Request, exc: Exception) -> Response:
    # The key file's own message names a path of the server's: the log has it (``LinkSigner``), the
    # client what to do.
    msg = "the server cannot use its key file; ask its operator to look at the server's log."
    return JSONAnswer({"msg": msg}, status_code=503)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The client learns only the exception's type: its message may hold paths or code of the server's.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONAnswer({"msg": f"internal server error ({type(exc).__name__}); see the server log."}, 500)


# Starlette picks the handler of the nearest class in the exception's MRO, so the subclasses of
# ManagerError get their own status and any other ManagerError is a 400.
EXCEPTION_HANDLERS: dict[type[Exception], Handler] = {
    SpecError: _answer(400),
    Invalid: _answer(400),
    UnknownId: _answer(404),
    WrongState: _answer(409),
    # Every limit (a user's sessions, sessions starting, driver memory) alike: waiting or ending a session
    # helps, which 429 says; a request no wait would help is Invalid (400).
    LimitReached: _answer(429),
    ManagerError: _answer(400),
    HTTPException: _http_error,
    SecretFileError: _no_key,
    Exception: _unexpected,
}
