"""Run the embedded server: bind, write ``server.json``, serve until SIGTERM/SIGINT, clean up."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from dli_kernel.protocol import SERVER_FILE, SERVER_TOKEN_ENV, SESSIONS_DB
from dli_kernel.server.app import create_app
from dli_kernel.server.longpoll import prepare_held_requests, release_held_requests
from dli_kernel.server.manager import ServerSettings, SessionManager
from dli_kernel.server.store import Store

DEFAULT_POOL = 1
# Kernels send a heartbeat every 30 s and cells at any time: keep their connection open in between, so a
# cell after a pause does not pay for a new one (uvicorn's default closes it after 5 s).
KEEP_ALIVE = 75
log = logging.getLogger("dli_kernel.server")


class ServerConfigError(Exception):
    """The server cannot start as configured; the message says what to change."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: it holds the token."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode on O_TRUNC
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _remove_if_ours(server_file: Path) -> None:
    """A newer server may have replaced this one's file; that one stays."""
    try:
        if json.loads(server_file.read_text()).get("pid") == os.getpid():
            server_file.unlink()
    except (OSError, ValueError):
        pass


def serve(
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8998,
    master: str = "local[*]",
    keep_sessions_on_exit: bool = False,
    announce: bool = True,
    pool: int = DEFAULT_POOL,
) -> None:
    """Serve until SIGTERM/SIGINT. ``pool`` drivers are started ahead for sessions with the default spec."""
    if pool < 0:
        raise ServerConfigError(f"the pool size must be 0 (no pool) or more (got {pool}).")
    token = os.environ.get(SERVER_TOKEN_ENV, "")
    if not is_loopback(host) and not token:
        raise ServerConfigError(
            f"refusing to listen on {host}, which is not a loopback address, without a token of your own: "
            f"set {SERVER_TOKEN_ENV} to a long random secret first."
        )
    token = token or secrets.token_urlsafe(32)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. Without it a response's header and body writes wait out the
    # client's delayed ACK: about 40 ms on every request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ServerConfigError(f"cannot listen on {host}:{port}: {err.strerror}.") from None
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown_host}:{bound_port}"

    manager = SessionManager(
        ServerSettings(
            state_dir=state_dir, master=master, keep_sessions_on_exit=keep_sessions_on_exit, pool_size=pool
        ),
        Store(state_dir / SESSIONS_DB),
    )
    server_file = state_dir / SERVER_FILE

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        prepare_held_requests(app)
        manager.start()
        _write_private(
            server_file,
            json.dumps({"url": url, "token": token, "pid": os.getpid(), "state_dir": str(state_dir)}),
        )
        if announce:
            print(f"dli-kernel server listening on {url} (token in {server_file})", flush=True)
        try:
            yield
        finally:
            _remove_if_ours(server_file)
            manager.close()

    app = create_app(manager, token, url, lifespan=lifespan)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=10, timeout_keep_alive=KEEP_ALIVE
    )
    _Server(config, app).run(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn waits for requests in flight before it stops; long-polls are told to answer at once."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        release_held_requests(self._app)
        super().handle_exit(sig, frame)
