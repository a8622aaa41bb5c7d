"""Query results as pandas DataFrames, carried as Arrow: from the embedded server's result route, or,
on a plain Livy or DLI server, as an Arrow IPC stream the session encodes in the statement's text.

pyarrow and pandas are optional for the kernel (``pip install 'dli-kernel[results]'``); everything here
imports them only when a DataFrame is asked for, and ``require_arrow`` says clearly when they are missing.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from dli_kernel.client.errors import ClientError, MissingDependency

ARROW_STREAM_MIME = "application/vnd.apache.arrow.stream"
ARROW_RESULT_MIME = "application/vnd.dli-kernel.arrow-result+json"  # the server's summary of a result
TIMEZONE_KEY = b"dli_kernel.timezone"
INLINE_MARKER = "#dli-kernel-arrow# "  # starts the summary line of an Arrow result encoded in text
DATAFRAME_KINDS = ("sql", "pyspark")
_PLACEHOLDER = re.compile(r"<<([A-Z_]+)>>")


@dataclass(frozen=True)
class DataFrameResult:
    """A query's rows as a pandas DataFrame, with how many rows the query had in all."""

    frame: Any  # pandas.DataFrame; typed loosely so that importing the client needs no pandas
    total: int
    truncated: bool  # True when ``frame`` holds fewer rows than ``total`` (max_rows cut it)
    transport: str  # "arrow": the server's result route; "arrow-inline": base64 in the statement's text
    size: int  # bytes of the Arrow stream


def require_arrow() -> None:
    """Raise MissingDependency unless pyarrow and pandas can be imported."""
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as err:
        raise MissingDependency(
            f"DataFrame results need pyarrow and pandas in the kernel's Python ({err}); "
            "install them with: pip install 'dli-kernel[results]'."
        ) from None


def check_kind(kind: str) -> str:
    if kind not in DATAFRAME_KINDS:
        raise ValueError(
            f"kind must be 'sql' (a query) or 'pyspark' (an expression for a DataFrame), not {kind!r}."
        )
    return kind


def frame_from_stream(data: bytes) -> Any:
    """An Arrow IPC stream as a pandas DataFrame (see ``arrow_to_pandas``)."""
    import pyarrow as pa

    return frame_from_file(pa.py_buffer(data))


def frame_from_file(source: Any) -> Any:
    """An Arrow IPC stream read from ``source`` (a buffer or a file-like object) as a pandas DataFrame."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid as err:
        raise ClientError(f"the result is not a valid Arrow stream ({err}).") from None
    return arrow_to_pandas(table)


def arrow_to_pandas(table: Any) -> Any:
    """A pandas DataFrame with the values and nulls of ``table``, typed as Spark's ``toPandas`` types them
    where that loses nothing.

    Integer and boolean columns with nulls become pandas' nullable ``Int64``/``boolean`` (plain numpy
    would turn them into floats or objects); without nulls they stay ``int64``/``bool``. Timestamps with
    a time zone become naive times in the Spark session's time zone, as ``toPandas`` and Livy's JSON show
    them. Decimals stay exact (``decimal.Decimal``), dates are ``datetime.date``; maps and structs
    become dicts, arrays lists.
    """
    import pyarrow.types as types

    timezone = (table.schema.metadata or {}).get(TIMEZONE_KEY)
    frame = table.to_pandas(maps_as_pydicts="lossy")
    for index, field in enumerate(table.schema):
        column = table.column(index)
        if column.null_count and (types.is_integer(field.type) or types.is_boolean(field.type)):
            frame.isetitem(index, column.to_pandas(types_mapper=_nullable_dtypes().get))
        elif types.is_list(field.type) or types.is_large_list(field.type) or types.is_struct(field.type):
            # Python lists and dicts all the way down, as Livy's JSON gives them (not numpy arrays).
            frame.isetitem(index, _objects(column.to_pylist()))
        elif types.is_timestamp(field.type) and field.type.tz and timezone:
            series = frame.iloc[:, index]
            frame.isetitem(index, series.dt.tz_convert(timezone.decode()).dt.tz_localize(None))
    return frame


def _objects(values: list[Any]) -> Any:
    import pandas as pd

    series = pd.Series([None] * len(values), dtype=object)
    series[:] = values  # assigned, not constructed: pandas would otherwise unpack equal-length lists
    return series


def _nullable_dtypes() -> dict[Any, Any]:
    import pandas as pd
    import pyarrow as pa

    return {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.uint8(): pd.UInt8Dtype(),
        pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(),
        pa.uint64(): pd.UInt64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }


# -- the fallback for servers without Arrow results ---------------------------------------------------

# Runs in the remote session (PySpark 3.x or 4.x with pyarrow). It is fixed text with <<NAME>> placeholders
# for Python literals; the query comes in as a base64 literal, so nothing a user writes can change the code.
_INLINE_CODE = """\
def _dli_kernel_arrow(source, kind, max_rows):
    import base64, json
    import pyarrow as pa
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()
    text = base64.b64decode(source).decode("utf-8")
    value = spark.sql(text) if kind == "sql" else eval(text, globals())
    if hasattr(value, "toArrow") or hasattr(value, "_collect_as_arrow"):
        limited = value if max_rows < 0 else value.limit(max_rows + 1)
        if hasattr(limited, "toArrow"):
            table = limited.toArrow()
        else:
            batches = limited._collect_as_arrow()
            table = (pa.Table.from_batches(batches) if batches
                     else pa.Table.from_pandas(limited.toPandas(), preserve_index=False))
        total = table.num_rows
        if 0 <= max_rows < total:
            table, total = table.slice(0, max_rows), value.count()
    else:
        table = pa.Table.from_pandas(value, preserve_index=False)
        total = table.num_rows
        if 0 <= max_rows < total:
            table = table.slice(0, max_rows)
    metadata = dict(table.schema.metadata or {})
    metadata[<<TIMEZONE_KEY>>] = spark.conf.get("spark.sql.session.timeZone").encode()
    table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    summary = {"rows": table.num_rows, "total": total, "truncated": table.num_rows < total}
    print(<<MARKER>> + json.dumps(summary))
    print(base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii"))
try:
    _dli_kernel_arrow(<<SOURCE>>, <<KIND>>, <<MAX_ROWS>>)
finally:
    del _dli_kernel_arrow
"""


def inline_code(query: str, kind: str, max_rows: int) -> str:
    """The statement that makes a plain Livy session print ``query``'s result as base64 Arrow."""
    values = {
        "TIMEZONE_KEY": repr(TIMEZONE_KEY),
        "MARKER": repr(INLINE_MARKER),
        "SOURCE": repr(base64.b64encode(query.encode("utf-8")).decode("ascii")),
        "KIND": repr(check_kind(kind)),
        "MAX_ROWS": str(int(max_rows)),
    }
    # One pass: text put in is never searched again for placeholders.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], _INLINE_CODE)


def parse_inline(output: dict[str, Any]) -> DataFrameResult:
    """The DataFrame in the text of a statement that ran ``inline_code``."""
    text = (output.get("data") or {}).get("text/plain") or ""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(INLINE_MARKER) and index + 1 < len(lines):
            try:
                summary = json.loads(line[len(INLINE_MARKER) :])
                data = base64.b64decode(lines[index + 1], validate=True)
            except ValueError as err:
                raise ClientError(f"the session's Arrow result could not be read ({err}).") from None
            return DataFrameResult(
                frame_from_stream(data),
                total=int(summary["total"]),
                truncated=bool(summary["truncated"]),
                transport="arrow-inline",
                size=len(data),
            )
    raise ClientError(
        "the statement finished without an Arrow result in its output; "
        f"it printed: {text[:200]!r}" + ("…" if len(text) > 200 else "")
    )
