"""A big result through a real kernel: ``%%sql --to-parquet`` and ``%%sql -o`` of the same rows, with
their time, the kernel's peak memory, the frame's and the file's size.

    .venv/bin/python benchmarks/big_results.py [--rows 10000000] [--json]

Starts its own embedded server and a dli_pyspark kernel pointed at it (kernelspec installed into a
temporary prefix), makes the transfer table of ``table.py`` with ``--rows`` rows, then runs
``--to-parquet`` first (its growth is small, so it does not inflate the ``-o`` figures), then ``-o``.
The kernel's peak is its VmHWM, reset before each cell; growth is the peak less the RSS before the cell.
A run asks for about 3x the frame (kernel, driver, file); with less memory free, the rows are cut to
10^6 and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import peak_rss_mb, reset_peak_rss, rss_mb, start_server, stop_server
from kernels import Kernel
from table import query, view_sql

from dli_kernel.client.results import available_memory
from dli_kernel.install import install

MB = 2**20
FRAME_BYTES_PER_ROW = 92  # the table's frame: 8 + 8 + 8 + (8 + 49 + ~19) bytes a row (876 MB at 10^7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows, note = args.rows, ""
    free = available_memory()
    if free is not None and free < 3 * rows * FRAME_BYTES_PER_ROW:
        rows = min(rows, 1_000_000)
        note = f"only {free / MB:,.0f} MB free: {rows:,} rows instead of {args.rows:,}"

    with tempfile.TemporaryDirectory(prefix="dli-bench-big-") as tmp:
        figures = run(Path(tmp), rows)
    figures["note"] = note
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures)
    return 0


def run(tmp: Path, rows: int) -> dict:
    server, info = start_server(tmp / "state")
    kernel = None
    try:
        install(prefix=str(tmp))
        env = dict(
            os.environ,
            DLI_KERNEL_URL=info["url"],
            DLI_KERNEL_DIALECT="local",
            DLI_KERNEL_TOKEN=info["token"],
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        )
        kernel = Kernel("ours", "dli_pyspark", tmp / "share/jupyter/kernels", env)
        kernel.start()
        checked(kernel, f"%%sql -q\n{view_sql(rows)}", 900)  # the session, and the view
        checked(kernel, "%%sql -o warm -q\nSELECT 1 AS x", 300)  # pandas and pyarrow imported in the kernel
        # The driver's first big Arrow collection runs cold (JIT): warmed in the session alone (nothing comes
        # to the kernel, whose memory is measured), so that neither cell measured pays for it.
        checked(kernel, f"warm = spark.sql({query(rows)!r}).limit(1000000).toArrow()\ndel warm", 900)
        target = tmp / "big.parquet"
        parquet = measured(kernel, f"%%sql --to-parquet {target} -q\n{query(rows)}")
        parquet["file_mb"] = target.stat().st_size / MB
        frame = measured(kernel, f"%%sql -o df -n -1 -q\n{query(rows)}")
        shown = checked(kernel, "%%local\nprint(len(df), int(df.memory_usage(deep=True).sum()))", 300)
        got_rows, frame_bytes = map(int, shown.split()[-2:])
        if got_rows != rows:
            raise RuntimeError(f"-o brought {got_rows} rows, not {rows}")
        frame["frame_mb"] = frame_bytes / MB
        return {"rows": rows, "to_parquet": parquet, "o": frame}
    finally:
        if kernel is not None:
            kernel.shutdown()
        stop_server(server)


def checked(kernel: Kernel, code: str, timeout: float) -> str:
    cell = kernel.run(code, timeout=timeout)
    if not cell.ok:
        raise RuntimeError(f"{code.splitlines()[0]}: {cell.error or cell.status}")
    return cell.text


def measured(kernel: Kernel, code: str) -> dict:
    """One cell's time, and the kernel's memory before it and at its peak."""
    before = rss_mb(kernel.pid)
    if not reset_peak_rss(kernel.pid):
        raise RuntimeError("the kernel's peak memory cannot be reset here (/proc/PID/clear_refs)")
    began = time.perf_counter()
    checked(kernel, code, 3600)
    seconds = time.perf_counter() - began
    peak = peak_rss_mb(kernel.pid)
    return {"seconds": seconds, "rss_before_mb": before, "peak_mb": peak, "growth_mb": peak - before}


def report(figures: dict) -> None:
    rows, parquet, frame = figures["rows"], figures["to_parquet"], figures["o"]
    print(f"big results through a real kernel, {rows:,} rows (int, double, string, timestamp)")
    print("  (a cell's time includes the driver's query and its Arrow file, then the download)")
    if figures["note"]:
        print(f"  note: {figures['note']}")
    for label, cell, extra in (
        ("-o", frame, f"frame {frame['frame_mb']:.0f} MB"),
        ("--to-parquet", parquet, f"file {parquet['file_mb']:.0f} MB"),
    ):
        print(
            f"  {label:<13} {cell['seconds']:6.1f} s  kernel peak {cell['peak_mb']:6.0f} MB "
            f"(growth {cell['growth_mb']:.0f} MB from {cell['rss_before_mb']:.0f} MB)  {extra}"
        )
    print(
        f"  -o: peak/frame {frame['peak_mb'] / frame['frame_mb']:.2f}, "
        f"growth/frame {frame['growth_mb'] / frame['frame_mb']:.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
