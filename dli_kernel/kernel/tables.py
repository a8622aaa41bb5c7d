"""Tables of rows: a statement's result or a ``-o`` DataFrame, as HTML with a plain-text twin.

The HTML is always the complete plain table: what nbconvert, GitHub and untrusted notebooks show. A longer
table also carries a small script of ours that adds a filter box, click-to-sort headers and pages where the
front end runs scripts (JupyterLab's trusted outputs, VS Code). The script reads the rows from the table
itself and names only the table's element, so no value is ever written into code.
"""

from __future__ import annotations

import html
import json
import uuid
from dataclasses import dataclass
from typing import Any

from dli_kernel.protocol import LIVY_TABLE_MIME, SQL_RESULT_MIME

RAISE_LIMIT = "raise the row limit to see more"
INTERACTIVE_AFTER = 20  # rows: a longer table gets a filter box, sorting and pages where scripts run
PAGE_ROWS = 20

# Spark's simple type names (its schema JSON) and Livy's %table type names, as Vega-Lite reads them.
_NUMBERS = ("byte", "short", "integer", "long", "float", "double", "decimal", "tinyint", "smallint", "int")
_TIMES = ("date", "timestamp", "timestamp_ntz", "timestamp_ltz")


@dataclass
class Rows:
    """A statement's result as a table or a chart reads it: column names, their Vega-Lite types, rows,
    and how many rows the query had (more than ``rows`` when the row limit cut it)."""

    names: list[str]
    types: list[str]  # "quantitative", "temporal" or "nominal"
    rows: list[list[Any]]
    total: int
    type_names: list[str]  # as the source said them, for messages
    total_known: bool = True  # False: the rows past the limit were not counted, ``total`` is a lower bound


def result_rows(data: dict[str, Any]) -> Rows | None:
    """The rows in a statement's output ``data``: a SQL result (``{schema, data, total}``) or Livy's
    ``%table`` (``{headers, data}``); None for anything else (text, a JSON value that is no table)."""
    value = data.get(SQL_RESULT_MIME)
    if isinstance(value, dict) and "schema" in value and "data" in value:
        return sql_rows(value)
    if isinstance(data.get(LIVY_TABLE_MIME), dict):
        return livy_rows(data[LIVY_TABLE_MIME])
    return None


def sql_rows(value: dict[str, Any]) -> Rows:
    """A SQL result's ``{schema, data, total}`` as rows."""
    schema = value.get("schema")
    fields = schema.get("fields") or [] if isinstance(schema, dict) else []
    fields = [field for field in fields if isinstance(field, dict)]
    spark_types = [field.get("type") for field in fields]
    rows = value.get("data") or []
    total = value.get("total", len(rows))
    type_names = [str(t.get("type", "nested")) if isinstance(t, dict) else str(t) for t in spark_types]
    names = [str(field.get("name")) for field in fields]
    # Drivers from before ``totalKnown`` always counted.
    known = value.get("totalKnown") is not False
    return Rows(names, [vega_type(t) for t in spark_types], rows, total, type_names, known)


def livy_rows(table: dict[str, Any]) -> Rows:
    """Livy's ``%table`` output (``{headers, data}``) as rows."""
    headers = [header for header in table.get("headers") or [] if isinstance(header, dict)]
    rows = table.get("data") or []
    type_names = [str(header.get("type", "")) for header in headers]
    names = [str(header.get("name")) for header in headers]
    return Rows(names, [vega_type(t) for t in type_names], rows, len(rows), type_names)


def vega_type(spark_type: Any) -> str:
    """A Spark schema type (``"long"``, ``"decimal(10,2)"``, a nested dict) or a Livy table type
    (``"INT_TYPE"``) as a Vega-Lite field type."""
    if not isinstance(spark_type, str):
        return "nominal"  # arrays, maps and structs are drawn as their text, if at all
    name = spark_type.lower().removesuffix("_type").split("(", 1)[0]
    if name in _NUMBERS:
        return "quantitative"
    if name in _TIMES:
        return "temporal"
    return "nominal"


def table_bundle(
    names: list[str],
    rows: list[list[Any]],
    total: int,
    *,
    total_known: bool = True,
    more: str = RAISE_LIMIT,
    held: str = "",
    hint: str | None = None,
) -> dict[str, str]:
    """An HTML table with a text twin; when rows were cut, both say how many there were, or, when they
    were not counted (``total_known`` false), that there are more.

    ``more``: how to see more rows; ``held``: more words for the row-count line (what a ``-o`` variable
    holds); ``hint``: one line under the table (the chart command for these rows)."""
    shown = len(rows)
    if not total_known:
        note = f"first {shown} rows shown; more rows exist ({more})"
    elif total > shown:
        note = f"{shown} of {total} rows shown ({more})"
    else:
        note = f"{shown} row{'s' if shown != 1 else ''}"
    if held:
        note += f"; {held}"
    cells = [[_cell(value) for value in row] for row in rows]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    table_html = (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p>{html.escape(note)}</p>"
    )
    if hint:
        table_html += f"<p><code>{html.escape(hint)}</code></p>"
    if shown > INTERACTIVE_AFTER:
        element = f"dli-table-{uuid.uuid4().hex}"  # unique: a notebook holds many tables
        script = _SCRIPT.replace("ELEMENT", element).replace("PAGE_ROWS", str(PAGE_ROWS))
        table_html = f'<div id="{element}">{table_html}</div><script>{script}</script>'
    widths = [
        max([len(name)] + [len(row[i]) for row in cells if i < len(row)]) for i, name in enumerate(names)
    ]
    # Padded to line up, but not at the end: a terminal or a diff would show the trailing spaces.
    lines = ["  ".join(name.ljust(width) for name, width in zip(names, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(width) for c, width in zip(row, widths, strict=False)).rstrip() for row in cells
    ]
    return {"text/html": table_html, "text/plain": "\n".join([*lines, note, *([hint] if hint else [])])}


def frame_bundle(
    frame: Any,
    total: int,
    name: str,
    shown: int = 1000,
    hint: str | None = None,
    *,
    total_known: bool = True,
    more: str = RAISE_LIMIT,
) -> dict[str, str]:
    """A table of a ``-o`` DataFrame's first rows, saying how many rows the query had and ``name`` holds
    (or, with ``total_known`` false, that the query has more, uncounted, and ``more``: how to get them)."""
    import pandas as pd  # only -o needs it

    def cell(value: Any) -> Any:
        scalar = not isinstance(value, list | dict | tuple) and pd.api.types.is_scalar(value)
        return None if scalar and pd.isna(value) else value

    rows = [[cell(v) for v in row] for row in frame.head(shown).itertuples(index=False, name=None)]
    if not total_known:
        held = f"{name} holds the first {len(frame)}; more rows exist ({more})"
    elif len(frame) < total:
        held = f"{name} holds {len(frame)} of {total} rows"
    else:
        held = f"{name} holds all rows"
    return table_bundle([str(c) for c in frame.columns], rows, len(frame), held=held, hint=hint)


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# Plain ES2015 that every current front end runs; it builds its controls with textContent only.
_SCRIPT = """(function () {
var root = document.getElementById("ELEMENT");
if (!root || root.hasAttribute("data-ready")) return;
root.setAttribute("data-ready", "");
var table = root.querySelector("table"), body = table.tBodies[0];
var all = Array.from(body.rows).map(function (row) {
  var texts = Array.from(row.cells, function (c) { return c.textContent; });
  return {row: row, text: texts.join("\\t").toLowerCase()};
});
var shown = all, page = 0, size = PAGE_ROWS, sorted = -1, way = 1;
var bar = document.createElement("div");
bar.style.cssText = "display:flex;gap:0.5em;align-items:center;margin:0.25em 0";
var filter = document.createElement("input");
filter.type = "search"; filter.placeholder = "filter rows"; filter.setAttribute("aria-label", "filter rows");
var prev = document.createElement("button"), next = document.createElement("button");
var status = document.createElement("span");
prev.type = next.type = "button"; prev.textContent = "\\u2039"; next.textContent = "\\u203a";
prev.setAttribute("aria-label", "previous page"); next.setAttribute("aria-label", "next page");
bar.append(filter, prev, status, next);
root.insertBefore(bar, table);
function draw() {
  var pages = Math.max(1, Math.ceil(shown.length / size));
  page = Math.min(Math.max(page, 0), pages - 1);
  var start = page * size, end = Math.min(start + size, shown.length);
  body.replaceChildren.apply(body, shown.slice(start, end).map(function (r) { return r.row; }));
  status.textContent = shown.length ? (start + 1) + "\\u2013" + end + " of " + shown.length +
    (shown.length < all.length ? " (filtered from " + all.length + ")" : "") : "no rows match";
  prev.disabled = page === 0; next.disabled = page >= pages - 1;
}
function refilter() {
  var words = filter.value.toLowerCase();
  shown = words ? all.filter(function (r) { return r.text.indexOf(words) >= 0; }) : all;
}
function key(r, column) {
  var cell = r.row.cells[column], text = cell ? cell.textContent : "";
  var number = Number(text);
  return text === "null" ? null : (text.trim() !== "" && isFinite(number) ? number : text);
}
function compare(a, b) {
  if (a === null || b === null) return a === b ? 0 : (a === null ? 1 : -1);
  if (typeof a === "number" && typeof b === "number") return (a - b) * way;
  if (typeof a !== typeof b) return (typeof a === "number" ? -1 : 1) * way;
  return a.localeCompare(b, undefined, {numeric: true}) * way;
}
Array.from(table.tHead.rows[0].cells).forEach(function (th, column) {
  var mark = document.createElement("span");
  th.appendChild(mark); th.style.cursor = "pointer"; th.title = "sort";
  th.addEventListener("click", function () {
    way = sorted === column ? -way : 1; sorted = column;
    all.sort(function (a, b) { return compare(key(a, column), key(b, column)); });
    Array.from(table.tHead.rows[0].cells).forEach(function (other) {
      other.removeAttribute("aria-sort"); other.lastChild.textContent = "";
    });
    th.setAttribute("aria-sort", way > 0 ? "ascending" : "descending");
    mark.textContent = way > 0 ? " \\u25b2" : " \\u25bc";
    refilter(); draw();
  });
});
filter.addEventListener("input", function () { refilter(); page = 0; draw(); });
prev.addEventListener("click", function () { page -= 1; draw(); });
next.addEventListener("click", function () { page += 1; draw(); });
draw();
})();"""
