"""The magics: ``%session``, ``%%sql``, ``%%pyspark``/``%%spark``, ``%%local`` and ``%send_to_spark``.

One ``Magics`` class serves both the wrapper kernels (whose plain cells become ``%%pyspark``, ``%%sql``
or ``%%spark`` cells) and any IPython through ``%load_ext dli_kernel``. Mistakes in a magic's own input
raise ``UsageError``: one line, no traceback. Errors of the remote code come back as exceptions named as
the remote named them, shown with the remote traceback only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import html
import json
import keyword
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.display import DisplayHandle, publish_display_data

from dli_kernel.client import (
    ClientError,
    DataFrameResult,
    MissingDependency,
    NotFound,
    SessionInfo,
    StatementInfo,
)
from dli_kernel.client.results import require_arrow
from dli_kernel.kernel.display import frame_bundle, render, split_sql, table_bundle
from dli_kernel.kernel.holder import Notebook
from dli_kernel.kernel.remote_session import Progress, RemoteSession, SessionFailed
from dli_kernel.protocol import DEFAULT_MAX_ROWS
from dli_kernel.spec import KINDS, SessionSpec, SpecError, format_memory, parse_memory

BAR_AFTER = 1.0  # seconds a statement runs before its progress bar appears: fast cells stay quiet
LOG_FOLLOW_EVERY = 1.0


# -- errors -----------------------------------------------------------------------------------------


class RemoteError(Exception):
    """An error to show as-is: the remote one, or a session that could not be used."""

    def __init__(self, evalue: str, traceback: list[str]) -> None:
        super().__init__(evalue)
        self.traceback = traceback


_ERROR_TYPES: dict[str, type[RemoteError]] = {}


def remote_error(ename: str, evalue: str, traceback: list[str] | None = None) -> RemoteError:
    """An exception whose type is called ``ename``, so a notebook's error output names the remote error."""
    if ename not in _ERROR_TYPES:
        _ERROR_TYPES[ename] = type(ename, (RemoteError,), {"__module__": "dli_kernel.remote"})
    return _ERROR_TYPES[ename](evalue, traceback or [f"{ename}: {evalue}"])


def _show_remote_error(shell: Any, etype: type, value: RemoteError, tb: Any, tb_offset: Any = None) -> list:
    shell._showtraceback(etype, value, value.traceback)
    return value.traceback


# -- argument parsing -------------------------------------------------------------------------------


class _HelpShown(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one UsageError line instead of exiting the process."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message.rstrip('.')} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if status:
            raise UsageError(f"{self.prog}: {(message or '').strip()}")
        raise _HelpShown


def _split(line: str, prog: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as err:
        raise UsageError(f"{prog}: {err} in {line!r}") from None


def _memory(value: str) -> int:
    try:
        return parse_memory(value, "memory")
    except SpecError as err:
        raise argparse.ArgumentTypeError(str(err).replace("memory ", "", 1)) from None


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {value!r})")
    return int(value)


def _non_negative(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds, 0 or more (got {value!r})")
    return int(value)


def _conf(value: str) -> tuple[str, str]:
    key, sep, item = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"must be key=value (got {value!r})")
    return key.strip(), item


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _max_rows(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -2
    if number < -1:
        raise argparse.ArgumentTypeError(f"must be a row count, or -1 for all rows (got {value!r})")
    return number


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction above 0 and at most 1 (got {value!r})")
    return number


def _identifier(value: str) -> str:
    if not value.isidentifier() or keyword.iskeyword(value):
        raise argparse.ArgumentTypeError(f"must be a Python variable name (got {value!r})")
    return value


def _session_parser() -> _Parser:
    parser = _Parser(prog="%session", description="Manage the notebook's Spark session and others.")
    subs = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)

    subs.add_parser("info", help="the session's details (the default)", prog="%session info")
    configure = subs.add_parser(
        "configure",
        prog="%session configure",
        help="set the resources and settings of the notebook's session",
        description="Set the next session's settings. %%session configure takes a JSON body in the "
        "create-session API's field names instead of flags.",
    )
    configure.add_argument("--sc-type", choices=["A", "B", "C"], type=str.upper, help="resource tier")
    configure.add_argument("--driver-memory", type=_memory, metavar="SIZE", help="e.g. 4g or '2048 MB'")
    configure.add_argument("--driver-cores", type=_positive, metavar="N")
    configure.add_argument("--executor-memory", type=_memory, metavar="SIZE")
    configure.add_argument("--executor-cores", type=_positive, metavar="N")
    configure.add_argument("--num-executors", type=_positive, metavar="N")
    configure.add_argument("--conf", type=_conf, action="append", default=[], metavar="KEY=VALUE")
    configure.add_argument("--jars", type=_csv, metavar="PATHS", help="comma-separated")
    configure.add_argument("--py-files", type=_csv, metavar="PATHS", help="comma-separated")
    configure.add_argument("--files", type=_csv, metavar="PATHS", help="comma-separated")
    configure.add_argument("--name", metavar="NAME")
    configure.add_argument("--heartbeat-timeout", type=_non_negative, metavar="SECONDS")
    configure.add_argument("--cluster", metavar="NAME", help="cluster (queue) the session runs on")
    configure.add_argument("--kind", metavar="KIND", help=f"one of {', '.join(KINDS)}")
    configure.add_argument(
        "-f", "--force", action="store_true", help="replace a session that has run statements"
    )

    for name, text in (
        ("start", "start the notebook's session if it has none"),
        ("restart", "replace the notebook's session with a new one"),
        ("stop", "delete the notebook's session"),
        ("status", "the session's state in one line"),
        ("ui", "the Spark UI link"),
    ):
        subs.add_parser(name, help=text, prog=f"%session {name}")

    listing = subs.add_parser("list", prog="%session list", help="sessions on the endpoint")
    listing.add_argument("--state", help="comma-separated states, e.g. idle,busy or killed")
    listing.add_argument("--kind")
    listing.add_argument("--name")
    listing.add_argument("--id")
    listing.add_argument("--cluster", help="the cluster (engine) sessions run on")
    listing.add_argument("--owner", help="who created them")

    kill = subs.add_parser("kill", prog="%session kill", help="end a session by id")
    kill.add_argument("id")
    kill.add_argument("-f", "--force", action="store_true", help="confirm")

    use = subs.add_parser("use", prog="%session use", help="attach this notebook to an existing session")
    use.add_argument("id")

    logs = subs.add_parser("logs", prog="%session logs", help="the session's log")
    logs.add_argument("-n", type=_positive, default=50, metavar="N", help="lines (default 50)")
    logs.add_argument("--from", dest="start", type=_non_negative, metavar="K", help="from line K")
    logs.add_argument("--follow", action="store_true", help="keep showing new lines until interrupted")
    return parser


# -- the magics -------------------------------------------------------------------------------------


@magics_class
class SparkMagics(Magics):
    """Magics bound to one notebook's sessions."""

    def __init__(self, shell: Any, notebook: Notebook) -> None:
        super().__init__(shell)
        self.notebook = notebook
        self._session_parser = _session_parser()

    # -- remote cells --------------------------------------------------------------------------

    @cell_magic
    def pyspark(self, line: str, cell: str) -> None:
        """Run the cell as PySpark code on the notebook's session."""
        self._no_arguments("%%pyspark", line)
        self.show(self.run(cell, "pyspark"))

    @cell_magic
    def spark(self, line: str, cell: str) -> None:
        """Run the cell as Scala code on the notebook's session."""
        self._no_arguments("%%spark", line)
        self.show(self.run(cell, "spark"))

    @cell_magic
    def scala(self, line: str, cell: str) -> None:
        """Run the cell as Scala code on the notebook's session (same as %%spark)."""
        self._no_arguments("%%scala", line)
        self.show(self.run(cell, "spark"))

    @cell_magic
    def local(self, line: str, cell: str) -> None:
        """Run the cell in this kernel's own Python."""
        self._no_arguments("%%local", line)
        result = self.shell.run_cell(cell, store_history=False)
        if not result.success:
            raise remote_error("LocalError", "the %%local cell failed (its traceback is above).", [])

    @line_cell_magic
    def sql(self, line: str, cell: str | None = None) -> None:
        """Run SQL on the notebook's session and show the result as a table.

        %%sql [-o VAR] [-n MAXROWS] [-q] [--sample FRACTION]   (or %sql [options] QUERY)
        -o VAR: also put the result in a local pandas DataFrame VAR; -n: row limit (default 1000, -1 all);
        -q: show nothing; --sample: a random fraction of the rows. Statements separated by ; run in order.
        """
        options, query = _sql_options(line, cell)
        queries = split_sql(query)
        if not queries:
            raise UsageError("%%sql: there is no query; write one after the options or in the cell")
        for earlier in queries[:-1]:
            self.run(earlier, "sql", max_rows=0)
        last = queries[-1]
        if options.sample is not None:
            # A subquery keeps the user's SQL intact; the newline ends a trailing -- comment.
            last = f"SELECT * FROM (\n{last}\n) TABLESAMPLE ({options.sample * 100:g} PERCENT) AS dli_sample"
        if options.o:
            self._sql_to_frame(last, options)
            return
        output = self.run(last, "sql", max_rows=options.n)
        if not options.q:
            self.show(output)

    def _sql_to_frame(self, query: str, options: argparse.Namespace) -> None:
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

        output = self._follow(fetch)
        if result is None:  # a statement that is not a query, e.g. a SET, answers with text
            if not options.q:
                self.show(output)
            return
        self.shell.user_ns[options.o] = result.frame
        if not options.q:
            publish_display_data(frame_bundle(result.frame, result.total, options.o))

    @line_magic
    def send_to_spark(self, line: str) -> None:
        """Send a local pandas DataFrame (as a Spark DataFrame) or a string to the session.

        %send_to_spark -i VAR [-n NAME]
        """
        parser = _Parser(prog="%send_to_spark")
        parser.add_argument("-i", dest="var", type=_identifier, required=True, metavar="VAR")
        parser.add_argument("-n", dest="name", type=_identifier, metavar="NAME")
        args = self._parse(parser, line)
        if args is None:
            return
        if args.var not in self.shell.user_ns:
            raise UsageError(f"%send_to_spark: there is no local variable {args.var!r}")
        value = self.shell.user_ns[args.var]
        name = args.name or args.var
        if isinstance(value, str):
            code = f"{name} = {value!r}"
        elif type(value).__name__ == "DataFrame" and hasattr(value, "to_json"):
            # repr() makes the JSON a Python literal; nothing of the data becomes code.
            payload = value.to_json(orient="table", date_format="iso", index=False)
            code = (
                "import io as _dli_io\nimport pandas as _dli_pd\n"
                f"{name} = spark.createDataFrame("
                f"_dli_pd.read_json(_dli_io.StringIO({payload!r}), orient='table'))"
            )
        else:
            kind = type(value).__name__
            raise UsageError(f"%send_to_spark: {args.var} is a {kind}; a pandas DataFrame or str is accepted")
        self.run(code, "pyspark")
        what = "a Spark DataFrame" if not isinstance(value, str) else "a str"
        print(f"{name} is now {what} in the session.")

    # -- %session ------------------------------------------------------------------------------

    @line_cell_magic
    def session(self, line: str, cell: str | None = None) -> None:
        """Manage the notebook's session and others; %session --help lists the subcommands."""
        args = self._parse(self._session_parser, line)
        if args is None:
            return
        command = args.command or "info"
        if cell is not None and command != "configure":
            raise UsageError("%%session takes a cell only as %%session configure (a JSON body)")
        handler: Callable[[argparse.Namespace, str | None], None] = getattr(self, f"_session_{command}")
        try:
            handler(args, cell)
        except SpecError as err:
            raise UsageError(f"%session {command}: {err}") from None
        except NotFound as err:
            raise UsageError(f"%session {command}: {err}") from None
        except SessionFailed as err:
            raise remote_error("SessionFailed", str(err)) from None
        except ClientError as err:
            raise remote_error(type(err).__name__, str(err)) from None

    def _session_info(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self.notebook.session
        if session is None or session.info is None:
            spec = self.notebook.spec
            state = "starting" if session is not None else "none yet: the next cell starts one like this"
            rows = [("session", state), *_spec_rows(spec)]
            publish_display_data(_kv_bundle(rows))
            return
        info = self.notebook.client.get_session(session.info.id)
        publish_display_data(_kv_bundle(_info_rows(info, self.notebook.spec)))

    def _session_configure(self, args: argparse.Namespace, cell: str | None) -> None:
        notebook = self.notebook
        spec = notebook.spec
        if cell is not None and cell.strip():
            try:
                body = json.loads(cell)
            except json.JSONDecodeError as err:
                raise UsageError(f"%%session configure: the cell is not valid JSON ({err})") from None
            spec = spec.updated(body)
        spec = spec.replace(**_configure_changes(args, spec))
        if spec == notebook.spec and not args.force:
            publish_display_data(_kv_bundle(_spec_rows(spec)))
            return
        session = notebook.session
        if session is not None and not session.owned and not args.force:
            raise UsageError(
                f"%session configure: this notebook uses session {session.info.id}, which it did not start; "
                "add -f to start a new session of its own instead; nothing was changed"
            )
        if session is not None and session.info is not None and session.statements_run and not args.force:
            raise UsageError(
                f"%session configure: session {session.info.id} has run statements and a live session "
                "cannot change its settings; add -f to replace it with a new session (its state is lost); "
                "nothing was changed"
            )
        replaced = session is not None
        notebook.spec = spec
        if replaced:
            notebook.replace()
        print("The next cell runs on a new session with these settings." if replaced else "Settings saved.")
        publish_display_data(_kv_bundle(_spec_rows(spec)))

    def _session_start(self, args: argparse.Namespace, cell: str | None) -> None:
        had = self.notebook.session is not None
        session = self._ready()
        print(f"Session {session.id} is {'already ' if had else ''}ready.")

    def _session_restart(self, args: argparse.Namespace, cell: str | None) -> None:
        self.notebook.replace()
        session = self._ready()
        print(f"Session {session.id} is ready (the previous one was ended).")

    def _session_stop(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self.notebook.session
        if session is None:
            print("This notebook has no session.")
            return
        ident, owned = session.id, session.owned
        self.notebook.drop()
        print(f"Session {ident} deleted." if owned else f"Stopped using session {ident} (left running).")

    def _session_status(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self.notebook.session
        if session is None or session.info is None:
            print("No session yet: the next cell starts one." if session is None else "Session starting.")
            return
        info = self.notebook.client.get_session(session.info.id)
        count = session.statements_run
        print(f"Session {info.id} ({info.kind}) is {info.state}; this notebook ran {count} statements on it.")

    def _session_ui(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self._require_session("ui")
        info = self.notebook.client.get_session(session.info.id)
        if not info.spark_ui_url:
            print(f"Session {info.id} reports no Spark UI (state {info.state}).")
            return
        url = info.spark_ui_url
        publish_display_data(
            {
                "text/plain": f"Spark UI: {url}",
                "text/html": f'<a href="{html.escape(url)}" target="_blank">Spark UI of session '
                f"{html.escape(str(info.id))}</a>",
            }
        )

    def _session_list(self, args: argparse.Namespace, cell: str | None) -> None:
        filters = {"state": args.state, "kind": args.kind, "name": args.name, "cluster_name": args.cluster}
        filters["owner"] = args.owner
        sessions = self.notebook.client.list_sessions(**{k: v for k, v in filters.items() if v})
        # Plain Livy ignores these filters: apply them here too, so every backend answers alike.
        sessions = [info for info in sessions if _matches(info, args)]
        names = ["", "name", "id", "state", "kind", "cluster", "creator", "created", "validity period"]
        rows = [
            [
                "*" if self.notebook.is_mine(info.id) else "",
                info.name or "",
                info.id,
                info.state,
                info.kind or "",
                _cluster(info) or "",
                info.owner or "",
                _created(info),
                _validity(info),
            ]
            for info in sessions
        ]
        bundle = table_bundle(names, rows, len(rows))
        bundle["text/plain"] += "\n* this notebook's session" if any(row[0] for row in rows) else ""
        publish_display_data(bundle)

    def _session_kill(self, args: argparse.Namespace, cell: str | None) -> None:
        info = self.notebook.client.get_session(args.id)  # NotFound says the id does not exist
        if info.ended:
            print(f"Session {info.id} has already ended (state {info.state}).")
            return
        if not args.force:
            raise UsageError(
                f"%session kill: ending session {info.id} ({info.name or 'no name'}, owner "
                f"{info.owner or 'unknown'}) stops it for whoever uses it; add -f to confirm; "
                "nothing was changed"
            )
        if self.notebook.is_mine(info.id):
            self.notebook.drop(note=f"session {info.id} was killed with %session kill")
        else:
            self.notebook.client.delete_session(info.id)
        print(f"Session {info.id} killed.")

    def _session_use(self, args: argparse.Namespace, cell: str | None) -> None:
        previous = self.notebook.session
        old = previous.id if previous is not None and previous.owned else None
        info = self.notebook.attach(args.id)
        note = f"; the session this notebook started ({old}) was deleted" if old else ""
        print(f"This notebook now uses session {info.id} ({info.kind}, {info.state}){note}.")

    def _session_logs(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self._require_session("logs")
        client = self.notebook.client
        start = args.start
        if start is None:
            total = client.logs(session.info.id, size=0).total
            start = max(total - args.n, 0)
        page = client.logs(session.info.id, start=start, size=args.n)
        for line in page.lines:
            print(line)
        if not args.follow:
            return
        position = page.start + len(page.lines)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(LOG_FOLLOW_EVERY)
                page = client.logs(session.info.id, start=position, size=1000)
                for line in page.lines:
                    print(line, flush=True)
                position = page.start + len(page.lines)

    # -- running statements --------------------------------------------------------------------

    def run(self, code: str, kind: str, max_rows: int | None = None) -> dict[str, Any]:
        """Run one statement on the notebook's session; its ``output`` (ok), or raise the error."""
        return self._follow(
            lambda session, **follow: session.run(code, kind=kind, max_rows=max_rows, **follow)
        )

    def _follow(self, start: Callable[..., tuple[StatementInfo, bool]]) -> dict[str, Any]:
        """Run ``start(session, on_progress=, on_log=, interrupted=)`` with the cell's status line,
        progress bar, log lines and Ctrl-C as cancel; the statement's ok ``output``, or raise its error."""
        session = self._ready()
        interrupted = threading.Event()
        bar = _Line()
        began = time.monotonic()

        def progress(p: Progress) -> None:
            if p.elapsed >= BAR_AFTER:
                bar.show(_bar(p.progress, p.elapsed))

        try:
            with _interrupts_set(interrupted):
                statement, cancelled = start(
                    session, on_progress=progress, on_log=_write_log, interrupted=interrupted
                )
        except SessionFailed as err:
            self.notebook.drop(note=f"the previous session ended: {str(err).splitlines()[0]}")
            raise remote_error("SessionLost", f"{err}\nThe next cell runs on a new session.") from None
        except ClientError as err:
            raise remote_error(type(err).__name__, str(err)) from None
        bar.finish(f"{'cancelled' if cancelled else 'done'} in {time.monotonic() - began:.1f} s")
        if cancelled:
            raise remote_error(
                "KeyboardInterrupt", "the statement was cancelled; the session is still usable."
            )
        output = statement.output or {}
        if output.get("status") == "error":
            ename, evalue, traceback = render(output).error
            raise remote_error(ename, evalue, traceback)
        return output

    def show(self, output: dict[str, Any]) -> None:
        rendered = render(output)
        if rendered.text:
            sys.stdout.write(rendered.text if rendered.text.endswith("\n") else rendered.text + "\n")
            sys.stdout.flush()
        for bundle in rendered.displays:
            publish_display_data(bundle)

    def _ready(self) -> RemoteSession:
        """The notebook's session, waited for with one updating line while it starts."""
        line = _Line()
        note, self.notebook.replaced_note = self.notebook.replaced_note, ""

        def on_state(p: Progress) -> None:
            if p.state not in ("idle", "busy"):
                line.show(f"session {p.state} ({p.elapsed:.0f} s)")

        current = self.notebook.session
        try:
            session = self.notebook.ready(on_state=on_state)
        except KeyboardInterrupt:
            raise remote_error(
                "KeyboardInterrupt", "stopped waiting; the session keeps starting in the background."
            ) from None
        except SessionFailed as err:
            if current is not None and current.ever_ready:
                self.notebook.replaced_note = f"the previous session ended: {str(err).splitlines()[0]}"
                raise remote_error("SessionLost", f"{err}\nThe next cell runs on a new session.") from None
            raise remote_error("SessionFailed", f"{err}\nThe next cell tries a new session.") from None
        except ClientError as err:
            raise remote_error(type(err).__name__, str(err)) from None
        if line.shown or note:
            text = f"session {session.id} ready" + (f" after {line.elapsed:.1f} s" if line.shown else "")
            line.show(f"{text} ({note})" if note else text)  # a new session is said even when it was quick
        return session

    def _require_session(self, command: str) -> RemoteSession:
        session = self.notebook.session
        if session is None:
            raise UsageError(
                f"%session {command}: this notebook has no session yet (run a cell or %session start)"
            )
        if session.info is None:
            session = self._ready()
        return session

    # -- helpers -------------------------------------------------------------------------------

    def _parse(self, parser: _Parser, line: str) -> argparse.Namespace | None:
        try:
            return parser.parse_args(_split(line, parser.prog))
        except _HelpShown:
            return None

    @staticmethod
    def _no_arguments(prog: str, line: str) -> None:
        if line.strip():
            raise UsageError(f"{prog} takes no arguments (got {line.strip()!r})")


# -- displays ---------------------------------------------------------------------------------------


class _Line:
    """One output line updated in place: a status or a progress bar."""

    def __init__(self) -> None:
        self._handle: DisplayHandle | None = None
        self._last: dict[str, str] | None = None
        self._began = time.monotonic()

    @property
    def shown(self) -> bool:
        return self._handle is not None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def show(self, bundle: str | dict[str, str]) -> None:
        data = {"text/plain": bundle} if isinstance(bundle, str) else bundle
        if data == self._last:
            return  # the same words again: spare the frontend a message
        self._last = data
        if self._handle is None:
            self._handle = DisplayHandle()
            self._handle.display(data, raw=True)
        else:
            self._handle.update(data, raw=True)

    def finish(self, text: str) -> None:
        """Leave a short final word, only where something was shown (fast cells show nothing)."""
        if self._handle is not None:
            self.show(text)


def _bar(progress: float, elapsed: float, width: int = 30) -> dict[str, str]:
    done = min(max(progress, 0.0), 1.0)
    filled = round(done * width)
    label = f"{done:.0%} · {elapsed:.0f} s"
    return {
        "text/plain": f"[{'#' * filled}{'.' * (width - filled)}] {label}",
        "text/html": f'<progress value="{done:.3f}" max="1" style="width:20em"></progress> {label}',
    }


def _write_log(lines: list[str]) -> None:
    sys.stderr.write("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    sys.stderr.flush()


@contextlib.contextmanager
def _interrupts_set(event: threading.Event) -> Iterator[None]:
    """While a statement runs, Ctrl-C (or a kernel interrupt) asks to cancel it instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _kv_bundle(rows: list[tuple[str, str]]) -> dict[str, str]:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
        f"{_html_value(v)}</td></tr>"
        for k, v in rows
    )
    width = max((len(k) for k, _ in rows), default=0)
    return {
        "text/html": f"<table>{body}</table>",
        "text/plain": "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows),
    }


def _html_value(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return f'<a href="{html.escape(value)}" target="_blank">{html.escape(value)}</a>'
    return html.escape(value)


def _spec_rows(spec: SessionSpec) -> list[tuple[str, str]]:
    res = spec.effective_resources()
    rows = [
        ("kind", spec.kind),
        ("name", spec.name or "(generated)"),
        ("sc_type", spec.reported_sc_type),
        ("cluster", spec.cluster_name or "(default)"),
        ("driver", f"{format_memory(res.driver_memory_mb)}, {_cores(res.driver_cores)}"),
        (
            "executors",
            f"{res.num_executors} × ({format_memory(res.executor_memory_mb)}, {_cores(res.executor_cores)})",
        ),
        ("conf", ", ".join(f"{k}={v}" for k, v in sorted(spec.conf.items())) or "(none)"),
        ("heartbeat timeout", f"{spec.heartbeat_timeout_s} s" if spec.heartbeat_timeout_s else "none"),
    ]
    for label, values in (("jars", spec.jars), ("pyFiles", spec.py_files), ("files", spec.files)):
        if values:
            rows.append((label, ", ".join(values)))
    return rows


def _info_rows(info: SessionInfo, spec: SessionSpec) -> list[tuple[str, str]]:
    raw = info.raw
    conf = raw.get("conf") or {}
    if isinstance(conf, list):  # DLI documents conf as a list of objects
        conf = {str(item.get("key")): item.get("value") for item in conf if isinstance(item, dict)}
    rows = [
        ("id", str(info.id)),
        ("appId", info.app_id or ""),
        ("name", info.name or ""),
        ("kind", info.kind or ""),
        ("state", info.state),
        ("sc_type", str(raw.get("sc_type") or "")),
        ("cluster", _cluster(info) or ""),
        ("owner", info.owner or ""),
        ("proxy user", info.proxy_user or "(none)"),
        ("driver", f"{raw.get('driverMemory') or '?'}, {_cores(raw.get('driverCores'))}"),
        (
            "executors",
            f"{raw.get('numExecutors') or '?'} × ({raw.get('executorMemory') or '?'}, "
            f"{_cores(raw.get('executorCores'))})",
        ),
        ("conf", ", ".join(f"{k}={v}" for k, v in sorted(conf.items())) or "(none)"),
        ("created", _created(info)),
        ("validity period", _validity(info)),
        ("heartbeat timeout", _seconds(raw.get("heartbeatTimeoutInSecond"))),
        ("Spark UI", info.spark_ui_url or ""),
        ("driver log", info.driver_log_url or ""),
    ]
    if "sc_type" not in raw:  # plain Livy reports no resources: show what was asked for
        rows[5] = ("sc_type", f"{spec.reported_sc_type} (requested)")
    return rows


def _cores(value: object) -> str:
    return f"{value} core{'' if value == 1 else 's'}" if isinstance(value, int) else "? cores"


def _seconds(value: object) -> str:
    return f"{value} s" if isinstance(value, int) and value > 0 else "none"


def _cluster(info: SessionInfo) -> str | None:
    return info.raw.get("cluster_name") or info.raw.get("queue")


def _created_at(info: SessionInfo) -> datetime.datetime | None:
    stamp = info.raw.get("create_time")
    if not isinstance(stamp, int | float) or stamp <= 0:
        return None
    return datetime.datetime.fromtimestamp(stamp / 1000, tz=datetime.UTC)  # DLI reports milliseconds


def _created(info: SessionInfo) -> str:
    created = _created_at(info)
    return created.astimezone().strftime("%Y-%m-%d %H:%M:%S") if created else ""


def _validity(info: SessionInfo) -> str:
    """How long the session has run (DLC's validity period); for an ended one, until it ended."""
    created = _created_at(info)
    if created is None:
        return ""
    end = datetime.datetime.now(tz=datetime.UTC)
    updated = info.raw.get("update_time")
    if info.ended and isinstance(updated, int | float) and updated > 0:
        end = datetime.datetime.fromtimestamp(updated / 1000, tz=datetime.UTC)
    return format_duration((end - created).total_seconds())


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _matches(info: SessionInfo, args: argparse.Namespace) -> bool:
    states = {s.strip().lower() for s in (args.state or "").split(",") if s.strip()}
    return (
        (not states or info.state in states)
        and (not args.kind or info.kind == args.kind)
        and (not args.name or args.name in (info.name or ""))
        and (not args.id or str(info.id) == args.id)
        and (not args.cluster or _cluster(info) == args.cluster)
        and (not args.owner or info.owner == args.owner)
    )


def _configure_changes(args: argparse.Namespace, spec: SessionSpec) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for flag, attr in (
        ("sc_type", "sc_type"),
        ("driver_memory", "driver_memory_mb"),
        ("driver_cores", "driver_cores"),
        ("executor_memory", "executor_memory_mb"),
        ("executor_cores", "executor_cores"),
        ("num_executors", "num_executors"),
        ("jars", "jars"),
        ("py_files", "py_files"),
        ("files", "files"),
        ("name", "name"),
        ("heartbeat_timeout", "heartbeat_timeout_s"),
        ("cluster", "cluster_name"),
        ("kind", "kind"),
    ):
        value = getattr(args, flag)
        if value is not None:
            changes[attr] = value
    if args.conf:
        changes["conf"] = {**spec.conf, **dict(args.conf)}
    return changes


def _sql_options(line: str, cell: str | None) -> tuple[argparse.Namespace, str]:
    """The options of %%sql / %sql; in the line form the query follows them, quoted or not."""
    parser = _Parser(prog="%%sql" if cell is not None else "%sql", add_help=False)
    parser.add_argument("-o", type=_identifier, metavar="VAR")
    parser.add_argument("-n", type=_max_rows, default=DEFAULT_MAX_ROWS, metavar="MAXROWS")
    parser.add_argument("-q", action="store_true")
    parser.add_argument("--sample", type=_fraction, metavar="FRACTION")
    parser.add_argument("-h", "--help", action="store_true")
    words, rest = _leading_options(line, takes_value={"-o", "-n", "--sample"})
    args = parser.parse_args(_split(words, parser.prog))
    if args.help:
        print(SparkMagics.sql.__doc__)
        raise UsageError(f"{parser.prog}: usage shown above")
    if cell is not None:
        if rest.strip():
            unexpected = rest.strip()
            raise UsageError(
                f"%%sql: unexpected {unexpected!r} after the options (the query goes in the cell)"
            )
        return args, cell
    return args, rest


def _leading_options(line: str, takes_value: set[str]) -> tuple[str, str]:
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


def load_ipython_extension(ipython: Any, notebook: Notebook | None = None) -> SparkMagics:
    """Register the magics on ``ipython``; ``%load_ext dli_kernel`` calls this."""
    magics = SparkMagics(ipython, notebook or Notebook())
    ipython.register_magics(magics)
    ipython.set_custom_exc((RemoteError,), _show_remote_error)
    return magics
