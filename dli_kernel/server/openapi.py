"""The server's OpenAPI 3.0 document (``GET /openapi.json``), built from the app's route table.

Each route the app has becomes one operation, described by ``OPERATIONS`` (keyed by method and the path
without the DLI prefix, so both families share one description); a route without a description fails
the build, so the document cannot fall behind the routes. The session body's fields come from the spec's
own field table (``SPEC_FIELDS``), and DLC's actions (``POST /``) are one operation whose body is one of
the actions' bodies, picked by ``X-TC-Action``. It is what a client author needs and what the fuzz suite
(tests/reliability) generates requests from: it describes what the server accepts, no more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from dli_kernel import __version__
from dli_kernel.protocol import (
    ARROW_STREAM_MIME,
    DLC_API_VERSION,
    DLC_PATH,
    DLC_SIZES,
    KIND_ALIASES,
    KINDS,
    LINK_PARAM,
    MAX_WAIT,
    RESULT_FORMATS,
    SESSION_STATES,
)
from dli_kernel.server.dlc_params import CREATE_FIELDS
from dli_kernel.server.dlc_views import DLC_STATES
from dli_kernel.server.endpoints import DLI_PREFIX
from dli_kernel.server.links import LINK_TTL
from dli_kernel.spec import SPEC_FIELDS, TIERS

Schema = dict[str, Any]

_STRING: Schema = {"type": "string"}
_NAME: Schema = {"type": "string", "minLength": 1}
_STRINGS: Schema = {"type": "array", "items": _NAME}
_OBJECTS: Schema = {"type": "array", "items": {"type": "object"}}
_KIND: Schema = {"type": "string", "enum": [*KINDS, *KIND_ALIASES]}


def _int(minimum: int, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum}
    return schema if maximum is None else {**schema, "maximum": maximum}


def _obj(properties: dict[str, Schema], required: Iterable[str] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    required = list(required)
    return {**schema, "required": required} if required else schema


# -- Livy's and DLI's session body: one schema per spec attribute, named as each family names it --------

_MEMORY: Schema = {"type": "string", "description": "a size with a unit: '2 GB', '2048 MB', '2g'"}
_DURATION: Schema = {"type": "string", "description": "'30s', '10m', '1h', '2d'; a bare number is seconds"}
SPEC_SCHEMAS: dict[str, Schema] = {
    "kind": _KIND,
    "name": {"type": "string", "minLength": 1, "maxLength": 128},
    "cluster_name": _NAME,
    "sc_type": {"type": "string", "enum": list(TIERS)},
    "driver_memory_mb": _MEMORY,
    "driver_cores": _int(1),
    "executor_memory_mb": _MEMORY,
    "executor_cores": _int(1),
    "num_executors": _int(1),
    "conf": {
        "type": "object",
        "description": "Spark settings: name -> string, number or boolean",
        "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
    },
    "jars": _STRINGS,
    "py_files": _STRINGS,
    "files": _STRINGS,
    "archives": _STRINGS,
    "modules": _STRINGS,
    "resources": _OBJECTS,
    "groups": _OBJECTS,
    "heartbeat_timeout_s": {**_int(0), "description": "seconds without a request before it is deleted"},
    "proxy_user": _NAME,
    "ttl_s": _DURATION,
    "idle_timeout_s": _DURATION,
}
_FAMILY_REQUIRED = {"livy": (), "dli": ("kind", "cluster_name")}


def session_body(family: str) -> Schema:
    """``POST .../sessions``'s body for ``family`` ("livy" or "dli"); unknown fields are refused."""
    fields = [f for f in SPEC_FIELDS if getattr(f, family)]
    properties = {getattr(f, family): SPEC_SCHEMAS[f.attr] for f in fields}
    return _obj(properties, _FAMILY_REQUIRED[family])


# -- DLC's actions: each one's body ---------------------------------------------------------------

_SESSION_ID = {"SessionId": _NAME}
_DLC_SIZE: Schema = {"type": "string", "enum": list(DLC_SIZES)}
_KEY_VALUES: Schema = {"type": "array", "items": _obj({"Key": _NAME, "Value": _STRING}, ("Key", "Value"))}
_FILTERS: Schema = {
    "type": "array",
    "items": _obj({"Name": _STRING, "Values": {"type": "array", "items": _STRING}, "Operator": _STRING}),
}
_CREATE_SCHEMAS: dict[str, Schema] = {
    "Name": _STRING,
    "Kind": {"type": "string", "enum": list(KINDS)},
    "DataEngineName": _NAME,
    "ProgramDependentFiles": _STRINGS,
    "ProgramDependentJars": _STRINGS,
    "ProgramDependentPython": _STRINGS,
    "ProgramArchives": _STRINGS,
    "DriverSize": _DLC_SIZE,
    "ExecutorSize": _DLC_SIZE,
    "ExecutorNumbers": _int(1),
    "Arguments": _KEY_VALUES,
    "ProxyUser": _STRING,
    "TimeoutInSecond": _int(0),
    "ExecutorMaxNumbers": _int(1),
    "SparkImage": _STRING,
    "IsInherit": _int(0, 1),
}
# Action -> (its fields, the required ones). tests/unit/test_openapi.py checks them against the server.
DLC_BODIES: dict[str, tuple[dict[str, Schema], tuple[str, ...]]] = {
    "CreateNotebookSession": ({f: _CREATE_SCHEMAS[f] for f in CREATE_FIELDS}, ("Kind", "DataEngineName")),
    "DescribeNotebookSession": (_SESSION_ID, ("SessionId",)),
    "DescribeNotebookSessions": (
        {
            "DataEngineName": _STRING,
            "State": {"type": "array", "items": {"type": "string", "enum": list(DLC_STATES)}},
            "SortFields": _STRINGS,
            "Asc": {"type": "boolean"},
            "Limit": _int(1, 1000),
            "Offset": _int(0),
            "Filters": _FILTERS,
        },
        (),
    ),
    "DeleteNotebookSession": (_SESSION_ID, ("SessionId",)),
    "DescribeNotebookSessionLog": (
        {**_SESSION_ID, "Limit": _int(1, 10000), "Offset": _int(0)},
        ("SessionId",),
    ),
    "CreateNotebookSessionStatement": (
        {**_SESSION_ID, "Code": _NAME, "Kind": _STRING},
        ("SessionId", "Code"),
    ),
    "DescribeNotebookSessionStatement": ({**_SESSION_ID, "StatementId": _NAME, "TaskId": _NAME}, ()),
    "DescribeNotebookSessionStatements": ({**_SESSION_ID, "BatchId": _STRING}, ("SessionId",)),
    "CancelNotebookSessionStatement": ({**_SESSION_ID, "StatementId": _NAME}, ("SessionId", "StatementId")),
    "DescribeNotebookSessionStatementSqlResult": (
        {
            "TaskId": {**_NAME, "description": "<SessionId>.<StatementId>"},
            "MaxResults": _int(0, 1000),
            "NextToken": _STRING,
            "BatchId": _STRING,
            "DataFieldCutLen": _int(0),
        },
        ("TaskId",),
    ),
}


# -- the operations --------------------------------------------------------------------------------


def _query(name: str, schema: Schema, description: str = "") -> Schema:
    parameter: Schema = {"name": name, "in": "query", "required": False, "schema": schema}
    return {**parameter, "description": description} if description else parameter


_WAIT = _query(
    "wait",
    {"type": "number", "minimum": 0},
    f"hold the answer until the state changes, at most this many seconds (capped at {MAX_WAIT:g})",
)
# A browser page's signed link (from POST .../links): opened, it redirects to the page with a cookie.
_LINK = _query(LINK_PARAM, _STRING, "a signed link's signature, in place of the token; opens for a while")
_PATH_PARAMETERS: dict[str, tuple[Schema, str]] = {
    "project_id": (_NAME, "the DLI project id: 1 to 64 ASCII letters, digits, '.', '_' and '-'"),
    "session_id": (_NAME, "a session's Livy id (ASCII digits), its DLI uuid, or its name"),
    "statement_id": (_NAME, "a statement's id in its session (ASCII digits)"),
    "path": (_STRING, "a path of the Spark UI's, slashes included"),
}


@dataclass(frozen=True)
class Operation:
    summary: str
    ok: int = 200
    query: tuple[Schema, ...] = ()
    body: Schema | None = None  # None: no body; the DLI family's session body is picked per family
    content: str = "application/json"
    errors: tuple[int, ...] = (400, 401, 404)
    answer: Schema | None = None  # the ok answer's JSON schema, where it is described; else any object


_STATEMENT_BODY = _obj(
    {
        "code": _STRING,
        "kind": _KIND,
        "maxRows": {**_int(-1), "description": "rows a SQL result keeps; -1 for all"},
        "resultFormat": {"type": "string", "enum": list(RESULT_FORMATS)},
    },
    ("code",),
)
# A statement's output: Livy's, and with the `outputs` extension its Jupyter outputs in order (the
# execute result is the value; `data` is Livy's text of them all). A spilled output's stub has no outputs.
_JUPYTER_OUTPUT: Schema = {
    "type": "object",
    "required": ["output_type"],
    "properties": {
        "output_type": {"type": "string", "enum": ["stream", "display_data", "execute_result"]},
        "name": {"type": "string", "enum": ["stdout", "stderr"], "description": "a stream's"},
        "text": {"type": "string", "description": "a stream's"},
        "data": {"type": "object", "description": "a display's or the result's bundle: MIME type -> value"},
        "metadata": {"type": "object"},
    },
}
_OUTPUT: Schema = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "error"]},
        "execution_count": _int(0),
        "data": {"type": "object", "description": "Livy's bundle: text/plain holds prints and the value"},
        "ename": _STRING,
        "evalue": _STRING,
        "traceback": {"type": "array", "items": _STRING},
        "jupyterOutputs": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/JupyterOutput"},
            "description": "the outputs extension (Python and Scala statements): streams, displays and "
            "the execute result in order; an error's, what came before it",
        },
    },
}
_STATEMENT: Schema = {
    "type": "object",
    "required": ["id", "state"],
    "properties": {
        "id": _int(0),
        "state": _STRING,
        "output": {"nullable": True, "allOf": [{"$ref": "#/components/schemas/StatementOutput"}]},
    },
}
# The signed links a browser opens (each carries ?link=); the Spark UI's is null while the session has none.
_LINKS: Schema = {
    "type": "object",
    "required": ["id", "sparkUiUrl", "driverLogUrl", "expiresIn", "expiresAt"],
    "properties": {
        "id": {"oneOf": [_int(0), _STRING], "description": "the session's id in the path's family"},
        "sparkUiUrl": {"type": "string", "nullable": True},
        "driverLogUrl": _STRING,
        "expiresIn": {**_int(1), "description": "seconds the links open for"},
        "expiresAt": {**_int(0), "description": "when they stop opening, in seconds since the epoch"},
    },
}
_COMPLETION_BODY: Schema = {
    "type": "object",
    "properties": {
        "code": _STRING,
        "kind": _KIND,
        "cursor": {**_int(0), "description": "defaults to the end"},
    },
    "required": ["code"],
}
_SESSION_BODY: Schema = {}  # a marker: the family's own session body
# A session as both families write it (the DLI family's id is the uuid, Livy's the number); the fields
# described here are the ones beyond a plain Livy session, and those clients most read.
_SESSION: Schema = {
    "type": "object",
    "required": ["id", "state", "kind", "sharedDriver"],
    "properties": {
        "id": {"oneOf": [_int(0), _STRING], "description": "the session's id in the path's family"},
        "state": {"type": "string", "enum": list(SESSION_STATES)},
        "kind": _KIND,
        "appId": {"type": "string", "nullable": True},
        "sharedDriver": {
            "type": "boolean",
            "description": "attached to its owner's shared driver (a server run with --share-driver): the "
            "JVM, executors and Spark UI are shared with the owner's other such sessions",
        },
    },
}
_SESSION_REF: Schema = {"$ref": "#/components/schemas/Session"}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/version"): Operation("the Livy version and this server's extensions", errors=(401,)),
    ("GET", "/pool"): Operation("the warm pool's counts (admins only)", errors=(401, 403)),
    ("GET", "/openapi.json"): Operation("this document", errors=(401,)),
    ("GET", "/sessions"): Operation(
        "the sessions the caller sees, a page of them",
        query=(
            _query("from", _int(0)),
            _query("size", _int(1)),
            _query("state", _STRING, f"a comma list of states: {', '.join(SESSION_STATES)}"),
            _query("kind", _STRING),
            _query("name", _STRING),
            _query("cluster_name", _STRING),
            _query("queue", _STRING, "Livy's name for cluster_name"),
            _query("owner", _STRING),
        ),
        errors=(400, 401),
        answer={
            "type": "object",
            "properties": {
                "from": _int(0),
                "total": _int(0),
                "sessions": {"type": "array", "items": _SESSION_REF},
            },
        },
    ),
    ("POST", "/sessions"): Operation(
        "make a session", ok=201, body=_SESSION_BODY, errors=(400, 401, 413, 429), answer=_SESSION_REF
    ),
    ("GET", "/sessions/{session_id}"): Operation("a session", query=(_WAIT,), answer=_SESSION_REF),
    ("DELETE", "/sessions/{session_id}"): Operation("end a session and stop its driver", errors=(401, 404)),
    ("GET", "/sessions/{session_id}/state"): Operation("a session's state", query=(_WAIT,)),
    ("GET", "/sessions/{session_id}/log"): Operation(
        "a page of the session's log", query=(_query("from", _int(0)), _query("size", _int(0)))
    ),
    ("GET", "/sessions/{session_id}/statements"): Operation(
        "the session's statements",
        query=(_query("order", {"type": "string", "enum": ["asc", "desc"]}),),
        answer={"type": "object", "properties": {"statements": {"type": "array", "items": _STATEMENT}}},
    ),
    ("POST", "/sessions/{session_id}/statements"): Operation(
        "run code in the session",
        ok=201,
        body=_STATEMENT_BODY,
        errors=(400, 401, 404, 409, 413),
        answer=_STATEMENT,
    ),
    ("GET", "/sessions/{session_id}/statements/{statement_id}"): Operation(
        "a statement", query=(_WAIT,), answer=_STATEMENT
    ),
    ("GET", "/sessions/{session_id}/statements/{statement_id}/result"): Operation(
        "a statement's Arrow result (resultFormat arrow)", content=ARROW_STREAM_MIME, errors=(401, 404, 409)
    ),
    ("GET", "/sessions/{session_id}/statements/{statement_id}/output"): Operation(
        "a finished statement's output JSON alone; a large (spilled) one honours HTTP Range",
        errors=(401, 404, 409),
        answer={"$ref": "#/components/schemas/StatementOutput"},
    ),
    ("POST", "/sessions/{session_id}/statements/{statement_id}/cancel"): Operation(
        "cancel a statement", errors=(401, 404, 409)
    ),
    ("POST", "/sessions/{session_id}/completion"): Operation(
        "completions for code at a cursor", body=_COMPLETION_BODY, errors=(400, 401, 404, 409, 413)
    ),
    ("GET", "/sessions/{session_id}/ui/{path}"): Operation(
        "a page or REST call of the session's Spark UI, proxied: the UI's own answers pass through",
        query=(_LINK,),
        content="*/*",
        errors=(401, 403, 404, 409, 502, 504),
    ),
    ("POST", "/sessions/{session_id}/links"): Operation(
        "signed browser links to the session's Spark UI and driver log, which open without a token for "
        f"{LINK_TTL // 60} min (the 'links' extension)",
        errors=(400, 401, 404, 503),
        answer=_LINKS,
    ),
    ("GET", "/sessions/{session_id}/driver-log"): Operation(
        "the session's log as text for a browser: all of it, or its last lines",
        query=(_query("lines", _int(1), "only the last this many lines"), _LINK),
        content="text/plain",
        errors=(400, 401, 403, 404),
    ),
}

_ERROR: Schema = _obj({"msg": _STRING}, ("msg",))
_DLC_ANSWER: Schema = {
    "type": "object",
    "required": ["Response"],
    "description": "always HTTP 200: the action's fields, or Error {Code, Message}, and RequestId",
    "properties": {"Response": {"type": "object", "required": ["RequestId"]}},
}


def _openapi_path(path: str) -> str:
    """The route's path as OpenAPI writes it: ``{path:path}`` (a Starlette converter) is ``{path}``."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", path)


def _path_key(path: str) -> str:
    return path[len(DLI_PREFIX) :] if path.startswith(DLI_PREFIX + "/") else path


def _operation(path: str, method: str) -> Schema:
    family = "dli" if path.startswith(DLI_PREFIX + "/") else "livy"
    key = _path_key(path)
    try:
        described = OPERATIONS[method, key]
    except KeyError:
        raise LookupError(f"the route {method} {path} has no description in openapi.OPERATIONS") from None
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": schema, "description": text}
        for name in re.findall(r"{(\w+)}", path)
        for schema, text in [_PATH_PARAMETERS[name]]
    ]
    parameters.extend(described.query)
    responses: Schema = {
        str(described.ok): {
            "description": described.summary,
            "content": {described.content: {"schema": {"type": "string", "format": "binary"}}}
            if described.content != "application/json"
            else {"application/json": {"schema": described.answer or {"type": "object"}}},
        }
    }
    responses.update({str(code): {"$ref": f"#/components/responses/{code}"} for code in described.errors})
    operation: Schema = {
        "operationId": f"{family}_{method.lower()}_{re.sub(r'[^a-z]+', '_', key.lower()).strip('_')}",
        "summary": described.summary,
        "tags": ["server" if not key.startswith("/sessions") else "ui" if "/ui" in key else family],
        "parameters": parameters,
        "responses": responses,
    }
    if family == "dli":  # DLI's clients may send the token as X-Auth-Token instead
        operation["security"] = [{"bearer": []}, {"dliToken": []}]
    if described.body is not None:
        body = session_body(family) if described.body is _SESSION_BODY else described.body
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def _dlc_operation() -> Schema:
    def header(name: str, values: list[str]) -> Schema:
        return {"name": name, "in": "header", "required": True, "schema": {"type": "string", "enum": values}}

    return {
        "operationId": "dlc_action",
        "summary": "Tencent Cloud DLC's notebook-session actions, named by X-TC-Action, TC3-signed",
        "tags": ["dlc"],
        "security": [{"tc3": []}],
        "parameters": [header("X-TC-Action", list(DLC_BODIES)), header("X-TC-Version", [DLC_API_VERSION])],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"anyOf": [{"$ref": f"#/components/schemas/{action}"} for action in DLC_BODIES]}
                }
            },
        },
        "responses": {
            "200": {"description": "DLC's answer", "content": {"application/json": {"schema": _DLC_ANSWER}}}
        },
    }


_ERROR_TEXT = {
    400: "bad input: one sentence naming the field and what is accepted",
    401: "missing or wrong token",
    403: "not for this user",
    404: "no such session, statement or result (for this user)",
    409: "the session or statement cannot take this request now",
    413: "the body is larger than the route accepts",
    429: "a limit was reached (sessions per user, starting, driver memory)",
    502: "the session's Spark UI could not be reached",
    503: "the server cannot use its key file: its operator finds why in the server's log",
    504: "the session's Spark UI did not answer in time",
}


def _endpoints(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Each (path, method) the routes answer, mounted ones included; HEAD goes with GET."""
    for route in routes:
        if isinstance(route, Mount):
            yield from _endpoints(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield _openapi_path(prefix + route.path), method
        else:
            raise LookupError(f"{route!r} is neither a Route nor a Mount: describe it in openapi.py")


def document(routes: Iterable[BaseRoute], server_url: str) -> Schema:
    """The OpenAPI document of an app with these ``routes``, served at ``server_url``."""
    paths: dict[str, Schema] = {}
    for path, method in _endpoints(routes):
        is_dlc = path == DLC_PATH and method == "POST"
        operation = _dlc_operation() if is_dlc else _operation(path, method)
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "dli-kernel embedded sessions server",
            "version": __version__,
            "description": "Livy's paths, DLI's (/v2.0/{project_id}/...) over the same sessions, and DLC's "
            'signed actions (POST /). Errors are {"msg": ...}; DLC answers in its own shape.',
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "dliToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "tc3": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "TC3-HMAC-SHA256 over content-type and host, signed with the "
                    "server's token or the user's DLC SecretKey",
                },
            },
            "schemas": {
                "Error": _ERROR,
                "Session": _SESSION,
                "StatementOutput": _OUTPUT,
                "JupyterOutput": _JUPYTER_OUTPUT,
                **{action: _obj(fields, required) for action, (fields, required) in DLC_BODIES.items()},
            },
            "responses": {
                str(code): {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                for code, text in _ERROR_TEXT.items()
            },
        },
    }


async def serve(request: Request) -> JSONResponse:
    """``GET /openapi.json``: the document of the app that serves it."""
    return JSONResponse(document(request.app.routes, request.app.state.base_url))
