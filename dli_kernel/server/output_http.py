"""Spilled outputs on the wire: statement JSON with the output files spliced in, and each output by range.

``statement_response`` answers any JSON body holding statements (one statement, the statement list) as
``JSONAnswer`` would, except that each ``SpilledOutput`` in it is sent as its file's bytes, read in
pieces from a worker thread: the server never holds a large output to send it, and a Livy client reads
``output.data["text/plain"]`` whole as before. ``statement_output`` serves one statement's output alone,
with HTTP ranges for a spilled one, for clients that page through a large output or resume a download.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from typing import Any, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from dli_kernel.server.answers import JSONAnswer
from dli_kernel.server.manager import SessionManager
from dli_kernel.server.outputs import SpilledOutput
from dli_kernel.server.params import requested_session
from dli_kernel.server.principal import Principal

_READ = 256 * 1024  # bytes of an output file read (and sent) at once
_LEVELS = 3  # a body, its list of statements, a statement: where outputs are


def statement_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``JSONAnswer(content)``, streamed with the files of the spilled outputs in it when it has any."""
    spilled: list[SpilledOutput] = []
    token = secrets.token_hex(16)  # no statement's text can hold it: a placeholder nothing else matches

    def mark(value: Any, depth: int) -> Any:
        # Outputs are found where statements put them: a statement's JSON, or a list of them in a body.
        if isinstance(value, SpilledOutput):
            spilled.append(value)
            return f"{token}-{len(spilled) - 1}"
        if depth < _LEVELS and isinstance(value, dict):
            return {key: mark(item, depth + 1) for key, item in value.items()}
        if depth < _LEVELS and isinstance(value, list):
            return [mark(item, depth + 1) for item in value]
        return value

    marked = mark(content, 0)
    if not spilled:
        return JSONAnswer(content, status_code=status_code, headers=headers)
    rest = bytes(JSONAnswer(marked).body)
    parts: list[bytes | BinaryIO] = []
    for index in range(len(spilled)):
        before, rest = rest.split(json.dumps(f"{token}-{index}").encode(), 1)
        parts.append(before)
        parts.append(_open(spilled[index]))
    parts.append(rest)
    length = sum(len(p) if isinstance(p, bytes) else _size(p) for p in parts)
    return StreamingResponse(
        _pieces(parts),
        status_code=status_code,
        headers={**(headers or {}), "content-length": str(length)},
        media_type="application/json",
    )


def _open(output: SpilledOutput) -> bytes | BinaryIO:
    """The open file of a spilled output, or its stub's JSON when the file is gone. Opened now, so the
    length sent is that of what is sent even if the session's directory is removed meanwhile."""
    try:
        return output.path.open("rb")
    except OSError:
        return bytes(JSONAnswer(dict(output)).body)


def _size(file: BinaryIO) -> int:
    return os.fstat(file.fileno()).st_size


def _pieces(parts: list[bytes | BinaryIO]) -> Iterator[bytes]:
    # A plain generator: Starlette iterates it in a worker thread, so the file reads stay off the loop.
    try:
        for part in parts:
            if isinstance(part, bytes):
                yield part
                continue
            while piece := part.read(_READ):
                yield piece
    finally:
        for part in parts:
            if not isinstance(part, bytes):
                part.close()


async def statement_output(request: Request, family: object = None) -> Response:
    """``GET .../statements/{id}/output``: the statement's output JSON alone; a spilled one by range."""
    manager: SessionManager = request.app.state.manager
    viewer = request.user
    assert isinstance(viewer, Principal)  # the token check put it there
    session_id, statement_id = request.path_params["session_id"], request.path_params["statement_id"]

    def find() -> Response:
        # The ids' rules, and the heartbeat, are the other routes'.
        session = requested_session(manager, session_id, viewer)
        output = manager.output(session, manager.statement(session, statement_id))
        if isinstance(output, SpilledOutput) and output.path.is_file():
            return FileResponse(output.path, media_type="application/json")
        return JSONAnswer(dict(output))

    return await run_in_threadpool(find)
