"""Embedded server basics: session start from the warm pool and cold, warm `1+1` round trip over HTTP
(polled, and long-polled), a large SQL result into pandas as Arrow and as Livy JSON, peak memory.

    .venv/bin/python benchmarks/server_basics.py [--starts 3] [--round-trips 50] [--rows 1000000]
                                                 [--result-runs 2] [--json]

Starts its own server (warm pool of one, the default) on a free loopback port with a temporary state dir,
and prints one table. Cold starts use a session spec the pool cannot serve, timed while the pool is full
and quiet. Peak memory is the kernel's high-water mark (VmHWM) of each process; a driver is its ipykernel
process plus the Spark JVM it started. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from common import ServerHTTP, group_pids, peak_rss_mb, percentile, start_server

from dli_kernel.client import SessionInfo, SessionsClient
from dli_kernel.client.auth import BearerToken
from dli_kernel.kernel.remote_session import RemoteSession
from dli_kernel.spec import SessionSpec

RESULT_QUERY = (
    "SELECT id, id * 1.5D AS d, CONCAT('row-', CAST(id AS STRING)) AS s, "
    "TIMESTAMP_SECONDS(1700000000 + id) AS ts FROM RANGE({rows})"
)


class Bench(ServerHTTP):
    def wait_pool(self) -> float:
        began = time.perf_counter()
        while self.get("/pool")["ready"] < 1:
            time.sleep(0.05)
        return time.perf_counter() - began

    def start_session(self, body: dict) -> tuple[int, float]:
        began = time.perf_counter()
        session = self.post("/sessions", body)
        state = session["state"]
        while state != "idle":
            state = self.get(f"/sessions/{session['id']}/state", wait=30)["state"]
        return session["id"], time.perf_counter() - began

    def delete(self, session_id: int) -> None:
        self.http.delete(f"{self.url}/sessions/{session_id}", timeout=120)


def round_trip(bench: Bench, session_id: int, make_poll: Callable[[], Callable[[str], dict]]) -> float:
    """One 1+1 statement, waited for with a fresh ``make_poll()``."""
    poll = make_poll()
    began = time.perf_counter()
    statement = bench.post(f"/sessions/{session_id}/statements", {"code": "1+1"})
    path = f"/sessions/{session_id}/statements/{statement['id']}"
    while statement["state"] != "available":
        statement = poll(path)
    assert statement["output"]["data"]["text/plain"] == "2", statement
    return time.perf_counter() - began


def round_trips(bench: Bench, session_id: int, client: SessionsClient, count: int) -> dict[str, list[float]]:
    """The ways to wait for a statement, alternated so that the machine's noise hits them alike."""

    def growing() -> Callable[[str], dict]:
        intervals = iter([min(0.01 * 1.5**n, 0.25) for n in range(20)] + [0.25] * 10_000)

        def poll(path: str) -> dict:
            time.sleep(next(intervals))
            return bench.get(path)

        return poll

    remote = RemoteSession(client, SessionSpec(kind="pyspark"))
    remote.info = SessionInfo(id=str(session_id), state="idle")

    def through_remote_session() -> float:
        began = time.perf_counter()
        statement, _ = remote.run("1+1", on_log=lambda lines: None)
        assert statement.output["data"]["text/plain"] == "2"
        return time.perf_counter() - began

    ways: dict[str, Callable[[], float]] = {
        "busy poll (no sleep)": lambda: round_trip(bench, session_id, lambda: bench.get),
        "growing poll (10 ms x1.5)": lambda: round_trip(bench, session_id, growing),
        "long-poll (?wait=30)": lambda: round_trip(
            bench, session_id, lambda: lambda p: bench.get(p, wait=30)
        ),
        "RemoteSession.run (long-poll, logs)": through_remote_session,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for way in ways.values():
        way()  # warm-up, dropped
    for _ in range(count):
        for name, way in ways.items():
            times[name].append(way())
    return times


def json_result(bench: Bench, session_id: int, query: str) -> tuple[pd.DataFrame, int]:
    """Livy's way: the rows as JSON in the statement's output, then a DataFrame from them."""
    statement = bench.post(
        f"/sessions/{session_id}/statements", {"code": query, "kind": "sql", "maxRows": -1}
    )
    path = f"{bench.url}/sessions/{session_id}/statements/{statement['id']}"
    while True:
        response = bench.http.get(path, params={"wait": 30}, timeout=300)
        body = response.json()
        if body["state"] in ("available", "error"):
            break
    result = body["output"]["data"]["application/json"]
    frame = pd.DataFrame(result["data"], columns=[f["name"] for f in result["schema"]["fields"]])
    frame["ts"] = pd.to_datetime(frame["ts"])
    return frame, len(response.content)


def results(
    bench: Bench, session_id: int, uuid: str, fast: SessionsClient, plain: SessionsClient, args
) -> dict:
    query = RESULT_QUERY.format(rows=args.rows)
    figures: dict[str, dict] = {}
    runs: dict[str, Callable[[], tuple[pd.DataFrame, int]]] = {
        "Arrow (GET .../result)": lambda: _arrow(fast, uuid, query),
        "Arrow in text (plain Livy fallback)": lambda: _arrow(plain, str(session_id), query),
        "Livy JSON rows": lambda: json_result(bench, session_id, query),
    }
    _arrow(fast, uuid, query)  # the session's first big query warms the JVM up: not timed
    times: dict[str, list[float]] = {name: [] for name in runs}
    sizes: dict[str, int] = {}
    for _ in range(args.result_runs):
        for name, run in runs.items():  # alternated, so that the machine's noise hits them alike
            began = time.perf_counter()
            frame, sizes[name] = run()
            times[name].append(time.perf_counter() - began)
            assert len(frame) == args.rows, (name, len(frame))
    for name, values in times.items():
        figures[name] = {"median_s": statistics.median(values), "bytes": sizes[name], "n": len(values)}
    return figures


def _arrow(client: SessionsClient, session_id: str, query: str) -> tuple[pd.DataFrame, int]:
    result = client.fetch_dataframe(session_id, query, max_rows=-1)
    return result.frame, result.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="session starts to time, pooled and cold")
    parser.add_argument("--round-trips", type=int, default=50, help="warm 1+1 statements per way of waiting")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the SQL result")
    parser.add_argument("--result-runs", type=int, default=2, help="times each result transfer is timed")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dli-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        server, info = start_server(state_dir)
        try:
            bench = Bench(info["url"], info["token"])
            pool_first_ready = bench.wait_pool()
            pooled, cold = [], []
            for _ in range(args.starts):
                bench.wait_pool()
                time.sleep(1)  # the refill's JVM settles
                session_id, took = bench.start_session({"kind": "pyspark"})
                pooled.append(took)
                bench.delete(session_id)
            for _ in range(args.starts):
                bench.wait_pool()  # full and quiet: nothing else starts while we time
                # Any conf of its own keeps a session off the pool: a cold start, as without one.
                session_id, took = bench.start_session(
                    {"kind": "pyspark", "conf": {"spark.dli.bench": "cold"}}
                )
                cold.append(took)
                bench.delete(session_id)
            bench.wait_pool()
            session_id, _ = bench.start_session({"kind": "pyspark"})
            uuid = bench.get(f"/sessions/{session_id}")["uuid"]
            auth = BearerToken(info["token"])
            with (
                SessionsClient(info["url"], "livy", auth=auth) as fast,
                SessionsClient(info["url"], "local", auth=auth) as fast_local,
                SessionsClient(info["url"], "livy", auth=auth, extensions=()) as plain,
            ):
                bench.wait_pool()
                trips = round_trips(bench, session_id, fast, args.round_trips)
                transfers = results(bench, session_id, uuid, fast_local, plain, args)

            driver_pid = int((state_dir / "sessions" / str(session_id) / "driver.pid").read_text())
            driver_peaks = {pid: peak_rss_mb(pid) for pid in group_pids(driver_pid)}
            server_peak = peak_rss_mb(server.pid)
            bench.delete(session_id)
        finally:
            server.terminate()
            server.wait(timeout=60)

    figures = {
        "pool_first_ready_s": pool_first_ready,
        "pooled_session_start_s": {"median": statistics.median(pooled), "max": max(pooled), "n": len(pooled)},
        "cold_session_start_s": {"median": statistics.median(cold), "max": max(cold), "n": len(cold)},
        "warm_round_trip_ms": {
            name: {
                "median": statistics.median(values) * 1000,
                "p95": percentile(values, 0.95) * 1000,
                "n": len(values),
            }
            for name, values in trips.items()
        },
        f"sql_result_{args.rows}_rows": transfers,
        "server_peak_rss_mb": server_peak,
        "driver_peak_rss_mb": sum(driver_peaks.values()),
        "driver_processes": len(driver_peaks),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{'figure':<52}{'value':>12}")
    print(f"{'pool first ready after server start (s)':<52}{pool_first_ready:>12.2f}")
    for label, key in (("session start from the pool", "pooled"), ("cold session start", "cold")):
        values = figures[f"{key}_session_start_s"]
        print(f"{label + ', median (s)':<52}{values['median']:>12.3f}")
        print(f"{label + ', max (s)':<52}{values['max']:>12.3f}")
    for name, values in figures["warm_round_trip_ms"].items():
        print(f"{'1+1, ' + name + ', median (ms)':<52}{values['median']:>12.1f}")
        print(f"{'1+1, ' + name + ', p95 (ms)':<52}{values['p95']:>12.1f}")
    for name, values in transfers.items():
        print(f"{f'{args.rows} rows, {name}, median (s)':<52}{values['median_s']:>12.2f}")
        print(f"{f'{args.rows} rows, {name}, size (MB)':<52}{values['bytes'] / 1e6:>12.1f}")
    print(f"{'server peak RSS (MB)':<52}{server_peak:>12.0f}")
    print(f"{'one driver peak RSS (MB)':<52}{figures['driver_peak_rss_mb']:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
