"""The server alone under load: many sessions, each with one raw-HTTP client running `1+1` statements.

    .venv/bin/python benchmarks/server_load.py [--clients 20] [--statements 50]

No kernels: the clients POST a statement and long-poll it, so the figures are the server's and its
drivers' own (benchmarks/run.py's load benchmark puts a kernel and jupyter_client in front of each). Prints
statements per second, the idle and loaded round trip, how many statements the server itself took longer
than half a second to run (from the statements' `started` and `completed`), and CPU per statement.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ServerHTTP, cpu_seconds, descendants, percentile, start_server, stop_server


class Client(ServerHTTP):
    def start_session(self) -> int:
        return self.post("/sessions", {"kind": "pyspark"})["id"]

    def wait_idle(self, session_id: int, timeout: float = 1800) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.get(f"/sessions/{session_id}", wait="10")["state"]) != "idle":
            if state not in ("not_started", "starting", "busy") or time.monotonic() > deadline:
                raise RuntimeError(f"session {session_id} is {state}, not idle")

    def one_plus_one(self, session_id: int) -> float:
        began = time.perf_counter()
        path = f"/sessions/{session_id}/statements"
        statement = self.post(path, {"code": "1+1"})
        while statement["state"] in ("waiting", "running"):
            statement = self.get(f"{path}/{statement['id']}", wait="10")
        if (statement.get("output") or {}).get("data", {}).get("text/plain") != "2":
            raise RuntimeError(f"1+1 failed: {str(statement.get('output'))[:300]}")
        return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="sessions, one client each")
    parser.add_argument("--statements", type=int, default=50, help="1+1 statements per client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dli-server-load-") as tmp:
        server, info = start_server(Path(tmp) / "state", ("--pool", "0"), own_session=True)
        try:
            client = Client(info["url"], info["token"])
            began = time.perf_counter()
            sessions = [client.start_session() for _ in range(args.clients)]
            for session_id in sessions:
                client.wait_idle(session_id)
            print(f"{args.clients} sessions started in {time.perf_counter() - began:.0f} s")
            for session_id in sessions:
                client.one_plus_one(session_id)  # each driver's first statement does one-off work
            time.sleep(5)
            idle = [client.one_plus_one(sessions[0]) for _ in range(20)]

            latencies: list[float] = []
            lock = threading.Lock()
            start = threading.Barrier(len(sessions))

            def run(session_id: int) -> None:
                own = Client(info["url"], info["token"])
                start.wait()
                mine = [own.one_plus_one(session_id) for _ in range(args.statements)]
                with lock:
                    latencies.extend(mine)

            drivers = descendants(server.pid)
            cpu_before = cpu_seconds([server.pid]), cpu_seconds(drivers)
            began = time.perf_counter()
            with ThreadPoolExecutor(len(sessions)) as pool:
                list(pool.map(run, sessions))
            wall = time.perf_counter() - began
            server_cpu = cpu_seconds([server.pid]) - cpu_before[0]
            drivers_cpu = cpu_seconds(drivers) - cpu_before[1]

            in_server = [
                (statement["completed"] - statement["started"]) / 1000
                for session_id in sessions
                for statement in client.get(f"/sessions/{session_id}/statements")["statements"]
            ]
            count = len(latencies)
            ms = [value * 1000 for value in latencies]
            print(f"{args.clients} clients x {args.statements} statements: {count / wall:.1f} statements/s")
            print(f"idle round trip, median (ms)       {statistics.median(idle) * 1000:8.1f}")
            median, p95 = statistics.median(ms), percentile(ms, 0.95)
            print(f"under load: median, p95, max (ms)  {median:8.1f} {p95:8.1f} {max(ms):8.1f}")
            slow = sum(seconds > 0.5 for seconds in in_server)
            print(f"statements run > 0.5 s in a driver {slow:8d}  (longest {max(in_server):.2f} s)")
            print(
                f"CPU per statement (ms): server {server_cpu * 1000 / count:.2f}, "
                f"drivers and their JVMs {drivers_cpu * 1000 / count:.2f}"
            )
        finally:
            stop_server(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
