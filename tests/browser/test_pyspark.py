"""The PySpark (DLI) kernel in JupyterLab, as a user sees it in Chromium.

One notebook, its cells run one at a time in this order (the first one while the session still starts).
Each test checks what one step shows on the page and leaves a screenshot of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.lab import JupyterLab, Notebook
from tests.integration.conftest import Server

pytestmark = pytest.mark.timeout(420)  # the first test also starts both servers, JupyterLab and Chromium

SESSION_START_S = 240  # a cold driver start (JVM and SparkContext) on two busy cores

CELLS = {
    "first": 'print("Spark", spark.version)',
    "table": "%%sql\nSELECT id AS k, id * id AS n FROM range(1, 6)",
    # Sixteen tasks of two seconds each: on the session's six local cores they end in three waves.
    "job": (
        "import time\n\n"
        "def slow(x):\n"
        "    time.sleep(2)\n"
        "    return x * x\n\n"
        "spark.sparkContext.parallelize(range(16), 16).map(slow).sum()"
    ),
    "error": 'spark.table("no_such_table")',
    "after_error": 'print("still running after the error")',
    # The value set before the job proves, after the interrupt, that the next cell ran on the same session.
    "long": (
        "import time\n"
        "marker = 7\n"
        "spark.sparkContext.parallelize(range(4), 4).map(lambda x: time.sleep(600) or x).count()"
    ),
    "after_interrupt": "print(marker * 6)",
    "value": "21*2",
    "session": "%session",
}


@pytest.fixture(scope="module")
def nb(notebook: Callable[..., AbstractContextManager[Notebook]]) -> Iterator[Notebook]:
    with notebook("pyspark", "dli_pyspark", CELLS) as opened:
        yield opened


def test_first_cell_shows_the_session_starting(nb: Notebook) -> None:
    nb.start("first")
    output = nb.output("first")
    expect(output).to_contain_text(re.compile(r"session (not_started|starting) \(\d+ s\)"), timeout=60_000)
    nb.shot("session-starting")
    nb.wait_done("first", SESSION_START_S)
    expect(output).to_contain_text(re.compile(r"session \S+ ready after [\d.]+ s"))
    expect(output).to_contain_text(re.compile(r"Spark \d+\.\d+"))
    nb.shot("session-ready")


def test_sql_cell_shows_an_html_table_with_its_row_count(nb: Notebook) -> None:
    output = nb.run("table")
    table = output.locator("table")
    expect(table.locator("thead th")).to_have_text(["k", "n"])
    expect(table.locator("tbody tr")).to_have_count(5)
    expect(table.locator("tbody tr").last.locator("td")).to_have_text(["5", "25"])
    expect(output).to_contain_text("5 rows")
    nb.shot("table", table)


def test_progress_bar_while_a_job_runs(nb: Notebook, readme_image: Callable[[Path, str], None]) -> None:
    nb.start("job")
    bar = nb.output("job").locator("progress")
    expect(bar).to_be_visible(timeout=60_000)
    # For a picture worth showing: the bar part-way (tasks end in waves), or gone if the job was quicker.
    nb.page.wait_for_function(
        "cell => { const bar = cell.querySelector('progress'); return !bar || Number(bar.value) > 0; }",
        arg=nb.cell("job").element_handle(),
        timeout=60_000,
    )
    readme_image(nb.shot("progress-bar"), "browser-progress.png")
    nb.wait_done("job")
    expect(bar).to_have_count(0)  # the bar gives way to a last word
    expect(nb.output("job")).to_contain_text(re.compile(r"done in [\d.]+ s"))
    expect(nb.output("job")).to_contain_text("1240")  # 0 + 1 + 4 + ... + 225
    nb.shot("job-done")


def test_error_cell_names_the_remote_error_and_the_next_cell_runs(nb: Notebook) -> None:
    output = nb.run("error")
    error = output.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(error.last).to_contain_text("AnalysisException")
    expect(error.last).to_contain_text("no_such_table")
    nb.shot("error", error.last)
    nb.expect_idle()
    expect(nb.run("after_error")).to_contain_text("still running after the error")


def test_interrupt_button_cancels_the_running_cell(nb: Notebook, sessions_server: Server) -> None:
    nb.start("long")
    output = nb.output("long")
    expect(output.locator("progress")).to_be_visible(timeout=60_000)  # its Spark job runs
    nb.shot("before-interrupt")
    nb.page.locator('jp-button[data-command="notebook:interrupt-kernel"]').click()
    nb.wait_done("long", 60)
    expect(output).to_contain_text("KeyboardInterrupt")
    expect(output).to_contain_text("the statement was cancelled; the session is still usable.")
    expect(output).to_contain_text(re.compile(r"cancelled in [\d.]+ s"))
    nb.expect_idle()
    nb.shot("interrupted", output)
    expect(nb.run("after_interrupt")).to_contain_text("42")  # `marker` is still there: the same session
    assert len(sessions_server.live_sessions()) == 1


def test_a_value_is_an_out_prompt(nb: Notebook) -> None:
    output = nb.run("value")
    result = output.locator(".jp-OutputArea-executeResult")
    expect(result).to_have_count(1)
    expect(result.locator(".jp-OutputPrompt")).to_have_text(re.compile(r"\[\d+\]:"))
    expect(result.locator(".jp-OutputArea-output")).to_have_text("42")
    nb.shot("out-prompt", result)


def test_the_page_shows_no_token(nb: Notebook, lab: JupyterLab) -> None:
    """Everything the cells showed, %session's links included, carries neither server's token."""
    nb.run("session")
    nb.shot("session", nb.output("session"))
    shown = nb.page.locator(".jp-Notebook").inner_text()
    links = [a.get_attribute("href") or "" for a in nb.page.locator(".jp-OutputArea a").all()]
    assert "session" in shown
    leaked = [
        name
        for name, token in zip(("JupyterLab", "sessions server"), lab.secrets, strict=False)
        if token in shown or any(token in link for link in links)
    ]
    assert not leaked, f"the page shows the token of: {leaked}"
