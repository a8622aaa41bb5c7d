"""Tencent Cloud DLC's notebook-session action API on the embedded server: ``POST /`` with ``X-TC-Action``,
signed with TC3-HMAC-SHA256, over the same sessions as the Livy and DLI paths. The server's ``Users`` (on
``app.state.users``) give each SecretId its SecretKey and user: with one token, the token is the SecretKey
of any SecretId, who is an admin; with a users file, each user has their own, and sees only their own
sessions, as on the other paths.

DLC answers everything with HTTP 200: ``{"Response": {...fields, "RequestId"}}``, or ``{"Response":
{"Error": {"Code", "Message"}, "RequestId"}}`` when it refuses. Each action reads its whole request
(``dlc_params``) before it asks the manager for anything. Everything after the body is received (the
signature's hash of it, parsing it, the manager's work, rendering the answer) happens in a worker thread,
so a large body never stalls other requests.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request

from dli_kernel.protocol import DEFAULT_MAX_ROWS, DLC_API_VERSION, DLC_MAX_RESULTS, SESSION_STATES
from dli_kernel.server import tc3
from dli_kernel.server.answers import JSONAnswer
from dli_kernel.server.dlc_params import (
    DlcError,
    Fields,
    TaskId,
    invalid,
    kind,
    parse_body,
    session_spec,
)
from dli_kernel.server.dlc_views import (
    DLC_STATES,
    dlc_state,
    our_states,
    session_info,
    session_summary,
    sql_result,
    statement_batch,
    statement_info,
)
from dli_kernel.server.manager import (
    Invalid,
    LimitReached,
    ManagedSession,
    ManagerError,
    SessionManager,
    Statement,
    UnknownId,
)
from dli_kernel.server.params import requested_session
from dli_kernel.server.principal import Principal
from dli_kernel.server.users import Users
from dli_kernel.spec import SpecError, parse_number, shown

log = logging.getLogger("dli_kernel.server")

LOG_LIMIT = 200  # DescribeNotebookSessionLog's default: the newest 200 lines
LIST_LIMIT = 10  # DescribeNotebookSessions' default page
MAX_LIMIT = 1000
# DescribeNotebookSessions' Filters: DLC's own two, and the fields its console filters on.
FILTERS = ("notebook-keyword", "engine-generation", "session-id", "session-name", "kind")
GENERATIONS = ("native", "supersql")  # every session here runs on a standard (native) Spark engine
SORT_FIELDS: dict[str, Callable[[ManagedSession], Any]] = {
    "CreateTime": lambda s: s.created,
    "LastRunningTime": lambda s: s.updated,
    "Name": lambda s: s.spec.name or "",
    "State": lambda s: dlc_state(s.state),
    "Kind": lambda s: s.spec.kind,
    "DataEngineName": lambda s: s.spec.cluster_name or "",
    "SessionId": lambda s: s.uuid,
}


@dataclass(frozen=True)
class Call:
    """One signed request, as its action handler sees it."""

    manager: SessionManager
    base_url: str
    principal: Principal  # who signed it: what they see is all the action may touch
    body: dict[str, Any]


def _answer(request_id: str, fields: dict[str, Any]) -> JSONAnswer:
    return JSONAnswer({"Response": {**fields, "RequestId": request_id}})


def _error(request_id: str, code: str, message: str) -> JSONAnswer:
    return _answer(request_id, {"Error": {"Code": code, "Message": message}})


class DlcActions:
    """The endpoint of ``POST /``; the keys it checks signatures with are the app's ``Users``'."""

    def __init__(self) -> None:
        self._replays = tc3.ReplayGuard()

    def __repr__(self) -> str:
        return "DlcActions()"

    async def dispatch(self, request: Request) -> JSONAnswer:
        raw = await request.body()
        signed = Signed(
            request.method, request.url.path, request.url.query, request.headers, raw, time.time()
        )
        return await run_in_threadpool(self._serve, request.app.state, signed)

    def _serve(self, state: Any, signed: Signed) -> JSONAnswer:
        request_id = str(uuid.uuid4())
        headers = signed.headers
        try:
            secret_key, principal = _signer(state.users, headers.get("authorization"))
            auth = tc3.verify(
                secret_key, signed.method, signed.path, signed.query, headers, signed.raw, signed.now
            )
            if principal is None:  # a key nobody has signed it: never, but never let it through either
                raise tc3.SignatureError("AuthFailure.SignatureFailure", tc3.MISMATCH)
            action = headers.get("x-tc-action")
            self._replays.check(auth.signature, action or "", signed.now)
            handler = _handler(headers.get("x-tc-version"), action)
            call = Call(state.manager, state.base_url, principal, parse_body(signed.raw))
            return _answer(request_id, _run(handler, call))
        except (tc3.SignatureError, DlcError) as err:
            return _error(request_id, err.code, str(err))
        except Exception:
            # DLC's shape even now: a client learns the request id to quote, never the server's details.
            log.exception("unexpected error in DLC action %s", headers.get("x-tc-action"))
            return _error(
                request_id, "InternalError", f"internal server error; see the server log ({request_id})."
            )


@dataclass(frozen=True)
class Signed:
    """What a signed request says, as received."""

    method: str
    path: str
    query: str
    headers: Headers
    raw: bytes
    now: float


def _signer(users: Users, authorization: str | None) -> tuple[str, Principal | None]:
    """The SecretKey the request's SecretId signs with, and who that is. A SecretId nobody has gets a key
    nobody has: its request meets every check a known one does and fails the last, with the same sentence,
    so that no answer tells which SecretIds (user names) exist."""
    secret_id = tc3.parse_authorization(authorization).secret_id
    return users.dlc_key(secret_id) or (secrets.token_hex(32), None)


def _handler(version: str | None, action: str | None) -> Callable[[Call], dict[str, Any]]:
    if version != DLC_API_VERSION:
        raise DlcError(
            "NoSuchVersion",
            f"X-TC-Version must be {DLC_API_VERSION}, the DLC API version this server speaks "
            f"(got {version!r}).",
        )
    if not action or action not in ACTIONS:
        raise DlcError(
            "InvalidAction",
            f"action {action!r} does not exist here; actions are: {', '.join(sorted(ACTIONS))}.",
        )
    return ACTIONS[action]


def _run(handler: Callable[[Call], dict[str, Any]], call: Call) -> dict[str, Any]:
    """The handler, with the manager's refusals in DLC's codes."""
    try:
        return handler(call)
    except (SpecError, Invalid) as err:
        raise invalid(str(err)) from None
    except UnknownId as err:
        raise DlcError("ResourceNotFound", str(err)) from None
    except LimitReached as err:
        raise DlcError("LimitExceeded", str(err)) from None
    except ManagerError as err:  # WrongState, and any other refusal of the manager's
        raise DlcError("FailedOperation", str(err)) from None


# -- lookups ---------------------------------------------------------------------------------------


def _session(call: Call, session_id: str) -> ManagedSession:
    """The session a request names; every request on a session counts as its heartbeat."""
    try:
        return requested_session(call.manager, session_id, call.principal)
    except UnknownId:
        raise DlcError(
            "ResourceNotFound.SessionNotFound",
            f"session {shown(session_id)} does not exist; DescribeNotebookSessions lists the ones there are.",
        ) from None


def _statement(call: Call, session: ManagedSession, statement_id: str) -> Statement:
    try:
        # Only ASCII digits without a leading zero name a statement: '²', '00' or 5000 digits name none.
        return call.manager.statement(session, statement_id)
    except UnknownId:
        raise DlcError(
            "ResourceNotFound",
            f"statement {shown(statement_id)} does not exist in session {session.uuid}; "
            "DescribeNotebookSessionStatements lists its statements.",
        ) from None


def _live(session: ManagedSession) -> None:
    """Refuse work on a session that ended or is ending, with DLC's codes for it."""
    if session.state == "shutting_down":
        raise DlcError(
            "ResourceNotFound.SessionStateShuttingDown", f"session {session.uuid} is shutting down."
        )
    if session.ended:
        raise DlcError(
            "ResourceNotFound.SessionStateDead",
            f"session {session.uuid} has ended ({session.state}); create a new session.",
        )


# -- sessions --------------------------------------------------------------------------------------


def create_session(call: Call) -> dict[str, Any]:
    spec = session_spec(call.body)
    session = call.manager.create(spec, owner=call.principal)
    return {"SessionId": session.uuid, "SparkAppId": session.app_id or "", "State": dlc_state(session.state)}


def describe_session(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("SessionId",))
    session = _session(call, fields.required("SessionId"))
    return {"Session": session_info(session, call.base_url)}


def _matches(session: ManagedSession, name: str, values: list[str]) -> bool:
    needles = [v.lower() for v in values]
    if name == "engine-generation":
        return "native" in needles
    if name == "kind":
        return session.spec.kind in needles
    haystacks = {
        "notebook-keyword": (session.spec.name or "", session.uuid, session.spec.cluster_name or ""),
        "session-id": (session.uuid,),
        "session-name": (session.spec.name or "",),
    }[name]
    exact = name == "session-id"
    return any(
        needle == hay.lower() if exact else needle in hay.lower() for needle in needles for hay in haystacks
    )


def _filters(fields: Fields) -> list[tuple[str, list[str]]]:
    found = []
    for item in fields.objects("Filters", ("Name", "Values", "Operator")):
        name, values = item.get("Name"), item.get("Values", [])
        if name not in FILTERS:
            raise invalid(f"filter {name!r} is not supported; filters are: {', '.join(FILTERS)}.")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise DlcError("InvalidParameter", f"filter {name!r} needs Values: a non-empty list of strings.")
        if name == "engine-generation" and not {v.lower() for v in values} <= set(GENERATIONS):
            raise invalid(f"engine-generation is one of {', '.join(GENERATIONS)} (got {values}).")
        found.append((name, values))
    return found


def describe_sessions(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("DataEngineName", "State", "SortFields", "Asc", "Limit", "Offset", "Filters"))
    states = fields.strings("State")
    unknown = [s for s in states if s not in DLC_STATES]
    if unknown:
        raise invalid(f"State {unknown[0]!r} is no session state; states are: {', '.join(DLC_STATES)}.")
    sort_fields = fields.strings("SortFields") or ["CreateTime"]
    for field in sort_fields:
        if field not in SORT_FIELDS:
            raise invalid(f"SortFields: {field!r} cannot be sorted on; fields are: {', '.join(SORT_FIELDS)}.")
    ascending = fields.boolean("Asc", False)
    limit = fields.integer("Limit", LIST_LIMIT, minimum=1, maximum=MAX_LIMIT)
    offset = fields.integer("Offset", 0)
    filters = _filters(fields)
    engine = fields.string("DataEngineName") or None
    # DLC lists every session it remembers unless told which states: ended ones too.
    sessions = call.manager.list(
        our_states(states) or list(SESSION_STATES), cluster=engine, viewer=call.principal
    )
    sessions = [s for s in sessions if all(_matches(s, name, values) for name, values in filters)]
    sessions.sort(key=lambda s: tuple(SORT_FIELDS[f](s) for f in sort_fields), reverse=not ascending)
    return {
        "TotalElements": len(sessions),
        "TotalPages": math.ceil(len(sessions) / limit),
        "Page": offset // limit + 1,
        "Size": limit,
        "Sessions": [session_summary(s, call.base_url) for s in sessions[offset : offset + limit]],
    }


def delete_session(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("SessionId",))
    session = _session(call, fields.required("SessionId"))
    _live(session)
    call.manager.delete(session)
    return {}


def session_log(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("SessionId", "Limit", "Offset"))
    session_id = fields.required("SessionId")
    limit = fields.integer("Limit", LOG_LIMIT, minimum=1, maximum=MAX_LIMIT * 10)
    start = fields.integer("Offset", 0) if fields.given("Offset") else None
    session = _session(call, session_id)
    first, _total, lines = session.log_lines(start, limit)
    return {"Logs": lines, "Limit": limit, "Offset": first}


# -- statements ------------------------------------------------------------------------------------


def create_statement(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("SessionId", "Code", "Kind"))
    session_id = fields.required("SessionId")
    code = fields.string("Code", required=True)
    assert code is not None
    wanted = fields.string("Kind")
    statement_kind = kind(wanted, "Kind") if wanted else None
    session = _session(call, session_id)
    _live(session)
    statement = call.manager.submit(session, code, statement_kind, DEFAULT_MAX_ROWS)
    return {"NotebookSessionStatement": statement_info(session, statement)}


def _named_statement(call: Call, fields: Fields) -> tuple[ManagedSession, Statement]:
    """The statement a request names by SessionId and StatementId, or by TaskId."""
    task = fields.string("TaskId")
    session_id = fields.string("SessionId")
    statement_id = fields.string("StatementId")
    if task and not (session_id and statement_id):
        parsed = TaskId.parse(task)
        session_id, statement_id = session_id or parsed.session, parsed.statement
    if not session_id:
        raise DlcError("MissingParameter", "SessionId is required.")
    if not statement_id:
        raise DlcError("MissingParameter", "StatementId is required.")
    session = _session(call, session_id)
    return session, _statement(call, session, statement_id)


def describe_statement(call: Call) -> dict[str, Any]:
    session, statement = _named_statement(call, Fields(call.body, ("SessionId", "StatementId", "TaskId")))
    return {"NotebookSessionStatement": statement_info(session, statement)}


def describe_statements(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("SessionId", "BatchId"))
    session = _session(call, fields.required("SessionId"))
    fields.string("BatchId")  # this server runs no batches: every statement is in the one answer
    return {"NotebookSessionStatements": statement_batch(session, list(session.statements))}


def cancel_statement(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("SessionId", "StatementId"))
    fields.required("SessionId")
    fields.required("StatementId")
    call.manager.cancel(*_named_statement(call, fields))
    return {}


def statement_sql_result(call: Call) -> dict[str, Any]:
    fields = Fields(call.body, ("TaskId", "MaxResults", "NextToken", "BatchId", "DataFieldCutLen"))
    task = TaskId.parse(fields.required("TaskId"))
    # 0 is the SDK's "not set" for an int: the default page, never an empty page whose NextToken would be
    # the one given, which would page forever.
    limit = (
        fields.integer("MaxResults", DLC_MAX_RESULTS, minimum=0, maximum=DLC_MAX_RESULTS) or DLC_MAX_RESULTS
    )
    token = fields.string("NextToken") or "0"
    start = parse_number(token)
    if start is None:
        raise invalid(
            f"NextToken {shown(token)} is not one this server gave; leave it out to start at the top."
        )
    cut = fields.integer("DataFieldCutLen", 0)
    fields.string("BatchId")
    session = _session(call, task.session)
    statement = _statement(call, session, task.statement)
    return sql_result(session, statement, start, limit, cut, call.base_url)


ACTIONS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "CreateNotebookSession": create_session,
    "DescribeNotebookSession": describe_session,
    "DescribeNotebookSessions": describe_sessions,
    "DeleteNotebookSession": delete_session,
    "DescribeNotebookSessionLog": session_log,
    "CreateNotebookSessionStatement": create_statement,
    "DescribeNotebookSessionStatement": describe_statement,
    "DescribeNotebookSessionStatements": describe_statements,
    "CancelNotebookSessionStatement": cancel_statement,
    "DescribeNotebookSessionStatementSqlResult": statement_sql_result,
}
