"""Tables: complete plain HTML always; a script of ours that adds filter, sort and pages only to long ones."""

from __future__ import annotations

import html
import re

import pandas as pd

from dli_kernel.kernel.tables import INTERACTIVE_AFTER, frame_bundle, result_rows, table_bundle
from dli_kernel.protocol import SQL_RESULT_MIME

NASTY = "</script><script>alert('x')</script>&\"`${1}"


def split(html: str) -> tuple[str, str]:
    """The markup before the script, and the script's code."""
    before, _, rest = html.partition("<script>")
    return before, rest.removesuffix("</script>")


def test_a_short_table_is_plain_html() -> None:
    rows = [[f"r{i}", i] for i in range(INTERACTIVE_AFTER)]
    bundle = table_bundle(["k", "n"], rows, INTERACTIVE_AFTER)
    assert "<script" not in bundle["text/html"] and bundle["text/html"].startswith("<table>")
    assert bundle["text/plain"].endswith(f"{INTERACTIVE_AFTER} rows")


def test_a_long_table_keeps_every_row_and_gains_a_script() -> None:
    rows = [[f"r{i}", i] for i in range(INTERACTIVE_AFTER + 1)]
    bundle = table_bundle(["k", "n"], rows, 1500)
    markup, script = split(bundle["text/html"])
    assert markup.count("<tr>") == INTERACTIVE_AFTER + 2  # the header and every row: static viewers see all
    assert f"{INTERACTIVE_AFTER + 1} of 1500 rows shown" in markup  # the row-count note stays
    (element,) = re.findall(r'<div id="(dli-table-[0-9a-f]{32})">', markup)
    assert f'document.getElementById("{element}")' in script
    assert "http" not in script and "import" not in script  # nothing fetched
    assert all(f"r{i}" not in script for i in range(len(rows)))  # rows are read from the table, not written
    assert "</" not in script and "<!--" not in script  # nothing in it can end the script early


def test_every_table_has_its_own_element() -> None:
    rows = [["x"]] * (INTERACTIVE_AFTER + 1)
    first, second = (table_bundle(["c"], rows, len(rows))["text/html"] for _ in range(2))
    assert re.findall(r"dli-table-\w+", first)[0] != re.findall(r"dli-table-\w+", second)[0]


def test_values_and_names_are_escaped_and_stay_out_of_the_script() -> None:
    rows = [[NASTY, i] for i in range(INTERACTIVE_AFTER + 1)]
    bundle = table_bundle([NASTY, "n"], rows, len(rows), hint=f"chart it: -x {NASTY}")
    markup, script = split(bundle["text/html"])
    assert bundle["text/html"].count("<script>") == 1 and bundle["text/html"].count("</script>") == 1
    assert "alert" not in script and "alert" in markup
    assert "&lt;/script&gt;&lt;script&gt;alert(&#x27;x&#x27;)" in markup
    assert f"chart it: -x {NASTY}" in bundle["text/plain"]


def test_the_hint_is_a_line_under_the_table() -> None:
    bundle = table_bundle(["k", "n"], [["a", 1]], 1, hint="chart it: %%sql --chart bar -x k -y n")
    assert bundle["text/plain"].splitlines()[-2:] == ["1 row", "chart it: %%sql --chart bar -x k -y n"]
    assert bundle["text/html"].endswith(
        "<p>1 row</p><p><code>chart it: %%sql --chart bar -x k -y n</code></p>"
    )


def test_a_frame_table_says_what_the_variable_holds() -> None:
    frame = pd.DataFrame({"k": [f"r{i}" for i in range(30)], "n": range(30)})
    bundle = frame_bundle(frame, 100, "top", hint="chart it: %%sql --chart bar -x k -y n")
    assert "30 rows; top holds 30 of 100 rows" in bundle["text/plain"]
    markup, script = split(bundle["text/html"])
    assert "<p>30 rows; top holds 30 of 100 rows</p>" in markup and "chart it" in markup
    assert "r29" not in script


# -- rows past the limit, counted or not -------------------------------------------------------------


def test_an_uncounted_result_says_more_rows_exist_and_how_to_count_them() -> None:
    value = {
        "schema": {"fields": [{"name": "k", "type": "long"}]},
        "data": [[i] for i in range(3)],
        "total": 4,  # the lower bound a driver that did not count sends
        "truncated": True,
        "totalKnown": False,
    }
    rows = result_rows({SQL_RESULT_MIME: value})
    assert rows is not None and (rows.total, rows.total_known) == (4, False)
    more = "%%sql --count for the total, -n N for more"
    bundle = table_bundle(rows.names, rows.rows, rows.total, total_known=rows.total_known, more=more)
    note = "first 3 rows shown; more rows exist (%%sql --count for the total, -n N for more)"
    assert (
        bundle["text/plain"].splitlines()[-1] == note and f"<p>{html.escape(note)}</p>" in bundle["text/html"]
    )
    assert "of 4" not in bundle["text/plain"]


def test_a_counted_or_older_result_says_how_many_rows_it_had() -> None:
    value = {"schema": {"fields": [{"name": "k", "type": "long"}]}, "data": [[1], [2]], "total": 10}
    rows = result_rows({SQL_RESULT_MIME: value})  # drivers from before totalKnown always counted
    assert rows is not None and rows.total_known
    bundle = table_bundle(rows.names, rows.rows, rows.total, total_known=rows.total_known)
    assert bundle["text/plain"].splitlines()[-1] == "2 of 10 rows shown (raise the row limit to see more)"


def test_a_frame_of_an_uncounted_result_says_it_holds_the_first_rows() -> None:
    frame = pd.DataFrame({"k": range(3)})
    more = "%%sql --count for the total, -n -1 for all"
    bundle = frame_bundle(frame, 4, "df", total_known=False, more=more)
    assert bundle["text/plain"].splitlines()[-1] == (
        "3 rows; df holds the first 3; more rows exist (%%sql --count for the total, -n -1 for all)"
    )
    assert frame_bundle(frame, 10, "df")["text/plain"].endswith("3 rows; df holds 3 of 10 rows")
