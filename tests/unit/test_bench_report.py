"""Unit tests for benchmarks/report.py and benchmarks/table.py: figures, the printed table, the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks are scripts, not a package

from kernels import Cell  # noqa: E402
from report import Report, Row, Stat, format_table, number, verdict  # noqa: E402
from run import what_failed  # noqa: E402
from table import query, setup_cell, view_sql  # noqa: E402


def test_stat_of_gives_median_p95_and_scale() -> None:
    stat = Stat.of([0.001 * i for i in range(1, 21)], scale=1000)
    assert stat.median == 10.5
    assert stat.p95 == 19
    assert stat.n == 20
    single = Stat.of([2.5])
    assert (single.median, single.p95, single.n) == (2.5, None, 1)


def test_ratio_is_ours_over_peer_and_needs_both() -> None:
    assert Row("b", "f", Stat(20), Stat(200)).ratio == 0.1
    assert Row("b", "f", "not available: no magic", Stat(200)).ratio is None
    assert Row("b", "f", Stat(20), None).ratio is None
    assert Row("b", "errors", Stat(0), Stat(1), compare=False).ratio is None


def test_numbers_keep_three_significant_places() -> None:
    assert [number(x) for x in (None, 0, 1.234, 12.34, 1234.5)] == ["-", "0", "1.23", "12.3", "1234"]


def test_table_has_sections_verdicts_and_explains_missing_figures() -> None:
    report = Report()
    report.add(
        Row(
            "1. round trip",
            "1+1 (ms)",
            Stat(20, 25, 50),
            Stat(210, 230, 50),
            Stat(12, 15, 50),
            "<= 15 ms",
            "pass",
        ),
        Row("2. transfer", "10^6 rows (s)", "not available: %%sql not found", Stat(90, 95, 3)),
        Row("2. transfer", "peak (MB)", "not available: %%sql not found", Stat(700)),
    )
    report.note("load: ours first")
    text = format_table(report)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["figure", "ours", "p95", "sparkmagic"]
    assert "-- 1. round trip" in lines and "-- 2. transfer" in lines
    round_trip = next(line for line in lines if line.startswith("1+1 (ms)"))
    assert round_trip.split()[2:9] == ["20", "25", "210", "230", "0.0952x", "12", "15"]
    assert round_trip.endswith("<= 15 ms: PASS")
    assert "n/a" in next(line for line in lines if line.startswith("10^6 rows"))
    # One note per reason, not one per figure it leaves out.
    assert text.count("%%sql not found") == 1
    assert "* n/a, ours: not available: %%sql not found (2 figures)" in lines
    assert lines[-1] == "* load: ours first"


def test_json_marks_unavailable_figures() -> None:
    report = Report()
    report.add(Row("b", "f", "not available: why", Stat(3.0, 4.0, 5), target="x", verdict=verdict(None)))
    data = json.loads(json.dumps(report.to_json()))
    row = data["rows"][0]
    assert row["ours"] == {"unavailable": "not available: why"}
    assert row["peer"] == {"median": 3.0, "p95": 4.0, "n": 5}
    assert row["floor"] is None and row["ratio_ours_over_peer"] is None and row["verdict"] == ""


def test_views_are_one_definition_for_every_side() -> None:
    assert query(1000) == "SELECT * FROM bench_rows_1000"
    assert "FROM range(1000)" in view_sql(1000)
    cell = setup_cell([1000, 10])
    compile(cell, "<cell>", "exec")  # a valid cell, the SQL inside quoted by repr
    assert view_sql(1000) in cell and view_sql(10) in cell


def test_a_failed_cell_is_one_line_from_sparkmagic_s_reason() -> None:
    text = (
        "Starting Spark application\nThe code failed because of a fatal error:\n\tSession 3 unexpectedly "
        "reached final status 'error'.\n\nSome things to try:\na) Make sure Spark has enough resources"
    )
    line = what_failed(Cell(1.0, "ok", text), limit=80)
    assert line.startswith("fatal error: Session 3 unexpectedly reached final status 'error'.")
    assert "\n" not in line and len(line) == 80 and line.endswith("...")
    assert what_failed(Cell(1.0, "error", error="UsageError: no %%sql")) == "UsageError: no %%sql"
