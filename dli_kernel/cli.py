"""The ``dli-kernel`` command: ``server`` runs the embedded sessions server, ``demo`` shows it working."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from jupyter_core.paths import jupyter_runtime_dir


def default_state_dir() -> Path:
    """Where the user's embedded server keeps its state; kernels look for ``server.json`` here."""
    return Path(jupyter_runtime_dir()) / "dli-kernel"


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
    """Start a private server, run Python and SQL statements on a real Spark session, print the results."""
    with tempfile.TemporaryDirectory(prefix="dli-kernel-demo-") as state_dir:
        server = subprocess.Popen(
            [sys.executable, "-m", "dli_kernel", "server", "--port", "0", "--state-dir", state_dir],
            stdout=subprocess.DEVNULL,
        )
        try:
            info = _wait_for_server_file(Path(state_dir) / "server.json", server)
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {info['token']}"
            url = info["url"]
            started = time.monotonic()
            session = http.post(
                f"{url}/sessions", json={"kind": "pyspark", "name": "demo"}, timeout=10
            ).json()
            print(f"session {session['id']} created; waiting for Spark to start...", flush=True)
            cells = [
                (
                    "pyspark",
                    "df = spark.range(1, 6).selectExpr('id', 'id * id AS square')\n"
                    "df.createOrReplaceTempView('squares')\ndf.count()",
                ),
                ("pyspark", "print(spark.version)"),
                ("sql", "SELECT id, square FROM squares WHERE id > 2 ORDER BY id"),
            ]
            for kind, code in cells:
                statement = http.post(
                    f"{url}/sessions/{session['id']}/statements",
                    json={"code": code, "kind": kind},
                    timeout=10,
                ).json()
                while statement["state"] in ("waiting", "running"):
                    time.sleep(0.1)
                    statement = http.get(
                        f"{url}/sessions/{session['id']}/statements/{statement['id']}", timeout=10
                    ).json()
                print(f"\n[{kind}] {code}\n{_show(statement['output'])}", flush=True)
            print(f"\nall statements done {time.monotonic() - started:.1f} s after the session was created.")
            http.delete(f"{url}/sessions/{session['id']}", timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return 0


def _show(output: dict) -> str:
    """A statement's output as a person reads it: text, a table, or the error."""
    if output["status"] == "error":
        return f"error: {output['ename']}: {output['evalue']}"
    table = output["data"].get("application/json")
    if table and "schema" in table:
        names = [field["name"] for field in table["schema"]["fields"]]
        rows = [names, *[[str(value) for value in row] for row in table["data"]]]
        widths = [max(len(row[i]) for row in rows) for i in range(len(names))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        return "\n".join(lines + [f"({table['total']} rows)"])
    return output["data"].get("text/plain", "")


def _wait_for_server_file(path: Path, server: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode} before it was ready.")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise SystemExit(f"the server did not write {path} within {timeout:.0f} s.")


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

    demo = commands.add_parser("demo", help="run Python and SQL statements on a real local Spark session")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return args.run(args)
