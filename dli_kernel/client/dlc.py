"""The dlc dialect: Tencent Cloud DLC's notebook sessions, spoken as signed JSON actions.

Every call is ``POST /`` with ``X-TC-Action``, ``X-TC-Version`` (``protocol.DLC_API_VERSION``) and
``X-TC-Region``, a PascalCase JSON body, and an answer ``{"Response": {..., "RequestId"}}``; an error is
HTTP 200 with ``Response.Error.{Code, Message}`` (``errors.dlc_error`` maps the codes). Field names and types
follow the SDK's models (``tencentcloud/dlc/v20210125/models.py``). Signing is ``tc3.TencentTC3``'s.

Sizes: DLC sizes a driver and each executor in CUs (1 CU = 1 core and 4 GB): small 1, medium 2, large 4,
xlarge 8. A spec's driver and executor cores and memory (from its ``sc_type`` tier, or given) map to the
smallest size that holds both; more than xlarge (8 cores, 32 GB) is refused. So tier A is driver medium,
executors small x 6; B is medium, medium x 7; C is large, medium x 14.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field, replace
from typing import Any

from dli_kernel.client.dialects import Call, Dialect, Send
from dli_kernel.client.dlc_results import read_sql_result
from dli_kernel.client.errors import BadRequest, ClientError, dlc_error
from dli_kernel.client.models import LogPage, SessionInfo, StatementInfo, normalize_state, settle_statement
from dli_kernel.protocol import (
    DLC_API_VERSION,
    DLC_CU_CORES,
    DLC_CU_MEMORY_MB,
    DLC_PATH,
    DLC_REFUSED_KINDS,
    DLC_SIZES,
    DLC_UTC_OFFSET_HOURS,
    KINDS,
)
from dli_kernel.spec import SessionSpec, format_memory, parse_number, smallest_dlc_size

DEFAULT_URL = "https://dlc.tencentcloudapi.com"
# DLC's sizes, smallest first: name -> (cores, memory in MB).
SIZES: dict[str, tuple[int, int]] = {
    name: (cus * DLC_CU_CORES, cus * DLC_CU_MEMORY_MB) for name, cus in DLC_SIZES.items()
}
# What a created session's SessionInfo takes from the request, since CreateNotebookSession does not echo it.
CREATE_ECHO = (
    *("Name", "Kind", "DataEngineName", "DriverSize", "ExecutorSize", "ExecutorNumbers"),
    *("Arguments", "TimeoutInSecond", "ProxyUser"),
)
LIST_LIMIT = 100  # sessions a list asks for unless given `size` (DLC's own default is 10)
MAX_LIST_PAGES = 100  # a list is read up to 10,000 sessions
MAX_EXECUTORS_DIGITS = 6  # spark.dynamicAllocation.maxExecutors up to 999,999
LOG_PAGE = 1000  # log lines one request asks for when counting the log
MAX_LOG_PAGES = 1000  # a log is counted up to a million lines
MAX_LOG_COUNTS = 1000  # sessions whose log length is remembered
LIST_FILTERS = ("state", "kind", "name", "keyword", "cluster_name", "owner", "from", "size", "sort", "asc")
_CHINA = datetime.timezone(datetime.timedelta(hours=DLC_UTC_OFFSET_HOURS))


def size_for(cores: int, memory_mb: int, what: str) -> str:
    """The smallest DLC size with ``cores`` and ``memory_mb``; BadRequest if even xlarge is too small."""
    name = smallest_dlc_size(cores, memory_mb)
    if name is not None:
        return name
    accepted = ", ".join(f"{name} ({c} cores, {format_memory(m)})" for name, (c, m) in SIZES.items())
    raise BadRequest(
        f"DLC has no {what} size with {cores} cores and {format_memory(memory_mb)}; "
        f"its sizes are {accepted}.",
        400,
    )


def check_kind(kind: str) -> str:
    if kind in KINDS:
        return kind
    if kind in DLC_REFUSED_KINDS:
        accepted = f"{', '.join(KINDS[:-1])} or {KINDS[-1]}"
        raise BadRequest(f"DLC's {kind} kind is not supported here; use {accepted}.", 400)
    raise BadRequest(f"kind must be one of {', '.join(KINDS)} (got {kind!r}).", 400)


def create_body(spec: SessionSpec) -> dict[str, Any]:
    """``CreateNotebookSession``'s body for ``spec``; BadRequest for what DLC cannot take."""
    for label, value in (
        ("modules", spec.modules),
        ("resources", spec.resources),
        ("groups", spec.groups),
        ("ttl", spec.ttl_s),
        ("idleTimeout", spec.idle_timeout_s),
    ):
        if value:
            raise BadRequest(
                f"{label} cannot be sent to DLC, which has no such field; DLC takes kind, name, cluster, "
                "sizes, numExecutors, conf, jars, pyFiles, files, archives, heartbeatTimeout and proxyUser.",
                400,
            )
    if not spec.cluster_name:
        raise BadRequest(
            "cluster_name is required for DLC: the name of the Spark engine (DataEngineName) to run the "
            "session on (DLI_KERNEL_CLUSTER or session.cluster_name in the config).",
            400,
        )
    check_max_executors(spec.conf)
    res = spec.effective_resources()
    body: dict[str, Any] = {
        "Kind": check_kind(spec.kind),
        "DataEngineName": spec.cluster_name,
        "DriverSize": size_for(res.driver_cores, res.driver_memory_mb, "driver"),
        "ExecutorSize": size_for(res.executor_cores, res.executor_memory_mb, "executor"),
        "ExecutorNumbers": res.num_executors,
        "ExecutorMaxNumbers": max(res.num_executors, _max_executors(spec.conf)),
    }
    if spec.name:
        body["Name"] = spec.name
    for key, values in (
        ("ProgramDependentJars", spec.jars),
        ("ProgramDependentPython", spec.py_files),
        ("ProgramDependentFiles", spec.files),
        ("ProgramArchives", spec.archives),
    ):
        if values:
            body[key] = list(values)
    if spec.conf:
        body["Arguments"] = [{"Key": key, "Value": value} for key, value in spec.conf.items()]
    if spec.heartbeat_timeout_s:
        body["TimeoutInSecond"] = spec.heartbeat_timeout_s
    if spec.proxy_user:
        body["ProxyUser"] = spec.proxy_user
    return body


def _max_executors(conf: dict[str, str]) -> int:
    """With dynamic allocation on, its maximum; else 0 (ExecutorMaxNumbers is then ExecutorNumbers)."""
    if conf.get("spark.dynamicAllocation.enabled", "").lower() != "true":
        return 0
    value = conf.get("spark.dynamicAllocation.maxExecutors", "")
    return int(value) if value else 0


def check_max_executors(conf: dict[str, str]) -> None:
    """A ``spark.dynamicAllocation.maxExecutors`` that is not a count is refused, never a ValueError."""
    value = conf.get("spark.dynamicAllocation.maxExecutors")
    if value is None:
        return
    text = str(value)
    if parse_number(text) is None or len(text) > MAX_EXECUTORS_DIGITS:
        raise BadRequest(
            f"spark.dynamicAllocation.maxExecutors must be a whole number of at most "
            f"{MAX_EXECUTORS_DIGITS} digits 0-9 (got {text[:20]!r}).",
            400,
        )


def _pairs(items: Any) -> dict[str, Any]:
    """DLC's ``[{"Key", "Value"}]`` lists as a dict."""
    if not isinstance(items, list):
        return {}
    return {str(item["Key"]): item.get("Value") for item in items if isinstance(item, dict) and "Key" in item}


def epoch_ms(value: Any) -> int | None:
    """A DLC time (epoch seconds or ms, ISO 8601, or ``YYYY-MM-DD hh:mm:ss`` in Beijing time) in ms."""
    text = value.strip() if isinstance(value, str) else ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = int(value)
    elif (digits := parse_number(text)) is not None:
        number = digits
    elif text:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_CHINA)
        return int(moment.timestamp() * 1000)
    else:
        return None
    return number if number > 10**11 else number * 1000  # seconds until the year 5138


def _size_fields(size: Any, prefix: str) -> dict[str, Any]:
    cores_mb = SIZES.get(size) if isinstance(size, str) else None
    if cores_mb is None:
        return {}
    return {f"{prefix}Cores": cores_mb[0], f"{prefix}Memory": format_memory(cores_mb[1])}


def session_info(item: Any) -> SessionInfo:
    """A ``NotebookSessionInfo`` (or a list's ``NotebookSessions``) as a SessionInfo; ``raw`` holds DLI's
    field names (what the magics show) with DLC's answer under ``"dlc"``."""
    if not isinstance(item, dict) or not item.get("SessionId"):
        raise ClientError("DLC answered a session without a SessionId.")
    app_info = _pairs(item.get("AppInfo"))
    owner = item.get("Creator") or app_info.get("Creator") or app_info.get("creator")
    raw: dict[str, Any] = {
        "id": item["SessionId"],
        "name": item.get("Name"),
        "kind": item.get("Kind"),
        "state": item.get("State"),
        "appId": item.get("SparkAppId"),
        "owner": owner,
        "proxyUser": item.get("ProxyUser"),
        "cluster_name": item.get("DataEngineName"),
        "create_time": epoch_ms(item.get("CreateTime")),
        "conf": _pairs(item.get("Arguments")),
        "dlc": item,
    }
    if item.get("DriverSize") or item.get("ExecutorSize"):
        driver, executor = item.get("DriverSize") or "?", item.get("ExecutorSize") or "?"
        raw["sc_type"] = f"driver {driver}, executors {executor}"
        raw.update(_size_fields(item.get("DriverSize"), "driver"))
        raw.update(_size_fields(item.get("ExecutorSize"), "executor"))
    if isinstance(item.get("ExecutorNumbers"), int):
        raw["numExecutors"] = item["ExecutorNumbers"]
    if isinstance(item.get("TimeoutInSecond"), int):
        raw["heartbeatTimeoutInSecond"] = item["TimeoutInSecond"]
    return SessionInfo(
        id=str(item["SessionId"]),
        state=normalize_state(item.get("State")),
        kind=item.get("Kind"),
        name=item.get("Name"),
        app_id=item.get("SparkAppId") or None,
        owner=owner or None,
        proxy_user=item.get("ProxyUser") or None,
        spark_ui_url=item.get("SparkUiUrl") or app_info.get("sparkUiUrl") or None,
        driver_log_url=app_info.get("driverLogUrl") or None,
        raw={key: value for key, value in raw.items() if value is not None},
    )


def statement_id(value: Any) -> int:
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    number = parse_number(text)
    if number is None:
        raise ClientError(f"DLC answered a statement id that is not a number ({value!r}).")
    return number


def _data_value(mime: str, value: Any) -> Any:
    """A ``StatementOutput.Data`` value: JSON types arrive as JSON text (KVPair values are strings)."""
    if isinstance(value, str) and (mime.endswith("json") or mime.endswith("+json")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def statement_output(output: Any) -> dict[str, Any] | None:
    """A ``StatementOutput`` in Livy's form: ``{status, execution_count, data}`` or the error fields."""
    if not isinstance(output, dict) or not output.get("Status"):
        return None
    status = str(output["Status"]).lower()
    result: dict[str, Any] = {"status": status, "execution_count": output.get("ExecutionCount") or 0}
    if status == "ok":
        data = {mime: _data_value(mime, value) for mime, value in _pairs(output.get("Data")).items()}
        sql = output.get("SQLResult")
        if isinstance(sql, str) and sql and not data:
            # Only when Data is empty: a Livy SQL result ({schema, data}) is a table, anything else text.
            parsed = _data_value("application/json", sql)
            is_table = isinstance(parsed, dict) and {"schema", "data"} <= parsed.keys()
            data = {"application/json": parsed} if is_table else {"text/plain": sql}
        result["data"] = data
    else:
        result["ename"] = output.get("ErrorName") or "Error"
        result["evalue"] = output.get("ErrorValue") or ""
        result["traceback"] = [str(line) for line in output.get("ErrorMessage") or []]
    return result


def statement_info(item: Any) -> StatementInfo:
    """A ``NotebookSessionStatementInfo`` as a StatementInfo (DLC's progress runs 0..100, ours 0..1)."""
    if not isinstance(item, dict):
        raise ClientError("DLC answered without the statement.")
    progress = item.get("Progress")
    fraction = float(progress) / 100 if isinstance(progress, int | float) else 0.0
    # A state DLC has not documented ends the statement (as its output says, or as an error naming the
    # state), so that no wait goes on for it.
    state, output = settle_statement(normalize_state(item.get("State")), statement_output(item.get("OutPut")))
    return StatementInfo(
        id=statement_id(item.get("StatementId")),
        state=state,
        code=item.get("Code") or "",
        output=output,
        progress=min(max(fraction, 0.0), 1.0),
        started=int(item.get("Started") or 0),
        completed=int(item.get("Completed") or 0),
        task_id=item.get("TaskId") or None,
    )


@dataclass(frozen=True)
class DlcDialect(Dialect):
    """Tencent Cloud DLC's notebook-session actions (API version ``DLC_API_VERSION``) in ``region``."""

    region: str
    name: str = "dlc"
    prefix: str = ""
    extensions: bool = False
    names_are_ids: bool = False
    has_version: bool = False
    has_sql_results: bool = True
    # An InternalError may be the gateway's ("Backend timeout.") while Livy behind it makes the statement.
    error_means_not_recorded: bool = False
    default_url: str = DEFAULT_URL
    # Each session's log length as last counted (see ``log_page``).
    _log_counts: dict[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def action(self, action: str, body: dict[str, Any], *, retry: bool = True) -> Call:
        headers = {"X-TC-Action": action, "X-TC-Version": DLC_API_VERSION, "X-TC-Region": self.region}
        return Call("POST", DLC_PATH, json=body, headers=headers, retry=retry, label=action)

    def unwrap(self, body: Any, what: str) -> Any:
        response = body.get("Response") if isinstance(body, dict) else None
        if not isinstance(response, dict):
            raise ClientError(f"{what}: the answer is not a DLC answer (it has no Response object).")
        error = response.get("Error")
        if isinstance(error, dict):
            code = str(error.get("Code") or "UnknownError")
            message = str(error.get("Message") or "no message").strip().rstrip(".")
            raise dlc_error(code, f"{what}: {message} ({code}).")
        return response

    # -- sessions

    def create_session(self, spec: SessionSpec) -> Call:
        return self.action("CreateNotebookSession", create_body(spec), retry=False)

    def read_session(self, body: Any) -> SessionInfo:
        return session_info(body.get("Session"))

    def read_created(self, body: Any, spec: SessionSpec) -> SessionInfo:
        # CreateNotebookSession answers only the id, app id and state; the rest is what was asked for.
        created = {key: body.get(key) for key in ("SessionId", "SparkAppId", "State")}
        wire = create_body(spec)
        return session_info({**{key: wire[key] for key in CREATE_ECHO if key in wire}, **created})

    def get_session(self, session_id: str | int, params: dict[str, Any] | None = None) -> Call:
        return self.action("DescribeNotebookSession", {"SessionId": str(session_id)})

    def list_sessions(self, filters: dict[str, Any]) -> Call:
        """``DescribeNotebookSessions``: ``cluster_name`` is DataEngineName, ``state`` a State (or a
        comma-separated list), ``name`` or ``keyword`` the notebook-keyword filter (DLC matches it loosely:
        the magics match exactly afterwards), ``engine_generation`` supersql or native, ``sort`` a field,
        ``asc`` the order, ``from``/``size`` the page. ``kind`` and ``owner`` are matched by the caller."""
        given = {key.rstrip("_"): value for key, value in filters.items() if value is not None}
        unknown = sorted(set(given) - {*LIST_FILTERS, "engine_generation"})
        if unknown:
            raise BadRequest(
                f"DLC's session list has no filter {', '.join(unknown)}; accepted are "
                f"{', '.join((*LIST_FILTERS, 'engine_generation'))}.",
                400,
            )
        body: dict[str, Any] = {
            "Limit": int(given.get("size", LIST_LIMIT)),
            "Offset": int(given.get("from", 0)),
        }
        if "cluster_name" in given:
            body["DataEngineName"] = str(given["cluster_name"])
        if "state" in given:
            body["State"] = [part.strip() for part in str(given["state"]).split(",") if part.strip()]
        if "sort" in given:
            body["SortFields"] = [str(given["sort"])]
        if "asc" in given:
            body["Asc"] = str(given["asc"]).lower() in ("1", "true", "yes")
        keyword = given.get("keyword", given.get("name"))
        dlc_filters = []
        if keyword is not None:
            dlc_filters.append({"Name": "notebook-keyword", "Values": [str(keyword)]})
        if "engine_generation" in given:
            dlc_filters.append({"Name": "engine-generation", "Values": [str(given["engine_generation"])]})
        if dlc_filters:
            body["Filters"] = dlc_filters
        return self.action("DescribeNotebookSessions", body)

    def read_sessions(self, body: Any) -> list[SessionInfo]:
        return [session_info(item) for item in body.get("Sessions") or []]

    def list_all(self, send: Send, filters: dict[str, Any]) -> list[SessionInfo]:
        """The sessions ``filters`` select, ``kind`` and ``owner`` matched here (DLC has no such filters).
        Without ``from``/``size`` every page is read (by Offset, up to TotalElements or an empty page),
        so that matches beyond the first page are not lost."""
        given = {key.rstrip("_"): value for key, value in filters.items() if value is not None}
        call = self.list_sessions(filters)  # refuses unknown filters before anything is sent
        if "from" in given or "size" in given:
            found = self.read_sessions(send(call))
        else:
            found = []
            for _ in range(MAX_LIST_PAGES):
                body = send(call)
                page = self.read_sessions(body)
                found.extend(page)
                total = body.get("TotalElements") if isinstance(body, dict) else None
                if not isinstance(total, int) or isinstance(total, bool):
                    total = None  # untold: a short page is the last
                ended = len(page) < LIST_LIMIT if total is None else len(found) >= total
                if not page or ended:
                    break
                call = replace(call, json={**call.json, "Offset": len(found)})
            else:
                raise ClientError(
                    f"DLC lists more than {MAX_LIST_PAGES * LIST_LIMIT} sessions; narrow the list with "
                    "state, name or cluster_name."
                )
        kind, owner = given.get("kind"), given.get("owner")
        return [
            info
            for info in found
            if (kind is None or info.kind == str(kind)) and (owner is None or info.owner == str(owner))
        ]

    def delete_session(self, session_id: str | int) -> Call:
        return self.action("DeleteNotebookSession", {"SessionId": str(session_id)})

    # -- statements

    def submit(self, session_id: str | int, body: dict[str, Any]) -> Call:
        # maxRows and resultFormat are the embedded server's extensions: DLC's statements have neither.
        wire = {"SessionId": str(session_id), "Code": body["code"]}
        if body.get("kind"):
            wire["Kind"] = check_kind(str(body["kind"]))
        return self.action("CreateNotebookSessionStatement", wire, retry=False)

    def get_statement(
        self, session_id: str | int, statement_id: int, params: dict[str, Any] | None = None
    ) -> Call:
        body = {"SessionId": str(session_id), "StatementId": str(statement_id)}
        return self.action("DescribeNotebookSessionStatement", body)

    def list_statements(self, session_id: str | int) -> Call:
        return self.action("DescribeNotebookSessionStatements", {"SessionId": str(session_id)})

    def cancel(self, session_id: str | int, statement_id: int) -> Call:
        body = {"SessionId": str(session_id), "StatementId": str(statement_id)}
        return self.action("CancelNotebookSessionStatement", body)

    def read_statement(self, body: Any) -> StatementInfo:
        return statement_info(body.get("NotebookSessionStatement"))

    def read_statements(self, body: Any) -> list[StatementInfo]:
        batch = body.get("NotebookSessionStatements") or {}
        items = batch.get("NotebookSessionStatementBatch") if isinstance(batch, dict) else None
        return [statement_info(item) for item in items or []]

    def sql_result(self, send: Send, statement: StatementInfo, max_rows: int) -> Any:
        if not statement.task_id:
            raise ClientError(
                f"DLC gave statement {statement.id} no TaskId, so its SQL result cannot be read."
            )

        def page(token: str | None, limit: int) -> Any:
            body: dict[str, Any] = {"TaskId": statement.task_id, "MaxResults": limit}
            if token:
                body["NextToken"] = token
            return send(self.action("DescribeNotebookSessionStatementSqlResult", body))

        return read_sql_result(page, max_rows)

    # -- the log

    def logs(self, session_id: str | int, start: int | None, size: int) -> Call:
        body: dict[str, Any] = {"SessionId": str(session_id), "Limit": size}
        if start is not None:
            body["Offset"] = start
        return self.action("DescribeNotebookSessionLog", body)

    def read_logs(self, body: Any, start: int | None, size: int) -> LogPage:
        lines = tuple(str(line) for line in body.get("Logs") or ())
        first = body.get("Offset") if isinstance(body.get("Offset"), int) else (start or 0)
        # DLC tells no total: the log goes on at least to the end of this page.
        return LogPage(start=first, total=first + len(lines), lines=lines)

    def log_page(self, send: Send, session_id: str | int, start: int | None, size: int) -> LogPage:
        """DLC's log answers tell no total and without an Offset give the newest lines, so the total (for
        ``size=0`` or the last lines) is counted by reading the log in pages from its start."""
        if start is not None and size > 0:
            return self.read_logs(send(self.logs(session_id, start, size)), start, size)
        # A log only grows, so counting goes on from the length counted last time: each logged cell then
        # costs one request, not a read of the whole log.
        total, pages = self._log_counts.get(str(session_id), 0), 0
        while pages < MAX_LOG_PAGES:
            got = self.read_logs(send(self.logs(session_id, total, LOG_PAGE)), total, LOG_PAGE)
            total += len(got.lines)
            pages += 1
            if len(got.lines) < LOG_PAGE:
                break
        if len(self._log_counts) >= MAX_LOG_COUNTS:
            self._log_counts.clear()
        self._log_counts[str(session_id)] = total
        if size <= 0:
            return LogPage(start=total, total=total, lines=())
        first = max(total - size, 0)
        page = self.read_logs(send(self.logs(session_id, first, size)), first, size)
        return LogPage(start=page.start, total=max(total, page.total), lines=page.lines)
