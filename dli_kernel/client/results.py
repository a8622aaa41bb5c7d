"""Query results as pandas DataFrames, carried as Arrow: from the embedded server's result route, or,
on a plain Livy or DLI server, as an Arrow IPC stream the session encodes in the statement's text.

pyarrow and pandas are optional for the kernel (``pip install 'dli-kernel[results]'``); everything here
imports them only when a DataFrame is asked for, and ``require_arrow`` says clearly when they are missing.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dli_kernel.client.errors import ClientError, ConnectionFailed, MissingDependency
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
    # False when the rows past ``max_rows`` were not counted (counting runs the query again): ``total`` is
    # then only a lower bound, the rows held + 1.
    total_known: bool = True


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


# -- results bigger than memory: a size check before transfer, progress, Parquet files ---------------------

Progress = Callable[[int, int], None]  # (bytes read so far, bytes in all; 0 when unknown)
PROGRESS_EVERY = 0.25  # seconds between progress calls: a few a second is enough for a bar
# A frame is refused unless its estimated size times this fits: conversion temporaries add ~10% (1.09x
# measured at 10^7 rows) and the estimate undercounts non-ASCII text.
HEADROOM = 1.2
# Arrow bytes gathered per Parquet row group: bounds the writer's memory (+150 MB measured, whatever the
# result's size) while keeping row groups few; a row group per Spark batch (10 000 rows) is 6x slower.
ROW_GROUP_BYTES = 64 * 2**20
LIBRARY_ADVICE = "ask for fewer rows (max_rows) or write them to a Parquet file (to_parquet=PATH)"


class ResultTooLarge(ClientError):
    """The result would not fit in this process's memory as a DataFrame; nothing was transferred."""

    def __init__(self, rows: Any, arrow_bytes: Any, frame_bytes: int, available: int, advice: str) -> None:
        self.rows, self.arrow_bytes = rows, arrow_bytes
        self.frame_bytes, self.available = frame_bytes, available
        super().__init__(self.describe(advice))

    def describe(self, advice: str) -> str:
        """The refusal in one sentence, ending with ``advice``: what to do instead."""
        rows = f"{self.rows:,}" if isinstance(self.rows, int) else "?"
        return (
            f"the result is {rows} rows, {_mb(self.arrow_bytes)} as Arrow and about {_mb(self.frame_bytes)} "
            f"as a DataFrame, which with room to build it does not fit in the {_mb(self.available)} of "
            f"memory available here, so nothing was transferred: {advice}."
        )


class TransferStopped(ClientError):
    """The download of a result was stopped on request; whatever it had written was removed."""


class Counting:
    """A file-like reader over ``raw`` that counts the bytes read, reports them to ``progress`` at most
    every PROGRESS_EVERY seconds, and raises TransferStopped as soon as ``stop()`` is true."""

    def __init__(
        self,
        raw: Any,
        total: int = 0,
        progress: Progress | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.raw, self.total, self.progress, self.stop = raw, total, progress, stop
        self.done, self.closed = 0, False
        self._last: float | None = None  # the first read reports at once: the download has begun

    def read(self, size: int = -1) -> bytes:
        if self.stop is not None and self.stop():
            raise TransferStopped(f"the download was stopped after {_mb(self.done)}; nothing of it was kept.")
        data = self.raw.read(size)
        self.done += len(data)
        now = time.monotonic()
        if self.progress is not None and (self._last is None or now - self._last >= PROGRESS_EVERY):
            self._last = now
            self.progress(self.done, self.total)
        return data

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """The last report: Arrow's reader stops at the stream's end marker, so no read sees the end."""
        if self.progress is not None:
            self.progress(self.done, self.total)


def available_memory(root: Path = Path("/")) -> int | None:
    """Bytes this process may still take: the smaller of the machine's MemAvailable and the room left under
    its cgroup's limit (v2, or v1's memory controller), if it has one; None when neither can be read.

    ``root`` stands for ``/`` (tests give a directory laid out like it)."""
    room: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room.append(int(line.split()[1]) * 1024)
    with contextlib.suppress(OSError, ValueError):
        cgroup = _cgroup_room(root)
        if cgroup is not None:
            room.append(cgroup)
    return min(room) if room else None


def _cgroup_room(root: Path) -> int | None:
    """The cgroup's limit less what it uses; its inactive file cache counts as free (the kernel drops it
    before it kills anyone)."""
    own = ""
    with contextlib.suppress(OSError):
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):  # cgroup v2's one hierarchy
                own = line[3:].strip().lstrip("/")
    v2 = root / "sys/fs/cgroup"
    for directory in dict.fromkeys([v2 / own, v2]):
        if (directory / "memory.max").exists():
            limit = (directory / "memory.max").read_text().strip()
            if limit == "max":
                return None
            used = int((directory / "memory.current").read_text())
            return int(limit) - used + _stat(directory / "memory.stat", "inactive_file")
    v1 = root / "sys/fs/cgroup/memory"
    if (v1 / "memory.limit_in_bytes").exists():
        limit_v1 = int((v1 / "memory.limit_in_bytes").read_text())
        if limit_v1 >= 2**60:  # v1 writes "no limit" as a huge number
            return None
        used = int((v1 / "memory.usage_in_bytes").read_text())
        return limit_v1 - used + _stat(v1 / "memory.stat", "total_inactive_file")
    return None


def _stat(path: Path, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def check_fits(summary: dict[str, Any], available: int | None = None, advice: str = LIBRARY_ADVICE) -> None:
    """Raise ResultTooLarge if the frame the summary announces (the driver's ``frameBytes``) would not fit
    in ``available`` bytes (default: ``available_memory()``). Results of servers that send no estimate
    pass, as do all when the memory free cannot be read."""
    needed = summary.get("frameBytes")
    if isinstance(needed, int) and available is None:
        available = available_memory()
    if not isinstance(needed, int) or available is None or needed * HEADROOM <= available:
        return
    raise ResultTooLarge(summary.get("rows"), summary.get("bytes"), needed, available, advice)


def _mb(size: Any) -> str:
    if not isinstance(size, int | float):
        return "? MB"
    return f"{size / 2**20:,.1f} MB" if size < 10 * 2**20 else f"{size / 2**20:,.0f} MB"


def parquet_target(path: str | os.PathLike[str]) -> Path:
    """``path`` (``~`` expanded) if a Parquet file can be written there; else ClientError saying why."""
    target = Path(path).expanduser()
    directory = target.parent
    if target.is_dir():
        raise ClientError(f"{target} is a directory; give the path of the Parquet file to write.")
    if not directory.is_dir():
        raise ClientError(f"the directory {directory} does not exist; create it or choose another path.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ClientError(f"the directory {directory} is not writable; choose another path.")
    if target.exists() and not os.access(target, os.W_OK):
        raise ClientError(f"{target} exists and is not writable; choose another path.")
    return target


def parquet_from_file(source: Any, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Write the Arrow IPC stream read from ``source`` to a Parquet file at ``path`` as it arrives, one row
    group per ROW_GROUP_BYTES of Arrow; (rows, file bytes). The file is written beside under a hidden name
    and renamed when complete, so a failed or stopped transfer leaves nothing behind."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid as err:
        raise ClientError(f"the result is not a valid Arrow stream ({err}).") from None
    return _write_parquet(reader.schema, reader, path)


def frame_to_parquet(frame: Any, path: str | os.PathLike[str]) -> tuple[int, int]:
    """A DataFrame that came whole (a transport that cannot stream) to a Parquet file; (rows, file bytes)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    return _write_parquet(table.schema, table.to_batches(), path)


def _write_parquet(schema: Any, batches: Iterable[Any], path: str | os.PathLike[str]) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = parquet_target(path)
    scratch = target.with_name(f".{target.name}.part")
    rows = 0
    try:
        with pq.ParquetWriter(str(scratch), schema) as writer:
            pending: list[Any] = []
            size = 0
            for batch in batches:
                pending.append(batch)
                size, rows = size + batch.nbytes, rows + batch.num_rows
                if size >= ROW_GROUP_BYTES:
                    # One row group per write: the writer would otherwise cut at its default row count.
                    writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=1 << 40)
                    pending, size = [], 0
            if pending or rows == 0:
                writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=1 << 40)
        scratch.replace(target)
    except pa.ArrowInvalid as err:
        scratch.unlink(missing_ok=True)
        raise ClientError(f"the result is not a valid Arrow stream ({err}).") from None
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return rows, target.stat().st_size


def read_result(
    raw: Any,
    summary: dict[str, Any],
    total: int,
    progress: Progress | None = None,
    to_parquet: str | os.PathLike[str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[Any, int]:
    """(the frame, or with ``to_parquet`` a lazy dataset over the file written, bytes read) from the result
    stream ``raw`` that ``summary`` describes; ``total``: its length, for ``progress``.

    These are also the options of ``SessionsClient.dataframe_result`` and ``fetch_dataframe``:
    ``progress(bytes read, bytes in all)`` is called a few times a second while the result downloads.
    ``to_parquet=PATH`` writes the rows to that Parquet file as they arrive (never held whole; a partial
    file is removed) and gives a lazy ``pyarrow.dataset.Dataset`` over it as the result's ``frame``.
    Without it, a DataFrame that would not fit in ``available_memory`` bytes (default: what the machine
    and this process's cgroup have free) is refused with ResultTooLarge before anything is downloaded,
    unless ``check_memory=False``. ``stop()`` turning true ends the download with TransferStopped."""
    source = Counting(raw, total, progress, stop)
    if to_parquet is not None:
        parquet_from_file(source, to_parquet)
        frame = lazy_parquet(to_parquet)
    else:
        rows = summary.get("rows")
        frame = frame_from_file(source, None if rows is None else int(rows))
    source.finish()
    return frame, source.done


def transfer_error(err: BaseException, what: str, to_parquet: Any) -> ClientError:
    """The error for a result transfer that failed with ``err``: the local file's fault, or the network's."""
    network = isinstance(err, ConnectionError | TimeoutError) or not isinstance(err, OSError) or not err.errno
    if to_parquet is not None and not network:
        return ClientError(f"the Parquet file {to_parquet} could not be written ({err}).")
    return ConnectionFailed(f"{what}: the result broke off ({type(err).__name__}).")


def to_file(result: DataFrameResult, path: str | os.PathLike[str] | None) -> DataFrameResult:
    """``result`` (from a transport that brought the rows whole) written to the Parquet file ``path``, its
    frame a lazy dataset over it; with no path, ``result`` as it is."""
    if path is None:
        return result
    frame_to_parquet(result.frame, path)
    return dataclasses.replace(result, frame=lazy_parquet(path))


def lazy_parquet(path: str | os.PathLike[str]) -> Any:
    """The Parquet file as a ``pyarrow.dataset.Dataset``: nothing is read until asked (``.head(20)``,
    ``.to_table(columns=[...], filter=...)``, ``.to_batches()``; ``.to_table().to_pandas()`` for a frame)."""
    import pyarrow.dataset as ds

    return ds.dataset(str(Path(path).expanduser()), format="parquet")


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
        total, known = table.num_rows, True
        if 0 <= max_rows < total:  # more rows: counting them would run the query again
            table, total, known = table.slice(0, max_rows), max_rows + 1, False
    else:
        table = pa.Table.from_pandas(value, preserve_index=False)
        total, known = table.num_rows, True
        if 0 <= max_rows < total:
            table = table.slice(0, max_rows)
    metadata = dict(table.schema.metadata or {})
    metadata[<<TIMEZONE_KEY>>] = spark.conf.get("spark.sql.session.timeZone").encode()
    table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    summary = {"rows": table.num_rows, "total": total, "truncated": table.num_rows < total,
               "totalKnown": known}
    print(<<MARKER>> + json.dumps(summary))
    print(base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii"))
try:
    _dli_kernel_arrow(<<SOURCE>>, <<KIND>>, <<MAX_ROWS>>)
finally:
    del _dli_kernel_arrow
"""


def total_known(summary: dict[str, Any]) -> bool:
    """Whether a result's ``total`` counts every row: false only where the result says so, as servers and
    sessions from before ``totalKnown`` always counted."""
    return summary.get("totalKnown") is not False


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
                total_known=total_known(summary),
            )
    raise ClientError(
        "the statement finished without an Arrow result in its output; "
        f"it printed: {text[:200]!r}" + ("…" if len(text) > 200 else "")
    )
