"""Reading what a request asks for: query parameters and JSON bodies, each refused with a sentence that
says what is wrong (``Invalid``, which the app answers with 400)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dli_kernel.protocol import DEFAULT_MAX_ROWS, MAX_WAIT
from dli_kernel.server.manager import Invalid
from dli_kernel.spec import parse_number, unknown_names

STATEMENT_FIELDS = ("code", "kind", "maxRows", "resultFormat")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as err:
        raise Invalid(f"the request body is not valid JSON: {err}.") from None


def optional_int(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    """An integer query parameter >= ``minimum``; None when it is not given (or given empty)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    value = parse_number(raw)
    if value is None or value < minimum:
        raise Invalid(f"query parameter {name!r} must be an integer >= {minimum} (got {raw!r}).")
    return value


def int_param(query: Mapping[str, str], name: str, minimum: int, default: int) -> int:
    value = optional_int(query, name, minimum)
    return default if value is None else value


def wait_param(query: Mapping[str, str]) -> float:
    """``?wait=`` in seconds (fractions allowed), capped at MAX_WAIT; 0 when not given."""
    raw = query.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise Invalid(f"query parameter 'wait' must be a number of seconds >= 0 (got {raw!r}).")
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
            raise Invalid(f"'kind' must be a string such as 'pyspark', 'spark' or 'sql' (got {kind!r}).")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < -1:
            raise Invalid(f"'maxRows' must be an integer >= 0, or -1 for all rows (got {max_rows!r}).")
        result_format = body.get("resultFormat", "json")
        if not isinstance(result_format, str):
            raise Invalid(f"'resultFormat' must be 'json' or 'arrow' (got {result_format!r}).")
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
            raise Invalid(f"'cursor' must be an integer between 0 and the length of code (got {cursor!r}).")
        return cls(code, body.get("kind"), cursor)
