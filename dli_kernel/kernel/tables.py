"""Tables of rows: a statement's result or a ``-o`` DataFrame, as HTML with a plain-text twin."""

from __future__ import annotations

import html
import json
from typing import Any


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
