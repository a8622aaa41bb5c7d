"""Unit tests for dli_kernel.driver.runtime's value conversion (no SparkSession, no pyspark import)."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from types import SimpleNamespace
from typing import Any

import pytest

from dli_kernel.driver import runtime
from dli_kernel.driver.runtime import to_json_value
from dli_kernel.protocol import SQL_RESULT_MIME


class FakeRow:
    """Just enough of pyspark's Row: ``asDict()`` with values that may themselves be rows."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def asDict(self) -> dict[str, Any]:  # pyspark's name
        return dict(self._fields)


class Opaque:
    def __str__(self) -> str:
        return "opaque<42>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        (0, 0),
        (-7, -7),
        (2**70, 2**70),
        ("text", "text"),
        ("", ""),
        (1.5, 1.5),
        (-0.25, -0.25),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (decimal.Decimal("1.10"), "1.10"),
        (decimal.Decimal("0E-10"), "0.0000000000"),
        (decimal.Decimal("-12345678901234567890.123456789012"), "-12345678901234567890.123456789012"),
        (datetime.date(2024, 2, 29), "2024-02-29"),
        (datetime.datetime(2024, 2, 29, 13, 5, 9), "2024-02-29T13:05:09"),
        (datetime.datetime(2024, 2, 29, 13, 5, 9, 120000), "2024-02-29T13:05:09.120000"),
        (
            datetime.datetime(2024, 2, 29, 13, 5, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=8))),
            "2024-02-29T13:05:09+08:00",
        ),
        (datetime.time(23, 59, 1), "23:59:01"),
        (datetime.timedelta(days=1, seconds=1, microseconds=500000), 86401.5),
        (datetime.timedelta(0), 0.0),
        (b"\x00\xffab", "AP9hYg=="),
        (bytearray(b"spark"), "c3Bhcms="),
        (b"", ""),
    ],
)
def test_scalars(value: Any, expected: Any) -> None:
    converted = to_json_value(value)
    assert converted == expected
    assert type(converted) is type(expected)
    json.dumps(converted, allow_nan=False)  # strict JSON: no NaN or Infinity tokens


def test_bool_stays_a_bool() -> None:
    assert to_json_value(True) is True
    assert json.dumps(to_json_value(False)) == "false"


def test_bytes_decode_back() -> None:
    raw = bytes(range(256))
    assert base64.b64decode(to_json_value(raw)) == raw


def test_dict_keys_become_strings_and_values_are_converted() -> None:
    value = {1: decimal.Decimal("0.5"), "a": b"x", (1, 2): [datetime.date(2020, 1, 2)], None: float("nan")}
    assert to_json_value(value) == {"1": "0.5", "a": "eA==", "(1, 2)": ["2020-01-02"], "None": "nan"}


def test_lists_and_tuples_nest() -> None:
    value = [1, (2, [3, (decimal.Decimal("4.0"),)]), [], ()]
    assert to_json_value(value) == [1, [2, [3, ["4.0"]]], [], []]


def test_rows_become_objects_recursively() -> None:
    row = FakeRow(
        id=7,
        price=decimal.Decimal("19.99"),
        when=datetime.date(2024, 1, 31),
        address=FakeRow(city="Shenzhen", zip=None),
        tags=["a", "b"],
        scores={"x": float("inf")},
    )
    assert to_json_value(row) == {
        "id": 7,
        "price": "19.99",
        "when": "2024-01-31",
        "address": {"city": "Shenzhen", "zip": None},
        "tags": ["a", "b"],
        "scores": {"x": "inf"},
    }


def test_a_list_of_rows() -> None:
    assert to_json_value([FakeRow(a=1), FakeRow(a=b"\x01")]) == [{"a": 1}, {"a": "AQ=="}]


def test_asdict_wins_over_tuple() -> None:
    # pyspark's Row is a tuple subclass: it must come out as an object, not an array.
    class TupleRow(tuple):
        def asDict(self) -> dict[str, Any]:  # pyspark's name
            return {"x": self[0], "y": self[1]}

    assert to_json_value(TupleRow((1, "b"))) == {"x": 1, "y": "b"}


def test_anything_else_is_its_str() -> None:
    assert to_json_value(Opaque()) == "opaque<42>"
    assert to_json_value({1, 2} - {2}) == "{1}"
    assert to_json_value(3 + 4j) == "(3+4j)"


def test_a_whole_result_row_is_json() -> None:
    row = [None, 1, 2.5, float("nan"), decimal.Decimal("3.000"), datetime.datetime(2000, 1, 1), b"z"]
    text = json.dumps([to_json_value(value) for value in row], allow_nan=False)
    assert text == '[null, 1, 2.5, "nan", "3.000", "2000-01-01T00:00:00", "eg=="]'


def test_job_group() -> None:
    assert runtime.job_group("abc") == "dli-abc"
    msg_id = "5d8f2a9c-1f0e4b7a_1234_5"
    assert runtime.job_group(msg_id) == f"dli-{msg_id}"


class PagedFrame:
    """What ``run_sql`` uses of a DataFrame; ``count`` fails the test: it would run the query again."""

    schema = SimpleNamespace(json=lambda: '{"type": "struct", "fields": [{"name": "k", "type": "long"}]}')

    def __init__(self, rows: list[int]) -> None:
        self.rows = rows

    def limit(self, n: int) -> PagedFrame:
        return PagedFrame(self.rows[:n])

    def collect(self) -> list[tuple[int]]:
        return [(k,) for k in self.rows]

    def count(self) -> int:
        raise AssertionError("the rows past the page were counted")


def test_run_sql_shows_the_first_page_without_counting_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[dict[str, Any]] = []
    monkeypatch.setattr(runtime, "display", lambda data, raw: shown.append(data[SQL_RESULT_MIME]))
    monkeypatch.setattr(runtime, "_spark", SimpleNamespace(sql=lambda query: PagedFrame(list(range(5000)))))
    runtime.run_sql("SELECT k FROM big", max_rows=1000)
    runtime.run_sql("SELECT k FROM big", max_rows=-1)
    page, every = shown
    # The Livy shape keeps a numeric total: the lower bound rows + 1, said to be one by totalKnown.
    assert (len(page["data"]), page["total"], page["truncated"], page["totalKnown"]) == (
        1000,
        1001,
        True,
        False,
    )
    assert (len(every["data"]), every["total"], every["truncated"], every["totalKnown"]) == (
        5000,
        5000,
        False,
        True,
    )
