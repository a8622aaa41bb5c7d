"""The result-transfer floor: ``toPandas()`` with Arrow inside a local SparkSession, no client or server.

    python benchmarks/topandas_floor.py --rows 100000 1000000 --reps 3

Runs in its own process (its JVM goes when it ends) and prints one JSON line: per row count, the seconds
of each ``toPandas()`` and the DataFrame's ``memory_usage(deep=True)`` in bytes. The views and the query are
the kernels' (table.py), so Spark does the same work.
"""

from __future__ import annotations

import argparse
import json
import time

from pyspark.sql import SparkSession
from table import query, view_sql


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", required=True)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    spark = (
        SparkSession.builder.master("local[*]")
        .appName("dli-bench-topandas-floor")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        for rows in args.rows:
            spark.sql(view_sql(rows))
        figures = {}
        for rows in args.rows:
            spark.sql(query(rows)).limit(10).toPandas()  # JIT and Arrow set-up, as a kernel's first cell has
            seconds, frame = [], None
            for _ in range(args.reps):
                frame = None
                began = time.perf_counter()
                frame = spark.sql(query(rows)).toPandas()
                seconds.append(time.perf_counter() - began)
            assert len(frame) == rows, len(frame)
            figures[str(rows)] = {
                "seconds": seconds,
                "df_bytes": int(frame.memory_usage(deep=True).sum()),
                "dtypes": {name: str(dtype) for name, dtype in frame.dtypes.items()},
            }
    finally:
        spark.stop()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
