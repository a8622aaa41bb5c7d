"""Sessions and statements as the client sees them, whatever the dialect's wire form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dli_kernel.protocol import (
    ENDED_STATES,
    JUPYTER_OUTPUTS,
    READY_STATES,
    STATE_SPELLINGS,
    STATEMENT_DONE,
    STATEMENT_STATES,
)

SESSION_ENDED = frozenset(ENDED_STATES)
SESSION_READY = frozenset(READY_STATES)

# Real servers spell some states their own way; anything not listed passes through unchanged.


def normalize_state(state: object) -> str:
    text = str(state or "").strip().lower().replace("-", "_")
    return STATE_SPELLINGS.get(text, text)


def settle_statement(state: str, output: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """A statement state outside Livy's as one that has ended, so that no wait goes on for it: with an
    output, as its status says; without, as an error naming the state."""
    if state in STATEMENT_STATES:
        return state, output
    if output is not None and output.get("status"):
        return ("available" if output["status"] == "ok" else "error"), output
    shown = state or "(none)"
    reason = f"the server reports the statement in state {shown!r}, which is not a statement state; it is "
    reason += "treated as ended, and may still be running there."
    return "error", {"status": "error", "ename": "UnknownState", "evalue": reason, "traceback": []}


@dataclass(frozen=True)
class SessionInfo:
    id: str  # Livy's integer id as text, or DLI's uuid: always what the paths take
    state: str
    kind: str | None = None
    name: str | None = None
    app_id: str | None = None
    owner: str | None = None
    proxy_user: str | None = None
    spark_ui_url: str | None = None
    driver_log_url: str | None = None
    log: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.state in SESSION_ENDED

    @property
    def ready(self) -> bool:
        return self.state in SESSION_READY

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SessionInfo:
        app_info = body.get("appInfo") or {}
        return cls(
            id=str(body["id"]),
            state=normalize_state(body.get("state")),
            kind=body.get("kind"),
            name=body.get("name"),
            app_id=body.get("appId"),
            owner=body.get("owner"),
            proxy_user=body.get("proxyUser"),
            spark_ui_url=app_info.get("sparkUiUrl"),
            driver_log_url=app_info.get("driverLogUrl"),
            log=tuple(body.get("log") or ()),
            raw=body,
        )


@dataclass(frozen=True)
class StatementInfo:
    id: int
    state: str
    code: str = ""
    output: dict[str, Any] | None = None
    progress: float = 0.0
    started: int = 0
    completed: int = 0
    log_size: int | None = None  # the session log's size in bytes, from servers that long-poll
    task_id: str | None = None  # DLC: the task whose SQL result can be read

    @property
    def done(self) -> bool:
        """Finished with its output. Livy may say ``available`` a moment before the output is set."""
        if self.state == "available":
            return self.output is not None
        return self.state in STATEMENT_DONE

    @property
    def jupyter_outputs(self) -> list[dict[str, Any]] | None:
        """The statement's Jupyter outputs in order (streams, display data, its execute result), from a
        server with the ``outputs`` extension; None where the output has none (plain Livy, DLI, DLC, a
        SQL statement) or they are not well formed: ``output["data"]`` then says it all."""
        return jupyter_outputs(self.output)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StatementInfo:
        output = body.get("output")
        state, output = settle_statement(
            normalize_state(body.get("state")), output if isinstance(output, dict) else None
        )
        return cls(
            id=int(body["id"]),
            state=state,
            code=body.get("code") or "",
            output=output,
            progress=float(body.get("progress") or 0.0),
            started=int(body.get("started") or 0),
            completed=int(body.get("completed") or 0),
            log_size=int(body["logSize"]) if isinstance(body.get("logSize"), int) else None,
        )


_STREAMS = ("stdout", "stderr")
_DISPLAYS = ("display_data", "execute_result")


def jupyter_outputs(output: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """``output``'s ``jupyterOutputs`` when each is a stream (``name``, ``text``) or a display
    (``data``, optional ``metadata``); None otherwise."""
    outputs = (output or {}).get(JUPYTER_OUTPUTS)
    if not isinstance(outputs, list):
        return None
    for item in outputs:
        if not isinstance(item, dict):
            return None
        if not (_stream(item) or _display(item)):
            return None
    return outputs


def _stream(item: dict[str, Any]) -> bool:
    kind, name, text = item.get("output_type"), item.get("name"), item.get("text")
    return kind == "stream" and name in _STREAMS and isinstance(text, str)


def _display(item: dict[str, Any]) -> bool:
    return (
        item.get("output_type") in _DISPLAYS
        and isinstance(item.get("data"), dict)
        and isinstance(item.get("metadata", {}), dict)
    )


@dataclass(frozen=True)
class LogPage:
    start: int
    total: int
    lines: tuple[str, ...]
