"""Find or start the user's embedded sessions server: the endpoint when none is configured.

One server serves all the kernels of a user. It lives in a state directory (by default
``<jupyter runtime dir>/dli-kernel``) where it writes ``server.json`` (url, token, pid) once it listens. A
kernel uses the server that file names if its pid is alive and it answers with its token; otherwise the
kernel starts ``dli-kernel server`` detached, under an exclusive lock so that kernels starting at once
share one server. Every wait here has a deadline and ends in a :class:`ConfigError` saying what happened.

With ``DLI_KERNEL_DIALECT=dlc`` (and no URL) the kernel speaks to the same server through DLC's actions,
signed (TC3-HMAC-SHA256) with the OS user name as the SecretId and the server's token as the SecretKey.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from jupyter_core.paths import jupyter_runtime_dir

from dli_kernel.client.auth import BearerToken
from dli_kernel.client.errors import ConfigError
from dli_kernel.client.tc3 import TencentTC3, tencent_credential
from dli_kernel.config import Endpoint, load_settings
from dli_kernel.processes import pid_alive, wait_or_kill
from dli_kernel.protocol import SERVER_FILE, SERVER_LOG

__all__ = ["START_LOCK", "STATE_DIR_NAME", "default_state_dir", "embedded_endpoint"]

STATE_DIR_NAME = "dli-kernel"  # the state dir's name inside the Jupyter runtime dir
# Only kernels take this lock (the server never does), so it is not a wire constant.
START_LOCK = "start.lock"
PROBE_TIMEOUT_S = 2.0
POLL_S = 0.05  # the first cell waits on these polls; each is a file read or a flock attempt
_SERVER_MODULES = ("uvicorn", "starlette", "pyspark")  # what `dli-kernel server` cannot run without
_LOG_TAIL_LINES = 20
EMBEDDED_DIALECTS = ("local", "dlc")
EMBEDDED_REGION = "local"  # DLC's X-TC-Region when none is configured: the embedded server ignores it


def default_state_dir() -> Path:
    """Where the user's embedded server keeps its state; kernels look for ``server.json`` here."""
    return Path(jupyter_runtime_dir()) / STATE_DIR_NAME


def _read_server_file(path: Path) -> dict[str, Any] | None:
    """``server.json``'s url, token and pid; None if missing, half-written or not one of ours."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (
        isinstance(info, dict)
        and isinstance(info.get("url"), str)
        and isinstance(info.get("token"), str)
        and isinstance(info.get("pid"), int)
        and not isinstance(info["pid"], bool)
        and info["pid"] > 0  # os.kill(0 or -n, ...) would signal a process group
    ):
        return None
    return info


def _endpoint(info: dict[str, Any]) -> Endpoint | None:
    try:
        auth = BearerToken(info["token"])
    except (TypeError, ValueError):
        return None
    return Endpoint(
        url=info["url"].rstrip("/"), dialect="local", auth=auth, embedded=True, ca_bundle=_ca_bundle()
    )


def _ca_bundle() -> str | None:
    """The configured CA file: a server run with --certfile on this state dir is verified with it."""
    try:
        return load_settings().ca_bundle
    except ConfigError:
        return None


def _answers(endpoint: Endpoint) -> bool:
    """Whether the server answers ``GET /version`` with its token within 2 s."""
    with requests.Session() as http:
        # Loopback without proxies: an HTTP_PROXY meant for the internet must not make a live server look
        # dead here, or every kernel would start another one.
        http.trust_env = False
        try:
            reply = http.get(
                f"{endpoint.url}/version",
                auth=endpoint.auth,
                timeout=PROBE_TIMEOUT_S,
                verify=endpoint.ca_bundle or True,
            )
        except requests.RequestException:
            return False
    return reply.status_code == 200


def _running_server(state_dir: Path) -> Endpoint | None:
    info = _read_server_file(state_dir / SERVER_FILE)
    if info is None or not pid_alive(info["pid"]):
        return None
    endpoint = _endpoint(info)
    return endpoint if endpoint is not None and _answers(endpoint) else None


@contextlib.contextmanager
def _start_lock(path: Path, deadline: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``: one kernel at a time checks for a server and starts one."""
    import fcntl  # POSIX only; imported here so that configuring a remote endpoint works everywhere

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited: the server must not hold the lock
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConfigError(
                        f"another process held {path} until the deadline while starting the embedded "
                        "server; try again, or remove the file if no dli-kernel process is running."
                    ) from None
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


def _log_tail(log_path: Path, offset: int) -> str:
    """The last non-blank lines written to ``log_path`` after ``offset``, or ``(nothing)``."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()][-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(nothing)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    wait_or_kill(process, timeout=10)


def _start_server(state_dir: Path, deadline: float, timeout: float) -> Endpoint:
    server_file = state_dir / SERVER_FILE
    log_path = state_dir / SERVER_LOG
    # Whatever server.json is there belongs to a server that is gone or does not answer.
    with contextlib.suppress(FileNotFoundError):
        server_file.unlink()
    command = [sys.executable, "-m", "dli_kernel", "server", "--port", "0", "--state-dir", str(state_dir)]
    if _share_driver():
        command.append("--share-driver")
    with open(log_path, "ab") as log:
        offset = log.tell()
        # Detached: its own session, so the signals that stop a kernel (Jupyter signals the kernel's whole
        # process group) do not reach it; it outlives the kernel and serves all kernels of the user.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=state_dir,  # does not pin the notebook's directory; drivers have their own work dirs
            start_new_session=True,
            close_fds=True,
        )
    try:
        while True:
            code = process.poll()
            if code is not None:
                shown = " ".join(["dli-kernel", *command[3:]])
                raise ConfigError(
                    f"the embedded server ({shown}) exited with code {code} before it was ready; "
                    f"the last lines of {log_path}:\n{_log_tail(log_path, offset)}"
                )
            info = _read_server_file(server_file)
            if info is not None and info["pid"] == process.pid:
                endpoint = _endpoint(info)
                if endpoint is not None and _answers(endpoint):
                    return endpoint
            if time.monotonic() >= deadline:
                _stop(process)
                raise ConfigError(
                    f"the embedded server did not become ready within {timeout:g} s, so it was stopped; "
                    f"the last lines of {log_path}:\n{_log_tail(log_path, offset)}"
                )
            time.sleep(POLL_S)
    finally:
        if process.returncode is None:
            # The kernel is its parent until the kernel exits: reap it when it ends, so no zombie remains.
            name = f"dli-kernel-server-{process.pid}"
            reaper = threading.Thread(target=process.wait, name=name, daemon=True)
            reaper.start()


def _share_driver() -> bool:
    """Whether the configuration asks the embedded server to share drivers (``share_driver``); a broken
    configuration is the kernel's to report when it loads the settings, so here it asks for nothing."""
    try:
        return load_settings().share_driver
    except ConfigError:
        return False


def _require_server_extra() -> None:
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"no endpoint is configured and the embedded server needs the server extra ({', '.join(missing)} "
            "missing): pip install 'dli-kernel[server]', or set DLI_KERNEL_URL to use Livy or DLI."
        )


def embedded_endpoint(
    state_dir: Path | None = None,
    start: bool = True,
    timeout: float = 60.0,
    dialect: str | None = None,
    region: str | None = None,
) -> Endpoint:
    """The user's embedded server: the running one of ``state_dir``, else (``start``) a new one, spoken
    to in ``dialect`` (``local``, or ``dlc``: DLC's signed actions in ``region``; None: as configured).

    ``state_dir`` defaults to :func:`default_state_dir`. A server is running when
    ``<state_dir>/server.json`` names a live pid whose URL answers ``GET /version`` with its token within
    2 s. A new one runs detached (it outlives the kernel and is shared by all kernels of the user), logs to
    ``<state_dir>/server.log``, and must write its ``server.json`` within ``timeout`` seconds. An exclusive
    lock on ``<state_dir>/start.lock`` makes kernels that start at once share one server.
    """
    if dialect is None:
        dialect, region = _configured_dialect(region)
    if dialect not in EMBEDDED_DIALECTS:
        raise ConfigError(f"the embedded server speaks {' or '.join(EMBEDDED_DIALECTS)} (got {dialect!r}).")
    state_dir = Path(state_dir if state_dir is not None else default_state_dir()).expanduser().resolve()
    endpoint = _find_or_start(state_dir, start, timeout)
    return _as_dlc(endpoint, state_dir, region) if dialect == "dlc" else endpoint


def _configured_dialect(region: str | None) -> tuple[str, str | None]:
    """The dialect and region the configuration gives the embedded server; errors are the kernel's to
    report when it loads the settings, so here they leave the plain dialect."""
    try:
        settings = load_settings()
    except ConfigError:
        return "local", region
    return settings.embedded_dialect, region or settings.region


def _as_dlc(endpoint: Endpoint, state_dir: Path, region: str | None) -> Endpoint:
    """The same server through DLC's actions: the SDK's credential with the server's token as SecretKey."""
    info = _read_server_file(state_dir / SERVER_FILE)
    if info is None or info["url"].rstrip("/") != endpoint.url:
        raise ConfigError(f"the embedded server of {state_dir} went away while the kernel connected to it.")
    token = info["token"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        user = ""
    secret_id = user if user and user.isascii() and user.isprintable() and " " not in user else "dli-kernel"
    auth = TencentTC3(tencent_credential(secret_id, token))
    return Endpoint(
        url=endpoint.url,
        dialect="dlc",
        region=region or EMBEDDED_REGION,
        auth=auth,
        embedded=True,
        ca_bundle=endpoint.ca_bundle,
    )


def _find_or_start(state_dir: Path, start: bool, timeout: float) -> Endpoint:
    deadline = time.monotonic() + timeout
    endpoint = _running_server(state_dir)
    if endpoint is not None:
        return endpoint
    if not start:
        raise ConfigError(
            f"no embedded server is running for {state_dir}: start one with "
            f"'dli-kernel server --port 0 --state-dir {state_dir}', or set DLI_KERNEL_URL."
        )
    _require_server_extra()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _start_lock(state_dir / START_LOCK, deadline):
        endpoint = _running_server(state_dir)  # another kernel may have started it while this one waited
        if endpoint is not None:
            return endpoint
        return _start_server(state_dir, deadline, timeout)
