"""Livy statement outputs turned into what the kernel sends."""

from __future__ import annotations

from dli_kernel.kernel.display import Rendered, render
from dli_kernel.kernel.tables import table_bundle


def test_nothing_yet() -> None:
    assert render(None) == Rendered()


def test_text_and_rich_mimetypes() -> None:
    output = {"status": "ok", "data": {"text/plain": "2", "text/html": "<b>2</b>", "image/png": "iVBOR"}}
    rendered = render(output)
    assert rendered.text == "2" and rendered.error is None
    assert rendered.displays == [{"text/html": "<b>2</b>"}, {"image/png": "iVBOR"}]


def test_error_keeps_name_value_and_lines() -> None:
    output = {
        "status": "error",
        "ename": "ValueError",
        "evalue": "bad",
        "traceback": ["Traceback\n", "  x\n"],
    }
    assert render(output).error == ("ValueError", "bad", ["Traceback", "  x"])
    assert render({"status": "error", "ename": "E", "evalue": "v"}).error == ("E", "v", ["E: v"])


def test_sql_result_becomes_a_table_that_says_when_rows_were_cut() -> None:
    result = {
        "schema": {"fields": [{"name": "id", "type": "long"}, {"name": "s", "type": "struct"}]},
        "data": [[1, {"a": None}], [2, None]],
        "total": 10,
        "truncated": True,
    }
    (table,) = render({"status": "ok", "data": {"application/json": result, "text/plain": ""}}).displays
    assert "<th>id</th><th>s</th>" in table["text/html"]
    assert "<td>{&quot;a&quot;: null}</td>" in table["text/html"]
    assert table["text/plain"].splitlines() == [
        "id  s",  # the last column is not padded: no trailing spaces
        '1   {"a": null}',
        "2   null",
        "2 of 10 rows shown (raise the row limit to see more)",
    ]


def test_livy_table_and_plain_json() -> None:
    table = {"headers": [{"name": "a", "type": "BIGINT_TYPE"}], "data": [[1]]}
    (bundle,) = render({"status": "ok", "data": {"application/vnd.livy.table.v1+json": table}}).displays
    assert bundle["text/plain"].endswith("1 row")
    (as_json,) = render({"status": "ok", "data": {"application/json": {"k": [1]}}}).displays
    assert as_json["application/json"] == {"k": [1]} and '"k"' in as_json["text/plain"]


def test_html_is_escaped() -> None:
    bundle = table_bundle(["<x>"], [["<script>"]], 1)
    assert "<script>" not in bundle["text/html"] and "&lt;script&gt;" in bundle["text/html"]
