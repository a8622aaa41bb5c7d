"""``%session``: the notebook's session (info, configure, start, restart, stop, status, ui, logs, log-level,
use) and others on the endpoint (list, kill). Each subcommand is one method, found through ``COMMANDS``."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class
from IPython.display import publish_display_data

from dli_kernel.client import ClientError, NotFound
from dli_kernel.client.session_filter import SessionFilter, matching_sessions
from dli_kernel.client.session_filter import add_arguments as add_filter_arguments
from dli_kernel.kernel.display import (
    info_rows,
    key_value_bundle,
    link_bundle,
    opens_for,
    sessions_table,
    spec_rows,
    with_signed_links,
)
from dli_kernel.kernel.magics import args
from dli_kernel.kernel.magics.runner import RunnerMagics, StatementRunner, remote_error
from dli_kernel.kernel.remote_session import SessionFailed
from dli_kernel.kernel.spark_log import LEVELS as LOG_LEVELS
from dli_kernel.kernel.spark_log import LogFolder
from dli_kernel.protocol import KINDS
from dli_kernel.spec import SessionSpec, SpecError

LOG_FOLLOW_EVERY = 1.0

Handler = Callable[["SessionMagics", argparse.Namespace, "str | None"], None]


@magics_class
class SessionMagics(RunnerMagics):
    """``%session`` and ``%%session configure``."""

    def __init__(self, shell: Any, runner: StatementRunner) -> None:
        super().__init__(shell, runner)
        self._parser = session_parser()

    @line_cell_magic
    def session(self, line: str, cell: str | None = None) -> None:
        """Manage the notebook's session and others; %session --help lists the subcommands."""
        parsed = args.parse(self._parser, line)
        if parsed is None:
            return
        command = parsed.command or "info"
        if cell is not None and command != "configure":
            raise UsageError("%%session takes a cell only as %%session configure (a JSON body)")
        try:
            COMMANDS[command](self, parsed, cell)
        except (SpecError, NotFound) as err:
            raise UsageError(f"%session {command}: {err}") from None
        except SessionFailed as err:
            raise remote_error("SessionFailed", str(err)) from None
        except ClientError as err:
            raise remote_error(type(err).__name__, str(err)) from None

    # -- the notebook's session ----------------------------------------------------------------

    def info(self, parsed: argparse.Namespace, cell: str | None) -> None:
        session = self.holder.session
        if session is None or session.info is None:
            state = "starting" if session is not None else "none yet: the next cell starts one like this"
            publish_display_data(key_value_bundle([("session", state), *spec_rows(self.holder.spec)]))
            return
        client = self.holder.client
        info = client.get_session(session.info.id)
        rows = info_rows(info, self.holder.spec)
        links = None
        with contextlib.suppress(ClientError):  # no links: the URLs as the server reports them
            links = client.links(info.id)
        if links is not None:  # the embedded server's own URLs take its token; these open in a browser
            rows = with_signed_links(rows, links, "run %session for new ones")
        publish_display_data(key_value_bundle(rows))

    def configure(self, parsed: argparse.Namespace, cell: str | None) -> None:
        holder = self.holder
        spec = holder.spec
        if cell is not None and cell.strip():
            try:
                body = json.loads(cell)
            except json.JSONDecodeError as err:
                raise UsageError(f"%%session configure: the cell is not valid JSON ({err})") from None
            spec = spec.updated(body)
        spec = spec.replace(**_configure_changes(parsed, spec))
        if spec == holder.spec and not parsed.force:
            publish_display_data(key_value_bundle(spec_rows(spec)))
            return
        session = holder.session
        if session is not None and not session.owned and not parsed.force:
            raise UsageError(
                f"%session configure: this notebook uses session {session.id}, which it did not start; "
                "add -f to start a new session of its own instead; nothing was changed"
            )
        if session is not None and session.info is not None and session.statements_run and not parsed.force:
            raise UsageError(
                f"%session configure: session {session.info.id} has run statements and a live session "
                "cannot change its settings; add -f to replace it with a new session (its state is lost); "
                "nothing was changed"
            )
        replaced = session is not None
        holder.spec = spec
        if replaced:
            holder.replace()
        print("The next cell runs on a new session with these settings." if replaced else "Settings saved.")
        publish_display_data(key_value_bundle(spec_rows(spec)))

    def start(self, parsed: argparse.Namespace, cell: str | None) -> None:
        had = self.holder.session is not None
        session = self.runner.ready()
        print(f"Session {session.id} is {'already ' if had else ''}ready.")

    def restart(self, parsed: argparse.Namespace, cell: str | None) -> None:
        self.holder.replace()
        session = self.runner.ready()
        print(f"Session {session.id} is ready (the previous one was ended).")

    def stop(self, parsed: argparse.Namespace, cell: str | None) -> None:
        session = self.holder.session
        if session is None:
            print("This notebook has no session.")
            return
        ident, owned = session.id, session.owned
        self.holder.drop()
        print(f"Session {ident} deleted." if owned else f"Stopped using session {ident} (left running).")

    def status(self, parsed: argparse.Namespace, cell: str | None) -> None:
        session = self.holder.session
        if session is None or session.info is None:
            print("No session yet: the next cell starts one." if session is None else "Session starting.")
            return
        info = self.holder.client.get_session(session.info.id)
        count = session.statements_run
        print(f"Session {info.id} ({info.kind}) is {info.state}; this notebook ran {count} statements on it.")

    def ui(self, parsed: argparse.Namespace, cell: str | None) -> None:
        client = self.holder.client
        info = client.get_session(self.runner.require_session("ui"))
        links = None
        if info.spark_ui_url:
            with contextlib.suppress(ClientError):  # no link: the URL as the server reports it
                links = client.links(info.id)
        url = links.spark_ui if links is not None else info.spark_ui_url
        if not url:
            print(f"Session {info.id} reports no Spark UI (state {info.state}).")
            return
        bundle = link_bundle("Spark UI", url, f"Spark UI of session {info.id}")
        if links is not None and url == links.spark_ui:
            # A signed link of the embedded server's: it opens without the token, for a while.
            note = f"opens for {opens_for(links.expires_in)}; run %session ui again for a new link"
            bundle = {mime: f"{text} ({note})" for mime, text in bundle.items()}  # plain words: no escaping
        publish_display_data(bundle)

    def logs(self, parsed: argparse.Namespace, cell: str | None) -> None:
        session_id = self.runner.require_session("logs")
        client = self.holder.client
        folder = LogFolder(parsed.level or "all")  # without --level: every line, as it is
        start = parsed.start
        if start is None:
            total = client.logs(session_id, size=0).total
            start = max(total - parsed.n, 0)
        page = client.logs(session_id, start=start, size=parsed.n)
        _print_lines(folder.feed(list(page.lines)))
        if parsed.follow:
            position = page.start + len(page.lines)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(LOG_FOLLOW_EVERY)
                    page = client.logs(session_id, start=position, size=1000)
                    _print_lines(folder.feed(list(page.lines)))
                    position = page.start + len(page.lines)
        _print_lines(folder.flush())
        if folder.level not in ("all", "quiet") and folder.folded:
            print(f"({folder.folded} of {folder.fed} lines condensed; without --level, every line)")

    def log_level(self, parsed: argparse.Namespace, cell: str | None) -> None:
        if parsed.level is not None:
            self.holder.log_level = parsed.level
            print(f"Cells now show the session's log at level {parsed.level}.")
            return
        level = self.holder.log_level
        print(f"Cells show the session's log at level {level} (one of {', '.join(LOG_LEVELS)}).")

    def use(self, parsed: argparse.Namespace, cell: str | None) -> None:
        previous = self.holder.session
        old = previous.id if previous is not None and previous.owned else None
        info = self.holder.attach(parsed.id)
        note = f"; the session this notebook started ({old}) was deleted" if old else ""
        print(f"This notebook now uses session {info.id} ({info.kind}, {info.state}){note}.")

    # -- sessions on the endpoint --------------------------------------------------------------

    def list_sessions(self, parsed: argparse.Namespace, cell: str | None) -> None:
        # The same filters as `dli-kernel sessions list`, applied here too where the server ignores them.
        sessions = matching_sessions(self.holder.client, SessionFilter.from_args(parsed))
        publish_display_data(sessions_table(sessions, self.holder.is_mine))

    def kill(self, parsed: argparse.Namespace, cell: str | None) -> None:
        info = self.holder.client.get_session(parsed.id)  # NotFound says the id does not exist
        if info.ended:
            print(f"Session {info.id} has already ended (state {info.state}).")
            return
        if not parsed.force:
            raise UsageError(
                f"%session kill: ending session {info.id} ({info.name or 'no name'}, owner "
                f"{info.owner or 'unknown'}) stops it for whoever uses it; add -f to confirm; "
                "nothing was changed"
            )
        if self.holder.is_mine(info.id):
            self.holder.drop(note=f"session {info.id} was killed with %session kill")
        else:
            self.holder.client.delete_session(info.id)
        print(f"Session {info.id} killed.")


# Every subcommand the parser accepts, and the method that does it.
COMMANDS: dict[str, Handler] = {
    "info": SessionMagics.info,
    "configure": SessionMagics.configure,
    "start": SessionMagics.start,
    "restart": SessionMagics.restart,
    "stop": SessionMagics.stop,
    "status": SessionMagics.status,
    "ui": SessionMagics.ui,
    "logs": SessionMagics.logs,
    "log-level": SessionMagics.log_level,
    "use": SessionMagics.use,
    "list": SessionMagics.list_sessions,
    "kill": SessionMagics.kill,
}


def session_parser() -> args.Parser:
    parser = args.Parser(prog="%session", description="Manage the notebook's Spark session and others.")
    subs = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=args.Parser)

    subs.add_parser("info", help="the session's details (the default)", prog="%session info")
    configure = subs.add_parser(
        "configure",
        prog="%session configure",
        help="set the resources and settings of the notebook's session",
        description="Set the next session's settings. %%session configure takes a JSON body in the "
        "create-session API's field names instead of flags.",
    )
    configure.add_argument("--sc-type", choices=["A", "B", "C"], type=str.upper, help="resource tier")
    configure.add_argument("--driver-memory", type=args.memory, metavar="SIZE", help="e.g. 4g or '2048 MB'")
    configure.add_argument("--driver-cores", type=args.positive, metavar="N")
    configure.add_argument("--executor-memory", type=args.memory, metavar="SIZE")
    configure.add_argument("--executor-cores", type=args.positive, metavar="N")
    configure.add_argument("--num-executors", type=args.positive, metavar="N")
    configure.add_argument("--conf", type=args.conf, action="append", default=[], metavar="KEY=VALUE")
    configure.add_argument("--jars", type=args.csv, metavar="PATHS", help="comma-separated")
    configure.add_argument("--py-files", type=args.csv, metavar="PATHS", help="comma-separated")
    configure.add_argument("--files", type=args.csv, metavar="PATHS", help="comma-separated")
    configure.add_argument("--name", metavar="NAME")
    configure.add_argument("--heartbeat-timeout", type=args.heartbeat, metavar="SECONDS")
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
    add_filter_arguments(listing)  # the options of `dli-kernel sessions list` too

    kill = subs.add_parser("kill", prog="%session kill", help="end a session by id")
    kill.add_argument("id")
    kill.add_argument("-f", "--force", action="store_true", help="confirm")

    use = subs.add_parser("use", prog="%session use", help="attach this notebook to an existing session")
    use.add_argument("id")

    logs = subs.add_parser("logs", prog="%session logs", help="the session's log")
    logs.add_argument("-n", type=args.positive, default=50, metavar="N", help="lines (default 50)")
    logs.add_argument("--from", dest="start", type=args.non_negative, metavar="K", help="from line K")
    logs.add_argument("--follow", action="store_true", help="keep showing new lines until interrupted")
    logs.add_argument(
        "--level",
        type=str.lower,
        choices=LOG_LEVELS,
        help="condensed as a cell shows it: quiet, warn, info; all (the default) is every line as it is",
    )
    log_level = subs.add_parser(
        "log-level",
        prog="%session log-level",
        help="how much of the session's log cells show while they run",
        description="quiet: nothing; warn (the default): Spark's warnings and errors one line each, task "
        "failures folded with a count, prints in full; info: INFO lines too; all: every line as it is. "
        "Without LEVEL, the current one.",
    )
    log_level.add_argument("level", nargs="?", type=str.lower, choices=LOG_LEVELS, metavar="LEVEL")
    return parser


# configure's flags and the SessionSpec fields they set
_CONFIGURE_FIELDS = (
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
)


def _configure_changes(parsed: argparse.Namespace, spec: SessionSpec) -> dict[str, Any]:
    changes = {attr: getattr(parsed, flag) for flag, attr in _CONFIGURE_FIELDS}
    changes = {attr: value for attr, value in changes.items() if value is not None}
    if parsed.conf:
        changes["conf"] = {**spec.conf, **dict(parsed.conf)}
    return changes


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, flush=True)
