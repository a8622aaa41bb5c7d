"""``%%sql`` / ``%sql``: SQL on the notebook's session, shown as a table or kept as a pandas DataFrame."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class

from dli_kernel.client import ClientError, DataFrameResult, MissingDependency, StatementInfo
from dli_kernel.client.results import ResultTooLarge, available_memory, parquet_target, require_arrow
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
from dli_kernel.kernel.display import Result, StatusLine, bytes_bar, megabytes
from dli_kernel.kernel.magics import args
from dli_kernel.kernel.magics.runner import RunnerMagics
from dli_kernel.kernel.remote_session import RemoteSession
from dli_kernel.kernel.sql_text import split_sql
from dli_kernel.kernel.tables import RAISE_LIMIT, Rows, frame_bundle, result_rows, table_bundle
from dli_kernel.protocol import DEFAULT_MAX_ROWS

TAKES_VALUE = {"-o", "-n", "--sample", "--chart", "-x", "-y", "--agg", "--to-parquet"}
BAR_AFTER = 0.5  # seconds a download runs before its bar appears: small results stay quiet
TOO_LARGE_ADVICE = "show fewer rows with -n N, or write them to a file with --to-parquet PATH"


@magics_class
class SqlMagics(RunnerMagics):
    """``%%sql`` and ``%sql``."""

    # Bytes the kernel has free for a result's DataFrame; an attribute so that tests can pretend less.
    available_memory: Callable[[], int | None] = staticmethod(available_memory)

    @line_cell_magic
    def sql(self, line: str, cell: str | None = None) -> Result | None:
        """Run SQL on the notebook's session and show the result as a table, or draw it as a chart.

        %%sql [-o VAR] [-n MAXROWS] [--count] [-q] [--sample FRACTION] [--to-parquet PATH]
              [--chart bar|line|area|scatter|pie [-x COL] [-y COL ...] [--agg sum|avg|min|max|count]]
              (or %sql [options] QUERY)
        -o VAR: also put the result in a local pandas DataFrame VAR (refused, before any transfer, if it
        would not fit in the kernel's memory); -n: row limit (default 1000, -1 all); -q: show nothing;
        --sample: a random fraction of the rows. Statements separated by ; run in order.
        The rows past the limit are not counted (that runs the query again): the table says more exist.
        --count: count them too, with a second query, and say the total.
        --to-parquet PATH: write the rows (all of them unless -n says) to a local Parquet file as they
        arrive, never holding them whole; with -o VAR, VAR is a lazy pyarrow.dataset.Dataset over it.
        --chart: draw the result's rows instead of the table; -x: the column along the x axis (or the
        slices of a pie; default the first non-numeric column); -y: a column to draw, repeat for several
        (default every other numeric column); --agg: combine the rows of one x value (count needs no -y).
        """
        options, query = sql_options(line, cell)
        queries = split_sql(query)
        if not queries:
            raise UsageError("%%sql: there is no query; write one after the options or in the cell")
        if options.to_parquet is not None:
            try:  # before anything runs: a file that cannot be written is not worth a query
                options.to_parquet = str(parquet_target(options.to_parquet))
            except ClientError as err:
                raise UsageError(f"{options.prog} --to-parquet: {err}") from None
        for earlier in queries[:-1]:
            self.runner.run(earlier, "sql", max_rows=0)
        last = queries[-1]
        if options.sample is not None:
            # A subquery keeps the user's SQL intact; the newline ends a trailing -- comment.
            last = f"SELECT * FROM (\n{last}\n) TABLESAMPLE ({options.sample * 100:g} PERCENT) AS dli_sample"
        if options.o or options.to_parquet:
            return self._to_frame(last, options)
        output = self.runner.run(last, "sql", max_rows=options.n)
        if options.q:
            return None
        rows = result_rows(output.get("data") or {})
        if rows is None:  # a statement that is not a query, e.g. a SET, answers with text
            if options.chart:
                raise UsageError(f"{options.prog} --chart: the statement returned no rows to draw")
            return self.runner.show(output)
        if options.count and not rows.total_known:
            rows = dataclasses.replace(rows, total=self._count(last, options.prog), total_known=True)
        if options.chart:
            return draw(rows, options)
        hint = chart_hint(rows.names, rows.types, options.prog)
        more = RAISE_LIMIT if rows.total_known else f"{options.prog} --count for the total, -n N for more"
        known = rows.total_known
        return Result(
            table_bundle(rows.names, rows.rows, rows.total, total_known=known, more=more, hint=hint)
        )

    def _count(self, query: str, prog: str) -> int:
        """``--count``: the rows of ``query``, by a query of their own (it runs ``query`` again)."""
        # The newline ends a trailing -- comment of the user's query.
        output = self.runner.run(f"SELECT count(*) FROM (\n{query}\n) AS dli_count", "sql", max_rows=1)
        rows = result_rows(output.get("data") or {})
        value = rows.rows[0][0] if rows is not None and rows.rows and rows.rows[0] else None
        try:
            return int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UsageError(f"{prog} --count: the count query answered {value!r}, not a number") from None

    def _to_frame(self, query: str, options: argparse.Namespace) -> Result | None:
        """``-o``: the rows come back as Arrow, straight into a pandas DataFrame; ``--to-parquet``: into a
        Parquet file, batch by batch."""
        try:
            require_arrow()
        except MissingDependency as err:
            raise UsageError(f"{options.prog} {'-o' if options.o else '--to-parquet'}: {err}") from None
        result: DataFrameResult | None = None
        line = StatusLine()  # the statement's progress, then the download's, in one updating line
        download = Download(line)

        def fetch(session: RemoteSession, **follow: Any) -> tuple[StatementInfo, bool]:
            nonlocal result
            try:
                statement, cancelled, result = session.run_dataframe(
                    query,
                    max_rows=options.n,
                    on_bytes=download.progress,
                    to_parquet=options.to_parquet,
                    available_memory=self.available_memory,
                    **follow,
                )
            except ResultTooLarge as err:  # the same refusal, with the options that avoid it
                raise ResultTooLarge(
                    err.rows, err.arrow_bytes, err.frame_bytes, err.available, TOO_LARGE_ADVICE
                ) from None
            return statement, cancelled

        output = self.runner.follow(fetch, line=line)
        if result is None:  # a statement that is not a query, e.g. a SET, answers with text
            if options.chart:
                raise UsageError(f"{options.prog} --chart: the statement returned no rows to draw")
            return None if options.q else self.runner.show(output)
        # A file's rows are counted from its footer: nothing is read.
        download.finish(result.frame.count_rows() if options.to_parquet else len(result.frame))
        if options.count and not result.total_known:
            result = dataclasses.replace(result, total=self._count(query, options.prog), total_known=True)
        if options.to_parquet:
            return self._written(result, options)
        self.ipython.user_ns[options.o] = result.frame
        if options.q:
            return None
        if options.chart:
            rows = dataclasses.replace(frame_rows(result.frame, result.total), total_known=result.total_known)
            return draw(rows, options)
        names = [str(column) for column in result.frame.columns]
        hint = chart_hint(names, frame_types(result.frame)[0], options.prog)
        more = f"{options.prog} --count for the total, -n -1 for all"
        bundle = frame_bundle(
            result.frame, result.total, options.o, hint=hint, total_known=result.total_known, more=more
        )
        return Result(bundle)

    def _written(self, result: DataFrameResult, options: argparse.Namespace) -> Result | None:
        """``--to-parquet``: where the rows went, and (with ``-o``) the lazy dataset over them."""
        path, dataset = options.to_parquet, result.frame
        rows = dataset.count_rows()  # from the file's footer: nothing is read
        if options.o:
            self.ipython.user_ns[options.o] = dataset
        if options.q:
            return None
        written = f"{rows:,} rows, {megabytes(os.path.getsize(path))} written to {path}"
        if not result.total_known:
            written += f" (the first; more rows exist: -n -1 writes all, {options.prog} --count counts them)"
        elif result.truncated:
            written += f" (the first of {result.total:,}: -n -1 writes all)"
        if options.o:
            how = (
                f"{options.o} is a pyarrow.dataset.Dataset over it, read only when asked: "
                f"{options.o}.head(10).to_pandas(), {options.o}.to_table(columns=[...]).to_pandas()"
            )
        else:
            how = f"read it lazily with pyarrow.dataset.dataset({path!r}) or pandas.read_parquet({path!r})"
        return Result({"text/plain": f"{written}.\n{how}"})


class Download:
    """A result's download shown in the statement's status line: a bar by bytes once it lasts BAR_AFTER
    seconds, then the statement's time with the rows, size and time of the download. Fed by the client's
    progress calls (a few a second)."""

    def __init__(self, line: StatusLine) -> None:
        self.line = line
        self.began: float | None = None
        self.done = 0
        self.shown = False

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.began is None:
            self.began = now
        self.done = done
        if now - self.began >= BAR_AFTER:
            self.shown = True
            self.line.show(bytes_bar(done, total, now - self.began))

    def finish(self, rows: int) -> None:
        """Only where the bar was shown: a quick download leaves the statement's word (or nothing)."""
        if self.shown and self.began is not None:
            seconds = time.monotonic() - self.began
            self.line.finish(
                f"done in {self.line.elapsed:.1f} s; {rows:,} rows, {megabytes(self.done)} in {seconds:.1f} s"
            )


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
    parser.add_argument("-n", type=args.max_rows, metavar="MAXROWS")
    parser.add_argument("-q", action="store_true")
    parser.add_argument("--count", action="store_true")
    parser.add_argument("--sample", type=args.fraction, metavar="FRACTION")
    parser.add_argument("--chart", choices=KINDS)
    parser.add_argument("-x", metavar="COL")
    parser.add_argument("-y", action="append", default=[], metavar="COL")
    parser.add_argument("--agg", choices=AGGREGATES)
    parser.add_argument("--to-parquet", metavar="PATH")
    parser.add_argument("-h", "--help", action="store_true")
    words, rest = leading_options(line, takes_value=TAKES_VALUE)
    parsed = parser.parse_args(args.split(words, parser.prog))
    parsed.prog = parser.prog
    if parsed.help:
        print(SqlMagics.sql.__doc__)
        raise UsageError(f"{parser.prog}: usage shown above")
    if parsed.n is None:  # a file is for results too big to show: it takes all the rows unless told
        parsed.n = -1 if parsed.to_parquet is not None else DEFAULT_MAX_ROWS
    if parsed.to_parquet is not None and parsed.chart is not None:
        parser.error("--to-parquet writes the rows to a file and --chart draws them: use one of them")
    if parsed.q and parsed.count:
        parser.error("-q shows nothing and --count says how many rows there are: use one of them")
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
