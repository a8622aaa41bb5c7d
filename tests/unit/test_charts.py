"""Charts of a query's rows: the Vega-Lite spec of every kind, its PNG, and %%sql's chart options."""

from __future__ import annotations

import base64
import datetime
import decimal
import struct
import subprocess
import sys
import zlib
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.magic import magics_class

import dli_kernel
from dli_kernel.client import DataFrameResult, StatementInfo
from dli_kernel.kernel import charts
from dli_kernel.kernel.charts import (
    KINDS,
    MAX_CHART_ROWS,
    VEGA_LITE_MIME,
    ChartError,
    ChartOptions,
    build_spec,
    chart_bundle,
    chart_hint,
    frame_rows,
)
from dli_kernel.kernel.display import Result
from dli_kernel.kernel.magics.sql import SqlMagics, sql_options
from dli_kernel.kernel.tables import Rows, sql_rows, vega_type

SCHEMA = {
    "type": "struct",
    "fields": [
        {"name": "k", "type": "string", "nullable": True, "metadata": {}},
        {"name": "n", "type": "long", "nullable": True, "metadata": {}},
        {"name": "m", "type": "decimal(10,2)", "nullable": True, "metadata": {}},
        {"name": "d", "type": "date", "nullable": True, "metadata": {}},
        {"name": "unused", "type": "string", "nullable": True, "metadata": {}},
    ],
}
DATA = [
    ["a", 1, "2.50", "2024-01-01", "x"],
    ["b", 3, "1.50", "2024-01-02", "y"],
    ["a", 2, None, "2024-01-03", "z"],
]


def rows(total: int | None = None) -> Rows:
    return sql_rows({"schema": SCHEMA, "data": DATA, "total": total if total is not None else len(DATA)})


@pytest.mark.parametrize(
    ("spark_type", "expected"),
    [
        ("long", "quantitative"),
        ("integer", "quantitative"),
        ("double", "quantitative"),
        ("decimal(38,18)", "quantitative"),
        ("BIGINT_TYPE", "nominal"),  # Livy's name for a long is not one Spark's schema uses...
        ("INT_TYPE", "quantitative"),  # ...but its int, double and decimal are
        ("DECIMAL_TYPE", "quantitative"),
        ("date", "temporal"),
        ("timestamp", "temporal"),
        ("TIMESTAMP_TYPE", "temporal"),
        ("string", "nominal"),
        ("boolean", "nominal"),
        ({"type": "array", "elementType": "long"}, "nominal"),
    ],
)
def test_spark_types_as_vega_lite_types(spark_type: Any, expected: str) -> None:
    assert vega_type(spark_type) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_draws_only_the_columns_it_needs(kind: str) -> None:
    spec, notes = build_spec(rows(), ChartOptions(kind, "k", ("n",)))
    assert spec["mark"]["type"] == {"scatter": "point", "pie": "arc"}.get(kind, kind)
    assert spec["data"]["values"] == [{"k": "a", "n": 1}, {"k": "b", "n": 3}, {"k": "a", "n": 2}]
    assert notes == [] and "title" not in spec
    if kind == "pie":
        assert spec["encoding"]["theta"]["field"] == "n" and spec["encoding"]["color"]["field"] == "k"
    else:
        assert spec["encoding"]["x"]["field"] == "k" and spec["encoding"]["y"]["field"] == "n"
        assert spec["encoding"]["x"]["sort"] is None  # the query's order, not the alphabet


def test_several_y_are_folded_into_coloured_series() -> None:
    spec, _ = build_spec(rows(), ChartOptions("bar", "k", ("n", "m")))
    assert spec["transform"] == [{"fold": ["n", "m"], "as": ["series", "value"]}]
    encoding = spec["encoding"]
    assert encoding["color"]["field"] == "series" and encoding["xOffset"]["field"] == "series"
    assert encoding["y"]["field"] == "value" and encoding["y"]["title"] == "n, m"
    assert spec["data"]["values"][0] == {"k": "a", "n": 1, "m": 2.5}  # a decimal's exact text as a number
    line, _ = build_spec(rows(), ChartOptions("line", "k", ("n", "m")))
    assert "xOffset" not in line["encoding"]


def test_fold_names_never_take_a_column_name() -> None:
    data = Rows(["series", "value", "k"], ["quantitative", "quantitative", "nominal"], [[1, 2, "a"]], 1, [])
    spec, _ = build_spec(data, ChartOptions("line", "k", ("series", "value")))
    assert spec["transform"][0]["as"] == ["_series", "_value"]


@pytest.mark.parametrize(("agg", "vega"), [("sum", "sum"), ("avg", "mean"), ("min", "min"), ("max", "max")])
def test_aggregation_is_vega_lites_own(agg: str, vega: str) -> None:
    spec, _ = build_spec(rows(), ChartOptions("bar", "k", ("n",), agg))
    assert spec["encoding"]["y"] == {
        "type": "quantitative",
        "title": f"{agg}(n)",
        "field": "n",
        "aggregate": vega,
    }
    assert len(spec["data"]["values"]) == 3  # the rows stay as they are: Vega-Lite groups them


def test_count_needs_no_numeric_column() -> None:
    spec, _ = build_spec(rows(), ChartOptions("bar", "k", ("unused",), "count"))
    assert spec["encoding"]["y"] == {"type": "quantitative", "title": "count", "aggregate": "count"}
    pie, _ = build_spec(rows(), ChartOptions("pie", "k", (), "count"))
    assert pie["encoding"]["theta"]["aggregate"] == "count" and "field" not in pie["encoding"]["theta"]


def test_dates_are_temporal_except_under_bars() -> None:
    line, _ = build_spec(rows(), ChartOptions("line", "d", ("n",)))
    assert line["encoding"]["x"]["type"] == "temporal" and "sort" not in line["encoding"]["x"]
    assert line["data"]["values"][0]["d"] == "2024-01-01"
    bar, _ = build_spec(rows(), ChartOptions("bar", "d", ("n",)))
    assert bar["encoding"]["x"]["type"] == "ordinal"  # a bar stands on a category


def test_defaults_are_the_first_label_and_every_other_number() -> None:
    spec, _ = build_spec(rows(), ChartOptions("line"))
    assert spec["encoding"]["x"]["field"] == "k" and spec["transform"][0]["fold"] == ["n", "m"]


def test_an_unknown_column_names_the_results_columns() -> None:
    with pytest.raises(ChartError, match="no column 'kk'; its columns are k, n, m, d, unused"):
        build_spec(rows(), ChartOptions("bar", "kk", ("n",)))
    with pytest.raises(ChartError, match="no column 'nn'"):
        build_spec(rows(), ChartOptions("bar", "k", ("nn",)))


def test_a_label_as_y_needs_count() -> None:
    with pytest.raises(ChartError, match=r"-y unused is not a number \(string\).*--agg count"):
        build_spec(rows(), ChartOptions("bar", "k", ("unused",)))
    only_labels = Rows(["a", "b"], ["nominal", "nominal"], [["x", "y"]], 1, ["string", "string"])
    with pytest.raises(ChartError, match="no numeric column"):
        build_spec(only_labels, ChartOptions("bar"))


def test_options_refused_before_rows_exist() -> None:
    for options, words in [
        (ChartOptions("donut"), "the kinds are bar, line, area, scatter, pie"),
        (ChartOptions("bar", agg="median"), "the aggregations are sum, avg, min, max, count"),
        (ChartOptions("pie", "k", ("n", "m")), "one -y"),
    ]:
        with pytest.raises(ChartError, match=words):
            options.check()


def test_a_cut_result_says_so_on_the_chart_and_in_the_text() -> None:
    spec, notes = build_spec(rows(total=1500), ChartOptions("bar", "k", ("n",)))
    assert notes == [
        "the chart shows the first 3 of 1500 rows (the row limit cut the result; -n -1 draws them all)"
    ]
    assert spec["title"]["text"] == notes[0] and spec["title"]["orient"] == "bottom"


def test_a_cut_whose_rows_were_not_counted_says_only_the_first_rows() -> None:
    uncounted = sql_rows({"schema": SCHEMA, "data": DATA, "total": 4, "truncated": True, "totalKnown": False})
    _, notes = build_spec(uncounted, ChartOptions("bar", "k", ("n",)))
    assert notes == ["the chart shows the first 3 rows (the row limit cut the result; -n -1 draws them all)"]


def test_the_rows_drawn_are_bounded() -> None:
    many = Rows(
        ["i", "v"], ["quantitative", "quantitative"], [[i, i] for i in range(MAX_CHART_ROWS + 5)], 20_000, []
    )
    spec, notes = build_spec(many, ChartOptions("scatter", "i", ("v",)))
    assert len(spec["data"]["values"]) == MAX_CHART_ROWS
    assert f"first {MAX_CHART_ROWS} of 20000 rows" in notes[0] and "at most" in notes[0]


def test_odd_values_and_names() -> None:
    data = Rows(
        ["a.b", "v[0]"],
        ["nominal", "quantitative"],
        [["x", "NaN"], ["y", "Infinity"], [None, "1e3"], [{"z": 1}, decimal.Decimal("0.5")]],
        4,
        [],
    )
    spec, _ = build_spec(data, ChartOptions("bar", "a.b", ("v[0]",)))
    assert spec["encoding"]["x"]["field"] == "a\\.b" and spec["encoding"]["y"]["field"] == "v\\[0\\]"
    assert [row["v[0]"] for row in spec["data"]["values"]] == [None, None, 1000.0, 0.5]
    assert spec["data"]["values"][3]["a.b"] == '{"z": 1}'


def test_a_frame_is_typed_by_its_values() -> None:
    frame = pd.DataFrame(
        {
            "k": ["a", "b"],
            "n": [1, 2],
            "dec": [decimal.Decimal("1.5"), None],
            "day": [datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)],
            "ts": pd.to_datetime(["2024-01-01 10:00", None]),
            "flag": [True, False],
        }
    )
    data = frame_rows(frame)
    assert data.types == ["nominal", "quantitative", "quantitative", "temporal", "temporal", "nominal"]
    spec, _ = build_spec(data, ChartOptions("line", "ts", ("n", "dec")))
    assert spec["data"]["values"] == [
        {"ts": "2024-01-01T10:00:00", "n": 1, "dec": 1.5},
        {"ts": None, "n": 2, "dec": None},
    ]


def test_the_bundle_has_the_spec_a_png_and_a_summary() -> None:
    pytest.importorskip("vl_convert")
    value = chart_bundle(rows(total=10), ChartOptions("bar", "k", ("n",), "sum"))
    assert isinstance(value, Result)
    bundle = value._repr_mimebundle_()
    assert bundle[VEGA_LITE_MIME]["mark"]["type"] == "bar"
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert bundle["text/plain"].splitlines() == [
        "bar chart of sum(n) by k (3 rows)",
        "the chart shows the first 3 of 10 rows (the row limit cut the result; -n -1 draws them all)",
    ]
    assert "text/html" not in bundle  # nbconvert would show HTML before the PNG


def test_without_vl_convert_the_chart_stays_and_the_text_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # as if the charts extra were not installed
    bundle = chart_bundle(rows(), ChartOptions("line", "k", ("n",)))._repr_mimebundle_()
    assert VEGA_LITE_MIME in bundle and "image/png" not in bundle
    assert "pip install 'dli-kernel[charts]'" in bundle["text/plain"]


def test_a_renderer_failure_costs_only_the_png(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        @staticmethod
        def vegalite_to_png(*args: Any, **kwargs: Any) -> bytes:
            raise ValueError("engine crashed\ndetails")

    monkeypatch.setitem(sys.modules, "vl_convert", Broken)
    bundle = chart_bundle(rows(), ChartOptions("area", "k", ("n",)))._repr_mimebundle_()
    assert "image/png" not in bundle and "vl-convert failed (engine crashed)" in bundle["text/plain"]


def test_chart_of_a_frame() -> None:
    frame = pd.DataFrame({"k": ["a", "b"], "n": [1, 2]})
    bundle = dli_kernel.chart(frame, "pie", x="k", y="n")._repr_mimebundle_()
    assert bundle[VEGA_LITE_MIME]["encoding"]["theta"]["field"] == "n"
    assert dli_kernel.chart(frame, y=["n"])._repr_mimebundle_()[VEGA_LITE_MIME]["mark"]["type"] == "bar"
    with pytest.raises(TypeError, match="pandas DataFrame"):
        dli_kernel.chart([1, 2])
    with pytest.raises(ChartError, match="the kinds are"):
        dli_kernel.chart(frame, "histogram")


def test_importing_the_package_loads_no_chart_code() -> None:
    code = "import sys, dli_kernel; print(sorted(m for m in sys.modules if 'charts' in m or m == 'pandas'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("names", "types", "hint"),
    [
        (["k", "n"], ["nominal", "quantitative"], "chart it: %%sql --chart bar -x k -y n"),
        (["n", "day"], ["quantitative", "temporal"], "chart it: %%sql --chart bar -x day -y n"),
        (["my k", "n"], ["nominal", "quantitative"], "chart it: %%sql --chart bar -x 'my k' -y n"),
        (["a", "b"], ["quantitative", "quantitative"], None),
        (["a", "b"], ["nominal", "nominal"], None),
        (["k", "n", "m"], ["nominal", "quantitative", "quantitative"], None),
    ],
)
def test_chart_hint(names: list[str], types: list[str], hint: str | None) -> None:
    assert chart_hint(names, types) == hint


# -- %%sql's options ---------------------------------------------------------------------------------


def test_chart_options_parse() -> None:
    options, query = sql_options("--chart line -x k -y n -y m --agg avg", "SELECT 1")
    assert (options.chart, options.x, options.y, options.agg, query) == (
        "line",
        "k",
        ["n", "m"],
        "avg",
        "SELECT 1",
    )
    options, query = sql_options("--chart pie -x k -y n SELECT k, n FROM t", None)
    assert options.chart == "pie" and query == "SELECT k, n FROM t"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("--chart donut", "invalid choice: 'donut'"),
        ("--chart bar --agg median", "invalid choice: 'median'"),
        ("-x k", "add --chart"),
        ("--agg sum", "add --chart"),
        ("-q --chart bar", "-q shows nothing"),
        ("--chart pie -y a -y b", "one -y"),
    ],
)
def test_chart_options_refused_before_running(line: str, words: str) -> None:
    with pytest.raises(UsageError, match="^%%sql: .*" + words.replace("(", r"\(")):
        sql_options(line, "SELECT 1")


class FakeRunner:
    """Answers every statement with ``output``, as a SQL session would."""

    def __init__(self, output: dict[str, Any]) -> None:
        self.output = output
        self.holder = None
        self.shown: list[dict[str, Any]] = []

    def run(self, code: str, kind: str, max_rows: int | None = None) -> dict[str, Any]:
        return self.output

    def show(self, output: dict[str, Any]) -> Result | None:
        """The output shown, and its value where it has one (a server's execute result)."""
        self.shown.append(output)
        value = output.get("value")
        return None if value is None else Result({"text/plain": value})


def run_sql(line: str, output: dict[str, Any]) -> tuple[Any, FakeRunner]:
    runner = FakeRunner(output)
    magics = SqlMagics(None, runner)  # type: ignore[arg-type]
    return magics.sql(line, "SELECT k, n FROM t"), runner


TABLE = {"status": "ok", "data": {"application/json": {"schema": SCHEMA, "data": DATA, "total": 3}}}
TWO_COLUMNS = {
    "status": "ok",
    "data": {
        "application/json": {"schema": {"fields": SCHEMA["fields"][:2]}, "data": [["a", 1]], "total": 1}
    },
}


def test_a_table_is_the_cells_value_with_a_hint_when_it_fits() -> None:
    value, _ = run_sql("", TWO_COLUMNS)
    assert isinstance(value, Result)
    bundle = value._repr_mimebundle_()
    assert bundle["text/plain"].splitlines()[-2:] == ["1 row", "chart it: %%sql --chart bar -x k -y n"]
    assert "chart it: %%sql --chart bar -x k -y n</code>" in bundle["text/html"]
    wide, _ = run_sql("", TABLE)
    assert "chart it" not in wide._repr_mimebundle_()["text/plain"]
    assert run_sql("-q", TABLE)[0] is None


def test_a_chart_is_the_cells_value() -> None:
    value, _ = run_sql("--chart bar -x k -y n --agg sum", TABLE)
    bundle = value._repr_mimebundle_()
    assert bundle[VEGA_LITE_MIME]["encoding"]["y"]["aggregate"] == "sum"
    assert "<table" not in str(bundle)


def test_chart_mistakes_found_in_the_result_are_one_line() -> None:
    with pytest.raises(
        UsageError, match=r"^%%sql --chart: the result has no column 'kk'; its columns are k, n, m"
    ):
        run_sql("--chart bar -x kk", TABLE)
    with pytest.raises(UsageError, match="not a number"):
        run_sql("--chart bar -x k -y unused", TABLE)
    text = {"status": "ok", "data": {"text/plain": "done"}}
    with pytest.raises(UsageError, match="no rows to draw"):
        run_sql("--chart bar", text)
    value, runner = run_sql("", text)  # without a chart, text is shown as before
    assert value is None and runner.shown == [text]
    answer = {**text, "value": "key=value"}  # a text answer with a value of its own is the cell's too
    value, runner = run_sql("", answer)
    assert isinstance(value, Result) and repr(value) == "key=value" and runner.shown == [answer]


class FrameRunner(FakeRunner):
    """Answers ``-o`` with ``frame`` as a session's Arrow result (None: the statement had no rows)."""

    def __init__(self, output: dict[str, Any], frame: Any) -> None:
        super().__init__(output)
        self.frame = frame

    def follow(self, start: Any, line: Any = None) -> dict[str, Any]:
        runner = self

        class Session:
            def run_dataframe(self, query: str, max_rows: int, **follow: Any) -> tuple[Any, bool, Any]:
                result = None
                if runner.frame is not None:
                    result = DataFrameResult(runner.frame, 40, True, "arrow", 0)
                return StatementInfo(id=1, state="available", output=runner.output), False, result

        start(Session())
        return self.output


@magics_class
class LocalSqlMagics(SqlMagics):
    """%%sql with a namespace of its own for -o, as a shell's."""

    def __init__(self, runner: FrameRunner) -> None:
        super().__init__(None, runner)  # type: ignore[arg-type]
        self.user_ns: dict[str, Any] = {}

    @property
    def ipython(self) -> Any:
        return self


def test_a_frame_kept_with_o_is_drawn_from_the_frame() -> None:
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"k": ["a", "b"], "n": [1, 2]})
    magics = LocalSqlMagics(FrameRunner(TABLE, frame))
    value = magics.sql("-o counts --chart bar -n 2", "SELECT k, n FROM t")
    assert magics.user_ns["counts"] is frame and isinstance(value, Result)
    bundle = value._repr_mimebundle_()
    assert bundle[VEGA_LITE_MIME]["data"]["values"] == [{"k": "a", "n": 1}, {"k": "b", "n": 2}]
    assert "the first 2 of 40 rows" in bundle["text/plain"]
    text = {"status": "ok", "data": {"text/plain": "done"}, "value": "done"}
    no_rows = LocalSqlMagics(FrameRunner(text, None))
    with pytest.raises(UsageError, match="no rows to draw"):
        no_rows.sql("-o counts --chart bar", "SET x=1")
    assert repr(no_rows.sql("-o counts", "SET x=1")) == "done"  # a text answer is shown, as without -o


def test_the_png_is_deflated_harder_and_stays_the_same_image() -> None:
    vl_convert = pytest.importorskip("vl_convert")
    spec, _ = build_spec(rows(), ChartOptions("bar", "k", ("n", "m")))
    original = vl_convert.vegalite_to_png(spec, scale=1.0)
    smaller = charts.smaller_png(original)
    assert len(smaller) < len(original) and smaller.startswith(b"\x89PNG\r\n\x1a\n")

    def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
        found, position = [], 8
        while position < len(png):
            (size,) = struct.unpack(">I", png[position : position + 4])
            kind, data = png[position + 4 : position + 8], png[position + 8 : position + 8 + size]
            assert png[position + 8 + size : position + 12 + size] == struct.pack(
                ">I", zlib.crc32(kind + data)
            )
            found.append((kind, data))
            position += 12 + size
        return found

    def pixels(png: bytes) -> bytes:
        return zlib.decompress(b"".join(data for kind, data in chunks(png) if kind == b"IDAT"))

    assert pixels(smaller) == pixels(original)
    kinds = [kind for kind, _ in chunks(original)]
    one_idat = [kind for i, kind in enumerate(kinds) if kind != b"IDAT" or b"IDAT" not in kinds[:i]]
    assert [kind for kind, _ in chunks(smaller)] == one_idat  # every other chunk kept, in its place
    assert charts.smaller_png(b"\x89PNG\r\n\x1a\nnot a png") == b"\x89PNG\r\n\x1a\nnot a png"


def test_a_pie_by_default_draws_the_first_number() -> None:
    spec, _ = build_spec(rows(), ChartOptions("pie"))
    assert spec["encoding"]["theta"]["field"] == "n" and spec["encoding"]["color"]["field"] == "k"
