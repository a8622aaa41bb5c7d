"""Results bigger than memory against the real server: ``%%sql --to-parquet`` read back equal to ``-o``,
the refusal of a frame that would not fit (a tiny "available memory" pretended), and ``-o`` as before.

The magics run in a plain IPython shell, as in test_magics.py; the tests share one session, in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from dli_kernel.client import SessionsClient
from dli_kernel.client.auth import BearerToken
from dli_kernel.client.results import ResultTooLarge, arrow_to_pandas
from tests.integration.conftest import Server
from tests.integration.test_magics import Shell, magics_shell

ROWS = 100_000
VIEW = (
    "CREATE OR REPLACE TEMPORARY VIEW big AS SELECT id AS i, id / 3 AS d, concat('row-', id) AS s, "
    f"timestamp_seconds(1700000000 + id) AS t, IF(id % 7 = 0, NULL, id) AS n FROM range({ROWS})"
)


@pytest.fixture(scope="module")
def ip(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    with magics_shell(server, tmp_path_factory.mktemp("ipython-config")) as shell:
        shell.shell.user_ns["_dli_sql"] = shell.shell.magics_manager.registry["SqlMagics"]
        shell.ok(f"%%sql -q\n{VIEW}")
        yield shell


def test_to_parquet_reads_back_equal_to_o(ip: Shell, tmp_path: Path) -> None:
    target = tmp_path / "big.parquet"
    ip.ok("%%sql -o frame -n -1 -q\nSELECT * FROM big ORDER BY i")
    cell = ip.ok(f"%%sql --to-parquet {target} -o lazy\nSELECT * FROM big ORDER BY i")
    lazy = ip.shell.user_ns["lazy"]
    assert isinstance(lazy, ds.Dataset) and lazy.count_rows() == ROWS
    assert (
        f"{ROWS:,} rows" in cell.plain
        and str(target) in cell.plain
        and "pyarrow.dataset.Dataset" in cell.plain
    )
    frame = ip.shell.user_ns["frame"]
    assert len(frame) == ROWS
    back = arrow_to_pandas(lazy.to_table())  # the same typing as -o's
    assert back.equals(frame), (back.dtypes, frame.dtypes)
    assert sorted(os.listdir(tmp_path)) == ["big.parquet"]  # no scratch file left


def test_to_parquet_takes_all_rows_and_says_how_to_read_them(ip: Shell, tmp_path: Path) -> None:
    target = tmp_path / "all.parquet"
    cell = ip.ok(f"%sql --to-parquet {target} SELECT i FROM big")
    assert ds.dataset(target).count_rows() == ROWS
    assert "pandas.read_parquet" in cell.plain
    cell = ip.ok(f"%sql --to-parquet {target} -n 10 SELECT i FROM big")  # an existing file is replaced
    assert ds.dataset(target).count_rows() == 10
    assert "(the first; more rows exist: -n -1 writes all, %sql --count counts them)" in cell.plain


def test_a_path_that_cannot_be_written_is_refused_before_the_query(ip: Shell, tmp_path: Path) -> None:
    before = ip.holder.session.statements_run
    ip.usage_error(
        f"%sql --to-parquet {tmp_path}/missing/x.parquet SELECT 1", "--to-parquet", "does not exist"
    )
    ip.usage_error(f"%sql --to-parquet {tmp_path} SELECT 1", "is a directory")
    assert ip.holder.session.statements_run == before


def test_a_frame_that_would_not_fit_is_refused_before_transfer(ip: Shell, tmp_path: Path) -> None:
    sql = ip.shell.user_ns["_dli_sql"]
    sql.available_memory = lambda: 2 * 2**20  # pretend the kernel has 2 MB free
    try:
        cell = ip("%%sql -o refused -n -1\nSELECT * FROM big")
    finally:
        del sql.available_memory
    assert type(cell.error).__name__ == "ResultTooLarge", cell.error
    message = str(cell.error)
    for words in (f"{ROWS:,} rows", "as Arrow", "as a DataFrame", "2.0 MB", "-n N", "--to-parquet PATH"):
        assert words in message, (words, message)
    assert "refused" not in ip.shell.user_ns
    # The same cell with room, and with few rows: -o as before.
    ip.ok("%%sql -o refused -n -1 -q\nSELECT * FROM big")
    assert len(ip.shell.user_ns["refused"]) == ROWS
    ip.ok("%%sql -o few -n 5\nSELECT * FROM big")
    assert len(ip.shell.user_ns["few"]) == 5


def test_the_client_refuses_and_writes_for_library_users(ip: Shell, server: Server, tmp_path: Path) -> None:
    session_id = ip.session_id()
    with SessionsClient(server.url, "local", auth=BearerToken(server.token)) as client:
        with pytest.raises(ResultTooLarge, match="to_parquet=PATH"):
            client.fetch_dataframe(session_id, "SELECT * FROM big", -1, available_memory=1)
        seen: list[tuple[int, int]] = []
        result = client.fetch_dataframe(
            session_id,
            "SELECT * FROM big",
            -1,
            to_parquet=tmp_path / "lib.parquet",
            progress=lambda done, total: seen.append((done, total)),
        )
    assert result.frame.count_rows() == ROWS and result.total == ROWS
    assert seen and seen[-1][0] == seen[-1][1] == result.size
