"""A `1+1` cell through the PySpark kernel (execute_request to execute_reply) beside the raw HTTP round trip.

    .venv/bin/python benchmarks/kernel_round_trip.py [--cells 50] [--json]

Starts its own embedded server and a dli_pyspark kernel (kernelspec installed into a temporary prefix)
pointed at it, alternates kernel cells and raw HTTP statements on the same session, and prints medians,
p95s and what the kernel adds.
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
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from dli_kernel.install import install


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dli-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        server, info = start_server(state_dir)
        manager = None
        try:
            install(prefix=tmp)
            env = dict(
                os.environ,
                DLI_KERNEL_URL=info["url"],
                DLI_KERNEL_DIALECT="local",
                DLI_KERNEL_TOKEN=info["token"],
                JUPYTER_CONFIG_DIR=f"{tmp}/config",
                JUPYTER_RUNTIME_DIR=f"{tmp}/runtime",
            )
            specs = KernelSpecManager(kernel_dirs=[f"{tmp}/share/jupyter/kernels"])
            manager = KernelManager(kernel_name="dli_pyspark", kernel_spec_manager=specs)
            manager.start_kernel(env=env)
            client = manager.client()
            client.start_channels()
            client.wait_for_ready(timeout=60)
            client.execute_interactive("1", timeout=300, output_hook=lambda msg: None)  # session ready

            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {info['token']}"
            session_id = http.get(f"{info['url']}/sessions", timeout=10).json()["sessions"][0]["id"]

            kernel_times, http_times = [], []
            for _ in range(args.cells + 1):
                began = time.perf_counter()
                reply = client.execute_interactive("1+1", timeout=60, output_hook=lambda msg: None)
                kernel_times.append(time.perf_counter() - began)
                assert reply["content"]["status"] == "ok", reply

                began = time.perf_counter()
                url = f"{info['url']}/sessions/{session_id}/statements"
                statement = http.post(url, json={"code": "1+1"}, timeout=10).json()
                while statement["state"] != "available":
                    statement = http.get(f"{url}/{statement['id']}", timeout=10).json()
                http_times.append(time.perf_counter() - began)
            kernel_times, http_times = kernel_times[1:], http_times[1:]
            client.stop_channels()
        finally:
            if manager is not None:
                manager.shutdown_kernel(now=False)
            server.terminate()
            server.wait(timeout=60)

    figures = {
        "kernel_cell_ms": {
            "median": statistics.median(kernel_times) * 1000,
            "p95": percentile(kernel_times, 0.95) * 1000,
        },
        "raw_http_ms": {
            "median": statistics.median(http_times) * 1000,
            "p95": percentile(http_times, 0.95) * 1000,
        },
        "n": len(kernel_times),
    }
    figures["kernel_adds_ms"] = figures["kernel_cell_ms"]["median"] - figures["raw_http_ms"]["median"]
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{'1+1, n=' + str(figures['n']):<32}{'median ms':>10}{'p95 ms':>10}")
    for label, key in (
        ("kernel cell (execute -> reply)", "kernel_cell_ms"),
        ("raw HTTP statement", "raw_http_ms"),
    ):
        print(f"{label:<32}{figures[key]['median']:>10.1f}{figures[key]['p95']:>10.1f}")
    print(f"{'what the kernel adds (median)':<32}{figures['kernel_adds_ms']:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
