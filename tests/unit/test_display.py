"""What the magics show besides a statement's output: the progress bar, durations, %session's tables."""

from __future__ import annotations

import datetime

import pytest

from dli_kernel.client import SessionInfo
from dli_kernel.kernel.display import (
    age,
    info_rows,
    key_value_bundle,
    link_bundle,
    progress_bar,
    sessions_table,
    spec_rows,
    validity,
)
from dli_kernel.spec import SessionSpec, format_duration, parse_duration

NOW = datetime.datetime(2026, 1, 2, 12, 0, 0, tzinfo=datetime.UTC)


def millis(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_progress_bar() -> None:
    bar = progress_bar(0.5, 3.2, width=10)
    assert bar["text/plain"] == "[#####.....] 50% · 3 s" and 'value="0.500"' in bar["text/html"]
    assert progress_bar(1.7, 0, width=4)["text/plain"] == "[####] 100% · 0 s"
    assert progress_bar(-1.0, 0, width=4)["text/plain"] == "[....] 0% · 0 s"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (119, "119s"),
        (185, "3m"),  # minutes from 2 min on
        (7620, "127m"),
        (3 * 3600 + 59, "3h"),  # hours from 3 h on
        (27 * 3600 + 1800, "27h"),
        (3 * 86400 + 5000, "3d"),  # days from 2 days on
    ],
)
def test_an_age_is_shown_in_one_unit_that_livy_would_read_too(seconds: float, shown: str) -> None:
    assert format_duration(age(seconds)) == shown
    if seconds >= 1:
        assert parse_duration(shown, "age") == age(seconds)


def test_validity_runs_to_now_or_to_the_end() -> None:
    began = NOW - datetime.timedelta(minutes=12, seconds=5)
    running = SessionInfo(id="1", state="idle", raw={"create_time": millis(began)})
    assert validity(running, now=NOW) == "12m"
    ended = SessionInfo(
        id="2",
        state="dead",
        raw={"create_time": millis(began), "update_time": millis(began + datetime.timedelta(seconds=40))},
    )
    assert validity(ended, now=NOW) == "40s"
    assert validity(SessionInfo(id="3", state="idle"), now=NOW) == ""


def test_key_value_bundle_aligns_names_and_links_urls() -> None:
    bundle = key_value_bundle([("id", "7"), ("Spark UI", "http://h:4040/<x>")])
    assert bundle["text/plain"] == "id        7\nSpark UI  http://h:4040/<x>"
    assert '<a href="http://h:4040/&lt;x&gt;" target="_blank">' in bundle["text/html"]
    assert "<td style='text-align:left'>7</td>" in bundle["text/html"]


def test_link_bundle() -> None:
    bundle = link_bundle("Spark UI", "http://h/ui", "Spark UI of session 3")
    assert bundle == {
        "text/plain": "Spark UI: http://h/ui",
        "text/html": '<a href="http://h/ui" target="_blank">Spark UI of session 3</a>',
    }


def test_spec_rows_show_durations_as_everywhere_else() -> None:
    rows = dict(spec_rows(SessionSpec(kind="sql", heartbeat_timeout_s=300, num_executors=2)))
    assert rows["heartbeat timeout"] == "5m" and rows["kind"] == "sql" and rows["sc_type"] == "CUSTOMIZED"
    assert rows["executors"].startswith("2 × (")
    assert dict(spec_rows(SessionSpec()))["heartbeat timeout"] == "none"


def test_info_rows_read_dli_fields_and_fall_back_to_the_request_on_livy() -> None:
    dli = SessionInfo(
        id="9",
        state="idle",
        raw={
            "sc_type": "B",
            "conf": [{"key": "spark.x", "value": "1"}],
            "heartbeatTimeoutInSecond": 90,
            "driverCores": 1,
            "cluster_name": "c1",
        },
    )
    rows = dict(info_rows(dli, SessionSpec()))
    assert (rows["sc_type"], rows["conf"], rows["heartbeat timeout"]) == ("B", "spark.x=1", "90s")
    assert (rows["driver"], rows["cluster"]) == ("?, 1 core", "c1")
    livy = dict(info_rows(SessionInfo(id="1", state="idle"), SessionSpec(sc_type="C")))
    assert livy["sc_type"] == "C (requested)" and livy["heartbeat timeout"] == "none"
    assert dict(info_rows(SessionInfo(id="1", state="idle"), None))["sc_type"] == ""  # nothing was asked


def test_sessions_table_marks_the_notebooks_own() -> None:
    sessions = [
        SessionInfo(id="1", state="idle", name="mine", raw={"queue": "q"}),
        SessionInfo(id="2", state="dead", name="theirs"),
    ]
    bundle = sessions_table(sessions, lambda session_id: session_id == "1")
    lines = bundle["text/plain"].splitlines()
    assert lines[1].startswith("*  mine") and "q" in lines[1].split()
    assert lines[2].startswith("   theirs")
    assert lines[-1] == "* this notebook's session"
    assert "* this" not in sessions_table(sessions[1:], lambda session_id: False)["text/plain"]
    shell = sessions_table(sessions)["text/plain"].splitlines()  # no session of its own: no such column
    assert shell[0].startswith("name  ") and shell[1].startswith("mine  ") and "*" not in "".join(shell)
