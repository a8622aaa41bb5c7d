"""Where the kernel sends sessions and with what defaults: the one place that reads the configuration.

Sources, strongest first (field by field): the environment, then ``dli_kernel.json`` in the Jupyter config
directory, then built-in defaults. With no URL anywhere the endpoint is the user's embedded server, which
:func:`embedded_endpoint` finds (``server.json`` in its state directory) or starts, once for all kernels.

The config file is a JSON object::

    {
      "url": "https://dli.cn-north-4.myhuaweicloud.com", "dialect": "dli", "project_id": "0123abcd",
      "auth": "aksk", "ak": "...", "sk": "...",
      "headers": {"X-Requested-By": "me"},
      "session": {"cluster_name": "my_queue", "sc_type": "B", "driverMemory": "4 GB",
                  "conf": {"spark.sql.shuffle.partitions": "64"}, "heartbeatTimeoutInSecond": 300}
    }

``auth`` is one of bearer, iam, basic, aksk, none; without it the scheme follows from the credentials given
(see :func:`load_settings`). ``session`` takes the create-body field names of DLI or Livy (``cluster_name``
or ``queue``, ``driverMemory``, ``conf``, ...), parsed by :mod:`dli_kernel.spec`'s own field table.

Environment: ``DLI_KERNEL_URL``, ``DLI_KERNEL_DIALECT``, ``DLI_KERNEL_PROJECT_ID`` (else
``HUAWEICLOUD_SDK_PROJECT_ID``), ``DLI_KERNEL_CLUSTER``, ``DLI_KERNEL_TOKEN``, ``DLI_KERNEL_KIND``,
``DLI_KERNEL_SC_TYPE``, and the Huawei SDK's ``HUAWEICLOUD_SDK_AK``, ``HUAWEICLOUD_SDK_SK`` and
``HUAWEICLOUD_SDK_SECURITY_TOKEN`` (the names ``huaweicloudsdkcore``'s ``EnvCredentialProvider`` reads). An
empty variable counts as unset.

Every problem raises :class:`~dli_kernel.client.errors.ConfigError` with one sentence naming the file or
variable and what is accepted; no message ever holds a secret's value.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from jupyter_core.paths import jupyter_config_dir
from requests.auth import AuthBase, HTTPBasicAuth

from dli_kernel.client.auth import BearerToken, HuaweiAkSk, IamToken
from dli_kernel.client.dialects import DIALECTS
from dli_kernel.client.errors import ConfigError
from dli_kernel.client.sessions_client import SessionsClient, shown_url
from dli_kernel.processes import pid_alive
from dli_kernel.protocol import SERVER_FILE, SERVER_LOG
from dli_kernel.spec import SPEC_FIELDS, SessionSpec, SpecError, conf_from_dli, json_type, unknown_names

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_HEARTBEAT_S",
    "Endpoint",
    "Settings",
    "default_config_file",
    "embedded_endpoint",
    "load_settings",
]

CONFIG_FILE_NAME = "dli_kernel.json"
# A crashed kernel cannot delete its session; the server reaps it after this long without a request.
DEFAULT_HEARTBEAT_S = 120
DEFAULT_KIND = "pyspark"

AUTH_SCHEMES = ("bearer", "iam", "basic", "aksk", "none")
FILE_KEYS = (
    "url",
    "dialect",
    "project_id",
    "token",
    "auth",
    "username",
    "password",
    "ak",
    "sk",
    "security_token",
    "headers",
    "session",
)
# Setting -> the variables that give it, strongest first.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "url": ("DLI_KERNEL_URL",),
    "dialect": ("DLI_KERNEL_DIALECT",),
    "project_id": ("DLI_KERNEL_PROJECT_ID", "HUAWEICLOUD_SDK_PROJECT_ID"),
    "token": ("DLI_KERNEL_TOKEN",),
    "ak": ("HUAWEICLOUD_SDK_AK",),
    "sk": ("HUAWEICLOUD_SDK_SK",),
    "security_token": ("HUAWEICLOUD_SDK_SECURITY_TOKEN",),
}
# Session defaults the environment may override: spec attribute -> variable.
SESSION_ENV_VARS: dict[str, str] = {
    "kind": "DLI_KERNEL_KIND",
    "cluster_name": "DLI_KERNEL_CLUSTER",
    "sc_type": "DLI_KERNEL_SC_TYPE",
}

# Written by dli_kernel.server.serve (SERVER_FILE there; not imported, the server is an optional extra).
START_LOCK = "start.lock"
PROBE_TIMEOUT_S = 2.0
_SERVER_MODULES = ("uvicorn", "starlette", "pyspark")  # what `dli-kernel server` cannot run without
_LOG_TAIL_LINES = 20
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# -- the results ------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Endpoint:
    """A sessions API to send sessions to, with its credentials; its repr never shows a secret."""

    url: str
    dialect: str  # "livy" | "dli" | "local"
    project_id: str | None = None
    auth: AuthBase | None = None
    headers: dict[str, str] = field(default_factory=dict, hash=False)
    embedded: bool = False  # the user's embedded server

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ConfigError(f"dialect must be one of {', '.join(DIALECTS)} (got {self.dialect!r}).")
        object.__setattr__(self, "headers", dict(self.headers))  # the caller's dict cannot change it

    def __repr__(self) -> str:
        # Header values are hidden too: a custom header may well carry an API key.
        headers = {name: "***" for name in self.headers}
        return (
            f"Endpoint(url={shown_url(self.url)!r}, dialect={self.dialect!r}, "
            f"project_id={self.project_id!r}, auth={self.auth!r}, headers={headers!r}, "
            f"embedded={self.embedded!r})"
        )

    __str__ = __repr__

    def client(self, **kwargs: Any) -> SessionsClient:
        """A new :class:`SessionsClient` for this endpoint; ``kwargs`` go to its constructor (timeout...)."""
        return SessionsClient(
            self.url,
            self.dialect,
            project_id=self.project_id,
            auth=self.auth,
            headers=dict(self.headers),
            **kwargs,
        )


@dataclass(frozen=True)
class Settings:
    endpoint: Endpoint | None  # None: the embedded server, found or started by embedded_endpoint()
    defaults: SessionSpec  # default session settings
    source: str  # which file and variables the values came from (names only, never values)


class _BasicAuth(HTTPBasicAuth):
    """``requests``' HTTP Basic auth with a repr that hides the password."""

    def __repr__(self) -> str:
        return f"HTTPBasicAuth(username={self.username!r}, password=***)"

    __str__ = __repr__


# -- reading the sources ----------------------------------------------------------------------------


def default_config_file() -> Path:
    """``dli_kernel.json`` in the Jupyter config directory (``~/.jupyter``, or ``$JUPYTER_CONFIG_DIR``)."""
    return Path(jupyter_config_dir()) / CONFIG_FILE_NAME


def _read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings; a missing (or blank) file holds none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text, which a JSON config file must be.") from None
    except OSError as err:
        raise ConfigError(f"{path} cannot be read: {err.strerror or type(err).__name__}.") from None
    if not text.strip():
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        # err.msg never quotes the document, so a secret next to the mistake stays out of the message.
        raise ConfigError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}."
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(
            f'{path} must hold a JSON object such as {{"url": "http://livy:8998"}} (got {json_type(values)}).'
        )
    unknown = sorted(str(key) for key in values if key not in FILE_KEYS)
    if unknown:
        raise ConfigError(f"{path} has {unknown_names(unknown, FILE_KEYS, 'key')}.")
    return values


class _Sources:
    """The environment over the config file, remembering which settings were used (for ``source``)."""

    def __init__(self, path: Path, file_values: dict[str, Any], env: Mapping[str, str]) -> None:
        self.path = path
        self.file_values = file_values
        self.env = env
        self.used_vars: list[str] = []
        self.used_keys: list[str] = []

    def env_value(self, var: str) -> str | None:
        value = self.env.get(var)
        if value is None or not value.strip():
            return None
        if var not in self.used_vars:
            self.used_vars.append(var)
        return value.strip()

    def file_value(self, key: str) -> Any:
        value = self.file_values.get(key)
        if value is not None and key not in self.used_keys:
            self.used_keys.append(key)
        return value

    def get(self, key: str) -> tuple[Any, str] | None:
        """The value of setting ``key`` and where it came from (what an error names), or None."""
        for var in ENV_VARS.get(key, ()):
            value = self.env_value(var)
            if value is not None:
                return value, var
        value = self.file_value(key)
        return None if value is None else (value, f"{self.path}: {key}")

    def names(self, key: str) -> str:
        """Where ``key`` can be set, for a message: ``DLI_KERNEL_TOKEN or token in /path/dli_kernel.json``."""
        return " or ".join([*ENV_VARS.get(key, ()), f"{key} in {self.path}"])

    def describe(self) -> str:
        parts = []
        if self.used_vars:
            parts.append(f"environment ({', '.join(self.used_vars)})")
        if self.used_keys:
            parts.append(f"{self.path} ({', '.join(self.used_keys)})")
        if not parts:
            state = "is empty" if self.path.exists() else "does not exist"
            return f"built-in defaults ({self.path} {state} and no DLI_KERNEL_* variable is set)"
        return "; ".join(parts) + " over built-in defaults"


# -- checks: each names where the value came from; a secret's value is never shown -------------------


def _check_choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    choice = value.strip().lower() if isinstance(value, str) else None
    if choice in choices:
        return choice
    raise ConfigError(f"{where} must be one of {', '.join(choices)} (got {value!r}).")


def _check_url(value: object, where: str) -> str:
    url = value.strip().rstrip("/") if isinstance(value, str) else ""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        valid = valid and not parts.query and not parts.fragment
    except ValueError:  # a bad port or IPv6 literal
        valid = False
    if valid:
        return url
    got = repr(shown_url(value)) if isinstance(value, str) else json_type(value)
    raise ConfigError(
        f"{where} must be an http:// or https:// URL without a query, such as http://livy.example.com:8998 "
        f"(got {got})."
    )


def _check_project_id(value: object, where: str) -> str:
    if isinstance(value, str) and _PROJECT_ID.fullmatch(value):
        return value
    raise ConfigError(
        f"{where} must be a project id made of letters, digits, '.', '_' and '-' (got {value!r})."
    )


def _check_secret(value: object, where: str) -> str:
    """A token or key that goes into a header as it is: printable ASCII without spaces."""
    if isinstance(value, str) and value and value.isascii() and value.isprintable() and " " not in value:
        return value
    raise ConfigError(
        f"{where} must be a non-empty string of printable ASCII characters without spaces "
        "(its value is not shown)."
    )


def _check_basic(value: object, where: str, secret: bool) -> str:
    """A Basic auth user name or password: requests sends it as Latin-1, so it must be Latin-1."""
    try:
        if isinstance(value, str) and value and value.encode("latin-1"):
            return value
    except UnicodeEncodeError:
        pass
    shown = "its value is not shown" if secret else f"got {value!r}"
    raise ConfigError(
        f"{where} must be a non-empty string of Latin-1 characters, as HTTP Basic auth sends them ({shown})."
    )


def _check_headers(value: object, where: str) -> dict[str, str]:
    if isinstance(value, dict) and all(
        isinstance(name, str) and name.strip() and isinstance(text, str) for name, text in value.items()
    ):
        return dict(value)
    # Values are not shown: custom headers often carry API keys.
    raise ConfigError(
        f'{where} must be an object mapping header names to string values, such as {{"X-Requested-By": '
        f'"me"}} (values are not shown).'
    )


# -- the endpoint -----------------------------------------------------------------------------------


def _required(src: _Sources, key: str, why: str) -> tuple[Any, str]:
    found = src.get(key)
    if found is None:
        raise ConfigError(f"{why} needs {key.replace('_', ' ')}: set {src.names(key)}.")
    return found


def _aksk(src: _Sources, why: str, project_id: str | None) -> HuaweiAkSk:
    ak = _check_secret(*_required(src, "ak", why))
    sk = _check_secret(*_required(src, "sk", why))
    token = src.get("security_token")
    security_token = None if token is None else _check_secret(*token)
    return HuaweiAkSk(ak, sk, project_id, security_token)


def _basic(src: _Sources, why: str) -> HTTPBasicAuth:
    username = _check_basic(*_required(src, "username", why), secret=False)
    password = _check_basic(*_required(src, "password", why), secret=True)
    return _BasicAuth(username, password)


def _auth(src: _Sources, dialect: str, project_id: str | None) -> AuthBase | None:
    explicit = src.get("auth")
    if explicit is not None:
        scheme = _check_choice(*explicit, AUTH_SCHEMES)
        why = f"auth {scheme!r} in {src.path}"
        if scheme in ("bearer", "iam"):
            token = _check_secret(*_required(src, "token", why))
            return BearerToken(token) if scheme == "bearer" else IamToken(token)
        if scheme == "basic":
            return _basic(src, why)
        if scheme == "aksk":
            return _aksk(src, why, project_id)
        return None
    # Inferred from the credentials given. AK/SK are read only for DLI: the SDK's variables are often set
    # for other tools and must not turn a Livy endpoint's requests into signed ones.
    if dialect == "dli":
        has_ak, has_sk = src.get("ak") is not None, src.get("sk") is not None
        if has_ak or has_sk:
            return _aksk(src, "AK/SK signing (one of the keys is set)", project_id)
    token = src.get("token")
    if token is not None:
        value = _check_secret(*token)
        return IamToken(value) if dialect == "dli" else BearerToken(value)
    if src.get("username") is not None or src.get("password") is not None:
        return _basic(src, "HTTP Basic auth (a user name or password is set)")
    return None


def _endpoint(src: _Sources) -> Endpoint | None:
    found = src.get("dialect")
    dialect = None if found is None else _check_choice(*found, DIALECTS)
    url = src.get("url")
    if url is None:
        if dialect not in (None, "local"):
            raise ConfigError(
                f"{found[1]} is {dialect!r} but no URL is set: set {src.names('url')}, or remove the "
                "dialect to use the embedded server."
            )
        return None  # the embedded server
    url_value = _check_url(*url)
    dialect = dialect or "livy"

    project_id = None
    # The project id is part of DLI's paths, and AK/SK signing sends it (X-Project-Id) wherever it is set.
    signs = str(src.file_values.get("auth", "")).strip().lower() == "aksk"
    found_project = src.get("project_id") if dialect == "dli" or signs else None
    if found_project is not None:
        project_id = _check_project_id(*found_project)
    elif dialect == "dli":
        raise ConfigError(f"dialect dli needs a project id: set {src.names('project_id')}.")

    headers = src.get("headers")
    return Endpoint(
        url=url_value,
        dialect=dialect,
        project_id=project_id,
        auth=_auth(src, dialect, project_id),
        headers={} if headers is None else _check_headers(*headers),
    )


# -- session defaults -------------------------------------------------------------------------------


def _spec_fields() -> dict[str, Any]:
    """spec's field table by wire name, DLI's and Livy's (``cluster_name`` and ``queue`` both work)."""
    by_name: dict[str, Any] = {}
    for spec_field in SPEC_FIELDS:
        for wire in (spec_field.dli, spec_field.livy):
            if wire:
                by_name.setdefault(wire, spec_field)
    return by_name


def _conf_problem(value: object) -> str:
    """What is wrong with a conf value, without showing any setting's value (conf often holds keys)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                return "a setting name is empty"
            if not isinstance(item, str | int | float | bool):
                return f"{key!r} is {json_type(item)}"
    return f"got {json_type(value)}"


def _session_values(session: object, path: Path) -> dict[str, Any]:
    where = f"{path}: session"
    if not isinstance(session, dict):
        raise ConfigError(
            f'{where} must be a JSON object of session fields such as {{"sc_type": "B"}} '
            f"(got {json_type(session)})."
        )
    by_name = _spec_fields()
    unknown = sorted(str(key) for key in session if key not in by_name)
    if unknown:
        raise ConfigError(f"{where} has {unknown_names(unknown, sorted(by_name))}.")
    values: dict[str, Any] = {}
    wire_of: dict[str, str] = {}
    for wire, value in session.items():
        if value is None:
            continue  # null means not given, as in a create body
        spec_field = by_name[wire]
        label = f"session.{wire}"
        if spec_field.attr in wire_of:
            raise ConfigError(
                f"{path}: session.{wire_of[spec_field.attr]} and {label} are the same setting; give one."
            )
        wire_of[spec_field.attr] = wire
        try:
            if spec_field.attr == "conf":
                value = conf_from_dli(value, label)
            if spec_field.parse:
                value = spec_field.parse(value, label)
            values[spec_field.attr] = spec_field.check(value, label)
        except SpecError as err:
            if spec_field.attr == "conf":
                raise ConfigError(
                    f"{path}: {label} must be an object mapping setting names to strings, numbers or "
                    f'booleans, or a list of {{"key": name, "value": value}} objects '
                    f"({_conf_problem(value)})."
                ) from None
            raise ConfigError(f"{path}: {err}") from None
    return values


def _defaults(src: _Sources) -> SessionSpec:
    values: dict[str, Any] = {"kind": DEFAULT_KIND, "heartbeat_timeout_s": DEFAULT_HEARTBEAT_S}
    session = src.file_value("session")
    if session is not None:
        values.update(_session_values(session, src.path))
    checks = {spec_field.attr: spec_field.check for spec_field in SPEC_FIELDS}
    for attr, var in SESSION_ENV_VARS.items():
        value = src.env_value(var)
        if value is not None:
            try:
                values[attr] = checks[attr](value, var)
            except SpecError as err:
                raise ConfigError(str(err)) from None
    try:
        return SessionSpec(**values)
    except SpecError as err:  # every field was checked above; this is only a safety net
        raise ConfigError(f"{src.path}: session: {err}") from None


def load_settings(env: Mapping[str, str] | None = None, config_file: Path | None = None) -> Settings:
    """The endpoint and session defaults from the environment over the config file.

    ``env`` defaults to ``os.environ``, ``config_file`` to :func:`default_config_file`; a missing file is
    an empty one. No URL anywhere gives ``endpoint=None``: the embedded server. A URL without a dialect
    is Livy. Without an explicit ``auth`` the scheme follows from the credentials: on DLI, AK and SK sign
    requests (``HuaweiAkSk``) and else a token is an IAM token (``X-Auth-Token``); elsewhere a token is a
    bearer token; a user name and password are HTTP Basic; nothing is no auth. Session defaults are kind
    pyspark with a 120 s heartbeat unless the file's ``session`` or the environment say otherwise.
    """
    path = Path(config_file) if config_file is not None else default_config_file()
    src = _Sources(path, _read_config_file(path), os.environ if env is None else env)
    endpoint = _endpoint(src)
    defaults = _defaults(src)
    return Settings(endpoint=endpoint, defaults=defaults, source=src.describe())


# -- the embedded server ----------------------------------------------------------------------------


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


def _embedded(info: dict[str, Any]) -> Endpoint | None:
    try:
        auth = BearerToken(info["token"])
    except (TypeError, ValueError):
        return None
    return Endpoint(url=info["url"].rstrip("/"), dialect="local", auth=auth, embedded=True)


def _answers(endpoint: Endpoint) -> bool:
    """Whether the server answers ``GET /version`` with its token within 2 s."""
    with requests.Session() as http:
        # Loopback without proxies: an HTTP_PROXY meant for the internet must not make a live server look
        # dead here, or every kernel would start another one.
        http.trust_env = False
        try:
            reply = http.get(f"{endpoint.url}/version", auth=endpoint.auth, timeout=PROBE_TIMEOUT_S)
        except requests.RequestException:
            return False
    return reply.status_code == 200


def _running_server(state_dir: Path) -> Endpoint | None:
    info = _read_server_file(state_dir / SERVER_FILE)
    if info is None or not pid_alive(info["pid"]):
        return None
    endpoint = _embedded(info)
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
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _log_tail(log_path: Path, offset: int) -> str:
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()][-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(nothing)"


def _start_server(state_dir: Path, deadline: float, timeout: float) -> Endpoint:
    server_file = state_dir / SERVER_FILE
    log_path = state_dir / SERVER_LOG
    # Whatever server.json is there belongs to a server that is gone or does not answer.
    with contextlib.suppress(FileNotFoundError):
        server_file.unlink()
    command = [sys.executable, "-m", "dli_kernel", "server", "--port", "0", "--state-dir", str(state_dir)]
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
                endpoint = _embedded(info)
                if endpoint is not None and _answers(endpoint):
                    return endpoint
            if time.monotonic() >= deadline:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                raise ConfigError(
                    f"the embedded server did not become ready within {timeout:g} s, so it was stopped; "
                    f"the last lines of {log_path}:\n{_log_tail(log_path, offset)}"
                )
            time.sleep(0.05)
    finally:
        if process.returncode is None:
            # The kernel is its parent until the kernel exits: reap it when it ends, so no zombie remains.
            name = f"dli-kernel-server-{process.pid}"
            reaper = threading.Thread(target=process.wait, name=name, daemon=True)
            reaper.start()


def _require_server_extra() -> None:
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"no endpoint is configured and the embedded server needs the server extra ({', '.join(missing)} "
            "missing): pip install 'dli-kernel[server]', or set DLI_KERNEL_URL to use Livy or DLI."
        )


def embedded_endpoint(state_dir: Path | None = None, start: bool = True, timeout: float = 60.0) -> Endpoint:
    """The user's embedded server: the running one of ``state_dir``, else (``start``) a new one.

    A server is running when ``<state_dir>/server.json`` names a live pid whose URL answers ``GET
    /version`` with its token within 2 s. A new one runs detached (it outlives the kernel and is shared
    by all kernels of the user), logs to ``<state_dir>/server.log``, and must write its ``server.json``
    within ``timeout`` seconds. An exclusive lock on ``<state_dir>/start.lock`` makes kernels that start
    at once share one server.
    """
    if state_dir is None:
        from dli_kernel.cli import default_state_dir  # here: the CLI may come to import this module

        state_dir = default_state_dir()
    state_dir = Path(state_dir).expanduser().resolve()
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
