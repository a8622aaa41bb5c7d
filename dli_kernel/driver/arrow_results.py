"""Arrow results: the code a session's driver runs for a statement sent with ``"resultFormat": "arrow"``.

The result is written as an Arrow IPC stream to ``results/<statement id>.arrow`` in the session's workdir
(the driver's working directory) and served as bytes by ``GET .../statements/{id}/result``; the statement's
own output only describes it. So a million rows never pass through the kernel's messages, the manager's
memory or the session store. Spark's own Arrow collection (``DataFrame.toArrow``) builds the table: no
row objects, no per-value conversion.

Runs in the driver only; the server sends the call (``dli_kernel.server.driver_code``) and serves the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dli_kernel.protocol import ARROW_RESULT_MIME, KEEP_RESULTS, TIMEZONE_KEY


def run(source: str, kind: str, max_rows: int, path: str) -> None:
    """Run ``source``, write its rows (up to ``max_rows``, -1 for all) to ``path``, display a summary."""
    __tracebackhide__ = True  # IPython hides this frame from the user's traceback
    from IPython import get_ipython
    from IPython.display import display
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    # A pyspark statement's code is the user's own expression for a DataFrame, run by the user.
    value = spark.sql(source) if kind == "sql" else eval(source, get_ipython().user_ns)
    table, total = to_arrow(value, max_rows)
    timezone = spark.conf.get("spark.sql.session.timeZone")
    size = write_stream(table, Path(path), timezone)
    summary = {
        "rows": table.num_rows,
        **row_count(table.num_rows, total),
        "bytes": size,
        # Lets the kernel refuse, before any transfer, a result that would not fit in its memory.
        "frameBytes": frame_bytes(table),
        "columns": table.column_names,
        "timezone": timezone,
    }
    display({ARROW_RESULT_MIME: summary}, raw=True)


def to_arrow(value: Any, max_rows: int) -> tuple[Any, int | None]:
    """(an Arrow table of at most ``max_rows`` rows, how many rows there are in all, None for "more").

    A Spark DataFrame's rows past the page are never counted: a count runs the whole query again (15 s
    after a 6 s page of a large GROUP BY), so one row more than the page is collected to know that more
    exist. A pandas frame's length is known for free."""
    import pyarrow as pa

    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None and isinstance(value, pd.DataFrame):
        table = pa.Table.from_pandas(value, preserve_index=False)
        total = table.num_rows
        return (table if max_rows < 0 else table.slice(0, max_rows)), total
    if not hasattr(value, "toArrow"):
        raise TypeError(f"an Arrow result needs a Spark or pandas DataFrame, not {type(value).__name__}")
    if max_rows < 0:
        table = _collect(value)
        return table, table.num_rows
    table = _collect(value.limit(max_rows + 1))
    if table.num_rows <= max_rows:
        return table, table.num_rows
    return table.slice(0, max_rows), None


def row_count(shown: int, total: int | None) -> dict[str, Any]:
    """A result's ``total``, ``truncated`` and ``totalKnown`` (``total`` None: more rows, not counted).

    Uncounted, ``total`` is the lower bound ``shown + 1``, never null or absent: a client that reads it as
    a number keeps working and still sees that rows were cut."""
    if total is None:
        return {"total": shown + 1, "truncated": True, "totalKnown": False}
    return {"total": total, "truncated": shown < total, "totalKnown": True}


def _collect(frame: Any) -> Any:
    """``frame.toArrow()``; Spark's converter refuses a null struct, array or map whose inner fields are
    declared non-null, so such a frame is collected again with every field declared nullable."""
    import pyarrow as pa

    try:
        return frame.toArrow()
    except pa.ArrowInvalid:
        return frame.to(_all_nullable(frame.schema)).toArrow()


def _all_nullable(schema: Any) -> Any:
    import json

    from pyspark.sql.types import StructType

    text = json.dumps(schema.jsonValue())
    for flag in ("nullable", "containsNull", "valueContainsNull"):
        text = text.replace(f'"{flag}": false', f'"{flag}": true')
    return StructType.fromJson(json.loads(text))


# Bytes of the Python object behind each 8-byte slot of an object column in the client's pandas frame: a
# str is 49 + 1 per ASCII character, a datetime.date 32, a Decimal 104; lists and dicts are guessed at 64 +
# their Arrow size. Checked against ``memory_usage(deep=True)``: exact for numbers, times, dates, decimals
# and ASCII text; a string repeated within a batch is one shared object, so text is an upper bound.
STR_OBJECT, DATE_OBJECT, DECIMAL_OBJECT, OTHER_OBJECT = 49, 32, 104, 64


def frame_bytes(table: Any) -> int:
    """About how many bytes ``table`` takes as the client's pandas DataFrame (``results.frame_from_file``)."""
    import pyarrow.compute as pc
    import pyarrow.types as types

    total = 0
    for column in table.columns:
        kind, count = column.type, len(column)
        if _is_text(kind):
            text = pc.sum(pc.binary_length(column)).as_py() or 0
            nulls = column.null_count  # None, one shared object: 16 bytes in deep=True's count
            total += count * 8 + (count - nulls) * STR_OBJECT + nulls * 16 + text
        elif types.is_boolean(kind) or types.is_integer(kind) or types.is_floating(kind):
            # numpy values of the Arrow width; with nulls, pandas' nullable arrays add a byte of mask each
            width = 1 if types.is_boolean(kind) else kind.bit_width // 8
            masked = column.null_count and not types.is_floating(kind)
            total += count * (width + (1 if masked else 0))
        elif types.is_timestamp(kind) or types.is_duration(kind):
            total += count * 8
        elif types.is_date(kind):
            total += count * (8 + DATE_OBJECT)
        elif types.is_decimal(kind):
            total += count * (8 + DECIMAL_OBJECT)
        else:
            total += count * (8 + OTHER_OBJECT) + column.nbytes
    return total


def _is_text(kind: Any) -> bool:
    import pyarrow.types as types

    checks = (types.is_string, types.is_large_string, types.is_binary, types.is_large_binary)
    return any(check(kind) for check in checks)


def write_stream(table: Any, path: Path, timezone: str | None) -> int:
    """Write ``table`` as an Arrow IPC stream, atomically; older results beyond the newest few go."""
    import pyarrow as pa

    path.parent.mkdir(exist_ok=True)
    _prune(path.parent, keep=KEEP_RESULTS - 1)
    metadata = dict(table.schema.metadata or {})
    if timezone:  # Spark always has a session time zone; without one, clients keep the values as UTC
        metadata[TIMEZONE_KEY] = timezone.encode()
    table = table.replace_schema_metadata(metadata)
    scratch = path.with_suffix(".tmp")
    with pa.OSFile(str(scratch), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    scratch.replace(path)
    return path.stat().st_size


def _prune(directory: Path, keep: int) -> None:
    results = sorted(directory.glob("*.arrow"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
    for old in results[: max(0, len(results) - keep)]:
        old.unlink(missing_ok=True)
