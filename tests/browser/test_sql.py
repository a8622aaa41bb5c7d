"""The Spark SQL (DLI) kernel in JupyterLab: a plain cell is SQL; its result a table, and a chart when the
cell asks for one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.lab import Notebook

pytestmark = pytest.mark.timeout(420)

SESSION_START_S = 240

QUERY = "SELECT concat('k', id) AS k, id * id AS n FROM range(1, 6)"
CELLS = {
    "table": QUERY,
    "chart": f"%%sql --chart bar -x k -y n\n{QUERY}",
    "error": "SELECT * FROM no_such_table",
    "after_error": "SELECT 'still running' AS message",
}


@pytest.fixture(scope="module")
def nb(notebook: Callable[..., AbstractContextManager[Notebook]]) -> Iterator[Notebook]:
    with notebook("sql", "dli_sql", CELLS) as opened:
        yield opened


def test_plain_cell_is_sql_with_a_table(nb: Notebook) -> None:
    output = nb.run("table", SESSION_START_S)
    table = output.locator("table")
    expect(table.locator("thead th")).to_have_text(["k", "n"])
    expect(table.locator("tbody tr")).to_have_count(5)
    expect(table.locator("tbody tr").first.locator("td")).to_have_text(["k1", "1"])
    expect(output).to_contain_text("5 rows")
    nb.shot("table", table)


def test_chart_cell_renders_a_chart(nb: Notebook, readme_image: Callable[[Path, str], None]) -> None:
    output = nb.run("chart")
    # JupyterLab draws application/vnd.vegalite.v5+json with vega-embed, as an svg or on a canvas.
    drawing = output.locator(".vega-embed svg, .vega-embed canvas").first
    expect(drawing).to_be_visible()
    box = drawing.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, box
    readme_image(nb.shot("chart", output), "browser-chart.png")


def test_error_cell_names_the_remote_error_and_the_next_cell_runs(nb: Notebook) -> None:
    output = nb.run("error")
    error = output.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(error.last).to_contain_text("AnalysisException")
    nb.shot("error", error.last)
    nb.expect_idle()
    after = nb.run("after_error")
    expect(after.locator("table tbody td")).to_have_text("still running")
    expect(after).to_contain_text("1 row")
