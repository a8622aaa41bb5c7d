"""Run the embedded server: bind, write ``server.json``, serve until SIGTERM/SIGINT, clean up."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from dli_kernel.protocol import DLC_SECRET_FILE, SERVER_FILE, SERVER_TOKEN_ENV, SESSIONS_DB
from dli_kernel.server import cds
from dli_kernel.server.app import create_app
from dli_kernel.server.longpoll import prepare_held_requests, release_held_requests
from dli_kernel.server.manager import ServerSettings, SessionManager
from dli_kernel.server.principal import operator_name
from dli_kernel.server.spark_conf import is_local
from dli_kernel.server.store import Store
from dli_kernel.server.users import SingleToken, UsersFile, UsersFileError, dlc_secret

DEFAULT_POOL = 1  # on a local master; none on a cluster (default_pool)
# A token that opens the server beyond loopback is at least this long: secrets.token_urlsafe(32) is 43.
MIN_TOKEN_CHARS = 32
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


def default_pool(master: str) -> int:
    """One warm driver on a local master; none on a cluster, where an idle pooled driver would hold its
    executors (and the cluster's cores and memory) while it waits."""
    return DEFAULT_POOL if is_local(master) else 0


def _check_token(token: str, host: str, users_file: Path | None) -> None:
    if is_loopback(host):
        return
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ServerConfigError(
            f"refusing to listen on {host}, which is not a loopback address, with a {SERVER_TOKEN_ENV} of "
            f"{len(token)} characters: use at least {MIN_TOKEN_CHARS} random ones (python -c 'import "
            "secrets; print(secrets.token_urlsafe(32))')."
        )
    if not token and users_file is None:
        raise ServerConfigError(
            f"refusing to listen on {host}, which is not a loopback address, without a token of your own "
            f"or a users file: set {SERVER_TOKEN_ENV} to a long random secret, or give --users FILE."
        )


def _check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """Load the pair now, so a wrong one is one sentence before anything starts, not a traceback later."""
    if certfile is None:
        if keyfile is not None:
            raise ServerConfigError("--keyfile needs --certfile, the certificate the key belongs to.")
        return

    def no_password() -> str:
        raise ServerConfigError(
            f"the private key for {certfile} is encrypted; give --keyfile an unencrypted key (mode 0600)."
        )

    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is not None and not path.is_file():
            raise ServerConfigError(f"{flag}: there is no file at {path}.")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile, password=no_password)
    except (ssl.SSLError, OSError) as err:
        named = f"{certfile} and {keyfile} are" if keyfile is not None else f"{certfile} is"
        reason = getattr(err, "reason", None) or (None if isinstance(err, ssl.SSLError) else err.strerror)
        raise ServerConfigError(
            f"{named} not a PEM certificate and the private key that goes with it"
            + (f" ({reason})." if reason else ".")
        ) from None


def _team(users_file: Path, operator: SingleToken, state_dir: Path | None) -> UsersFile:
    """The users of ``users_file`` besides the operator; with ``state_dir``, with their DLC keys (the
    secret they derive from is made there on first need)."""
    try:
        secret = None if state_dir is None else dlc_secret(state_dir / DLC_SECRET_FILE)
        return UsersFile(users_file, operator=operator, dlc_secret=secret)
    except UsersFileError as err:
        raise ServerConfigError(str(err)) from None


def serve(
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8998,
    master: str = "local[*]",
    keep_sessions_on_exit: bool = False,
    announce: bool = True,
    pool: int | None = None,
    *,
    users_file: Path | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    driver_host: str | None = None,
    start_timeout: float | None = None,
    max_sessions_per_user: int | None = None,
    max_starting: int | None = None,
    max_driver_memory_mb: int | None = None,
    max_body: int | None = None,
    max_statement_body: int | None = None,
    share_driver: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT. ``pool`` drivers are started ahead for sessions with the default spec
    (None: one on a local master, none on a cluster). ``users_file``: a team's users besides the operator
    (whose token is server.json's). ``certfile``/``keyfile``: serve HTTPS. ``share_driver``: sessions of
    the default spec attach to one driver per owner (shared_host). The rest are ServerSettings'."""
    pool = default_pool(master) if pool is None else pool
    if pool < 0:
        raise ServerConfigError(f"the pool size must be 0 (no pool) or more (got {pool}).")
    token = os.environ.get(SERVER_TOKEN_ENV, "")
    _check_token(token, host, users_file)
    _check_tls(certfile, keyfile)
    token = token or secrets.token_urlsafe(32)
    operator = SingleToken(token, operator_name())
    if users_file is not None:
        _team(users_file, operator, None)  # a bad file is refused before anything is made
    if not is_loopback(host) and certfile is None:
        log.warning(
            "serving on %s, beyond loopback, without TLS: tokens, code and results cross the network in "
            "clear text; give --certfile and --keyfile.",
            host,
        )
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    team = None if users_file is None else _team(users_file, operator, state_dir)

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
    url = f"{'https' if certfile else 'http'}://{shown_host}:{bound_port}"

    limits: dict[str, Any] = {
        "driver_host": driver_host,
        "start_timeout": start_timeout,
        "max_sessions_per_user": max_sessions_per_user,
        "max_starting": max_starting,
        "max_driver_memory_mb": max_driver_memory_mb,
        "max_body": max_body,
        "max_statement_body": max_statement_body,
    }
    # Decided once: every driver of this server maps the archive, or none does (built later if missing).
    class_archive = cds.prepare()
    manager = SessionManager(
        ServerSettings(
            state_dir=state_dir,
            master=master,
            keep_sessions_on_exit=keep_sessions_on_exit,
            pool_size=pool,
            cds_archive=class_archive.path,
            share_driver=share_driver,
            **{name: value for name, value in limits.items() if value is not None},
        ),
        Store(state_dir / SESSIONS_DB),
    )
    server_file = state_dir / SERVER_FILE

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        prepare_held_requests(app)
        manager.start()
        class_archive.start()
        _write_private(
            server_file,
            json.dumps({"url": url, "token": token, "pid": os.getpid(), "state_dir": str(state_dir)}),
        )
        if announce:
            team_note = f"; users from {users_file} ({len(team.users)} now)" if team is not None else ""
            print(f"dli-kernel server listening on {url} (token in {server_file}{team_note})", flush=True)
        try:
            yield
        finally:
            _remove_if_ours(server_file)
            manager.close()
            class_archive.close()

    app = create_app(manager, token, url, lifespan=lifespan, users=team or operator)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE,
        ssl_certfile=None if certfile is None else str(certfile),
        ssl_keyfile=None if keyfile is None else str(keyfile),
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
