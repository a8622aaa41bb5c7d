"""Results bigger than memory, without Spark: the driver's frame-size estimate, the refusal before any
transfer, the Parquet writer, download progress and the cleanup of a broken or stopped download.

The client runs against a real local HTTP server (pytest-httpserver) that serves an Arrow stream at the
result route, as the embedded server does.
"""

from __future__ import annotations

import datetime
import decimal
import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from IPython.core.error import UsageError
from IPython.display import DisplayHandle
from pytest_httpserver import HTTPServer

from dli_kernel.client import ClientError, ConnectionFailed, SessionsClient, StatementInfo
from dli_kernel.client import results as results_module
from dli_kernel.client.results import (
    Counting,
    DataFrameResult,
    ResultTooLarge,
    TransferStopped,
    arrow_to_pandas,
    available_memory,
    check_fits,
    frame_from_file,
    lazy_parquet,
    parquet_from_file,
    parquet_target,
)
from dli_kernel.driver.arrow_results import frame_bytes
from dli_kernel.kernel.display import StatusLine, bytes_bar
from dli_kernel.kernel.magics import sql as sql_module
from dli_kernel.kernel.magics.sql import Download, SqlMagics, sql_options
from dli_kernel.protocol import ARROW_RESULT_MIME, DEFAULT_MAX_ROWS, TIMEZONE_KEY
from tests.unit.test_sessions_client import FAST, base_url, calls

MB = 2**20


def table(rows: int, batch: int = 1000) -> pa.Table:
    """The benchmark's kinds of column, in batches as Spark sends them, with the session's time zone."""
    ids = pa.array(range(rows), pa.int64())
    data = {
        "id": ids,
        "x": pa.array([i * 0.5 for i in range(rows)], pa.float64()),
        "name": pa.array([f"row-{i}" for i in range(rows)]),
        "at": pa.array(
            [datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)] * rows, pa.timestamp("us", "UTC")
        ),
    }
    schema = pa.schema([pa.field(k, v.type) for k, v in data.items()], metadata={TIMEZONE_KEY: b"UTC"})
    whole = pa.table(data, schema=schema)
    return pa.Table.from_batches(whole.to_batches(max_chunksize=batch), schema=schema)


def stream(source: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, source.schema) as writer:
        writer.write_table(source)
    return sink.getvalue().to_pybytes()


# -- the driver's estimate ---------------------------------------------------------------------------


def test_the_frame_size_estimate_matches_what_pandas_holds() -> None:
    n = 20_000
    kinds = pa.table(
        {
            "i": pa.array(range(n), pa.int64()),
            "i32": pa.array(range(n), pa.int32()),
            "nullable": pa.array([None if i % 7 == 0 else i for i in range(n)], pa.int64()),
            "b": pa.array([i % 2 == 0 for i in range(n)]),
            "s": pa.array([None if i % 3 == 0 else f"row-{i}" for i in range(n)]),
            "day": pa.array([datetime.date(2024, 1, 1 + i % 28) for i in range(n)]),
            "price": pa.array([decimal.Decimal("1.25")] * n, pa.decimal128(10, 2)),
        }
    )
    kinds = pa.Table.from_batches(kinds.to_batches(max_chunksize=5000))  # slices share buffers: counted once
    frame = arrow_to_pandas(kinds)
    for name in kinds.column_names:
        real = int(frame[name].memory_usage(deep=True, index=False))
        assert real <= frame_bytes(kinds.select([name])) <= real * 1.15, name


# -- the memory available ----------------------------------------------------------------------------


def fake_root(
    tmp_path: Path, meminfo_kb: int | None, cgroup: dict[str, str] | None = None, own: str = ""
) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    if meminfo_kb is not None:
        (tmp_path / "proc/meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kb} kB\n")
    (tmp_path / "proc/self/cgroup").write_text(f"0::/{own}\n")
    if cgroup is not None:
        directory = tmp_path / "sys/fs/cgroup" / own
        directory.mkdir(parents=True)
        for name, text in cgroup.items():
            (directory / name).write_text(text)
    return tmp_path


def test_available_memory_is_meminfo_without_a_cgroup_limit(tmp_path: Path) -> None:
    assert available_memory(fake_root(tmp_path, 4096)) == 4096 * 1024
    unlimited = fake_root(tmp_path / "b", 4096, {"memory.max": "max\n", "memory.current": "1\n"})
    assert available_memory(unlimited) == 4096 * 1024


def test_available_memory_is_the_cgroup_room_when_smaller_counting_its_inactive_cache(tmp_path: Path) -> None:
    cgroup = {
        "memory.max": f"{1000 * MB}\n",
        "memory.current": f"{900 * MB}\n",
        "memory.stat": f"anon 1\ninactive_file {50 * MB}\n",
    }
    root = fake_root(tmp_path, 8 * 2**20, cgroup, own="user.slice/kernel.scope")
    assert available_memory(root) == 150 * MB


def test_available_memory_unknown_is_none(tmp_path: Path) -> None:
    assert available_memory(fake_root(tmp_path, None)) is None


# -- the refusal -------------------------------------------------------------------------------------


def test_a_frame_that_would_not_fit_is_refused_in_one_sentence_with_its_sizes() -> None:
    summary = {"rows": 10_000_000, "bytes": 371 * MB, "frameBytes": 876 * MB}
    with pytest.raises(ResultTooLarge) as caught:
        check_fits(summary, available=500 * MB)
    message = str(caught.value)
    for words in ("10,000,000 rows", "371 MB as Arrow", "876 MB as a DataFrame", "500 MB", "to_parquet"):
        assert words in message
    assert message.count(". ") == 0 and message.endswith(".")
    check_fits(summary, available=2000 * MB)  # fits, with headroom
    check_fits({"rows": 10, "bytes": 10}, available=1)  # an old server's summary: no estimate, no check


class ArrowServer:
    """A statement with an Arrow result, as the embedded server keeps it: its summary in the statement's
    output, its stream at the result route."""

    def __init__(self, server: HTTPServer, source: pa.Table, estimate: bool = True) -> None:
        self.data = stream(source)
        summary: dict[str, Any] = {"rows": source.num_rows, "total": source.num_rows, "truncated": False}
        summary["bytes"] = len(self.data)
        if estimate:
            summary["frameBytes"] = frame_bytes(source)
        self.statement = StatementInfo(
            1, "available", output={"status": "ok", "data": {ARROW_RESULT_MIME: summary}}
        )
        server.expect_request("/sessions/3/statements/1/result").respond_with_data(
            self.data, content_type="application/vnd.apache.arrow.stream"
        )
        self.client = SessionsClient(base_url(server), retry_delays=FAST)


def test_the_refusal_comes_before_any_transfer(httpserver: HTTPServer) -> None:
    arrow = ArrowServer(httpserver, table(5000))
    with pytest.raises(ResultTooLarge, match="nothing was transferred"):
        arrow.client.dataframe_result("3", arrow.statement, available_memory=1000)
    assert calls(httpserver) == []
    result = arrow.client.dataframe_result("3", arrow.statement, available_memory=1000, check_memory=False)
    assert len(result.frame) == 5000


def test_a_result_without_an_estimate_is_not_checked(httpserver: HTTPServer) -> None:
    arrow = ArrowServer(httpserver, table(3000), estimate=False)
    result = arrow.client.dataframe_result("3", arrow.statement, available_memory=1000)
    assert list(result.frame["id"]) == list(range(3000))


# -- progress ----------------------------------------------------------------------------------------


def test_progress_is_reported_by_bytes_up_to_the_content_length(httpserver: HTTPServer) -> None:
    arrow = ArrowServer(httpserver, table(20_000))
    seen: list[tuple[int, int]] = []
    result = arrow.client.dataframe_result("3", arrow.statement, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(arrow.data), len(arrow.data)) and result.size == len(arrow.data)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert result.frame.equals(frame_from_file(pa.py_buffer(arrow.data), 20_000))


def test_progress_calls_are_a_few_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(i * 0.1 for i in range(1000))  # each read takes 0.1 s
    monkeypatch.setattr(results_module.time, "monotonic", lambda: next(clock))
    seen: list[int] = []
    source = Counting(io.BytesIO(b"x" * 100), 100, lambda done, total: seen.append(done))
    while source.read(10):
        pass
    source.finish()
    assert seen == [10, 40, 70, 100, 100]  # the first read, every 0.3 s of reads (>= 0.25), the end


def test_the_download_line_shows_a_bar_only_for_slow_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(sql_module.time, "monotonic", lambda: now[0])

    class Recorded(StatusLine):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[Any] = []

        def show(self, bundle: Any) -> None:
            self.seen.append(bundle)
            self._handle = self._handle or DisplayHandle()

    quick, slow = Download(Recorded()), Download(Recorded())
    quick.progress(10 * MB, 10 * MB)
    quick.finish(1000)
    assert quick.line.seen == []  # type: ignore[attr-defined]
    now[0] = 2.0  # the statement ran 2 s in the same line before its result came
    for step in range(5):
        now[0] = 2.0 + step * 0.3
        slow.progress(step * 100 * MB, 400 * MB)
    slow.finish(4_000_000)
    seen = slow.line.seen  # type: ignore[attr-defined]
    assert seen[0]["text/plain"].startswith("[") and "200 MB of 400 MB" in seen[0]["text/plain"]
    assert seen[-1] == "done in 3.2 s; 4,000,000 rows, 400 MB in 1.2 s"
    assert bytes_bar(5 * MB, 0, 2)["text/plain"] == "result: 5.0 MB · 2 s"  # no Content-Length: no bar


# -- Parquet -----------------------------------------------------------------------------------------


def test_a_stream_goes_to_parquet_in_row_groups_and_reads_back_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results_module, "ROW_GROUP_BYTES", 100_000)
    source = table(20_000)
    target = tmp_path / "out.parquet"
    rows, size = parquet_from_file(pa.BufferReader(stream(source)), target)
    assert (rows, size) == (20_000, target.stat().st_size)
    groups = pq.ParquetFile(target).metadata.num_row_groups
    assert 1 < groups < 20  # gathered from many batches of 1000 rows, cut at the size given
    dataset = lazy_parquet(target)
    assert isinstance(dataset, ds.Dataset) and dataset.count_rows() == 20_000
    assert arrow_to_pandas(dataset.to_table()).equals(arrow_to_pandas(source))
    assert os.listdir(tmp_path) == ["out.parquet"]


def test_an_empty_result_is_still_a_file_with_its_columns(tmp_path: Path) -> None:
    empty = table(0)
    parquet_from_file(pa.BufferReader(stream(empty)), tmp_path / "none.parquet")
    assert lazy_parquet(tmp_path / "none.parquet").schema.names == empty.column_names


class Breaking(io.RawIOBase):
    """A stream that fails after ``limit`` bytes, as a connection reset does."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.data, self.limit, self.at = data, limit, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.at >= self.limit:
            raise ConnectionResetError("connection reset by peer")
        chunk = self.data[self.at : self.at + min(size if size >= 0 else self.limit, self.limit - self.at)]
        self.at += len(chunk)
        return chunk


def test_a_broken_or_stopped_transfer_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results_module, "ROW_GROUP_BYTES", 50_000)  # some row groups are written first
    data = stream(table(20_000))
    target = tmp_path / "out.parquet"
    target.write_bytes(b"an older file")  # replaced only by a complete one
    with pytest.raises(OSError):  # the reset, or Arrow finding the stream cut short
        parquet_from_file(Breaking(data, len(data) // 2), target)
    assert os.listdir(tmp_path) == ["out.parquet"] and target.read_bytes() == b"an older file"
    reads = iter(range(1000))
    stopping = Counting(io.BytesIO(data), len(data), stop=lambda: next(reads) > 20)
    with pytest.raises(TransferStopped, match="nothing of it was kept"):
        parquet_from_file(stopping, target)
    assert os.listdir(tmp_path) == ["out.parquet"] and target.read_bytes() == b"an older file"


def test_a_stream_that_is_not_arrow_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="not a valid Arrow stream"):
        parquet_from_file(io.BytesIO(b"<html>not arrow</html>"), tmp_path / "x.parquet")
    assert os.listdir(tmp_path) == []


def test_the_client_writes_parquet_and_keeps_the_frame_lazy(httpserver: HTTPServer, tmp_path: Path) -> None:
    arrow = ArrowServer(httpserver, table(8000))
    target = tmp_path / "r.parquet"
    seen: list[tuple[int, int]] = []
    # No memory check for a file: a tiny "available memory" does not stop it.
    result = arrow.client.dataframe_result(
        "3",
        arrow.statement,
        to_parquet=str(target),
        available_memory=1,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert isinstance(result.frame, ds.Dataset) and result.frame.count_rows() == 8000
    assert seen[-1] == (len(arrow.data), len(arrow.data))
    assert arrow_to_pandas(result.frame.to_table()).equals(frame_from_file(pa.py_buffer(arrow.data), 8000))


def test_a_parquet_path_that_cannot_be_written_is_refused_before_any_transfer(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    arrow = ArrowServer(httpserver, table(10))
    with pytest.raises(ClientError, match="does not exist"):
        arrow.client.dataframe_result(
            "3", arrow.statement, to_parquet=str(tmp_path / "no/such/dir/r.parquet")
        )
    with pytest.raises(ClientError, match="is a directory"):
        parquet_target(tmp_path)
    assert calls(httpserver) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ClientError, match="not writable"):
        parquet_target(locked / "r.parquet")


# -- %%sql ---------------------------------------------------------------------------------------------


def test_to_parquet_takes_all_rows_unless_told_and_is_no_chart() -> None:
    options, _ = sql_options("--to-parquet /tmp/x.parquet", "SELECT 1")
    assert options.n == -1 and options.to_parquet == "/tmp/x.parquet"
    assert sql_options("--to-parquet x.parquet -n 5", "SELECT 1")[0].n == 5
    assert sql_options("-o df", "SELECT 1")[0].n == DEFAULT_MAX_ROWS
    with pytest.raises(UsageError, match="--to-parquet"):
        sql_options("--to-parquet x.parquet --chart bar", "SELECT 1")


class NoRunner:
    """A runner that must not be used: the magic refuses before running anything."""

    holder = None

    def follow(self, start: Any, line: Any = None) -> Any:
        raise AssertionError("the query ran")


class OneSession:
    """A runner that hands the magic's fetch one fake session, as the real runner does."""

    holder = None

    def __init__(self, session: Any) -> None:
        self.session = session

    def follow(self, start: Any, line: Any = None) -> Any:
        start(self.session)
        return {}


def test_a_bad_parquet_path_is_a_usage_error_before_the_query(tmp_path: Path) -> None:
    magics = SqlMagics(None, NoRunner())  # type: ignore[arg-type]
    with pytest.raises(UsageError) as caught:
        magics.sql(f"--to-parquet {tmp_path}/missing/r.parquet", "SELECT 1")
    assert str(caught.value).startswith("%%sql --to-parquet: the directory") and "\n" not in str(caught.value)


def test_the_refusal_through_sql_names_its_options() -> None:
    asked: dict[str, Any] = {}

    class TooBig:
        def run_dataframe(self, query: str, **options: Any) -> Any:
            asked.update(options)
            raise ResultTooLarge(10**7, 371 * MB, 876 * MB, options["available_memory"](), "ask for less")

    magics = SqlMagics(None, OneSession(TooBig()))  # type: ignore[arg-type]
    magics.available_memory = lambda: 300 * MB  # type: ignore[method-assign]
    with pytest.raises(ResultTooLarge) as caught:
        magics.sql("-o df", "SELECT * FROM big")
    assert asked["available_memory"]() == 300 * MB and asked["to_parquet"] is None
    assert "-n N" in str(caught.value) and "--to-parquet PATH" in str(caught.value)
    assert "fit in the 300 MB of memory available" in str(caught.value)


def test_a_failed_transfer_blames_the_disk_or_the_network() -> None:
    disk = results_module.transfer_error(OSError(28, "No space left on device"), "GET x", "/data/r.parquet")
    assert type(disk) is ClientError and "could not be written" in str(disk)
    reset = results_module.transfer_error(ConnectionResetError(104, "reset"), "GET x", "/data/r.parquet")
    assert isinstance(reset, ConnectionFailed) and "broke off" in str(reset)
    assert isinstance(results_module.transfer_error(OSError(28, "full"), "GET x", None), ConnectionFailed)


# -- the first page without a count ----------------------------------------------------------------------


class PageRunner(OneSession):
    """A runner whose SQL statements answer as a driver that does not count: the page, ``total`` the
    lower bound; a ``SELECT count(*)`` statement answers ``counted``. Records every statement run."""

    def __init__(self, session: Any = None, counted: int = 5000) -> None:
        super().__init__(session)
        self.counted = counted
        self.ran: list[tuple[str, int | None]] = []

    def run(self, code: str, kind: str, max_rows: int | None = None) -> dict[str, Any]:
        self.ran.append((code, max_rows))
        if code.startswith("SELECT count(*) FROM (\n"):
            data, extra = [[self.counted]], {"total": 1, "truncated": False}
        else:
            page = max_rows if max_rows is not None and max_rows >= 0 else 3
            data, extra = [[i] for i in range(page)], {"total": page + 1, "truncated": True}
            extra["totalKnown"] = False
        schema = {"fields": [{"name": "k", "type": "long"}]}
        return {"status": "ok", "data": {"application/json": {"schema": schema, "data": data, **extra}}}


def test_a_page_runs_one_statement_and_says_more_rows_exist() -> None:
    runner = PageRunner()
    result = SqlMagics(None, runner).sql("-n 3", "SELECT k FROM big")  # type: ignore[arg-type]
    assert runner.ran == [("SELECT k FROM big", 3)]
    assert result is not None and result.bundle["text/plain"].splitlines()[-1] == (
        "first 3 rows shown; more rows exist (%%sql --count for the total, -n N for more)"
    )


def test_count_asks_for_the_total_with_a_statement_of_its_own() -> None:
    runner = PageRunner(counted=5000)
    result = SqlMagics(None, runner).sql("-n 3 --count", "SELECT k FROM big -- a comment")  # type: ignore[arg-type]
    assert runner.ran == [
        ("SELECT k FROM big -- a comment", 3),
        ("SELECT count(*) FROM (\nSELECT k FROM big -- a comment\n) AS dli_count", 1),
    ]
    assert result is not None and result.bundle["text/plain"].splitlines()[-1] == (
        "3 of 5000 rows shown (raise the row limit to see more)"
    )


def test_an_answer_to_the_count_that_is_no_number_is_one_usage_error() -> None:
    runner = PageRunner(counted="many")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"^%%sql --count: the count query answered 'many', not a number$"):
        SqlMagics(None, runner).sql("--count", "SELECT k FROM big")  # type: ignore[arg-type]


def test_quiet_and_count_are_refused_together() -> None:
    with pytest.raises(UsageError, match="-q shows nothing and --count"):
        sql_options("-q --count", "SELECT 1")


class FrameSession:
    """A session whose ``run_dataframe`` gives the first rows of a bigger, uncounted result."""

    def run_dataframe(self, query: str, **options: Any) -> Any:
        frame = pa.table({"k": [1, 2, 3]}).to_pandas()
        statement = StatementInfo(id=0, state="available", output={"status": "ok"}, progress=1.0, code=query)
        return statement, False, DataFrameResult(frame, 4, True, "arrow", 100, total_known=False)


def test_a_frame_of_the_first_rows_says_so_and_count_counts_them() -> None:
    runner = PageRunner(FrameSession(), counted=5000)
    magics = SqlMagics(None, runner)  # type: ignore[arg-type]
    magics.shell = SimpleNamespace(user_ns={})  # type: ignore[assignment]
    shown = magics.sql("-o df -n 3", "SELECT k FROM big")
    assert runner.ran == [] and len(magics.shell.user_ns["df"]) == 3  # type: ignore[union-attr]
    assert shown is not None and shown.bundle["text/plain"].splitlines()[-1] == (
        "3 rows; df holds the first 3; more rows exist (%%sql --count for the total, -n -1 for all)"
    )
    counted = magics.sql("-o df -n 3 --count", "SELECT k FROM big")
    assert runner.ran == [("SELECT count(*) FROM (\nSELECT k FROM big\n) AS dli_count", 1)]
    assert counted is not None and counted.bundle["text/plain"].endswith("3 rows; df holds 3 of 5000 rows")
