"""Every Jupyter output the kernel side makes: a statement's Livy output (text, tables, figures, errors),
the status line and progress bar, and the tables of ``%session``."""

from __future__ import annotations

import datetime
import html
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from IPython.display import DisplayHandle

from dli_kernel.client import SessionInfo
from dli_kernel.client.dialects import SessionLinks
from dli_kernel.client.models import jupyter_outputs
from dli_kernel.client.session_filter import cluster_of
from dli_kernel.kernel.tables import result_rows, table_bundle
from dli_kernel.spec import SessionSpec, format_duration, format_memory

PASSED_THROUGH = ("text/html", "image/png", "image/jpeg", "image/svg+xml", "text/markdown", "text/latex")


@dataclass
class Rendered:
    """What the kernel sends for one statement: printed text, display bundles in order, or an error.

    From a server that keeps a statement's Jupyter outputs apart (the ``outputs`` extension) there is
    no text nor displays but ``replay``: its streams and displays in order (an error's, those made
    before it), and ``result``, its value's bundle, shown as the cell's ``Out[n]``."""

    text: str = ""
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: tuple[str, str, list[str]] | None = None  # ename, evalue, traceback lines
    replay: list[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None


class Result:
    """A remote cell's value. A cell magic's return value is what IPython shows as the cell's ``Out[n]``
    (an ``execute_result`` with the execution count), so the magics return one of these for it."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self.bundle = bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.bundle

    def __repr__(self) -> str:
        return str(self.bundle.get("text/plain", ""))


def render(output: dict[str, Any] | None) -> Rendered:
    if output is None:
        return Rendered()
    outputs = jupyter_outputs(output)
    if output.get("status") == "error":
        traceback = [line.rstrip("\n") for line in output.get("traceback") or []]
        ename, evalue = str(output.get("ename", "Error")), str(output.get("evalue", ""))
        error = (ename, evalue, traceback or [f"{ename}: {evalue}"])
        return Rendered(error=error, replay=None if outputs is None else _replayed(outputs)[0])
    if outputs is not None:
        replay, result = _replayed(outputs)
        return Rendered(replay=replay, result=result)
    data = output.get("data") or {}
    rendered = Rendered(text=data.get("text/plain") or "")
    for mime in PASSED_THROUGH:
        if mime in data:
            rendered.displays.append({mime: data[mime]})
    rows = result_rows(data)
    if rows is not None:
        table = table_bundle(rows.names, rows.rows, rows.total, total_known=rows.total_known)
        rendered.displays.append(table)
    elif "application/json" in data:
        value = data["application/json"]
        rendered.displays.append({"application/json": value, "text/plain": json.dumps(value, indent=1)})
    return rendered


def _replayed(outputs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The outputs to replay, and the value: the last execute result (an earlier one, which IPython
    makes only when told to show every expression, is replayed as a display). Livy's table and SQL
    result types become tables, as in a Livy output's data."""
    last = max((i for i, o in enumerate(outputs) if o["output_type"] == "execute_result"), default=None)
    replay: list[dict[str, Any]] = []
    for index, item in enumerate(outputs):
        if item["output_type"] == "stream" or index == last:
            replay.append(item)
        else:
            replay.append({**item, "output_type": "display_data", "data": _table_or_bundle(item["data"])})
    if last is None:
        return replay, None
    return replay[:last] + replay[last + 1 :], _table_or_bundle(outputs[last]["data"])


def _table_or_bundle(data: dict[str, Any]) -> dict[str, Any]:
    rows = result_rows(data)
    if rows is not None:
        return table_bundle(rows.names, rows.rows, rows.total, total_known=rows.total_known)
    if "application/json" in data and "text/plain" not in data:  # Livy's %json: text for plain viewers
        return {**data, "text/plain": json.dumps(data["application/json"], indent=1)}
    return data


# -- lines that change while a cell runs -----------------------------------------------------------


class StatusLine:
    """One output line updated in place: a status or a progress bar."""

    def __init__(self) -> None:
        self._handle: DisplayHandle | None = None
        self._last: dict[str, str] | None = None
        self._began = time.monotonic()

    @property
    def shown(self) -> bool:
        return self._handle is not None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def show(self, bundle: str | dict[str, str]) -> None:
        data = {"text/plain": bundle} if isinstance(bundle, str) else bundle
        if data == self._last:
            return  # the same words again: spare the frontend a message
        self._last = data
        if self._handle is None:
            self._handle = DisplayHandle()
            self._handle.display(data, raw=True)
        else:
            self._handle.update(data, raw=True)

    def finish(self, text: str) -> None:
        """Leave a short final word, only where something was shown (fast cells show nothing)."""
        if self._handle is not None:
            self.show(text)


def progress_bar(progress: float, elapsed: float, width: int = 30) -> dict[str, str]:
    done = min(max(progress, 0.0), 1.0)
    filled = round(done * width)
    label = f"{done:.0%} · {elapsed:.0f} s"
    return {
        "text/plain": f"[{'#' * filled}{'.' * (width - filled)}] {label}",
        "text/html": f'<progress value="{done:.3f}" max="1" style="width:20em"></progress> {label}',
    }


def bytes_bar(done: int, total: int, elapsed: float, width: int = 30) -> dict[str, str]:
    """A download's bar: bytes read of ``total`` (0: unknown, then only the count)."""
    label = f"{megabytes(done)}" + (f" of {megabytes(total)}" if total else "") + f" · {elapsed:.0f} s"
    if not total:
        return {"text/plain": f"result: {label}", "text/html": f"result: {html.escape(label)}"}
    bar = progress_bar(done / total, elapsed, width)
    return {key: text.rsplit(" · ", 1)[0] + f" · {label}" for key, text in bar.items()}


def megabytes(size: int) -> str:
    """A size as people read it in a status line: one decimal below 10 MB, whole MB above."""
    mb = size / 2**20
    return f"{mb:.1f} MB" if mb < 10 else f"{mb:,.0f} MB"


def write_log(lines: list[str]) -> None:
    """A session's log lines (as the cell's level shows them: kernel/spark_log.py), as the cell's stderr."""
    if not lines:
        return
    sys.stderr.write("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    sys.stderr.flush()


# -- %session's tables -------------------------------------------------------------------------------


def key_value_bundle(rows: list[tuple[str, str]]) -> dict[str, str]:
    """Two columns, names and values; a URL value is a link."""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
        f"{_html_value(v)}</td></tr>"
        for k, v in rows
    )
    width = max((len(k) for k, _ in rows), default=0)
    return {
        "text/html": f"<table>{body}</table>",
        "text/plain": "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in rows),
    }


def link_bundle(label: str, url: str, title: str) -> dict[str, str]:
    return {
        "text/plain": f"{label}: {url}",
        "text/html": f'<a href="{html.escape(url)}" target="_blank">{html.escape(title)}</a>',
    }


def with_signed_links(rows: list[tuple[str, str]], links: SessionLinks, again: str) -> list[tuple[str, str]]:
    """``info_rows`` with the server's signed links, which open in a browser without its token, for a
    while, in place of its own URLs; ``again``: how to get new ones."""
    signed = {"Spark UI": links.spark_ui, "driver log": links.driver_log}
    rows = [(name, signed.get(name) or value) for name, value in rows]
    return [*rows, ("links", f"open in a browser for {opens_for(links.expires_in)}; {again}")]


def opens_for(seconds: int) -> str:
    """How long a signed link opens, as a person reads it."""
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def _html_value(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return f'<a href="{html.escape(value)}" target="_blank">{html.escape(value)}</a>'
    return html.escape(value)


def spec_rows(spec: SessionSpec) -> list[tuple[str, str]]:
    """What a session started from ``spec`` will be."""
    res = spec.effective_resources()
    rows = [
        ("kind", spec.kind),
        ("name", spec.name or "(generated)"),
        ("sc_type", spec.reported_sc_type),
        ("cluster", spec.cluster_name or "(default)"),
        ("driver", f"{format_memory(res.driver_memory_mb)}, {_cores(res.driver_cores)}"),
        (
            "executors",
            f"{res.num_executors} × ({format_memory(res.executor_memory_mb)}, {_cores(res.executor_cores)})",
        ),
        ("conf", ", ".join(f"{k}={v}" for k, v in sorted(spec.conf.items())) or "(none)"),
        ("heartbeat timeout", _timeout(spec.heartbeat_timeout_s)),
    ]
    for label, values in (("jars", spec.jars), ("pyFiles", spec.py_files), ("files", spec.files)):
        if values:
            rows.append((label, ", ".join(values)))
    return rows


def info_rows(info: SessionInfo, spec: SessionSpec | None) -> list[tuple[str, str]]:
    """A running session's details, as the server reports them; ``spec``: what this notebook asked for,
    shown where the server reports nothing (None: nothing was asked for, as from a shell)."""
    raw = info.raw
    conf = raw.get("conf") or {}
    if isinstance(conf, list):  # DLI documents conf as a list of objects
        conf = {str(item.get("key")): item.get("value") for item in conf if isinstance(item, dict)}
    rows = [
        ("id", str(info.id)),
        ("appId", info.app_id or ""),
        ("name", info.name or ""),
        ("kind", info.kind or ""),
        ("state", info.state),
        ("sc_type", str(raw.get("sc_type") or "")),
        ("cluster", cluster_of(info) or ""),
        ("owner", info.owner or ""),
        ("proxy user", info.proxy_user or "(none)"),
        ("driver", f"{raw.get('driverMemory') or '?'}, {_cores(raw.get('driverCores'))}"),
        (
            "executors",
            f"{raw.get('numExecutors') or '?'} × ({raw.get('executorMemory') or '?'}, "
            f"{_cores(raw.get('executorCores'))})",
        ),
        ("conf", ", ".join(f"{k}={v}" for k, v in sorted(conf.items())) or "(none)"),
        ("created", created(info)),
        ("validity period", validity(info)),
        ("heartbeat timeout", _timeout(raw.get("heartbeatTimeoutInSecond"))),
        ("Spark UI", info.spark_ui_url or ""),
        ("driver log", info.driver_log_url or ""),
    ]
    if "sc_type" not in raw and spec is not None:  # plain Livy reports no resources: what was asked for
        rows[5] = ("sc_type", f"{spec.reported_sc_type} (requested)")
    return rows


def sessions_table(
    sessions: list[SessionInfo], is_mine: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """``%session list``: one row a session, this notebook's marked with ``*`` (no such column without
    ``is_mine``, as in a shell, which has no session of its own)."""
    names = ["name", "id", "state", "kind", "cluster", "creator", "created", "validity period"]
    rows: list[list[Any]] = [
        [
            info.name or "",
            info.id,
            info.state,
            info.kind or "",
            cluster_of(info) or "",
            info.owner or "",
            created(info),
            validity(info),
        ]
        for info in sessions
    ]
    if is_mine is None:
        return table_bundle(names, rows, len(rows))
    marks = ["*" if is_mine(info.id) else "" for info in sessions]
    bundle = table_bundle(
        ["", *names], [[mark, *row] for mark, row in zip(marks, rows, strict=True)], len(rows)
    )
    bundle["text/plain"] += "\n* this notebook's session" if any(marks) else ""
    return bundle


def _cores(value: object) -> str:
    return f"{value} core{'' if value == 1 else 's'}" if isinstance(value, int) else "? cores"


def _timeout(seconds: object) -> str:
    return format_duration(seconds) if isinstance(seconds, int) and seconds > 0 else "none"


def _created_at(info: SessionInfo) -> datetime.datetime | None:
    stamp = info.raw.get("create_time")
    if not isinstance(stamp, int | float) or stamp <= 0:
        return None
    return datetime.datetime.fromtimestamp(stamp / 1000, tz=datetime.UTC)  # DLI reports milliseconds


def created(info: SessionInfo) -> str:
    when = _created_at(info)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else ""


def validity(info: SessionInfo, now: datetime.datetime | None = None) -> str:
    """How long the session has run (DLC's validity period); for an ended one, until it ended."""
    began = _created_at(info)
    if began is None:
        return ""
    end = now or datetime.datetime.now(tz=datetime.UTC)
    updated = info.raw.get("update_time")
    if info.ended and isinstance(updated, int | float) and updated > 0:
        end = datetime.datetime.fromtimestamp(updated / 1000, tz=datetime.UTC)
    return format_duration(age((end - began).total_seconds()))


# An age is read at a glance: below each limit, it is counted in whole units of that size.
_AGE_UNITS = ((120, 1), (3 * 3600, 60), (48 * 3600, 3600))


def age(seconds: float) -> int:
    """``seconds`` cut to the unit it is read in: seconds below 2 min, minutes below 3 h, hours below
    2 days, days after; ``format_duration`` then names that unit ("90s", "127m", "27h", "3d")."""
    whole = max(int(seconds), 0)
    size = next((size for limit, size in _AGE_UNITS if whole < limit), 86400)
    return whole - whole % size
