"""Charts without code, end to end: a notebook run by nbclient on a real session draws %%sql results and a
-o DataFrame, and nbconvert's HTML export of the saved notebook shows each chart as a PNG."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import nbformat
import pytest
from nbconvert import HTMLExporter
from nbformat.v4 import new_code_cell, new_notebook

from tests.integration.conftest import Server, wait_no_new_sessions
from tests.integration.test_notebooks import execute

VEGA_LITE = "application/vnd.vegalite.v5+json"
COUNTS = "SELECT k, count(*) AS n FROM VALUES ('a'), ('b'), ('a'), ('c') AS t(k) GROUP BY k ORDER BY k"


def results(cell: Any) -> list[dict[str, Any]]:
    return [dict(o) for o in cell.outputs if o.output_type == "execute_result"]


def bundles(cell: Any) -> list[dict[str, Any]]:
    return [dict(o.data) for o in cell.outputs if o.output_type in ("execute_result", "display_data")]


def charts(cell: Any) -> list[dict[str, Any]]:
    return [b for b in bundles(cell) if VEGA_LITE in b]


def test_charts_in_a_notebook_and_in_its_html_export(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("vl_convert")
    before = {s["id"] for s in server.live_sessions()}
    nb = new_notebook(
        cells=[
            new_code_cell(f"%%sql --chart bar -x k -y n\n{COUNTS}"),
            new_code_cell(f"%%sql -o counts\n{COUNTS}"),
            new_code_cell("%%local\nimport dli_kernel\ndli_kernel.chart(counts, 'pie', x='k', y='n')"),
            new_code_cell("%%sql -n 25 --chart line -x id -y id2\nSELECT id, id * id AS id2 FROM range(40)"),
            new_code_cell("%%sql\nSELECT id, id % 7 AS r FROM range(50)"),
        ]
    )
    execute(nb, kernel_env, "dli_pyspark", monkeypatch)
    sql_chart, frame_table, frame_chart, cut_chart, long_table = nb.cells

    # %%sql --chart: the chart is the cell's Out[n], with its spec, a PNG and a line of text; no table.
    (out,) = results(sql_chart)
    assert out["execution_count"] == sql_chart.execution_count
    spec = out["data"][VEGA_LITE]
    assert spec["mark"]["type"] == "bar" and spec["encoding"]["x"]["field"] == "k"
    assert spec["data"]["values"] == [{"k": "a", "n": 2}, {"k": "b", "n": 1}, {"k": "c", "n": 1}]
    assert base64.b64decode(out["data"]["image/png"]).startswith(b"\x89PNG")
    assert out["data"]["text/plain"] == "bar chart of n by k (3 rows)"
    assert not any("<table" in b.get("text/html", "") for b in bundles(sql_chart))

    # -o: the frame's table is the cell's value, with the chart command under it.
    (table,) = results(frame_table)
    assert "counts holds all rows" in table["data"]["text/plain"]
    assert "chart it: %%sql --chart bar -x k -y n" in table["data"]["text/html"]

    # dli_kernel.chart in %%local: the same kind of bundle, from the pandas frame.
    (pie,) = charts(frame_chart)
    assert pie[VEGA_LITE]["mark"]["type"] == "arc" and pie[VEGA_LITE]["encoding"]["theta"]["field"] == "n"
    assert base64.b64decode(pie["image/png"]).startswith(b"\x89PNG")

    # A result cut by -n says so, on the chart and in its text.
    (cut,) = charts(cut_chart)
    assert "the chart shows the first 25 rows" in cut["text/plain"] and "-n -1" in cut["text/plain"]
    assert cut[VEGA_LITE]["title"]["text"].startswith("the chart shows the first 25 rows")

    # A long table: all its rows in plain HTML, and the script that pages them where scripts run.
    (rows,) = results(long_table)
    html = rows["data"]["text/html"]
    assert html.count("<tr>") == 51 and "<script>" in html and "50 rows" in rows["data"]["text/plain"]

    # The saved notebook, exported as nbconvert's HTML: each chart an <img> of its PNG.
    saved = nbformat.reads(nbformat.writes(nb), 4)
    body, _ = HTMLExporter().from_notebook_node(saved)
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', body)
    assert len(images) == 3 and images[0] == out["data"]["image/png"]
    assert VEGA_LITE not in body  # the spec is not what a static page shows
    wait_no_new_sessions(server, before)


def test_chart_mistakes_are_one_line_and_the_kernel_goes_on(
    kernel_env: dict[str, Any], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {s["id"] for s in server.live_sessions()}
    tagged = {"tags": ["raises-exception"]}
    nb = new_notebook(
        cells=[
            new_code_cell(f"%%sql --chart bar -x kk -y n\n{COUNTS}", metadata=tagged),
            new_code_cell(f"%%sql --chart bar -x n -y k\n{COUNTS}", metadata=tagged),
            new_code_cell(f"%%sql --chart donut\n{COUNTS}", metadata=tagged),
            new_code_cell(f"%%sql --chart line --agg count -x k\n{COUNTS}"),
            new_code_cell(COUNTS),  # a plain cell of the SQL kernel: its table is the cell's value
        ]
    )
    execute(nb, kernel_env, "dli_sql", monkeypatch)
    said = [
        "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream") for cell in nb.cells
    ]
    assert said[0].startswith(
        "UsageError: %%sql --chart: the result has no column 'kk'; its columns are k, n"
    )
    assert "-y k is not a number (string)" in said[1] and "--agg count" in said[1]
    assert "invalid choice: 'donut'" in said[2]
    assert all(text.count("\n") == 1 for text in said[:3])
    (counted,) = charts(nb.cells[3])
    assert counted[VEGA_LITE]["encoding"]["y"]["aggregate"] == "count"
    assert json.dumps(counted[VEGA_LITE]).count('"n"') == 0  # only the columns drawn are embedded
    (table,) = results(nb.cells[4])
    assert table["execution_count"] == nb.cells[4].execution_count
    assert table["data"]["text/plain"].endswith("3 rows\nchart it: %%sql --chart bar -x k -y n")
    wait_no_new_sessions(server, before)
