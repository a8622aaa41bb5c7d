"""The size limit of request bodies, as ASGI middleware in front of every route.

A body declared longer than its route's limit (``Content-Length``) is refused before a byte of it is read;
one of unknown length (chunked) is counted as it streams in and refused as soon as it goes over, so the
server never holds more of it than the limit. Either way the answer is 413 with ``{"msg": ...}`` naming
the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dli_kernel.spec import parse_number


class _TooLarge(Exception):
    """Raised out of ``receive`` into the route; caught again here, where the 413 is sent."""


def too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"msg": f"the request body is larger than this route accepts ({limit} bytes); send a smaller one."},
        status_code=413,
    )


class BodyLimit:
    """``limit_for(scope)`` says how many bytes of body the request's route accepts."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self._limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        length = parse_number(declared.strip()) if declared is not None else None
        if length is not None and length > limit:
            await too_large(limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                # Once the answer has started, the route is done with the body: what reads on (a file
                # response listening for a disconnect) drops it, and a 413 could no longer be sent.
                if received > limit and not started:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            await too_large(limit)(scope, receive, send)
