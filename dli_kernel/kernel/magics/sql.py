"""``%%sql`` / ``%sql``: SQL on the notebook's session, shown as a table or kept as a pandas DataFrame."""

from __future__ import annotations

import argparse
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class

from dli_kernel.client import DataFrameResult, MissingDependency, StatementInfo
from dli_kernel.client.results import require_arrow
from dli_kernel.kernel.charts import (
    AGGREGATES,
    KINDS,
    ChartError,
    ChartOptions,
    chart_bundle,
    chart_hint,
    frame_rows,
    frame_types,
)
from dli_kernel.kernel.display import Result
from dli_kernel.kernel.magics import args
from dli_kernel.kernel.magics.runner import RunnerMagics
from dli_kernel.kernel.remote_session import RemoteSession
from dli_kernel.kernel.sql_text import split_sql
from dli_kernel.kernel.tables import Rows, frame_bundle, result_rows, table_bundle
from dli_kernel.protocol import DEFAULT_MAX_ROWS

TAKES_VALUE = {"-o", "-n", "--sample", "--chart", "-x", "-y", "--agg"}


@magics_class
class SqlMagics(RunnerMagics):
    """``%%sql`` and ``%sql``."""

    @line_cell_magic
    def sql(self, line: str, cell: str | None = None) -> Result | None:
        """Run SQL on the notebook's session and show the result as a table, or draw it as a chart.

        %%sql [-o VAR] [-n MAXROWS] [-q] [--sample FRACTION]   (or %sql [options] QUERY)
              [--chart bar|line|area|scatter|pie [-x COL] [-y COL ...] [--agg sum|avg|min|max|count]]
        -o VAR: also put the result in a local pandas DataFrame VAR; -n: row limit (default 1000, -1 all);
        -q: show nothing; --sample: a random fraction of the rows. Statements separated by ; run in order.
        --chart: draw the result's rows instead of the table; -x: the column along the x axis (or the
        slices of a pie; default the first non-numeric column); -y: a column to draw, repeat for several
        (default every other numeric column); --agg: combine the rows of one x value (count needs no -y).
        """
        options, query = sql_options(line, cell)
        queries = split_sql(query)
        if not queries:
            raise UsageError("%%sql: there is no query; write one after the options or in the cell")
        for earlier in queries[:-1]:
            self.runner.run(earlier, "sql", max_rows=0)
        last = queries[-1]
        if options.sample is not None:
            # A subquery keeps the user's SQL intact; the newline ends a trailing -- comment.
            last = f"SELECT * FROM (\n{last}\n) TABLESAMPLE ({options.sample * 100:g} PERCENT) AS dli_sample"
        if options.o:
            return self._to_frame(last, options)
        output = self.runner.run(last, "sql", max_rows=options.n)
        if options.q:
            return None
        rows = result_rows(output.get("data") or {})
        if rows is None:  # a statement that is not a query, e.g. a SET, answers with text
            if options.chart:
                raise UsageError(f"{options.prog} --chart: the statement returned no rows to draw")
            return self.runner.show(output)
        if options.chart:
            return draw(rows, options)
        hint = chart_hint(rows.names, rows.types, options.prog)
        return Result(table_bundle(rows.names, rows.rows, rows.total, hint=hint))

    def _to_frame(self, query: str, options: argparse.Namespace) -> Result | None:
        """``-o``: the rows come back as Arrow, straight into a pandas DataFrame."""
        try:
            require_arrow()
        except MissingDependency as err:
            raise UsageError(f"%%sql -o: {err}") from None
        result: DataFrameResult | None = None

        def fetch(session: RemoteSession, **follow: Any) -> tuple[StatementInfo, bool]:
            nonlocal result
            statement, cancelled, result = session.run_dataframe(query, max_rows=options.n, **follow)
            return statement, cancelled

        output = self.runner.follow(fetch)
        if result is None:  # a statement that is not a query, e.g. a SET, answers with text
            if options.chart:
                raise UsageError(f"{options.prog} --chart: the statement returned no rows to draw")
            return None if options.q else self.runner.show(output)
        self.ipython.user_ns[options.o] = result.frame
        if options.q:
            return None
        if options.chart:
            return draw(frame_rows(result.frame, result.total), options)
        names = [str(column) for column in result.frame.columns]
        hint = chart_hint(names, frame_types(result.frame)[0], options.prog)
        return Result(frame_bundle(result.frame, result.total, options.o, hint=hint))


def draw(rows: Rows, options: argparse.Namespace) -> Result:
    """The chart the options ask for, as the cell's value; a column that doesn't fit is one UsageError."""
    try:
        return chart_bundle(rows, chart_options(options))
    except ChartError as err:
        raise UsageError(f"{options.prog} --chart: {err}") from None


def chart_options(options: argparse.Namespace) -> ChartOptions:
    return ChartOptions(kind=options.chart, x=options.x, y=tuple(options.y), agg=options.agg)


def sql_options(line: str, cell: str | None) -> tuple[argparse.Namespace, str]:
    """The options of %%sql / %sql; in the line form the query follows them, quoted or not."""
    parser = args.Parser(prog="%%sql" if cell is not None else "%sql", add_help=False)
    parser.add_argument("-o", type=args.identifier, metavar="VAR")
    parser.add_argument("-n", type=args.max_rows, default=DEFAULT_MAX_ROWS, metavar="MAXROWS")
    parser.add_argument("-q", action="store_true")
    parser.add_argument("--sample", type=args.fraction, metavar="FRACTION")
    parser.add_argument("--chart", choices=KINDS)
    parser.add_argument("-x", metavar="COL")
    parser.add_argument("-y", action="append", default=[], metavar="COL")
    parser.add_argument("--agg", choices=AGGREGATES)
    parser.add_argument("-h", "--help", action="store_true")
    words, rest = leading_options(line, takes_value=TAKES_VALUE)
    parsed = parser.parse_args(args.split(words, parser.prog))
    parsed.prog = parser.prog
    if parsed.help:
        print(SqlMagics.sql.__doc__)
        raise UsageError(f"{parser.prog}: usage shown above")
    if parsed.chart is None and (parsed.x is not None or parsed.y or parsed.agg is not None):
        parser.error("-x, -y and --agg shape a chart: add --chart bar|line|area|scatter|pie")
    if parsed.chart is not None:
        if parsed.q:
            parser.error("-q shows nothing and --chart draws the rows: use one of them")
        try:
            chart_options(parsed).check()
        except ChartError as err:
            parser.error(str(err))
    if cell is not None:
        if rest.strip():
            unexpected = rest.strip()
            raise UsageError(
                f"%%sql: unexpected {unexpected!r} after the options (the query goes in the cell)"
            )
        return parsed, cell
    return parsed, rest


def leading_options(line: str, takes_value: set[str]) -> tuple[str, str]:
    """Split ``-o df -n 10 SELECT ...`` into the options and the raw query (its quotes untouched)."""
    position, expect_value = 0, False
    while True:
        stripped = line[position:]
        word = stripped.lstrip()
        if not word:
            return line, ""
        start = len(line) - len(word)
        end = start + len(word.split(None, 1)[0])
        token = line[start:end]
        if expect_value:
            expect_value = False
        elif token.startswith("-") and not token[1:2].isdigit():
            expect_value = token in takes_value
        else:
            return line[:start], line[start:]
        position = end
