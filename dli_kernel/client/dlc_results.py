"""DLC's SQL results (``DescribeNotebookSessionStatementSqlResult``) as pandas DataFrames.

An answer holds ``ResultSchema`` (a list of ``Column``: ``Name``, ``Type`` in Hive's spelling such as
``bigint`` or ``decimal(10,2)``, ``Precision``, ``Scale``), ``ResultSet`` (JSON text: a list of rows, each a
list of values in the schema's order; values may come as JSON scalars or as text) and ``NextToken`` for the
next page. Columns are typed from the schema through Arrow, so a DataFrame read here has the dtypes one
read through the embedded server's Arrow results has: integers ``int8..int64`` (pandas' nullable ``Int*``
with nulls), booleans, floats, exact decimals, ``datetime64`` timestamps, ``datetime.date`` dates, bytes;
arrays, maps and structs become Python lists and dicts.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
import re
from collections.abc import Callable
from typing import Any

from dli_kernel.client.errors import ClientError
from dli_kernel.client.results import DataFrameResult, arrow_to_pandas
from dli_kernel.protocol import DLC_MAX_RESULTS as PAGE_ROWS

MAX_PAGES = 10_000  # ten million rows: a server that hands out new tokens forever still ends
_INTS = {"tinyint": "int8", "smallint": "int16", "int": "int32", "integer": "int32", "bigint": "int64"}
_STRINGS = ("string", "varchar", "char")
_NESTED = ("array", "map", "struct", "uniontype")
_DECIMAL = re.compile(r"decimal\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")

Page = Callable[[str | None, int], Any]


def read_sql_result(page: Page, max_rows: int) -> DataFrameResult:
    """Read pages (``page(next_token, limit)`` returns one answer) until ``max_rows`` rows (-1: all) or the
    last page, and build the DataFrame."""
    rows: list[Any] = []
    schema: list[dict[str, Any]] | None = None
    total: int | None = None
    token: str | None = None
    size = 0
    more = False
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        want = PAGE_ROWS if max_rows < 0 else min(PAGE_ROWS, max_rows - len(rows))
        if want <= 0:
            break
        answer = page(token, want)
        if schema is None:
            schema = _schema(answer.get("ResultSchema"))
        text = answer.get("ResultSet") or "[]"
        size += len(text.encode("utf-8")) if isinstance(text, str) else 0
        got = _rows(text)
        rows.extend(got)
        affected = answer.get("AffectRows")
        if isinstance(affected, int) and not isinstance(affected, bool):
            total = affected
        token = answer.get("NextToken") or None
        more = token is not None
        if not more or (max_rows >= 0 and len(rows) >= max_rows):
            break
        if not isinstance(token, str):
            raise ClientError(f"DLC's SQL result gave a NextToken that is not text ({type(token).__name__}).")
        if not got:
            raise ClientError(
                f"DLC's SQL result gave a page with no rows but a NextToken after {len(rows)} rows; "
                "the result cannot be read to its end."
            )
        if token in seen:
            raise ClientError(
                f"DLC's SQL result repeated a NextToken after {len(rows)} rows; the result cannot be "
                "read to its end."
            )
        seen.add(token)
    else:
        raise ClientError(
            f"DLC's SQL result had more than {MAX_PAGES} pages; read fewer rows (a smaller max_rows)."
        )
    if max_rows >= 0 and len(rows) > max_rows:
        rows, more = rows[:max_rows], True
    kept = len(rows)
    # AffectRows, where given, counts the whole result; without it the rows read are all that is known.
    total = kept if total is None else max(total, kept)
    return DataFrameResult(
        frame_from_rows(schema or [], rows),
        total=total,
        truncated=more or kept < total,
        transport="dlc-sql-result",
        size=size,
    )


def _schema(columns: Any) -> list[dict[str, Any]]:
    if not isinstance(columns, list) or not all(isinstance(c, dict) and c.get("Name") for c in columns):
        raise ClientError("DLC's SQL result has no usable ResultSchema (a list of columns with a Name).")
    return columns


def _rows(text: Any) -> list[Any]:
    try:
        rows = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise ClientError("DLC's SQL result set is not JSON text.") from None
    if not isinstance(rows, list):
        raise ClientError("DLC's SQL result set is not a list of rows.")
    return rows


def frame_from_rows(schema: list[dict[str, Any]], rows: list[Any]) -> Any:
    """A DataFrame of ``rows`` (lists in column order, or objects by column name) typed by ``schema``."""
    import pandas as pd
    import pyarrow as pa

    names = [str(column["Name"]) for column in schema]
    nested: dict[int, list[Any]] = {}
    arrays = []
    for index, column in enumerate(schema):
        values = [_cell(row, index, names[index]) for row in rows]
        arrow_type, convert = _converter(column)
        if arrow_type is None:
            nested[index] = [convert(value) for value in values]
            arrays.append(pa.nulls(len(rows)))
            continue
        try:
            converted = [None if value is None else convert(value) for value in values]
            arrays.append(pa.array(converted, type=arrow_type))
        except (ValueError, TypeError, ArithmeticError, pa.ArrowException) as err:
            raise ClientError(
                f"column {names[index]!r} of DLC's SQL result holds a value that is not "
                f"{column.get('Type')} ({type(err).__name__})."
            ) from None
    table = pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(names))])
    frame = arrow_to_pandas(table)
    for index, values in nested.items():
        frame.isetitem(index, pd.Series(_objects(values), dtype=object))
    frame.columns = names  # set last: two columns may share a name (a join's ids)
    return frame


def _objects(values: list[Any]) -> Any:
    import numpy as np

    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _cell(row: Any, index: int, name: str) -> Any:
    if isinstance(row, list):
        return row[index] if index < len(row) else None
    if isinstance(row, dict):
        return row.get(name)
    raise ClientError("DLC's SQL result has a row that is neither a list nor an object.")


def _converter(column: dict[str, Any]) -> tuple[Any, Callable[[Any], Any]]:
    """The Arrow type of a column and how one (non-null) value becomes a Python value of it; the type is
    None for nested columns, kept as Python objects."""
    import pyarrow as pa

    spelled = str(column.get("Type") or "string").strip().lower()
    base = re.split(r"[(<\s]", spelled, maxsplit=1)[0]
    if base in _INTS:
        return getattr(pa, _INTS[base])(), _integer
    if base == "boolean":
        return pa.bool_(), _boolean
    if base in ("float", "double"):
        return (pa.float32() if base == "float" else pa.float64()), float
    if base == "decimal":
        precision, scale = _decimal_shape(column, spelled)
        quantum = decimal.Decimal(1).scaleb(-scale)
        return pa.decimal128(precision, scale), lambda v: decimal.Decimal(str(v)).quantize(quantum)
    if base == "timestamp":
        return pa.timestamp("us"), _timestamp
    if base == "date":
        return pa.date32(), lambda v: datetime.date.fromisoformat(str(v)[:10])
    if base == "binary":
        return pa.binary(), _binary
    if base in _STRINGS:
        return pa.string(), lambda v: v if isinstance(v, str) else json.dumps(v)
    return None, _nested if base in _NESTED else (lambda v: v)


def _decimal_shape(column: dict[str, Any], spelled: str) -> tuple[int, int]:
    match = _DECIMAL.search(spelled)
    if match:
        return int(match.group(1)), int(match.group(2) or 0)
    precision, scale = column.get("Precision"), column.get("Scale")
    if isinstance(precision, int) and precision > 0:
        return precision, scale if isinstance(scale, int) else 0
    return 10, 0  # Spark's and Hive's decimal without arguments


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    return int(value) if isinstance(value, int) else int(str(value).strip())


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError("not a boolean")


def _timestamp(value: Any) -> datetime.datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC).replace(tzinfo=None)  # epoch ms
    # Spark writes a timestamp in the session's time zone (with its offset, in JSON): its wall time is kept,
    # as the Arrow results and toPandas give it.
    return datetime.datetime.fromisoformat(str(value).strip()).replace(tzinfo=None)


def _binary(value: Any) -> bytes:
    text = str(value)
    try:
        return base64.b64decode(text, validate=True)  # binary travels as base64 text
    except (binascii.Error, ValueError):
        return text.encode("utf-8")


def _nested(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
