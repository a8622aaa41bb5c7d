"""Reading what a request asks for: query parameters, JSON bodies and the ids in its path, each refused
with a sentence that says what is wrong (``Invalid``, which the app answers with 400, or ``UnknownId``, 404).

Numbers and ids are ASCII digits only, of bounded length; an id is in canonical form (no leading zero), so
that '007', an Arabic-Indic or a superscript 7 are nobody's aliases of 7.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dli_kernel.protocol import DEFAULT_MAX_ROWS, MAX_WAIT
from dli_kernel.server import json_body
from dli_kernel.server.manager import Invalid, ManagedSession, SessionManager
from dli_kernel.server.principal import Principal
from dli_kernel.spec import parse_number, shown, unknown_names

STATEMENT_FIELDS = ("code", "kind", "maxRows", "resultFormat")
# A decimal number as clients write them (Python's :g writes 1e-05), in ASCII only.
_SECONDS = re.compile(r"(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})(?:[eE][+-]?[0-9]{1,3})?")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON (``json_body``); an empty body is an empty object. Call it in a worker
    thread: a large body keeps the CPU busy."""
    try:
        return json_body.load_json(raw)
    except json_body.BodyError as err:
        raise Invalid(str(err)) from None


def requested_session(manager: SessionManager, key: str, viewer: Principal) -> ManagedSession:
    """The session a request's path names exactly (its number as the server writes it, its uuid or its
    name), if ``viewer`` sees it. Every request on a session's paths, the Spark UI's and DLC's included,
    counts as its heartbeat: a client that only reads keeps its session."""
    session = manager.get(key, viewer)
    manager.touch(session)
    return session


def optional_int(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    """An integer query parameter >= ``minimum``; None when it is not given (or given empty)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    value = parse_number(raw)
    if value is None or value < minimum:
        raise Invalid(f"query parameter {name!r} must be an integer >= {minimum} (got {shown(raw)}).")
    return value


def int_param(query: Mapping[str, str], name: str, minimum: int, default: int) -> int:
    value = optional_int(query, name, minimum)
    return default if value is None else value


def wait_param(query: Mapping[str, str]) -> float:
    """``?wait=`` in seconds (fractions allowed), capped at MAX_WAIT; 0 when not given."""
    raw = query.get("wait")
    if raw is None or raw == "":
        return 0.0
    # float() alone would also take '٢', '1_0' and 'nan'; 1e999 is infinite.
    value = float(raw) if _SECONDS.fullmatch(raw) else -1.0
    if not math.isfinite(value) or value < 0:
        raise Invalid(f"query parameter 'wait' must be a number of seconds >= 0 (got {shown(raw)}).")
    return min(value, MAX_WAIT)


@dataclass(frozen=True)
class SessionFilter:
    """What ``GET /sessions`` narrows the list to; the manager checks the state names."""

    states: list[str]
    kind: str | None
    name: str | None
    cluster: str | None
    owner: str | None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> SessionFilter:
        return cls(
            states=[s for s in query.get("state", "").split(",") if s],
            kind=query.get("kind"),
            name=query.get("name"),
            # DLI calls it cluster_name, Livy queue: either narrows the same field.
            cluster=query.get("cluster_name") or query.get("queue"),
            owner=query.get("owner"),
        )


@dataclass(frozen=True)
class StatementRequest:
    """The body of ``POST .../statements``: Livy's fields plus this server's ``resultFormat``."""

    code: str
    kind: str | None
    max_rows: int
    result_format: str

    @classmethod
    def from_body(cls, body: object) -> StatementRequest:
        if not isinstance(body, dict):
            raise Invalid("the request body must be a JSON object with a 'code' string.")
        unknown = sorted(set(body) - set(STATEMENT_FIELDS))
        if unknown:
            raise Invalid(f"{unknown_names(unknown, STATEMENT_FIELDS)}.")
        code, kind, max_rows = body.get("code"), body.get("kind"), body.get("maxRows", DEFAULT_MAX_ROWS)
        if not isinstance(code, str):
            raise Invalid("'code' is required and must be a string.")
        if kind is not None and not isinstance(kind, str):
            raise Invalid(f"'kind' must be a string such as 'pyspark', 'spark' or 'sql' (got {shown(kind)}).")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < -1:
            raise Invalid(f"'maxRows' must be an integer >= 0, or -1 for all rows (got {shown(max_rows)}).")
        result_format = body.get("resultFormat", "json")
        if not isinstance(result_format, str):
            raise Invalid(f"'resultFormat' must be 'json' or 'arrow' (got {shown(result_format)}).")
        return cls(code, kind, max_rows, result_format)


@dataclass(frozen=True)
class CompletionRequest:
    """The body of ``POST .../completion``: code, where the cursor is in it, and optionally its kind."""

    code: str
    kind: str | None
    cursor: int

    @classmethod
    def from_body(cls, body: object) -> CompletionRequest:
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            raise Invalid(
                "the request body must be a JSON object with a 'code' string (and optional kind, cursor)."
            )
        code = body["code"]
        cursor = body.get("cursor", len(code))
        if isinstance(cursor, str) and parse_number(cursor) is not None:
            cursor = parse_number(cursor)  # Livy's own client sends it as a string
        if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(code):
            raise Invalid(
                f"'cursor' must be an integer between 0 and the length of code (got {shown(cursor)})."
            )
        return cls(code, body.get("kind"), cursor)
