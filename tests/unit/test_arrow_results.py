"""Arrow results without Spark: the client's pandas conversion, the driver-side writer, the fallback code."""

from __future__ import annotations

import ast
import base64
import datetime
import decimal
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from dli_kernel.client import ClientError, MissingDependency
from dli_kernel.client.results import (
    INLINE_MARKER,
    arrow_to_pandas,
    frame_from_file,
    frame_from_stream,
    inline_code,
    parse_inline,
    require_arrow,
)
from dli_kernel.driver import arrow_results
from dli_kernel.protocol import TIMEZONE_KEY, result_path
from dli_kernel.server import driver_code


def stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def spark_like_table(timezone: str = "Asia/Shanghai") -> pa.Table:
    """Columns typed as Spark's toArrow types them (timestamps in UTC), the session's zone in metadata."""
    table = pa.table(
        {
            "i": pa.array([1, 2, 3], pa.int32()),
            "big": pa.array([9_000_000_000, None, 7], pa.int64()),
            "d": pa.array([2.5, None, float("nan")], pa.float64()),
            "dec": pa.array(
                [decimal.Decimal("12345.67"), None, decimal.Decimal("0.00")], pa.decimal128(10, 2)
            ),
            "s": pa.array(["héllo", None, ""], pa.string()),
            "flag": pa.array([True, None, False], pa.bool_()),
            "day": pa.array([datetime.date(2024, 2, 29), None, datetime.date(1970, 1, 1)], pa.date32()),
            "ts": pa.array(
                [datetime.datetime(2024, 2, 29, 5, 45, 1, 500000), None, datetime.datetime(1970, 1, 1)],
                pa.timestamp("us", tz="UTC"),
            ),
            "arr": pa.array([[1, 2], None, []], pa.list_(pa.int32())),
            "st": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "z"}]),
            "m": pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.int32())),
        }
    )
    return table.replace_schema_metadata({TIMEZONE_KEY: timezone.encode()})


def test_round_trip_keeps_types_and_nulls() -> None:
    frame = frame_from_stream(stream(spark_like_table()))

    assert list(frame.columns) == ["i", "big", "d", "dec", "s", "flag", "day", "ts", "arr", "st", "m"]
    assert frame["i"].dtype == "int32" and frame["i"].tolist() == [1, 2, 3]  # no nulls: plain numpy
    assert frame["big"].dtype == "Int64" and frame["big"][0] == 9_000_000_000 and frame["big"][1] is pd.NA
    assert frame["d"].dtype == "float64" and frame["d"][0] == 2.5 and pd.isna(frame["d"][1])
    assert frame["dec"].tolist()[0] == decimal.Decimal("12345.67") and frame["dec"][1] is None
    assert frame["s"][0] == "héllo" and pd.isna(frame["s"][1]) and frame["s"][2] == ""
    assert frame["flag"].dtype == "boolean" and frame["flag"].tolist() == [True, pd.NA, False]
    assert frame["day"][0] == datetime.date(2024, 2, 29) and frame["day"][1] is None
    # Naive, in the session's zone (UTC+8), as Spark's toPandas and Livy's JSON show them.
    assert str(frame["ts"].dtype).startswith("datetime64[") and frame["ts"].dt.tz is None
    assert frame["ts"][0] == pd.Timestamp("2024-02-29 13:45:01.5") and pd.isna(frame["ts"][1])
    assert list(frame["arr"][0]) == [1, 2] and frame["arr"][1] is None
    assert frame["st"][0] == {"a": 1, "b": "x"} and frame["st"][1] is None
    assert frame["m"][0] == {"k": 1} and frame["m"][1] is None


def test_timestamps_without_a_zone_stay_as_they_are() -> None:
    table = pa.table({"ts": pa.array([datetime.datetime(2024, 1, 1, 12)], pa.timestamp("us"))})
    frame = arrow_to_pandas(table)
    assert frame["ts"][0] == pd.Timestamp("2024-01-01 12:00")


def test_empty_result_keeps_its_columns() -> None:
    table = spark_like_table().slice(0, 0)
    frame = frame_from_stream(stream(table))
    assert len(frame) == 0 and list(frame.columns) == table.column_names


def batched_stream(table: pa.Table, rows_per_batch: int) -> pa.BufferReader:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=rows_per_batch):
            writer.write_batch(batch)
    return pa.BufferReader(sink.getvalue())


def test_batch_by_batch_matches_the_whole_table() -> None:
    table = pa.concat_tables([spark_like_table()] * 3)
    whole = arrow_to_pandas(table)
    by_batch = frame_from_file(batched_stream(table, 2), rows=table.num_rows)
    pd.testing.assert_frame_equal(by_batch, whole)
    assert by_batch["big"].dtype == "Int64" and by_batch["i"].dtype == "int32"


def test_a_null_in_a_later_batch_still_makes_the_column_nullable() -> None:
    table = pa.table({"n": pa.array([1, 2, 3, None], pa.int16()), "b": pa.array([True, False, True, None])})
    frame = frame_from_file(batched_stream(table, 3), rows=4)
    assert frame["n"].dtype == "Int16" and frame["n"].tolist()[:3] == [1, 2, 3] and frame["n"][3] is pd.NA
    assert frame["b"].dtype == "boolean" and frame["b"][3] is pd.NA


def test_zone_aware_times_without_the_session_zone_are_joined_across_batches() -> None:
    times = [datetime.datetime(2024, 1, 1, hour) for hour in range(5)]
    table = pa.table({"t": pa.array(times, pa.timestamp("us", tz="UTC")), "id": pa.array(range(5))})
    frame = frame_from_file(batched_stream(table, 2), rows=5)
    assert str(frame["t"].dt.tz) == "UTC" and frame["t"][4] == pd.Timestamp("2024-01-01 04:00", tz="UTC")


def test_columns_of_one_name_are_both_kept() -> None:
    table = pa.Table.from_arrays([pa.array([1, 2]), pa.array(["a", "b"])], names=["id", "id"])
    frame = frame_from_file(batched_stream(table, 1), rows=2)
    assert list(frame.columns) == ["id", "id"] and frame.iloc[:, 1].tolist() == ["a", "b"]


def test_an_empty_stream_with_a_row_count_keeps_its_dtypes() -> None:
    table = spark_like_table().slice(0, 0)
    frame = frame_from_file(batched_stream(table, 10), rows=0)
    assert len(frame) == 0 and frame["i"].dtype == "int32" and frame["d"].dtype == "float64"


@pytest.mark.parametrize(("rows", "message"), [(2, "more rows than the 2"), (9, "after 5 of its 9 rows")])
def test_a_row_count_the_stream_does_not_keep_is_a_clear_error(rows: int, message: str) -> None:
    table = pa.table({"x": list(range(5))})
    with pytest.raises(ClientError, match=message):
        frame_from_file(batched_stream(table, 2), rows=rows)


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(ClientError, match="not a valid Arrow stream"):
        frame_from_stream(b"<html>oops</html>")


def test_missing_pyarrow_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what Python does for a module that is not there
    with pytest.raises(MissingDependency) as info:
        require_arrow()
    assert "pip install 'dli-kernel[results]'" in str(info.value)
    assert isinstance(info.value, ImportError)


# -- the driver-side writer -------------------------------------------------------------------------


def test_writer_puts_the_zone_in_the_stream_and_keeps_the_newest_two(tmp_path: Path) -> None:
    table = pa.table({"x": [1, 2, 3]})
    for statement_id in (1, 2, 10):
        path = tmp_path / result_path(statement_id)
        size = arrow_results.write_stream(table, path, "Europe/Paris")
        assert size == path.stat().st_size
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["10.arrow", "2.arrow"]
    read = pa.ipc.open_stream(pa.OSFile(str(tmp_path / "results" / "10.arrow"))).read_all()
    assert read.schema.metadata[TIMEZONE_KEY] == b"Europe/Paris" and read.column("x").to_pylist() == [1, 2, 3]


def test_pandas_frames_are_results_too() -> None:
    table, total = arrow_results.to_arrow(pd.DataFrame({"a": range(5)}), max_rows=2)
    assert (table.num_rows, total) == (2, 5)
    with pytest.raises(TypeError, match="needs a Spark or pandas DataFrame, not int"):
        arrow_results.to_arrow(42, max_rows=10)


def test_statement_code_is_literal_whatever_the_query() -> None:
    query = "SELECT '\"\"\"', \"'''\", '\\\\n' -- ) ; import os\n"
    code = driver_code.arrow_statement(query, "sql", 5, 3)
    call = ast.parse(code).body[-1].value
    assert [ast.literal_eval(arg) for arg in call.args] == [query, "sql"]
    assert {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords} == {
        "max_rows": 5,
        "path": "results/3.arrow",
    }


# -- the fallback for plain Livy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1",
        "SELECT '\"\"\"' AS a, \"'''\" AS b, '\\\\' AS c -- <<KIND>> <<SOURCE>>\n;",
        "SELECT 'KIND MAX_ROWS SOURCE 日本語 \U0001f600'",
        "df.where(\"x = '}{'\")",
    ],
)
def test_inline_code_carries_the_query_only_as_base64(query: str) -> None:
    code = inline_code(query, "sql", 100)
    tree = ast.parse(code)  # valid Python, whatever the query
    call = tree.body[-1].body[0].value  # try: _dli_kernel_arrow(SOURCE, KIND, MAX_ROWS)
    source, kind, max_rows = (ast.literal_eval(arg) for arg in call.args)
    assert base64.b64decode(source).decode() == query and kind == "sql" and max_rows == 100
    assert query not in code and "<<" not in code


def test_inline_code_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kind must be 'sql'"):
        inline_code("SELECT 1", "r", 10)


def test_parse_inline_reads_what_the_session_printed() -> None:
    table = spark_like_table("UTC")
    text = "\n".join(
        [
            "some stdout before",
            INLINE_MARKER + json.dumps({"rows": 3, "total": 10, "truncated": True}),
            base64.b64encode(stream(table)).decode(),
        ]
    )
    result = parse_inline({"status": "ok", "data": {"text/plain": text}})
    assert (result.total, result.truncated, result.transport) == (10, True, "arrow-inline")
    assert result.frame["big"].tolist()[0] == 9_000_000_000 and result.size == len(stream(table))


def test_parse_inline_without_a_result_says_what_was_printed() -> None:
    with pytest.raises(ClientError, match=r"without an Arrow result.*'hello'"):
        parse_inline({"status": "ok", "data": {"text/plain": "hello"}})


def test_nested_values_become_python_lists_and_dicts() -> None:
    import pyarrow as pa

    from dli_kernel.client.results import arrow_to_pandas

    table = pa.table({"a": pa.array([[1, 2], [3, 4], None]), "s": pa.array([{"k": [1]}, None, {"k": []}])})
    frame = arrow_to_pandas(table)
    assert frame["a"].tolist() == [[1, 2], [3, 4], None] and type(frame["a"][0]) is list
    assert frame["s"].tolist() == [{"k": [1]}, None, {"k": []}]


# -- the first page without a count ----------------------------------------------------------------------


class SparkLikeFrame:
    """What ``to_arrow`` uses of a Spark DataFrame: ``limit``, ``toArrow``; a ``count`` is a test failure,
    as it would run the whole query again."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.collected: list[int] = []

    def limit(self, n: int) -> SparkLikeFrame:
        limited = SparkLikeFrame(min(n, self.rows))
        limited.collected = self.collected
        return limited

    def toArrow(self) -> pa.Table:
        self.collected.append(self.rows)
        return pa.table({"k": list(range(self.rows))})

    def count(self) -> int:
        raise AssertionError("the rows past the page were counted")


def test_a_page_of_a_bigger_result_is_collected_with_one_row_more_and_never_counted() -> None:
    frame = SparkLikeFrame(5000)
    table, total = arrow_results.to_arrow(frame, max_rows=1000)
    assert (table.num_rows, total, frame.collected) == (1000, None, [1001])
    assert arrow_results.row_count(table.num_rows, total) == {
        "total": 1001,  # a lower bound: a client that reads it as a number still sees the cut
        "truncated": True,
        "totalKnown": False,
    }


def test_a_result_within_the_limit_or_all_rows_knows_its_total_from_its_rows() -> None:
    table, total = arrow_results.to_arrow(SparkLikeFrame(7), max_rows=1000)
    assert (table.num_rows, total) == (7, 7)
    every = SparkLikeFrame(5000)
    table, total = arrow_results.to_arrow(every, max_rows=-1)  # -o with -n -1: the rows are the count
    assert (table.num_rows, total, every.collected) == (5000, 5000, [5000])
    assert arrow_results.row_count(5000, 5000) == {"total": 5000, "truncated": False, "totalKnown": True}
    assert arrow_results.row_count(2, 5) == {"total": 5, "truncated": True, "totalKnown": True}


def test_the_inline_fallback_does_not_count_either() -> None:
    code = inline_code("SELECT * FROM big", "sql", 1000)
    assert ".count()" not in code and '"totalKnown": known' in code


def test_an_uncounted_inline_result_says_its_total_is_a_lower_bound() -> None:
    table = spark_like_table("UTC")

    def printed(summary: dict[str, Any]) -> dict[str, Any]:
        text = INLINE_MARKER + json.dumps(summary) + "\n" + base64.b64encode(stream(table)).decode()
        return {"status": "ok", "data": {"text/plain": text}}

    uncounted = parse_inline(printed({"rows": 3, "total": 4, "truncated": True, "totalKnown": False}))
    assert (uncounted.total, uncounted.truncated, uncounted.total_known) == (4, True, False)
    older = parse_inline(printed({"rows": 3, "total": 10, "truncated": True}))  # sessions that counted
    assert (older.total, older.total_known) == (10, True)
