"""How sessions, statements and SQL results are written in DLC's action responses, field for field as the
models of Tencent's SDK (``tencentcloud.dlc.v20210125.models``) read them: a field the model lacks would
make the SDK warn, and one of the wrong type would break a typed client.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from dli_kernel.protocol import DLC_UTC_OFFSET_HOURS, SESSION_STATES, SQL_RESULT_MIME, STATEMENT_DONE
from dli_kernel.server.dlc_params import MAX_EXECUTORS, DlcError, TaskId, size_name
from dli_kernel.server.manager import ManagedSession, Statement
from dli_kernel.server.outputs import load
from dli_kernel.server.ui_proxy import driver_log_path
from dli_kernel.server.views import spark_ui_url
from dli_kernel.spec import parse_number

# DLC's session states are ours but `recovering`: a session the server is reattaching to its driver after
# a restart cannot run statements yet, which is what DLC's clients know as `starting`.
SHOWN_AS = {"recovering": "starting"}
DLC_STATES = tuple(state for state in SESSION_STATES if state not in SHOWN_AS)
BEIJING = timezone(timedelta(hours=DLC_UTC_OFFSET_HOURS))
SESSION_TYPE = "independent"  # DLC: a session with its own resources, in no resource group
# Spark's type names where DLC's Column.Type names them otherwise.
COLUMN_TYPES = {
    "byte": "tinyint", "short": "smallint", "integer": "int", "long": "bigint", "timestamp_ntz": "timestamp",
}  # fmt: skip


def dlc_state(state: str) -> str:
    return SHOWN_AS.get(state, state)


def our_states(states: list[str]) -> list[str]:
    """The server's states a DLC state filter stands for."""
    return [ours for state in states for ours in (state, *(k for k, v in SHOWN_AS.items() if v == state))]


def dlc_time(ms: int) -> str:
    """DLC's time format ("2006-01-02 15:04:05"), in Beijing time as Tencent Cloud writes times without a
    zone; empty for a time that has not come."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def pairs(mapping: dict[str, Any]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in mapping.items()]


def _sizes(session: ManagedSession) -> dict[str, Any]:
    res = session.spec.effective_resources()
    # Stored values are shown, never trusted: a session recorded before Arguments were checked, or made
    # on the Livy path (which passes conf through), may hold anything here.
    most = session.spec.conf.get(MAX_EXECUTORS)
    most_count = parse_number(most.strip()) if isinstance(most, str) else None
    return {
        "DriverSize": size_name(res.driver_cores, res.driver_memory_mb),
        "ExecutorSize": size_name(res.executor_cores, res.executor_memory_mb),
        "ExecutorNumbers": res.num_executors,
        "ExecutorMaxNumbers": res.num_executors if most_count is None else most_count,
    }


def _common(session: ManagedSession, base_url: str) -> dict[str, Any]:
    """What NotebookSessionInfo and NotebookSessions both have."""
    spec = session.spec
    return {
        "Name": spec.name or "",
        "Kind": spec.kind,
        "DataEngineName": spec.cluster_name or "",
        "SessionId": session.uuid,
        "ProxyUser": spec.proxy_user or "",
        "State": dlc_state(session.state),
        "SparkAppId": session.app_id or "",
        "CreateTime": dlc_time(session.created),
        "SparkUiUrl": spark_ui_url(session, base_url) or "",
        "SessionType": SESSION_TYPE,
        "DataEngineId": spec.cluster_name or "",
        "ResourceGroupId": "",
        "ResourceGroupName": "",
        "SparkAppName": spec.name or "",
    }


def session_info(session: ManagedSession, base_url: str) -> dict[str, Any]:
    """NotebookSessionInfo."""
    spec = session.spec
    sizes = _sizes(session)
    return {
        **_common(session, base_url),
        **sizes,
        "Arguments": pairs(dict(spec.conf)),
        "ProgramDependentFiles": list(spec.files),
        "ProgramDependentJars": list(spec.jars),
        "ProgramDependentPython": list(spec.py_files),
        "ProgramArchives": list(spec.archives),
        "TimeoutInSecond": spec.heartbeat_timeout_s,
        "AppInfo": pairs(
            {
                "driverLogUrl": base_url + driver_log_path(session.id),
                "sparkUiUrl": spark_ui_url(session, base_url) or "",
                "livySessionId": str(session.id),
                "creator": session.owner,
            }
        ),
        "PodSize": 0,
        "PodNumbers": 1 + sizes["ExecutorNumbers"],
    }


def session_summary(session: ManagedSession, base_url: str) -> dict[str, Any]:
    """NotebookSessions: one row of DescribeNotebookSessions."""
    return {
        **_common(session, base_url),
        "LastRunningTime": dlc_time(session.updated),
        "Creator": session.owner,
        "KernelId": "",
    }


def _data_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _sql_rows(statement: Statement) -> dict[str, Any] | None:
    """The Livy SQL result (schema, data, total) of a finished SQL statement; None for any other."""
    # DLC's answers are whole JSON documents: a spilled output is read back for the request's time.
    output = load(statement.output) or {}
    if statement.kind != "sql" or output.get("status") != "ok":
        return None
    result = output.get("data", {}).get(SQL_RESULT_MIME)
    return result if isinstance(result, dict) and isinstance(result.get("data"), list) else None


def statement_output(statement: Statement) -> dict[str, Any] | None:
    """StatementOutput, or None while the statement has none."""
    output = load(statement.output)
    if output is None:
        return None
    data = output.get("data") or {}
    rows = _sql_rows(statement)
    return {
        "ExecutionCount": output.get("execution_count", statement.id),
        "Data": pairs({mime: _data_value(value) for mime, value in data.items()}),
        "Status": output.get("status", ""),
        "ErrorName": output.get("ename", ""),
        "ErrorValue": output.get("evalue", ""),
        "ErrorMessage": list(output.get("traceback", [])),
        "SQLResult": json.dumps(rows["data"], ensure_ascii=False) if rows else "",
    }


def statement_info(session: ManagedSession, statement: Statement) -> dict[str, Any]:
    """NotebookSessionStatementInfo; Progress in per cent, as DLC counts it."""
    return {
        "Completed": statement.completed,
        "Started": statement.started,
        "Progress": round(statement.progress * 100, 2),
        "StatementId": str(statement.id),
        "State": statement.state,
        "OutPut": statement_output(statement),
        "BatchId": "",
        "Code": statement.code,
        "TaskId": str(TaskId(session.uuid, str(statement.id))),
    }


def statement_batch(session: ManagedSession, statements: list[Statement]) -> dict[str, Any]:
    """NotebookSessionStatementBatchInformation: every statement of the session, oldest first."""
    return {
        "NotebookSessionStatementBatch": [statement_info(session, s) for s in statements],
        "IsAvailable": all(s.state in STATEMENT_DONE for s in statements),
        "SessionId": session.uuid,
        "BatchId": "",
    }


def _column(position: int, field: dict[str, Any]) -> dict[str, Any]:
    spark_type = field.get("type")
    precision = scale = 0
    if isinstance(spark_type, dict):  # array, map, struct: Spark writes them as objects
        name, text = str(spark_type.get("type", "string")), json.dumps(spark_type)
    else:
        text = str(spark_type)
        name = text.split("(", 1)[0]
        if name == "decimal" and "(" in text:
            digits = text[text.index("(") + 1 : -1].split(",")
            precision, scale = int(digits[0]), int(digits[1])
    return {
        "Name": str(field.get("name", "")),
        "Type": COLUMN_TYPES.get(name, name),
        "Comment": "",
        "Precision": precision,
        "Scale": scale,
        "Nullable": "true" if field.get("nullable", True) else "false",
        "Position": position,
        "CreateTime": "",
        "ModifiedTime": "",
        "IsPartition": False,
        "TypeText": text,
    }


def sql_result(
    session: ManagedSession, statement: Statement, start: int, limit: int, cut: int, base_url: str
) -> dict[str, Any]:
    """DescribeNotebookSessionStatementSqlResult's answer: ``limit`` rows from ``start``, as DLC's JSON
    string of rows (each a list of values); NextToken is where the next page starts, empty after the last.
    ``cut`` > 0 shortens string values to that many characters."""
    if statement.kind != "sql":
        raise DlcError(
            "InvalidParameter.InvalidStatementKindType",
            f"statement {statement.id} is {statement.kind}; only SQL statements have a SQL result.",
        )
    if statement.state not in STATEMENT_DONE:
        raise DlcError(
            "FailedOperation", f"statement {statement.id} is {statement.state}; its result is not ready."
        )
    rows = _sql_rows(statement)
    if rows is None:
        raise DlcError(
            "FailedOperation",
            f"statement {statement.id} is {statement.state} and has no result"
            + (f": {(statement.output or {}).get('evalue', '')}." if statement.state == "error" else "."),
        )
    limit = max(limit, 1)  # so that NextToken always moves on: a page of 0 rows would be asked for forever
    data = rows["data"]
    page = data[start : start + limit]
    if cut > 0:
        page = [[v[:cut] if isinstance(v, str) else v for v in row] for row in page]
    fields = (rows.get("schema") or {}).get("fields", [])
    return {
        "TaskId": str(TaskId(session.uuid, str(statement.id))),
        "ResultSet": json.dumps(page, ensure_ascii=False),
        "ResultSchema": [_column(i, f) for i, f in enumerate(fields)],
        "NextToken": str(start + limit) if start + limit < len(data) else "",
        "OutputPath": "",
        "UseTime": max(statement.completed - statement.started, 0),
        "AffectRows": int(rows.get("total", len(data))),
        "DataAmount": 0,
        "UiUrl": spark_ui_url(session, base_url) or "",
    }
