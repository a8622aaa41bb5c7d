"""The fast paths against the real embedded server: long-polls, the warm pool, Arrow results, and a
RemoteSession that uses them. Its servers have a pool of one, as ``dli-kernel server`` has by default."""

from __future__ import annotations

import datetime
import decimal
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from dli_kernel.client import SessionInfo, SessionsClient, StatementFailed
from dli_kernel.client.auth import BearerToken
from dli_kernel.kernel.remote_session import RemoteSession
from dli_kernel.protocol import ENDED_STATES
from dli_kernel.spec import SessionSpec
from tests.integration.conftest import Server, driver_pid, driver_pids, pid_alive, wait_gone, wait_until

TYPES_QUERY = """
    SELECT id, CAST(id AS INT) AS small, IF(id % 2 = 0, NULL, id) AS maybe, id / 4 AS d,
           CAST(id AS DECIMAL(10, 2)) / 3 AS dec, IF(id = 1, NULL, CONCAT('row ', id, ' é')) AS s,
           id % 3 = 0 AS flag, IF(id = 2, NULL, id % 2 = 0) AS maybe_flag,
           DATE_ADD(DATE'2024-02-28', CAST(id AS INT)) AS day,
           TIMESTAMP'2024-02-29 13:45:01.5' + MAKE_INTERVAL(0, 0, 0, 0, CAST(id AS INT)) AS ts,
           ARRAY(id, id + 1) AS arr, NAMED_STRUCT('a', id, 'b', 'x') AS st, MAP('k', id) AS m
    FROM RANGE(4)
"""


def pool_status(server: Server) -> dict[str, int]:
    return server.get("/pool").json()


def wait_pool_ready(server: Server, timeout: float = 240) -> dict[str, int]:
    seen: dict[str, int] = {}

    def filled() -> dict[str, int] | None:
        seen.update(pool_status(server))
        return dict(seen) if seen["ready"] >= 1 else None

    return wait_until(filled, lambda: f"the pool to fill: {seen}", timeout, 0.2)


def pooled_pids(state_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in state_dir.glob("pool/*/driver.pid")]


class HeldGets(threading.Thread):
    """GETs ``path`` with ``?wait=30`` one after another until ``last(answer)``, noting when each went out
    and when it came back: a test can then act while the server holds one, and see what answered it."""

    def __init__(self, server: Server, path: str, last: Callable[[requests.Response], bool]) -> None:
        super().__init__(daemon=True)
        self.server, self.path, self.last = server, path, last
        self.answers: list[requests.Response] = []
        self.sent: list[float] = []
        self.answered: list[float] = []

    def run(self) -> None:
        while True:
            self.sent.append(time.monotonic())
            self.answers.append(self.server.get(self.path, params={"wait": 30}))
            self.answered.append(time.monotonic())
            if self.last(self.answers[-1]):
                return

    def wait_held(self, seconds: float = 0.5) -> None:
        """Wait until a GET has been out for ``seconds`` with no answer: the server is holding it."""

        def holding() -> bool:
            sent, answered = list(self.sent), len(self.answered)
            return len(sent) > answered and time.monotonic() - sent[-1] > seconds

        wait_until(holding, f"the server to hold a GET of {self.path}", 60, 0.05)

    def answered_across(self, moment: float) -> list[float]:
        """Seconds after ``moment`` that each GET sent before it and answered after it was answered."""
        # Not strict: a GET the server never answered has no time back.
        pairs = zip(self.sent, self.answered, strict=False)
        return [back - moment for out, back in pairs if out < moment < back]


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state_dir = tmp_path_factory.mktemp("pooled") / "state"
    server = Server(state_dir, pool=1)
    yield server
    leaked = server.live_sessions()
    for session in leaked:
        server.delete(f"/sessions/{session['id']}")
    drivers = driver_pids(state_dir)
    assert server.stop() in (0, -signal.SIGTERM)
    assert not leaked, f"tests left sessions behind: {[s['id'] for s in leaked]}"
    assert all(wait_gone(pid, timeout=10) for pid in drivers), "a driver outlived the server"
    assert not list(state_dir.glob("pool/*")), "the pool's directories outlived the server"


@pytest.fixture(scope="module")
def session(pooled: Server) -> Iterator[dict]:
    """A session made once the pool is full, so from the pool; its POST answer as it came."""
    wait_pool_ready(pooled)
    waiting = pooled_pids(pooled.state_dir)
    created = pooled.create(kind="pyspark", name="fast", heartbeatTimeoutInSecond=600)
    created["pooled_pid"] = waiting[0]
    yield created
    pooled.delete(f"/sessions/{created['id']}")


@pytest.fixture
def client(pooled: Server) -> Iterator[SessionsClient]:
    with SessionsClient(pooled.url, "local", auth=BearerToken(pooled.token)) as client:
        yield client


@pytest.fixture
def plain_client(pooled: Server) -> Iterator[SessionsClient]:
    """The client as it is against a plain Livy: no long-polls, no Arrow route."""
    with SessionsClient(pooled.url, "livy", auth=BearerToken(pooled.token), extensions=()) as client:
        yield client


# -- the pool -------------------------------------------------------------------------------------


def test_a_pooled_session_is_idle_at_once_and_the_pool_refills(pooled: Server, session: dict) -> None:
    assert session["state"] == "idle" and session["appId"].startswith("local-")
    assert driver_pid(pooled, session["id"]) == session["pooled_pid"]  # moved into the session's dir
    assert pooled.run(session["id"], "1 + 1")["data"]["text/plain"] == "2"
    assert [s["id"] for s in pooled.live_sessions()] == [session["id"]]  # pooled drivers are no sessions
    log = "\n".join(pooled.get(f"/sessions/{session['id']}/log").json()["log"])
    assert "took a driver from the warm pool" in log

    status = wait_pool_ready(pooled)
    assert status == {"size": 1, "ready": 1, "starting": 0}
    refilled = pooled_pids(pooled.state_dir)
    assert len(refilled) == 1 and refilled[0] != session["pooled_pid"] and pid_alive(refilled[0])
    assert [s["id"] for s in pooled.live_sessions()] == [session["id"]]


def test_sessions_the_pool_cannot_serve_start_their_own_driver(pooled: Server, session: dict) -> None:
    wait_pool_ready(pooled)
    special = pooled.create(kind="pyspark", conf={"spark.sql.shuffle.partitions": "3"})
    tier_b = pooled.create(kind="sql", numExecutors=2)
    try:
        for created in (special, tier_b):
            assert created["state"] in ("not_started", "starting")
        assert pool_status(pooled)["ready"] == 1  # the pooled driver is still there for the next one
    finally:
        for created in (special, tier_b):
            assert pooled.delete(f"/sessions/{created['id']}").status_code == 200


# -- long-polls -----------------------------------------------------------------------------------


def test_a_held_statement_get_answers_as_soon_as_the_statement_is_done(pooled: Server, session: dict) -> None:
    sid = session["id"]
    statement = pooled.submit(sid, "import time\ntime.sleep(1.5)\n7")
    began, gets = time.monotonic(), 0
    while statement["state"] not in ("available", "error", "cancelled"):
        statement = pooled.get(f"/sessions/{sid}/statements/{statement['id']}", params={"wait": 30}).json()
        gets += 1
    # At most waiting -> running -> available: one answer per change, none after the full 30 s.
    assert gets <= 2 and time.monotonic() - began < 25
    assert statement["output"]["data"]["text/plain"] == "7"
    assert isinstance(statement["logSize"], int) and statement["logSize"] > 0

    began = time.monotonic()
    again = pooled.get(f"/sessions/{sid}/statements/{statement['id']}", params={"wait": 30}).json()
    assert again["state"] == "available" and time.monotonic() - began < 25  # done already: no hold

    plain = pooled.get(f"/sessions/{sid}/statements/{statement['id']}").json()
    assert set(plain) == {"id", "code", "kind", "state", "output", "progress", "started", "completed"}
    bad = pooled.get(f"/sessions/{sid}/statements/{statement['id']}", params={"wait": "soon"})
    assert bad.status_code == 400 and "'wait' must be a number of seconds" in bad.json()["msg"]


def test_a_held_get_answers_when_a_queued_statement_starts(pooled: Server, session: dict) -> None:
    sid = session["id"]
    blocker = pooled.submit(sid, "import time\ntime.sleep(2)")
    queued = pooled.submit(sid, "'after'")
    began = time.monotonic()
    seen = pooled.get(f"/sessions/{sid}/statements/{queued['id']}", params={"wait": 30}).json()
    assert seen["state"] in ("running", "available") and time.monotonic() - began < 25
    assert pooled.wait_statement(sid, blocker["id"])["state"] == "available"
    assert pooled.wait_statement(sid, queued["id"])["output"]["data"]["text/plain"] == "'after'"


def test_a_held_session_get_answers_when_the_session_ends(pooled: Server, session: dict) -> None:
    doomed = pooled.create(kind="pyspark", driverMemory="2 GB")  # not from the pool: starting a while
    holder = HeldGets(
        pooled, f"/sessions/{doomed['id']}/state", lambda answer: answer.json()["state"] in ENDED_STATES
    )
    began = time.monotonic()
    holder.start()
    holder.wait_held()
    deleted = time.monotonic()
    assert pooled.delete(f"/sessions/{doomed['id']}").status_code == 200
    holder.join(timeout=60)
    answers = [answer.json() for answer in holder.answers]
    assert not holder.is_alive() and answers[-1]["state"] == "killed"
    assert len(answers) <= 5 and time.monotonic() - began < 25
    # The GET held when the delete came was answered because of it, long before its 30 s were up.
    assert [seconds < 10 for seconds in holder.answered_across(deleted)] == [True]


# -- Arrow results --------------------------------------------------------------------------------


def test_arrow_results_keep_types_and_nulls_and_match_the_fallback_and_json(
    pooled: Server, session: dict, client: SessionsClient, plain_client: SessionsClient
) -> None:
    assert (
        pooled.run(session["id"], "SET spark.sql.session.timeZone=Asia/Shanghai", kind="sql")["status"]
        == "ok"
    )
    fast = client.fetch_dataframe(session["uuid"], TYPES_QUERY, max_rows=-1)
    fallback = plain_client.fetch_dataframe(str(session["id"]), TYPES_QUERY, max_rows=-1)
    assert (fast.transport, fallback.transport) == ("arrow", "arrow-inline")
    pd.testing.assert_frame_equal(fast.frame, fallback.frame)

    frame = fast.frame
    assert (fast.total, fast.truncated, len(frame)) == (4, False, 4)
    assert frame["id"].dtype == "int64" and frame["small"].dtype == "int32"
    assert frame["maybe"].dtype == "Int64" and frame["maybe"].isna().tolist() == [True, False, True, False]
    assert frame["d"].dtype == "float64" and frame["d"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert frame["dec"][1] == decimal.Decimal("0.333333") and isinstance(frame["dec"][0], decimal.Decimal)
    assert frame["s"][0] == "row 0 é" and pd.isna(frame["s"][1])
    assert frame["flag"].dtype == "bool" and frame["flag"].tolist() == [True, False, False, True]
    assert frame["maybe_flag"].dtype == "boolean" and frame["maybe_flag"].tolist() == [
        True,
        False,
        pd.NA,
        False,
    ]
    assert frame["day"].tolist() == [
        datetime.date(2024, 2, 28) + datetime.timedelta(days=i) for i in range(4)
    ]
    # Wall-clock time in the session's zone (UTC+8), naive.
    assert frame["ts"][0] == pd.Timestamp("2024-02-29 13:45:01.5") and frame["ts"].dt.tz is None
    assert (
        list(frame["arr"][3]) == [3, 4] and frame["st"][2] == {"a": 2, "b": "x"} and frame["m"][1] == {"k": 1}
    )

    # The same times Spark's own toPandas() gives in the session. (Livy's JSON, made from collect(), shows
    # them in the driver process's zone instead, UTC here.)
    shown = pooled.run(session["id"], f"str(spark.sql({TYPES_QUERY!r}).toPandas().ts.tolist())")
    assert shown["data"]["text/plain"] == repr(str(frame["ts"].tolist()))
    json_rows = pooled.run(session["id"], TYPES_QUERY, kind="sql")["data"]["application/json"]["data"]
    assert [row[5] for row in json_rows] == [None if pd.isna(s) else s for s in frame["s"]]
    assert [row[4] for row in json_rows] == [str(value) for value in frame["dec"]]


def test_arrow_results_say_when_rows_were_cut(
    session: dict, client: SessionsClient, plain_client: SessionsClient
) -> None:
    for result in (
        client.fetch_dataframe(session["uuid"], "SELECT * FROM RANGE(10)", max_rows=3),
        plain_client.fetch_dataframe(str(session["id"]), "SELECT * FROM RANGE(10)", max_rows=3),
    ):
        # The rows past the limit are not counted: the total is a lower bound, said to be one.
        assert (len(result.frame), result.total, result.truncated, result.total_known) == (3, 4, True, False)
        assert result.frame["id"].tolist() == [0, 1, 2]


def test_dataframes_by_python_expression(
    pooled: Server, session: dict, client: SessionsClient, plain_client: SessionsClient
) -> None:
    code = "df = spark.range(5).selectExpr('id', 'id * 2 AS twice')\npdf = df.toPandas()"
    assert pooled.run(session["id"], code)["status"] == "ok"
    for result in (
        client.fetch_dataframe(session["uuid"], "df.where('id > 1')", kind="pyspark"),
        plain_client.fetch_dataframe(str(session["id"]), "df.where('id > 1')", kind="pyspark"),
    ):
        assert result.frame["twice"].tolist() == [4, 6, 8]
    from_pandas = client.fetch_dataframe(session["uuid"], "pdf", max_rows=2, kind="pyspark")
    assert from_pandas.frame["twice"].tolist() == [0, 2] and from_pandas.total == 5 and from_pandas.truncated


def test_failed_queries_raise_with_the_reason(
    session: dict, client: SessionsClient, plain_client: SessionsClient
) -> None:
    with pytest.raises(StatementFailed, match="no_such_table") as info:
        client.fetch_dataframe(session["uuid"], "SELECT * FROM no_such_table")
    assert info.value.output["status"] == "error"
    with pytest.raises(StatementFailed, match="no_such_table"):
        plain_client.fetch_dataframe(str(session["id"]), "SELECT * FROM no_such_table")
    with pytest.raises(StatementFailed, match="NameError"):
        client.fetch_dataframe(session["uuid"], "no_such_frame", kind="pyspark")


def test_the_result_route(pooled: Server, session: dict) -> None:
    sid = session["id"]
    plain = pooled.submit(sid, "1")
    pooled.wait_statement(sid, plain["id"])
    missing = pooled.get(f"/sessions/{sid}/statements/{plain['id']}/result")
    assert missing.status_code == 404 and "has no Arrow result" in missing.json()["msg"]

    ids = []
    for n in range(3):
        statement = pooled.submit(sid, f"SELECT {n} AS n", kind="sql", resultFormat="arrow")
        done = pooled.wait_statement(sid, statement["id"])
        assert done["output"]["data"]["application/vnd.dli-kernel.arrow-result+json"]["rows"] == 1
        ids.append(statement["id"])
    newest = pooled.get(f"/sessions/{sid}/statements/{ids[-1]}/result")
    assert (
        newest.status_code == 200 and newest.headers["content-type"] == "application/vnd.apache.arrow.stream"
    )
    gone = pooled.get(f"/sessions/{sid}/statements/{ids[0]}/result")
    assert gone.status_code == 404 and "is gone" in gone.json()["msg"]
    bad = pooled.post(f"/sessions/{sid}/statements", json={"code": "1", "resultFormat": "csv"})
    assert bad.status_code == 400 and "'resultFormat' must be one of json, arrow" in bad.json()["msg"]


# -- RemoteSession on the fast paths ----------------------------------------------------------------


def test_remote_session_long_polls_and_reads_the_log_only_when_it_grew(
    session: dict, client: SessionsClient
) -> None:
    sent: list[tuple[str, str]] = []
    client._http.hooks["response"].append(lambda r, *a, **k: sent.append((r.request.method, r.request.url)))
    remote = RemoteSession(client, SessionSpec(kind="pyspark"))
    remote.info = SessionInfo(id=session["uuid"], state="idle")
    logged: list[str] = []

    for _ in range(3):
        statement, cancelled = remote.run("1 + 1", on_log=logged.extend)
        assert statement.output["data"]["text/plain"] == "2" and not cancelled
    last = sent[max(i for i, (method, _) in enumerate(sent) if method == "POST") :]
    assert last[0][0] == "POST" and 2 <= len(last) <= 3  # POST, one or two held GETs, nothing else
    assert all("wait=" in url and "/statements/" in url for _, url in last[1:])

    statement, _ = remote.run("import warnings\nwarnings.warn('fast-path-marker')", on_log=logged.extend)
    assert statement.state == "available" and any("fast-path-marker" in line for line in logged)


def test_remote_session_cancels_while_long_polling(
    pooled: Server, session: dict, client: SessionsClient
) -> None:
    remote = RemoteSession(client, SessionSpec(kind="pyspark"))
    remote.info = SessionInfo(id=session["uuid"], state="idle")
    code = "import time\ntime.sleep(120)"
    interrupted = threading.Event()
    failed: list[AssertionError] = []

    def interrupt_once_running() -> None:
        def running() -> bool:
            listing = pooled.get(f"/sessions/{session['id']}/statements", params={"order": "desc"}).json()
            newest = listing["statements"][:1]
            return bool(newest) and newest[0]["code"] == code and newest[0]["state"] == "running"

        try:
            wait_until(running, "the statement to run", 60, 0.05)
        except AssertionError as err:
            failed.append(err)
        interrupted.set()

    watcher = threading.Thread(target=interrupt_once_running, daemon=True)
    watcher.start()
    began = time.monotonic()
    statement, cancelled = remote.run(code, interrupted=interrupted)
    watcher.join()
    assert not failed, failed
    assert cancelled and statement.state == "cancelled" and time.monotonic() - began < 60
    assert remote.run("'still fine'")[0].output["data"]["text/plain"] == "'still fine'"


# -- the pool and the server's life ----------------------------------------------------------------


def test_a_starting_pooled_driver_is_taken_and_a_crash_leaves_nothing_behind(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = Server(state_dir, pool=1)
    try:
        starting = wait_until(lambda: pooled_pids(state_dir), "the pool to start a driver", 30, 0.05)[0]
        early = first.create(kind="pyspark")  # the pooled driver is still starting: it is taken anyway
        assert early["state"] in ("not_started", "starting")
        first.wait_state(early["id"], ("idle",), timeout=240)
        assert driver_pid(first, early["id"]) == starting
        wait_pool_ready(first)
        leftover = pooled_pids(state_dir)[0]
    finally:
        first.stop(signal.SIGKILL)  # a crash: the pooled driver is left running
    assert pid_alive(leftover)

    second = Server(state_dir, pool=0)
    try:
        assert wait_gone(leftover, timeout=60), "the next server did not stop the pooled driver left behind"
        assert second.wait_state(early["id"], ("idle",), timeout=60)["state"] == "idle"  # sessions recover
        # A request held when the server is told to stop is answered, not cut off after uvicorn's grace.
        holder = HeldGets(second, f"/sessions/{early['id']}/state", lambda answer: True)
        holder.start()
        holder.wait_held()
        stopping = time.monotonic()
    finally:
        second.stop()
    holder.join(timeout=30)
    held = holder.answers
    assert held and held[0].status_code == 200 and held[0].json()["state"] == "idle"
    assert len(holder.answered_across(stopping)) == 1  # held until the stop, and answered then
    assert wait_gone(starting, timeout=30) and not list(state_dir.glob("pool/*"))
