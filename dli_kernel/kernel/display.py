"""A statement's Livy output as Jupyter outputs: text as a stream, tables as HTML, figures, errors."""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dli_kernel.protocol import LIVY_TABLE_MIME

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


def frame_bundle(frame: Any, total: int, name: str, shown: int = 1000) -> dict[str, str]:
    """A table of a ``-o`` DataFrame's first rows, saying how many rows the query had and ``name`` holds."""
    import pandas as pd  # only -o needs it

    def cell(value: Any) -> Any:
        scalar = not isinstance(value, list | dict | tuple) and pd.api.types.is_scalar(value)
        return None if scalar and pd.isna(value) else value

    rows = [[cell(v) for v in row] for row in frame.head(shown).itertuples(index=False, name=None)]
    bundle = table_bundle([str(c) for c in frame.columns], rows, len(frame))
    held = f"{name} holds {len(frame)} of {total} rows" if len(frame) < total else f"{name} holds all rows"
    bundle["text/plain"] += f"; {held}"
    bundle["text/html"] = bundle["text/html"].removesuffix("</p>") + f"; {html.escape(held)}</p>"
    return bundle


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# -- SQL results as pandas --------------------------------------------------------------------------

_INTEGERS = {"byte", "short", "integer", "long"}
_FLOATS = {"float", "double"}


def result_dataframe(result: dict[str, Any]) -> Any:
    """A Livy SQL result (``{schema, data}``) as a pandas DataFrame with the dtypes Spark's toPandas gives.

    Integers are int64 (nullable Int64 when a null is present), floats float64, booleans bool (or
    boolean), decimals Decimal objects, dates date objects, timestamps datetime64, nested values Python
    lists and dicts. Needs pandas, which the kernel does not otherwise need.
    """
    import pandas as pd

    fields = result.get("schema", {}).get("fields", [])
    rows = result.get("data", [])
    columns = {}
    for index, spec in enumerate(fields):
        values = [row[index] if index < len(row) else None for row in rows]
        columns[index] = _column(pd, values, spec.get("type"))
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))
    frame.columns = [spec["name"] for spec in fields]  # by position: duplicate names survive, as in Spark
    return frame


def _column(pd: Any, values: list[Any], spark_type: Any) -> Any:
    import decimal

    name = spark_type if isinstance(spark_type, str) else ""
    has_null = any(value is None for value in values)
    if name in _INTEGERS:
        return pd.Series(values, dtype="Int64" if has_null else "int64")
    if name in _FLOATS:
        return pd.Series([float("nan") if v is None else float(v) for v in values], dtype="float64")
    if name == "boolean":
        return pd.Series(values, dtype="boolean" if has_null else "bool")
    if name.startswith("decimal"):
        return pd.Series([None if v is None else decimal.Decimal(v) for v in values], dtype="object")
    if name == "date":
        dates = [None if v is None else datetime.date.fromisoformat(v) for v in values]
        return pd.Series(dates, dtype="object")
    if name.startswith("timestamp"):
        stamps = pd.to_datetime(pd.Series(values, dtype="object"), format="ISO8601")
        return stamps.astype("datetime64[us]")  # Spark keeps microseconds
    return pd.Series(values, dtype="object")


def split_sql(text: str) -> list[str]:
    """Statements separated by ``;``, ignoring those inside quotes, backticks and comments."""
    statements: list[list[tuple[str, str]]] = [[]]
    for kind, piece in _sql_pieces(text):
        if kind == "separator":
            statements.append([])
        else:
            statements[-1].append((kind, piece))
    # A piece holding only blanks and comments (e.g. after a final ``;``) is no statement.
    return [
        "".join(piece for _, piece in pieces).strip()
        for pieces in statements
        if "".join(piece for kind, piece in pieces if kind == "code").strip()
    ]


def _sql_pieces(text: str) -> Iterator[tuple[str, str]]:
    """SQL as ("code" | "comment" | "separator", text) pieces; a quoted string is one code piece."""
    i = 0
    while i < len(text):
        if text.startswith("--", i):
            end = text.find("\n", i)
            end, kind = (len(text) if end < 0 else end), "comment"
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end, kind = (len(text) if end < 0 else end + 2), "comment"
        elif text[i] in "'\"`":
            end, kind = _quote_end(text, i), "code"
        else:
            end, kind = i + 1, "separator" if text[i] == ";" else "code"
        yield kind, text[i:end]
        i = end


def _quote_end(text: str, start: int) -> int:
    """Where the quote opened at ``start`` ends; a backslash escapes in strings, not in `names`."""
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)
