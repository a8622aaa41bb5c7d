"""The result-transfer table: int, double, string and timestamp columns, defined in SQL over ``range``.

Every side (our kernel, sparkmagic, the local ``toPandas()`` floor) creates the same temporary views, so
Spark does the same work for each.
"""

from __future__ import annotations

from collections.abc import Sequence

# pyspark 4 warns on every DataFrame.toJSON(), which sparkmagic's %%sql calls; a warning that reaches the
# statement's text breaks sparkmagic's JSON-lines parsing. A sparkmagic user on pyspark 4 needs this line.
QUIET_TOJSON = 'warnings.filterwarnings("ignore", message="The return type of DataFrame.toJSON")'


def view_name(rows: int) -> str:
    return f"bench_rows_{int(rows)}"


def view_sql(rows: int) -> str:
    return (
        f"CREATE OR REPLACE TEMPORARY VIEW {view_name(rows)} AS SELECT id AS i, id / 3 AS d, "
        f"concat('row-', id) AS s, timestamp_seconds(1700000000 + id) AS t FROM range({int(rows)})"
    )


def query(rows: int) -> str:
    return f"SELECT * FROM {view_name(rows)}"


def setup_cell(sizes: Sequence[int]) -> str:
    """A pyspark cell that creates the views in a remote session."""
    statements = [view_sql(rows) for rows in sizes]
    return f"import warnings\n{QUIET_TOJSON}\nfor statement in {statements!r}:\n    spark.sql(statement)\n"
