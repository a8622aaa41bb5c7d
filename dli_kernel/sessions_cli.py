"""``dli-kernel sessions``: list, show, read the log of and end sessions from a shell.

It talks to the endpoint the kernels use (the config file and DLI_KERNEL_* variables, any dialect), else to
the embedded server running in the state dir; it never starts one. Every failure is one sentence on stderr
and an exit code: 2 for a wrong command line or configuration, 1 for a request that failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dli_kernel.client.errors import ClientError, ConfigError, NotFound, Unauthorized
from dli_kernel.client.session_filter import SessionFilter, cluster_of, matching_sessions
from dli_kernel.client.session_filter import add_arguments as add_filter_arguments
from dli_kernel.client.sessions_client import shown_url
from dli_kernel.embedded import default_state_dir
from dli_kernel.protocol import LOG_LEVELS
from dli_kernel.spec import SpecError, parse_number

if TYPE_CHECKING:
    from dli_kernel.client import SessionInfo, SessionsClient
    from dli_kernel.client.dialects import SessionLinks

FOLLOW_EVERY = 1.0  # seconds between two reads of a followed log
FOLLOW_PAGE = 1000  # lines asked for at once while following
# A person waits at the prompt: a server that does not answer is said so within a second, not after the
# kernel's longer retries (a command is cheap to run again).
RETRY_DELAYS = (0.2, 0.5)

USAGE_ERROR = 2
REQUEST_FAILED = 1
INTERRUPTED = 130  # what a shell reports for a command ended by Ctrl-C


class Failed(Exception):
    """A command that could not do its work; ``str()`` is one sentence, ``code`` the exit code."""

    def __init__(self, message: str, code: int = REQUEST_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- the endpoint -----------------------------------------------------------------------------------


@contextmanager
def connect(state_dir: str) -> Iterator[SessionsClient]:
    """A client for the configured endpoint, else for the embedded server running in ``state_dir``."""
    from dli_kernel.config import load_settings
    from dli_kernel.embedded import embedded_endpoint

    try:
        settings = load_settings()
    except ConfigError as err:
        raise Failed(str(err), USAGE_ERROR) from None
    endpoint = settings.endpoint
    if endpoint is None:
        try:
            endpoint = embedded_endpoint(
                Path(state_dir), start=False, dialect=settings.embedded_dialect, region=settings.region
            )
        except ConfigError as err:  # none is running: its message says how to start one
            raise Failed(str(err)) from None
    try:
        client = endpoint.client(retry_delays=RETRY_DELAYS)
    except ConfigError as err:
        raise Failed(str(err), USAGE_ERROR) from None
    with client:
        try:
            yield client
        except Unauthorized as err:
            where = "the embedded server's server.json" if endpoint.embedded else settings.source
            raise Failed(f"{str(err).rstrip('.')}; the credentials came from {where}.") from None


def _session(client: SessionsClient, session_id: str) -> SessionInfo:
    try:
        return client.get_session(session_id)
    except NotFound:
        raise Failed(
            f"there is no session {session_id} on {shown_url(client.url)}; 'dli-kernel sessions list' shows "
            "the sessions there."
        ) from None


# -- the commands -----------------------------------------------------------------------------------


def _list(args: argparse.Namespace, client: SessionsClient) -> None:
    from dli_kernel.kernel.display import sessions_table

    try:
        wanted = SessionFilter.from_args(args)
    except SpecError as err:
        raise Failed(str(err), USAGE_ERROR) from None
    sessions = matching_sessions(client, wanted)
    if args.json:
        _print_json([_summary(info) for info in sessions])
    elif not sessions:
        print(f"No session{' matches' if not wanted.empty else 's on'} {shown_url(client.url)}.")
    else:
        print(sessions_table(sessions)["text/plain"])


def _info(args: argparse.Namespace, client: SessionsClient) -> None:
    from dli_kernel.kernel.display import info_rows, key_value_bundle, with_signed_links

    info = _session(client, args.id)
    links = _browser_links(client, info)
    if args.json:
        signed = None
        if links is not None:
            signed = {
                "sparkUiUrl": links.spark_ui,
                "driverLogUrl": links.driver_log,
                "expiresIn": links.expires_in,
            }
        _print_json({**_summary(info), "browserLinks": signed, "server": info.raw})
        return
    rows = info_rows(info, None)  # a shell asked for no settings: the server's values only
    if links is not None:  # as %session info shows them: links that open in a browser, for a while
        rows = with_signed_links(rows, links, "run this again for new ones")
    print(key_value_bundle(rows)["text/plain"])


def _browser_links(client: SessionsClient, info: SessionInfo) -> SessionLinks | None:
    """The session's signed browser links where the server signs them (the embedded server), else None:
    its own URLs then stand, which may take the token."""
    if info.ended:
        return None
    try:
        return client.links(info.id)
    except ClientError:
        return None


def _logs(args: argparse.Namespace, client: SessionsClient) -> None:
    from dli_kernel.kernel.spark_log import LogFolder  # what a cell's stream uses

    folder = LogFolder(args.level or "all")  # without --level: every line, as it is
    session_id = str(_session(client, args.id).id)
    start = args.start
    if start is None:
        start = max(client.logs(session_id, size=0).total - args.n, 0)
    page = client.logs(session_id, start=start, size=args.n)
    lines = list(page.lines)
    if not args.follow:
        _print_lines(folder.feed(lines) + folder.flush())
        return
    _print_lines(folder.feed(lines))
    position = page.start + len(page.lines)
    try:
        while True:
            time.sleep(FOLLOW_EVERY)
            try:
                page = client.logs(session_id, start=position, size=FOLLOW_PAGE)
            except NotFound:
                state = "gone"
                break
            _print_lines(folder.feed(list(page.lines)))
            position = page.start + len(page.lines)
            if not page.lines:
                state = _state_if_ended(client, session_id)
                if state:
                    break
    except KeyboardInterrupt:
        state = ""
    _print_lines(folder.flush())
    if state:
        print(f"Session {session_id} has ended ({state}).", file=sys.stderr)


def _state_if_ended(client: SessionsClient, session_id: str) -> str:
    try:
        info = client.get_session(session_id)
    except NotFound:
        return "gone"
    return info.state if info.ended else ""


def _kill(args: argparse.Namespace, client: SessionsClient) -> None:
    info = _session(client, args.id)
    if info.ended:
        print(f"Session {info.id} has already ended (state {info.state}).")
        return
    described = f"session {info.id} ({info.name or 'no name'}, owner {info.owner or 'unknown'}, {info.state})"
    if not args.force:
        if not sys.stdin.isatty():
            raise Failed(
                f"ending {described} stops it for whoever uses it, and there is no terminal to confirm "
                "on; add -f to end it anyway; nothing was changed.",
                USAGE_ERROR,
            )
        print(
            f"End {described}? It stops it for whoever uses it. [y/N] ", end="", file=sys.stderr, flush=True
        )
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise Failed(f"session {info.id} was left running.")
    client.delete_session(info.id)
    print(f"Session {info.id} killed.")


# -- what they print --------------------------------------------------------------------------------


def _summary(info: SessionInfo) -> dict[str, Any]:
    """A session in the same fields whatever the dialect: what --json prints."""
    stamp = info.raw.get("create_time")
    created = None
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > 0:
        created = datetime.datetime.fromtimestamp(stamp / 1000, tz=datetime.UTC).isoformat()
    return {
        "id": info.id,
        "name": info.name,
        "state": info.state,
        "kind": info.kind,
        "cluster": cluster_of(info),
        "owner": info.owner,
        "created": created,
        "appId": info.app_id,
        "sparkUiUrl": info.spark_ui_url,
        "driverLogUrl": info.driver_log_url,
    }


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _print_lines(lines: list[str]) -> None:
    if lines:
        sys.stdout.write("".join(line if line.endswith("\n") else line + "\n" for line in lines))
        sys.stdout.flush()


# -- the command line -------------------------------------------------------------------------------

COMMANDS = {"list": _list, "info": _info, "logs": _logs, "kill": _kill}


def run(args: argparse.Namespace) -> int:
    if args.sessions_command is None:
        args.help_of.print_help()
        return 0
    command = f"dli-kernel sessions {args.sessions_command}"
    try:
        with connect(args.state_dir) as client:
            COMMANDS[args.sessions_command](args, client)
    except Failed as err:
        return _fail(command, str(err), err.code)
    except ClientError as err:
        return _fail(command, str(err), REQUEST_FAILED)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader (head, a pager) went away: nothing more to say, and Python's exit flush must not
        # complain about it either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _fail(command: str, message: str, code: int) -> int:
    print(f"{command}: {message}", file=sys.stderr)
    return code


def _whole_number(least: int) -> Any:
    def parse(text: str) -> int:
        value = parse_number(text.strip())
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number, {least} or more (got {text!r})")
        return value

    return parse


def add_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """``dli-kernel sessions`` and its subcommands, under ``commands`` (the top parser's subparsers)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        default=str(default_state_dir()),
        metavar="DIR",
        help="the embedded server's state dir, used when no endpoint is configured (default: %(default)s)",
    )
    sessions = commands.add_parser(
        "sessions",
        help="list, show, read the log of and end sessions on the endpoint the kernels use",
        description="List, show, read the log of and end sessions on the endpoint the kernels use: the one "
        "set in dli_kernel.json or DLI_KERNEL_* variables (Livy, DLI or DLC), else the embedded server "
        "running in --state-dir.",
        epilog="examples:\n  dli-kernel sessions list --state idle,busy\n  dli-kernel sessions info 3\n"
        "  dli-kernel sessions logs 3 --follow --level warn\n  dli-kernel sessions kill 3",
        formatter_class=formatter,
    )
    actions = sessions.add_subparsers(dest="sessions_command", metavar="COMMAND")

    listing = actions.add_parser(
        "list",
        parents=[common],
        help="the sessions on the endpoint, filtered as %%session list filters them",
        description="The sessions on the endpoint, one a line; the filters are those of %session list.",
        epilog="examples:\n  dli-kernel sessions list\n  dli-kernel sessions list --state idle,busy "
        "--kind pyspark --owner alice\n  dli-kernel sessions list --name etl --json",
        formatter_class=formatter,
    )
    add_filter_arguments(listing)
    listing.add_argument("--json", action="store_true", help="a JSON list, the same fields for every dialect")

    info = actions.add_parser(
        "info",
        parents=[common],
        help="one session's details",
        description="One session's details, as %session info shows them.",
        epilog="example:\n  dli-kernel sessions info 3 --json",
        formatter_class=formatter,
    )
    info.add_argument("id", metavar="ID", help="the session's id")
    info.add_argument("--json", action="store_true", help="JSON, with the server's own answer under 'server'")

    logs = actions.add_parser(
        "logs",
        parents=[common],
        help="a session's log: its last lines, or from a line on, or as it grows",
        description="A session's log (its driver's output): the last N lines, or N lines from line K.",
        epilog="examples:\n  dli-kernel sessions logs 3 -n 200\n  dli-kernel sessions logs 3 --from 0 -n "
        "100000 > session-3.log\n  dli-kernel sessions logs 3 --follow --level warn",
        formatter_class=formatter,
    )
    logs.add_argument("id", metavar="ID", help="the session's id")
    logs.add_argument("-n", type=_whole_number(1), default=50, metavar="N", help="lines (default 50)")
    logs.add_argument(
        "--from", dest="start", type=_whole_number(0), metavar="K", help="from line K (0 is the first)"
    )
    logs.add_argument(
        "--follow",
        action="store_true",
        help="keep showing new lines until the session ends or Ctrl-C",
    )
    logs.add_argument(
        "--level",
        type=str.lower,  # as %session logs --level takes it
        choices=LOG_LEVELS,
        help="condense the log as a cell's output does at that level: Spark's warnings and errors one line "
        "each, repeated task failures folded (default: every line as logged)",
    )

    kill = actions.add_parser(
        "kill",
        parents=[common],
        help="end a session, asking first",
        description="End a session, for whoever uses it. On a terminal it asks first; elsewhere (a script, "
        "a pipe) it needs -f.",
        epilog="examples:\n  dli-kernel sessions kill 3\n  dli-kernel sessions kill 3 -f",
        formatter_class=formatter,
    )
    kill.add_argument("id", metavar="ID", help="the session's id")
    kill.add_argument("-f", "--force", action="store_true", help="do not ask")

    sessions.set_defaults(run=run, help_of=sessions)
