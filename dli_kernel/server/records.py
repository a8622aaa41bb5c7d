"""What the server holds about a session and its statements, and the records the store keeps of them.

A record is plain JSON: what a restarted server needs to show the session again. Runtime fields (the
driver, the queue, timers) are never saved, nor is a large output: a statement's record holds the stub of
a spilled one (``outputs``) and its size, and the session's directory holds the file.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_kernel.protocol import DEFAULT_MAX_ROWS, DRIVER_LOG, ENDED_STATES, JUPYTER_OUTPUTS
from dli_kernel.server.driver_process import Driver, ExecutionResult
from dli_kernel.server.outputs import SpilledOutput, output_path
from dli_kernel.server.session_log import SessionLog
from dli_kernel.spec import SessionSpec

# The key of a statement record saying its output was spilled, and how many bytes the file holds.
SPILLED = "spilled"
# The statement kinds whose outputs carry their Jupyter outputs.
JUPYTER_KINDS = ("pyspark", "spark")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Statement:
    id: int
    code: str
    kind: str
    max_rows: int = DEFAULT_MAX_ROWS
    state: str = "waiting"
    output: dict[str, Any] | None = None
    progress: float = 0.0
    started: int = 0
    completed: int = 0
    result_format: str = "json"
    job_group: str | None = field(default=None, repr=False)
    cancel_sent: float = field(default=0.0, repr=False)  # monotonic time of the last interrupt

    def record(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict: that would copy a SpilledOutput without its file.
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        output = self.output
        if output is not None:
            record["output"] = dict(output)
        if isinstance(output, SpilledOutput):
            record[SPILLED] = output.size
        return record


@dataclass
class ManagedSession:
    id: int
    uuid: str
    spec: SessionSpec
    owner: str
    project_id: str | None
    workdir: Path
    state: str = "not_started"
    created: int = field(default_factory=now_ms)
    updated: int = 0
    app_id: str | None = None
    ui_url: str | None = None
    ended_reason: str | None = None
    shared_driver: bool = False  # attached to its owner's shared driver (shared_host), not one of its own
    statements: list[Statement] = field(default_factory=list)
    # Runtime only, never saved:
    queue: deque[Statement] = field(default_factory=deque, repr=False)
    driver: Driver | None = field(default=None, repr=False)
    stopping: bool = field(default=False, repr=False)
    last_touch: float = field(default_factory=time.monotonic, repr=False)
    last_activity: float = field(default_factory=time.monotonic, repr=False)
    # The session's worker waits on it; made with the manager's lock when the worker starts.
    wakeup: threading.Condition | None = field(default=None, repr=False)
    log: SessionLog = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.log = SessionLog(self.log_path)

    @property
    def log_path(self) -> Path:
        return self.workdir / DRIVER_LOG

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    def record(self) -> dict[str, Any]:
        spec = dataclasses.asdict(self.spec)
        return {
            "id": self.id,
            "uuid": self.uuid,
            "spec": spec,
            "owner": self.owner,
            "project_id": self.project_id,
            "workdir": str(self.workdir),
            "state": self.state,
            "created": self.created,
            "updated": self.updated,
            "app_id": self.app_id,
            "ui_url": self.ui_url,
            "ended_reason": self.ended_reason,
            "shared_driver": self.shared_driver,
        }

    def log_lines(self, start: int | None = None, size: int = 100) -> tuple[int, int, list[str]]:
        """(from, total, lines) of the driver log; no ``start`` means the last ``size`` lines."""
        return self.log.lines(start, size)


def session_from_record(record: dict[str, Any], statement_records: list[dict[str, Any]]) -> ManagedSession:
    spec_fields: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value for key, value in record["spec"].items()
    }
    session = ManagedSession(
        id=record["id"],
        uuid=record["uuid"],
        spec=SessionSpec(**spec_fields),
        owner=record["owner"],
        project_id=record["project_id"],
        workdir=Path(record["workdir"]),
        state=record["state"],
        created=record["created"],
        updated=record["updated"],
        app_id=record["app_id"],
        ui_url=record["ui_url"],
        ended_reason=record["ended_reason"],
        shared_driver=bool(record.get("shared_driver")),  # absent from records older than it
    )
    session.statements = [_statement_from_record(session.workdir, st) for st in statement_records]
    return session


def _statement_from_record(workdir: Path, record: dict[str, Any]) -> Statement:
    fields = dict(record)
    size = fields.pop(SPILLED, 0)
    statement = Statement(**fields)
    if size and statement.output is not None:
        statement.output = SpilledOutput(statement.output, output_path(workdir, statement.id), size)
    return statement


def statement_output(statement: Statement, result: ExecutionResult) -> dict[str, Any]:
    """A finished statement's Livy output; ``execution_count`` is the statement's id, as Livy counts.

    A Python or Scala statement's output also carries its Jupyter outputs (``jupyterOutputs``, the
    ``outputs`` extension): Livy's clients read ``data`` and never see the difference. SQL and Arrow
    statements make data, not a notebook's outputs, and are not worth the copy."""
    if result.status == "ok":
        output: dict[str, Any] = {"status": "ok", "execution_count": statement.id, "data": result.data}
    else:
        traceback = result.traceback
        if statement.kind == "sql":
            # The Python frames of our SQL runner are not the user's business; the message is.
            traceback = [line + "\n" for line in f"{result.ename}: {result.evalue}".splitlines()]
        output = {
            "status": "error",
            "execution_count": statement.id,
            "ename": result.ename,
            "evalue": result.evalue,
            "traceback": traceback,
        }
    if result.outputs is not None and statement.kind in JUPYTER_KINDS and statement.result_format == "json":
        output[JUPYTER_OUTPUTS] = result.outputs
    return output


def error_output(statement: Statement, ename: str, evalue: object) -> dict[str, Any]:
    """The output of a statement the server ended itself (its session ended, its driver died)."""
    return {
        "status": "error",
        "execution_count": statement.id,
        "ename": ename,
        "evalue": str(evalue),
        "traceback": [f"{ename}: {evalue}\n"],
    }
