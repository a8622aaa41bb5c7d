"""The dli-kernel command: the embedded sessions server, its users, the sessions on an endpoint, the
kernelspecs and a demo. Its help texts are plain text (this docstring is not one of them)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dli_kernel import __version__, sessions_cli
from dli_kernel.embedded import default_state_dir
from dli_kernel.protocol import DLC_SECRET_FILE, USERS_FILE
from dli_kernel.spec import SpecError, parse_memory, parse_number

if TYPE_CHECKING:
    from dli_kernel.server.users import User


def _server(args: argparse.Namespace) -> int:
    try:
        from dli_kernel.server.serve import ServerConfigError, serve
    except ImportError as err:
        print(
            f"dli-kernel server needs the server extra: pip install 'dli-kernel[server]' ({err}).",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(
            state_dir=Path(args.state_dir).expanduser().resolve(),
            host=args.host,
            port=args.port,
            master=args.master,
            keep_sessions_on_exit=args.keep_sessions,
            pool=args.pool,
            users_file=_path(args.users),
            certfile=_path(args.certfile),
            keyfile=_path(args.keyfile),
            driver_host=args.driver_host,
            start_timeout=args.start_timeout,
            max_sessions_per_user=args.max_sessions_per_user,
            max_starting=args.max_starting,
            max_driver_memory_mb=args.max_driver_memory,
            max_body=args.max_body,
            max_statement_body=args.max_statement_body,
            share_driver=args.share_driver,
        )
    except ServerConfigError as err:
        print(f"dli-kernel server: {err}", file=sys.stderr)
        return 2
    return 0


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser().resolve()


# -- argument types: a wrong value is argparse's one-line error and exit code 2 ----------------------


def _whole_number(least: int, zero_means: str = "") -> Callable[[str], int]:
    """An argument type for a whole number of ``least`` or more; ``zero_means`` says what 0 does."""

    def parse(text: str) -> int:
        value = parse_number(text.strip())
        if value is None or value < least:
            shown = f"{least} ({zero_means})" if zero_means else str(least)
            raise argparse.ArgumentTypeError(f"must be a whole number, {shown} or more (got {text!r})")
        return value

    return parse


_count = _whole_number(1)
_pool_size = _whole_number(0, zero_means="no pool")
_session_count = _whole_number(0, zero_means="no sessions")


def _memory_mb(text: str) -> int:
    try:
        return parse_memory(text, "")
    except SpecError as err:  # " must be a size with a unit, ...": argparse puts the option first
        raise argparse.ArgumentTypeError(str(err).strip().rstrip(".")) from None


_BYTES = re.compile(r"(\d+)\s*(?:([kmg])(?:i?b)?|b)?", re.IGNORECASE | re.ASCII)


def _byte_size(text: str) -> int:
    """Bytes in ``65536``, ``64k``, ``10m``, ``10 MB`` or ``1g`` (binary multiples, as Spark's)."""
    match = _BYTES.fullmatch(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"must be a size in bytes such as 65536, 64k or 10m (got {text!r})")
    return int(match.group(1)) * 1024 ** " kmg".index((match.group(2) or " ").lower())


# -- dli-kernel users: the users file of a server a team shares --------------------------------------


def _users(args: argparse.Namespace) -> int:
    if args.users_command is None:
        args.help_of.print_help()
        return 0
    from dli_kernel.server.users import UsersFileError

    state_dir = Path(args.state_dir).expanduser().resolve()
    path = _path(args.users) or state_dir / USERS_FILE
    try:
        args.users_action(args, path, state_dir)
    except UsersFileError as err:
        print(f"dli-kernel users: {err}", file=sys.stderr)
        return 2
    return 0


def _user_named(users: tuple[User, ...], name: str, path: Path) -> User:
    from dli_kernel.server.users import UsersFileError

    for user in users:
        if user.name == name:
            return user
    raise UsersFileError(f"{path} has no user named {name!r} (dli-kernel users list --users {path}).")


def _users_add(args: argparse.Namespace, path: Path, state_dir: Path) -> None:
    from dli_kernel.server import users as store
    from dli_kernel.server.principal import operator_name

    name = store.check_name(args.name)
    if name == operator_name():
        raise store.UsersFileError(
            f"{name!r} is this machine's OS user, which a server run by it names its operator (whose token "
            "is in server.json); give the user another name."
        )
    token = store.new_token()
    user = store.User(name, store.hash_token(token), admin=args.admin, max_sessions=args.max_sessions)
    with store.editing(path):
        users = store.read_users(path, missing_ok=True)
        if any(other.name == name for other in users):
            raise store.UsersFileError(
                f"{path} already has a user named {name!r}; 'dli-kernel users rotate {name}' gives them a "
                "new token."
            )
        store.write_users(path, [*users, user])
    print(token, flush=True)
    print(
        f"added {user.role} {name} to {path}. The token above is shown only this once: give it to {name} "
        f"(DLI_KERNEL_TOKEN). A server running with --users {path} takes it within a second.",
        file=sys.stderr,
    )


def _users_remove(args: argparse.Namespace, path: Path, state_dir: Path) -> None:
    from dli_kernel.server import users as store

    with store.editing(path):
        users = store.read_users(path)
        gone = _user_named(users, args.name, path)
        store.write_users(path, [user for user in users if user is not gone])
    print(
        f"removed {args.name} from {path}: their token and DLC key stop working within a second.",
        file=sys.stderr,
    )


def _users_rotate(args: argparse.Namespace, path: Path, state_dir: Path) -> None:
    from dli_kernel.server import users as store

    token = store.new_token()
    with store.editing(path):
        users = store.read_users(path)
        old = _user_named(users, args.name, path)
        new = dataclasses.replace(old, token_sha256=store.hash_token(token))
        store.write_users(path, [new if user is old else user for user in users])
    print(token, flush=True)
    print(
        f"gave {args.name} a new token, shown above only this once; their old token and DLC key stop "
        "working within a second.",
        file=sys.stderr,
    )


def _users_list(args: argparse.Namespace, path: Path, state_dir: Path) -> None:
    from dli_kernel.server import users as store

    rows = [("NAME", "ROLE", "MAX SESSIONS")]
    for user in store.read_users(path):
        limit = "server default" if user.max_sessions is None else str(user.max_sessions)
        rows.append((user.name, user.role, limit))
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for name, role, limit in rows:
        print(f"{name:<{widths[0]}}  {role:<{widths[1]}}  {limit}")


def _users_dlc_key(args: argparse.Namespace, path: Path, state_dir: Path) -> None:
    from dli_kernel.server import users as store

    user = _user_named(store.read_users(path), args.name, path)
    key = store.derive_dlc_key(store.dlc_secret(state_dir / DLC_SECRET_FILE), user)
    print(f"TENCENTCLOUD_SECRET_ID={user.name}\nTENCENTCLOUD_SECRET_KEY={key}", flush=True)
    print(
        f"the DLC SecretId and SecretKey of {user.name} on the server of {state_dir} (which must be that "
        "server's --state-dir); a new token changes the key.",
        file=sys.stderr,
    )


def _install(args: argparse.Namespace) -> int:
    from dli_kernel.install import install

    prefix = sys.prefix if args.sys_prefix else args.prefix
    for path in install(user=args.user, prefix=prefix):
        print(f"installed {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run the quickstart notebook headless on the embedded default and print what each cell showed."""
    try:
        from dli_kernel.demo import QUICKSTART, run_notebook
    except ImportError as err:
        print(
            f"dli-kernel demo needs the server extra: pip install 'dli-kernel[server]' ({err}).",
            file=sys.stderr,
        )
        return 2
    notebook = Path(args.notebook) if args.notebook else QUICKSTART
    if not notebook.exists():
        print(f"dli-kernel demo: no notebook at {notebook}; pass one with --notebook.", file=sys.stderr)
        return 2
    output = Path(args.output or f"{notebook.stem}.executed.ipynb").resolve()
    return run_notebook(notebook, output, sys.stdout)


DESCRIPTION = (
    "Jupyter kernels and magics for remote Spark sessions (Huawei Cloud DLI, Tencent Cloud DLC, Apache "
    "Livy), with an embedded sessions server backed by local PySpark."
)
EXAMPLES = """examples:
  dli-kernel install --user              the PySpark, Spark and Spark SQL kernels for Jupyter
  dli-kernel demo                        run the quickstart notebook on a local Spark session
  dli-kernel server --port 0             the sessions server the kernels use by default
  dli-kernel sessions list               the sessions on the endpoint the kernels use
  dli-kernel sessions logs 3 --follow    a session's log as it grows

'dli-kernel COMMAND --help' tells more about each command."""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps a text of one line (a description) to the terminal; keeps one of several lines (examples)
    as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


FORMATTER = HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dli-kernel", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=FORMATTER
    )
    parser.add_argument("--version", action="version", version=f"dli-kernel {__version__}")
    parser.set_defaults(run=None, help_of=parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    server = commands.add_parser(
        "server",
        help="run the embedded sessions server (Livy, DLI and DLC APIs)",
        description="Run the embedded sessions server: Livy's, DLI's and DLC's sessions APIs, each session "
        "a driver process of its own with a real SparkSession. The kernels find it through STATE_DIR/"
        "server.json and start one themselves when none is running.",
        epilog="examples:\n  dli-kernel server --port 0\n  dli-kernel server --master spark://spark-master:"
        "7077 --driver-host 10.0.0.5\n  dli-kernel server --host 0.0.0.0 --users /srv/dli/users.json "
        "--certfile cert.pem --keyfile key.pem",
        formatter_class=FORMATTER,
    )
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=int, default=8998, help="port; 0 takes a free one (default 8998)")
    server.add_argument(
        "--state-dir",
        default=str(default_state_dir()),
        help="where server.json, the session store and logs go",
    )
    server.add_argument(
        "--master", default="local[*]", help="Spark master for session drivers (default local[*])"
    )
    server.add_argument(
        "--driver-host",
        metavar="ADDR",
        help="the address a cluster's executors reach the drivers at (default 127.0.0.1)",
    )
    server.add_argument(
        "--start-timeout",
        type=_count,
        metavar="SECONDS",
        help="how long a session may take to start, its cluster's first executor included (default 180)",
    )
    server.add_argument(
        "--keep-sessions",
        action="store_true",
        help="on exit, leave drivers running for the next server on this state dir to recover",
    )
    server.add_argument(
        "--pool",
        type=_pool_size,
        default=None,
        metavar="N",
        help="drivers started ahead, so a default session is ready at once (default 1 on a local master; "
        "0 on a cluster master, spark://, yarn or k8s://, where an idle pooled driver holds its executors)",
    )
    server.add_argument(
        "--share-driver",
        action="store_true",
        help="pyspark and sql sessions with the default Spark settings and no proxy user attach to one "
        "driver JVM per user instead of starting their own: ready in about a second, ~90 MB each (they "
        "share its heap, executors and Spark UI; not Scala)",
    )
    team = server.add_argument_group("a server a team shares")
    team.add_argument(
        "--users",
        metavar="FILE",
        help="a users file (dli-kernel users add ...): each user has their own token and sees only their own "
        "sessions; the token in server.json stays the operator's, an admin",
    )
    team.add_argument("--certfile", metavar="PEM", help="serve HTTPS with this certificate (chain)")
    team.add_argument("--keyfile", metavar="PEM", help="the certificate's private key, if not in --certfile")
    team.add_argument(
        "--max-sessions-per-user", type=_count, metavar="N", help="live sessions one user may hold"
    )
    team.add_argument("--max-starting", type=_count, metavar="N", help="sessions starting at once")
    team.add_argument(
        "--max-driver-memory",
        type=_memory_mb,
        metavar="SIZE",
        help="total driver memory of the live sessions, such as 64g",
    )
    team.add_argument(
        "--max-body", type=_byte_size, metavar="SIZE", help="bytes of a request body (default 64k)"
    )
    team.add_argument(
        "--max-statement-body",
        type=_byte_size,
        metavar="SIZE",
        help="bytes of a statement's or DLC action's body (default 10m)",
    )
    server.set_defaults(run=_server)

    _users_parser(commands)
    sessions_cli.add_parser(commands, FORMATTER)

    install = commands.add_parser(
        "install",
        help="install the PySpark, Spark and Spark SQL kernelspecs",
        description="Install the kernelspecs of the PySpark (DLI), Spark (DLI) and Spark SQL (DLI) kernels, "
        "which run this Python; by default where Jupyter looks for a system-wide install.",
        epilog="examples:\n  dli-kernel install --user\n  dli-kernel install --sys-prefix",
        formatter_class=FORMATTER,
    )
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for the current user only")
    where.add_argument("--sys-prefix", action="store_true", help="into this Python environment")
    where.add_argument("--prefix", help="under this prefix (PREFIX/share/jupyter/kernels)")
    install.set_defaults(run=_install)

    demo = commands.add_parser(
        "demo",
        help="run the quickstart notebook (shipped in the package) headless on a local Spark session",
        description="Run a notebook headless with the PySpark kernel on the embedded server and print what "
        "each cell showed; by default the quickstart notebook shipped in the package.",
        epilog="examples:\n  dli-kernel demo\n  dli-kernel demo --notebook my.ipynb --output "
        "/tmp/my.executed.ipynb",
        formatter_class=FORMATTER,
    )
    demo.add_argument("--notebook", help="another notebook to run (default: the quickstart)")
    demo.add_argument("--output", help="where the executed notebook goes (default: ./<name>.executed.ipynb)")
    demo.set_defaults(run=_demo)
    return parser


def _users_parser(commands: Any) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--state-dir",
        default=str(default_state_dir()),
        help="the server's state dir: where users.json is by default, and the secret DLC keys derive from",
    )
    where.add_argument("--users", metavar="FILE", help="the users file (default: STATE_DIR/users.json)")
    users = commands.add_parser(
        "users",
        help="the users of a server a team shares (dli-kernel server --users FILE)",
        description="The users of a server a team shares (dli-kernel server --users FILE). Each user has a "
        "name and a token; the file keeps only the token's SHA-256. A running server re-reads the file "
        "within a second: no restart.",
        epilog="examples:\n  dli-kernel users add alice --users /srv/dli/users.json\n  dli-kernel users "
        "list --users /srv/dli/users.json\n  dli-kernel users rotate alice --users /srv/dli/users.json",
        formatter_class=FORMATTER,
    )
    actions = users.add_subparsers(dest="users_command", metavar="COMMAND")

    add = actions.add_parser(
        "add",
        parents=[where],
        help="add a user and print their token, once",
        description="Add a user and print their token, once (the file keeps only its SHA-256).",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--admin", action="store_true", help="sees and manages every user's sessions")
    add.add_argument(
        "--max-sessions",
        type=_session_count,
        metavar="N",
        help="live sessions this user may hold (default: the server's --max-sessions-per-user)",
    )
    add.set_defaults(users_action=_users_add)
    for name, action, text in (
        ("remove", _users_remove, "remove a user: their token and DLC key stop working"),
        ("rotate", _users_rotate, "give a user a new token (printed once); the old one stops working"),
        ("dlc-key", _users_dlc_key, "print a user's DLC SecretId and SecretKey"),
    ):
        parser = actions.add_parser(
            name, parents=[where], help=text, description=text[0].upper() + text[1:] + "."
        )
        parser.add_argument("name", metavar="NAME")
        parser.set_defaults(users_action=action)
    listing = actions.add_parser(
        "list",
        parents=[where],
        help="names, roles and limits (never tokens)",
        description="The users' names, roles and session limits (never their tokens).",
    )
    listing.set_defaults(users_action=_users_list)
    users.set_defaults(run=_users, help_of=users)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run is None:  # no command: say what there is
        args.help_of.print_help()
        return 0
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return args.run(args)
