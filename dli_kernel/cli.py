"""The ``dli-kernel`` command: ``server`` runs the embedded sessions server, ``demo`` shows it working."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dli_kernel.embedded import default_state_dir


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
        )
    except ServerConfigError as err:
        print(f"dli-kernel server: {err}", file=sys.stderr)
        return 2
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dli-kernel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run the embedded sessions server (Livy and DLI paths)")
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
        "--keep-sessions",
        action="store_true",
        help="on exit, leave drivers running for the next server on this state dir to recover",
    )
    server.add_argument(
        "--pool",
        type=int,
        default=1,
        metavar="N",
        help="drivers started ahead, so a default session is ready at once (default 1, 0: none)",
    )
    server.set_defaults(run=_server)

    install = commands.add_parser("install", help="install the PySpark, Spark and Spark SQL kernelspecs")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for the current user only")
    where.add_argument("--sys-prefix", action="store_true", help="into this Python environment")
    where.add_argument("--prefix", help="under this prefix (PREFIX/share/jupyter/kernels)")
    install.set_defaults(run=_install)

    demo = commands.add_parser(
        "demo",
        help="run the quickstart notebook (shipped in the package) headless on a local Spark session",
    )
    demo.add_argument("--notebook", help="another notebook to run (default: the quickstart)")
    demo.add_argument("--output", help="where the executed notebook goes (default: ./<name>.executed.ipynb)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return args.run(args)
