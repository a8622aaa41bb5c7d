"""How sessions and statements are written on the wire: Livy's shapes, and DLI's for the ``/v2.0`` paths.

A session's JSON includes the tail of its driver log, which is a file read: call these from a worker
thread, never on the event loop.
"""

from __future__ import annotations

from typing import Any

from dli_kernel.server.manager import ManagedSession, Statement
from dli_kernel.server.ui_proxy import driver_log_path, ui_path
from dli_kernel.spec import format_memory

LOG_LINES_IN_SESSION = 10


def _resources(session: ManagedSession) -> dict[str, Any]:
    """The fields both families report: effective resources (tier merged with overrides) and the rest."""
    spec, res = session.spec, session.spec.effective_resources()
    return {
        "sc_type": spec.reported_sc_type,
        "cluster_name": spec.cluster_name,
        "driverMemory": format_memory(res.driver_memory_mb),
        "driverCores": res.driver_cores,
        "executorMemory": format_memory(res.executor_memory_mb),
        "executorCores": res.executor_cores,
        "numExecutors": res.num_executors,
        "conf": dict(spec.conf),
        "jars": list(spec.jars),
        "pyFiles": list(spec.py_files),
        "files": list(spec.files),
        "archives": list(spec.archives),
        "modules": list(spec.modules),
        "heartbeatTimeoutInSecond": spec.heartbeat_timeout_s,
        "ttl": spec.ttl_s,
        "idleTimeout": spec.idle_timeout_s,
        # Attached to its owner's shared driver (JVM, executors, Spark UI), not a driver of its own.
        "sharedDriver": session.shared_driver,
        "create_time": session.created,
        "update_time": session.updated,
    }


def spark_ui_url(session: ManagedSession, base_url: str) -> str | None:
    """Where a caller finds the session's Spark UI: the server's proxy, behind its token (the driver's own
    port answers on the loopback only); None while the driver has none."""
    return f"{base_url}{ui_path(session.id)}" if session.ui_url else None


def _app_info(session: ManagedSession, base_url: str) -> dict[str, Any]:
    # As Livy's, a page for a browser (the text log; JSON clients read `/log`), on the Livy path for both
    # families: the one every client can follow. It takes a token, or the cookie of a link from `/links`.
    return {
        "driverLogUrl": base_url + driver_log_path(session.id),
        "sparkUiUrl": spark_ui_url(session, base_url),
    }


def livy_session(session: ManagedSession, base_url: str) -> dict[str, Any]:
    return {
        "id": session.id,
        "name": session.spec.name,
        "appId": session.app_id,
        "owner": session.owner,
        "proxyUser": session.spec.proxy_user,
        "state": session.state,
        "kind": session.spec.kind,
        "appInfo": _app_info(session, base_url),
        "log": session.log_lines(size=LOG_LINES_IN_SESSION)[2],
        "queue": session.spec.cluster_name,
        "uuid": session.uuid,
        **_resources(session),
    }


def dli_session(session: ManagedSession, base_url: str) -> dict[str, Any]:
    return {
        "id": session.uuid,
        "appId": session.app_id,
        "name": session.spec.name,
        "owner": session.owner,
        "proxyUser": session.spec.proxy_user,
        "kind": session.spec.kind,
        "log": session.log_lines(size=LOG_LINES_IN_SESSION)[2],
        "state": session.state,
        "livy_id": session.id,
        "project_id": session.project_id,
        "appInfo": _app_info(session, base_url),
        **_resources(session),
    }


def statement_json(statement: Statement) -> dict[str, Any]:
    return {
        "id": statement.id,
        "code": statement.code,
        "kind": statement.kind,
        "state": statement.state,
        "output": statement.output,
        "progress": statement.progress,
        "started": statement.started,
        "completed": statement.completed,
    }
