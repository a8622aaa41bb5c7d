"""The Spark (DLI) kernel in JupyterLab: plain cells are Scala, run by the session's REPL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from playwright.sync_api import expect

from tests.browser.lab import Notebook

pytestmark = pytest.mark.timeout(420)

# A cold driver, then the Scala interpreter (its helper compiled on a machine's first Scala statement).
FIRST_CELL_S = 300

CELLS = {
    "value": "val xs = spark.range(1, 11)\nxs.count()",
    "error": 'val n: Int = "text"',
    "after_error": "println(xs.count() * 2)",
}


@pytest.fixture(scope="module")
def nb(notebook: Callable[..., AbstractContextManager[Notebook]]) -> Iterator[Notebook]:
    with notebook("scala", "dli_spark", CELLS) as opened:
        yield opened


def test_scala_cell_shows_its_value(nb: Notebook) -> None:
    output = nb.run("value", FIRST_CELL_S)
    expect(output).to_contain_text("10")
    expect(output).to_contain_text("Long")
    nb.shot("value", output)


def test_compile_error_and_the_next_cell_runs(nb: Notebook) -> None:
    output = nb.run("error")
    error = output.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    # The compiler's own words; the error's name (CompileError) is in the saved notebook, not on the page.
    expect(error.last).to_contain_text("error: type mismatch")
    nb.shot("error", error.last)
    nb.expect_idle()
    expect(nb.run("after_error")).to_contain_text("20")
