"""Query results as pandas DataFrames, carried as Arrow: from the embedded server's result route, or,
on a plain Livy or DLI server, as an Arrow IPC stream the session encodes in the statement's text.

pyarrow and pandas are optional for the kernel (``pip install 'dli-kernel[results]'``); everything here
imports them only when a DataFrame is asked for, and ``require_arrow`` says clearly when they are missing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dli_kernel.client.errors import ClientError, MissingDependency
from dli_kernel.protocol import TIMEZONE_KEY

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


def frame_from_file(source: Any, rows: int | None = None) -> Any:
    """An Arrow IPC stream read from ``source`` (a buffer or a file-like object) as a pandas DataFrame.

    With ``rows``, how many rows the stream holds, it is converted batch by batch as it is read, into
    columns allocated once: the kernel never holds the whole result as Arrow and as pandas at once.
    """
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(source)
        if rows is None:
            return arrow_to_pandas(reader.read_all())
        return _frame(reader.schema, reader, rows)
    except pa.ArrowInvalid as err:
        raise ClientError(f"the result is not a valid Arrow stream ({err}).") from None


def arrow_to_pandas(table: Any) -> Any:
    """A pandas DataFrame with the values and nulls of ``table``, typed as Spark's ``toPandas`` types them
    where that loses nothing.

    Integer and boolean columns with nulls become pandas' nullable ``Int64``/``boolean`` (plain numpy
    would turn them into floats or objects); without nulls they stay ``int64``/``bool``. Timestamps with
    a time zone become naive times in the Spark session's time zone, as ``toPandas`` and Livy's JSON show
    them. Decimals stay exact (``decimal.Decimal``), dates are ``datetime.date``; maps and structs
    become dicts, arrays lists.
    """
    return _frame(table.schema, table.to_batches(), table.num_rows)


def _frame(schema: Any, batches: Iterable[Any], rows: int) -> Any:
    import pandas as pd

    timezone = (schema.metadata or {}).get(TIMEZONE_KEY)
    columns = [_Column(field, rows, timezone.decode() if timezone else None) for field in schema]
    start = 0
    for batch in batches:
        if start + batch.num_rows > rows:
            raise ClientError(f"the result holds more rows than the {rows} its summary announced.")
        for column, values in zip(columns, batch.columns, strict=True):
            column.add(values, start)
        start += batch.num_rows
    if start != rows:
        raise ClientError(f"the result broke off after {start} of its {rows} rows.")
    # Keyed by position, named afterwards: Spark allows two columns of one name (a join's `id`s). Not
    # copied, so columns of one dtype are not merged into one block, which would copy them all at once.
    frame = pd.DataFrame({index: column.result() for index, column in enumerate(columns)}, copy=False)
    frame.columns = schema.names
    return frame


class _Column:
    """One column of a result, filled batch by batch into one array allocated on the first batch."""

    def __init__(self, field: Any, rows: int, timezone: str | None) -> None:
        import numpy as np
        import pyarrow.types as types

        self.field, self.rows, self.timezone = field, rows, timezone
        kind = field.type
        masked = types.is_integer(kind) or types.is_boolean(kind)
        self.nested = types.is_list(kind) or types.is_large_list(kind) or types.is_struct(kind)
        self.filler = False if types.is_boolean(kind) else 0  # stands in for a null under the mask
        self.values: Any = None  # a numpy array for all the rows, made when the first batch comes
        # True where a value is null; only integer and boolean columns need one (pandas' nullable dtypes)
        self.mask = np.zeros(rows, dtype=bool) if masked else None
        self.pieces: list[Any] = []  # for a dtype numpy cannot hold: the converted batches

    def add(self, array: Any, start: int) -> None:
        import numpy as np

        if self.mask is not None:
            self.mask[start : start + len(array)] = array.is_null().to_numpy(zero_copy_only=False)
            filled = array.fill_null(self.filler) if array.null_count else array
            piece = filled.to_numpy(zero_copy_only=False)
        elif self.nested:
            piece = _objects(array.to_pylist())  # Python lists and dicts, as Livy's JSON gives them
        else:
            piece = self._plain(array)
        if not isinstance(piece.dtype, np.dtype):  # a pandas extension type: kept whole, joined at the end
            self.pieces.append(piece)
            return
        if self.values is None:
            self.values = np.empty(self.rows, dtype=piece.dtype)
        self.values[start : start + len(piece)] = piece

    def _plain(self, array: Any) -> Any:
        import pandas as pd
        import pyarrow.types as types

        series = array.to_pandas(maps_as_pydicts="lossy")
        if types.is_timestamp(array.type) and array.type.tz and self.timezone:
            series = series.dt.tz_convert(self.timezone).dt.tz_localize(None)
        extension = isinstance(series.dtype, pd.api.extensions.ExtensionDtype)
        return series.array if extension else series.to_numpy()

    def result(self) -> Any:
        import pandas as pd
        import pyarrow as pa

        if self.values is None and not self.pieces:
            self.add(pa.array([], type=self.field.type), 0)  # no rows: the dtype still comes from the type
        if self.pieces:
            return pd.concat([pd.Series(piece) for piece in self.pieces], ignore_index=True).array
        if self.mask is not None and self.mask.any():
            if self.values.dtype == bool:
                return pd.arrays.BooleanArray(self.values, self.mask)
            return pd.arrays.IntegerArray(self.values, self.mask)
        return self.values


def _objects(values: list[Any]) -> Any:
    import numpy as np

    array = np.empty(len(values), dtype=object)
    array[:] = values  # assigned, not constructed: numpy would otherwise unpack equal-length lists
    return array


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
