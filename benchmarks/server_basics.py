"""Embedded server basics: cold session start, warm `1+1` round trip over HTTP, peak memory.

    .venv/bin/python benchmarks/server_basics.py [--starts 3] [--round-trips 50] [--json]

Starts its own server on a free loopback port with a temporary state dir, and prints one table.
Peak memory is the kernel's high-water mark (VmHWM) of each process; a driver is its ipykernel process
plus the Spark JVM it started. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests
from common import percentile, start_server


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="cold session starts to time")
    parser.add_argument("--round-trips", type=int, default=50, help="warm 1+1 statements to time")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dli-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        server, info = start_server(state_dir)
        try:
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {info['token']}"
            url = info["url"]

            starts, driver_peaks = [], []
            session_id = None
            for _ in range(args.starts):
                began = time.perf_counter()
                session_id = http.post(f"{url}/sessions", json={"kind": "pyspark"}, timeout=10).json()["id"]
                while http.get(f"{url}/sessions/{session_id}/state", timeout=10).json()["state"] != "idle":
                    time.sleep(0.02)
                starts.append(time.perf_counter() - began)
                if _ < args.starts - 1:
                    http.delete(f"{url}/sessions/{session_id}", timeout=60)

            round_trips = []
            for _ in range(args.round_trips + 1):  # the first one warms the path up and is dropped
                began = time.perf_counter()
                statement = http.post(
                    f"{url}/sessions/{session_id}/statements", json={"code": "1+1"}, timeout=10
                ).json()
                while statement["state"] != "available":
                    statement = http.get(
                        f"{url}/sessions/{session_id}/statements/{statement['id']}", timeout=10
                    ).json()
                assert statement["output"]["data"]["text/plain"] == "2", statement
                round_trips.append(time.perf_counter() - began)
            round_trips = round_trips[1:]

            driver_pid = int((state_dir / "sessions" / str(session_id) / "driver.pid").read_text())
            driver_peaks = {pid: peak_rss_mb(pid) for pid in group_pids(driver_pid)}
            server_peak = peak_rss_mb(server.pid)
            http.delete(f"{url}/sessions/{session_id}", timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=60)

    figures = {
        "cold_session_start_s": {"median": statistics.median(starts), "max": max(starts), "n": len(starts)},
        "warm_round_trip_ms": {
            "median": statistics.median(round_trips) * 1000,
            "p95": percentile(round_trips, 0.95) * 1000,
            "n": len(round_trips),
        },
        "server_peak_rss_mb": server_peak,
        "driver_peak_rss_mb": sum(driver_peaks.values()),
        "driver_processes": len(driver_peaks),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{'figure':<34}{'value':>12}")
    print(f"{'cold session start, median (s)':<34}{figures['cold_session_start_s']['median']:>12.2f}")
    print(f"{'cold session start, max (s)':<34}{figures['cold_session_start_s']['max']:>12.2f}")
    print(f"{'warm 1+1 round trip, median (ms)':<34}{figures['warm_round_trip_ms']['median']:>12.1f}")
    print(f"{'warm 1+1 round trip, p95 (ms)':<34}{figures['warm_round_trip_ms']['p95']:>12.1f}")
    print(f"{'server peak RSS (MB)':<34}{server_peak:>12.0f}")
    print(f"{'one driver peak RSS (MB)':<34}{figures['driver_peak_rss_mb']:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
