"""The first page of a large ``%%sql`` result without a count against the real server: the rows past the
limit are not counted (a count runs the whole query again), the table says more exist, ``--count`` asks.

Which Spark jobs a statement ran is read from the session's Spark UI: every job carries its statement's
job group and its call site as its name (``collect at runtime.py:…``, ``count at …`` for a count). The
magics run in a plain IPython shell, as in test_magics.py; the tests share one session, in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Server, spark_ui, wait_until
from tests.integration.test_magics import Shell, magics_shell

GROUPS = 5003
QUERY = f"SELECT id % {GROUPS} AS k, count(*) AS n FROM range(0, 100000) GROUP BY k"


class Jobs:
    """The Spark jobs of the statements a test ran, read from the session's Spark UI."""

    def __init__(self, ip: Shell, server: Server) -> None:
        self.ip, self.server = ip, server
        self.seen = self._marker()

    def since(self) -> dict[str, list[str]]:
        """The jobs run since the last call, by job group (one per statement): their names."""
        marker = self._marker()
        jobs = self._jobs()
        groups: dict[str, list[str]] = {}
        for job in jobs:
            if self.seen < job["jobId"] < marker:
                groups.setdefault(job.get("jobGroup", ""), []).append(job["name"])
        self.seen = marker
        return groups

    def _marker(self) -> int:
        """Run a job of its own and wait until the UI lists it: the UI's store is fed in order, so every
        job before it is listed too. Its id."""
        tag = f"page-test-{uuid.uuid4().hex}"
        self.ip.ok(
            f"%%pyspark\nsc.setJobDescription({tag!r})\nspark.range(1).collect()\nsc.setJobDescription(None)"
        )
        job = wait_until(
            lambda: next((j for j in self._jobs() if j.get("description") == tag), None),
            "the marker job in the Spark UI",
            30,
            0.2,
        )
        return int(job["jobId"])

    def _jobs(self) -> list[dict[str, Any]]:
        session = self.server.get(f"/sessions/{self.ip.session_id()}").json()
        return spark_ui(self.server, session, f"/{session['appId']}/jobs")


@pytest.fixture(scope="module")
def ip(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    with magics_shell(server, tmp_path_factory.mktemp("ipython-config")) as shell:
        yield shell


@pytest.fixture(scope="module")
def jobs(ip: Shell, server: Server) -> Jobs:
    return Jobs(ip, server)


def test_a_page_of_a_large_group_by_runs_no_count_job(ip: Shell, jobs: Jobs) -> None:
    jobs.since()
    cell = ip.ok(f"%%sql\n{QUERY}")
    assert cell.plain.splitlines()[-1] == (
        "first 1000 rows shown; more rows exist (%%sql --count for the total, -n N for more)"
    )
    ran = jobs.since()
    assert len(ran) == 1, ran  # one statement
    (names,) = ran.values()
    assert names and all(name.startswith("collect at ") for name in names), names  # no "count at"


def test_the_livy_shape_keeps_a_numeric_total_and_says_it_is_a_lower_bound(ip: Shell, server: Server) -> None:
    output = server.run(ip.session_id(), QUERY, kind="sql")
    result = output["data"]["application/json"]
    assert len(result["data"]) == 1000 and set(result) == {
        "schema",
        "data",
        "total",
        "truncated",
        "totalKnown",
    }
    assert (result["total"], result["truncated"], result["totalKnown"]) == (1001, True, False)


def test_count_counts_with_a_statement_of_its_own(ip: Shell, jobs: Jobs) -> None:
    jobs.since()
    cell = ip.ok(f"%%sql -n 10 --count\n{QUERY}")
    assert cell.plain.splitlines()[-1] == f"10 of {GROUPS} rows shown (raise the row limit to see more)"
    assert len(jobs.since()) == 2  # the page, then the count


def test_o_holds_the_first_rows_uncounted_and_all_rows_count_themselves(ip: Shell, jobs: Jobs) -> None:
    jobs.since()
    cell = ip.ok(f"%%sql -o first -n 10\n{QUERY}")
    assert len(ip.shell.user_ns["first"]) == 10
    assert cell.plain.splitlines()[-1] == (
        "10 rows; first holds the first 10; more rows exist (%%sql --count for the total, -n -1 for all)"
    )
    cell = ip.ok(f"%%sql -o every -n -1\n{QUERY}")
    assert len(ip.shell.user_ns["every"]) == GROUPS and "; every holds all rows" in cell.plain
    ran = jobs.since()
    assert len(ran) == 2, ran  # one statement each, none counted
    assert all(name.startswith("toArrow at ") for names in ran.values() for name in names), ran
