"""A statement's Livy output as Jupyter outputs: text as a stream, tables as HTML, figures, errors."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

LIVY_TABLE_MIME = "application/vnd.livy.table.v1+json"
PASSED_THROUGH = ("text/html", "image/png", "image/jpeg", "image/svg+xml", "text/markdown", "text/latex")


@dataclass
class Rendered:
    """What the kernel sends for one statement: printed text, display bundles in order, or an error."""

    text: str = ""
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: tuple[str, str, list[str]] | None = None  # ename, evalue, traceback lines


def render(output: dict[str, Any] | None) -> Rendered:
    if output is None:
        return Rendered()
    if output.get("status") == "error":
        traceback = [line.rstrip("\n") for line in output.get("traceback") or []]
        ename, evalue = str(output.get("ename", "Error")), str(output.get("evalue", ""))
        return Rendered(error=(ename, evalue, traceback or [f"{ename}: {evalue}"]))
    data = output.get("data") or {}
    rendered = Rendered(text=data.get("text/plain") or "")
    for mime in PASSED_THROUGH:
        if mime in data:
            rendered.displays.append({mime: data[mime]})
    if LIVY_TABLE_MIME in data:
        table = data[LIVY_TABLE_MIME]
        names = [header["name"] for header in table.get("headers", [])]
        rendered.displays.append(table_bundle(names, table.get("data", []), len(table.get("data", []))))
    if "application/json" in data:
        value = data["application/json"]
        if isinstance(value, dict) and "schema" in value and "data" in value:
            names = [column["name"] for column in value["schema"].get("fields", [])]
            total = value.get("total", len(value["data"]))
            rendered.displays.append(table_bundle(names, value["data"], total))
        else:
            rendered.displays.append({"application/json": value, "text/plain": json.dumps(value, indent=1)})
    return rendered


def table_bundle(names: list[str], rows: list[list[Any]], total: int) -> dict[str, str]:
    """An HTML table with a text twin; when rows were cut, both say how many there were."""
    shown = len(rows)
    note = (
        f"{shown} of {total} rows shown (raise the row limit to see more)"
        if total > shown
        else (f"{shown} row{'s' if shown != 1 else ''}")
    )
    cells = [[_cell(value) for value in row] for row in rows]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    table_html = (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p>{html.escape(note)}</p>"
    )
    widths = [
        max([len(name)] + [len(row[i]) for row in cells if i < len(row)]) for i, name in enumerate(names)
    ]
    lines = ["  ".join(name.ljust(width) for name, width in zip(names, widths, strict=True))]
    lines += ["  ".join(c.ljust(width) for c, width in zip(row, widths, strict=False)) for row in cells]
    return {"text/html": table_html, "text/plain": "\n".join([*lines, note])}


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
