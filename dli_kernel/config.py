"""Where the kernel sends sessions and with what defaults: the one place that reads the configuration.

Sources, strongest first (field by field): the environment, then ``dli_kernel.json`` in the Jupyter config
directory, then built-in defaults. With no URL anywhere the endpoint is None: the user's embedded server,
which :mod:`dli_kernel.embedded` finds or starts (this module never starts anything).

The config file is a JSON object::

    {
      "url": "https://dli.cn-north-4.myhuaweicloud.com", "dialect": "dli", "project_id": "0123abcd",
      "auth": "aksk", "ak": "...", "sk": "...",
      "headers": {"X-Requested-By": "me"},
      "session": {"cluster_name": "my_queue", "sc_type": "B", "driverMemory": "4 GB",
                  "conf": {"spark.sql.shuffle.partitions": "64"}, "heartbeatTimeoutInSecond": 300}
    }

``auth`` is one of bearer, iam, basic, aksk, tc3, none; without it the scheme follows from the credentials
given (see :func:`load_settings`). ``session`` takes the create-body field names of DLI or Livy
(``cluster_name`` or ``queue``, ``driverMemory``, ``conf``, ...), parsed by :mod:`dli_kernel.spec`'s own field
table.

Environment: ``DLI_KERNEL_URL``, ``DLI_KERNEL_DIALECT``, ``DLI_KERNEL_PROJECT_ID`` (else
``HUAWEICLOUD_SDK_PROJECT_ID``), ``DLI_KERNEL_CLUSTER``, ``DLI_KERNEL_TOKEN``, ``DLI_KERNEL_KIND``,
``DLI_KERNEL_SC_TYPE``, and the Huawei SDK's ``HUAWEICLOUD_SDK_AK``, ``HUAWEICLOUD_SDK_SK`` and
``HUAWEICLOUD_SDK_SECURITY_TOKEN`` (the names ``huaweicloudsdkcore``'s ``EnvCredentialProvider`` reads). An
empty variable counts as unset.

Tencent Cloud DLC (``"dialect": "dlc"``): ``region`` (``DLI_KERNEL_REGION``) is required with a URL, such as
``https://dlc.tencentcloudapi.com``; requests are signed (TC3-HMAC-SHA256) with ``secret_id``,
``secret_key`` and optional ``session_token``, or the variables Tencent's SDK reads:
``TENCENTCLOUD_SECRET_ID``, ``TENCENTCLOUD_SECRET_KEY``, ``TENCENTCLOUD_SESSION_TOKEN``; without them, the
SDK's profile file ``~/.tencentcloud/credentials``. The dlc dialect with no URL is the embedded server spoken
to through DLC's actions, signed with the server's token as the SecretKey.

How much of a session's log a cell shows while its statement runs: ``log_level`` (``DLI_KERNEL_LOG_LEVEL``),
one of quiet, warn (the default), info, all (see :mod:`dli_kernel.kernel.spark_log`).

The embedded server a kernel starts shares drivers (``dli-kernel server --share-driver``) with
``"share_driver": true`` (``DLI_KERNEL_SHARE_DRIVER=1``); a server already running keeps how it was started.

An ``https://`` server's certificate is always verified: against ``ca_bundle`` (``DLI_KERNEL_CA_BUNDLE``),
the CA file that signed it, where one is set; else against the system's CAs.

Every problem raises :class:`~dli_kernel.client.errors.ConfigError` with one sentence naming the file or
variable and what is accepted; no message ever holds a secret's value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_config_dir
from requests.auth import AuthBase, HTTPBasicAuth

from dli_kernel.client.auth import BearerToken, HuaweiAkSk, IamToken
from dli_kernel.client.checks import (
    check_basic,
    check_ca_bundle,
    check_choice,
    check_headers,
    check_project_id,
    check_region,
    check_secret,
    check_url,
)
from dli_kernel.client.dialects import DIALECTS
from dli_kernel.client.errors import ConfigError
from dli_kernel.client.sessions_client import SessionsClient, shown_url
from dli_kernel.client.tc3 import TencentTC3, tencent_credential
from dli_kernel.protocol import CA_BUNDLE_ENV, DEFAULT_LOG_LEVEL, LOG_LEVEL_ENV, LOG_LEVELS
from dli_kernel.spec import SPEC_FIELDS, SessionSpec, SpecError, conf_from_dli, json_type, unknown_names

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_HEARTBEAT_S",
    "Endpoint",
    "Settings",
    "default_config_file",
    "load_settings",
]

CONFIG_FILE_NAME = "dli_kernel.json"
# A crashed kernel cannot delete its session; the server reaps it after this long without a request.
DEFAULT_HEARTBEAT_S = 120
DEFAULT_KIND = "pyspark"
EMBEDDED_ENGINE = "local"  # the DataEngineName sessions on the embedded server get by default with dlc

AUTH_SCHEMES = ("bearer", "iam", "basic", "aksk", "tc3", "none")
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
    "region",
    "secret_id",
    "secret_key",
    "session_token",
    "headers",
    "ca_bundle",
    "session",
    "log_level",
    "share_driver",
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
    "region": ("DLI_KERNEL_REGION",),
    # The names Tencent Cloud's SDK reads (EnvironmentVariableCredential; the token only with the CLI's).
    "secret_id": ("TENCENTCLOUD_SECRET_ID",),
    "secret_key": ("TENCENTCLOUD_SECRET_KEY",),
    "session_token": ("TENCENTCLOUD_SESSION_TOKEN",),
    "ca_bundle": (CA_BUNDLE_ENV,),
    "log_level": (LOG_LEVEL_ENV,),
    "share_driver": ("DLI_KERNEL_SHARE_DRIVER",),
}
# Session defaults the environment may override: spec attribute -> variable.
SESSION_ENV_VARS: dict[str, str] = {
    "kind": "DLI_KERNEL_KIND",
    "cluster_name": "DLI_KERNEL_CLUSTER",
    "sc_type": "DLI_KERNEL_SC_TYPE",
}

# -- the results ------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Endpoint:
    """A sessions API to send sessions to, with its credentials; its repr never shows a secret."""

    url: str
    dialect: str  # "livy" | "dli" | "dlc" | "local"
    project_id: str | None = None
    region: str | None = None  # DLC's region (X-TC-Region)
    auth: AuthBase | None = None
    headers: dict[str, str] = field(default_factory=dict, hash=False)
    embedded: bool = False  # the user's embedded server
    ca_bundle: str | None = None  # the CA file https:// certificates are verified with; None: the system's

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ConfigError(f"dialect must be one of {', '.join(DIALECTS)} (got {self.dialect!r}).")
        object.__setattr__(self, "headers", dict(self.headers))  # the caller's dict cannot change it

    def __repr__(self) -> str:
        # Header values are hidden too: a custom header may well carry an API key.
        headers = {name: "***" for name in self.headers}
        return (
            f"Endpoint(url={shown_url(self.url)!r}, dialect={self.dialect!r}, "
            f"project_id={self.project_id!r}, region={self.region!r}, auth={self.auth!r}, "
            f"headers={headers!r}, embedded={self.embedded!r}, ca_bundle={self.ca_bundle!r})"
        )

    __str__ = __repr__

    def client(self, **kwargs: Any) -> SessionsClient:
        """A new :class:`SessionsClient` for this endpoint; ``kwargs`` go to its constructor (timeout...)."""
        # Certificates are always verified: with the CA configured, else with the system's.
        kwargs.setdefault("verify", self.ca_bundle or True)
        return SessionsClient(
            self.url,
            self.dialect,
            project_id=self.project_id,
            region=self.region,
            auth=self.auth,
            headers=dict(self.headers),
            **kwargs,
        )


@dataclass(frozen=True)
class Settings:
    endpoint: Endpoint | None  # None: the embedded server (dli_kernel.embedded.embedded_endpoint)
    defaults: SessionSpec  # default session settings
    source: str  # which file and variables the values came from (names only, never values)
    embedded_dialect: str = "local"  # how to speak to the embedded server: "local", or "dlc" (DLC's actions)
    region: str | None = None  # DLC's region, where one is configured
    ca_bundle: str | None = None  # the configured CA file, for the embedded server's endpoint too
    log_level: str = DEFAULT_LOG_LEVEL  # how much of the session's log a cell shows (protocol.LOG_LEVELS)
    share_driver: bool = False  # the embedded server a kernel starts runs with --share-driver


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


# -- the endpoint -----------------------------------------------------------------------------------


def _required(src: _Sources, key: str, why: str) -> tuple[Any, str]:
    found = src.get(key)
    if found is None:
        raise ConfigError(f"{why} needs {key.replace('_', ' ')}: set {src.names(key)}.")
    return found


def _aksk(src: _Sources, why: str, project_id: str | None) -> HuaweiAkSk:
    ak = check_secret(*_required(src, "ak", why))
    sk = check_secret(*_required(src, "sk", why))
    token = src.get("security_token")
    security_token = None if token is None else check_secret(*token)
    return HuaweiAkSk(ak, sk, project_id, security_token)


def _basic(src: _Sources, why: str) -> HTTPBasicAuth:
    username = check_basic(*_required(src, "username", why), secret=False)
    password = check_basic(*_required(src, "password", why), secret=True)
    return _BasicAuth(username, password)


def _tc3(src: _Sources, why: str, required: bool = True) -> TencentTC3 | None:
    """Tencent Cloud signing with the keys given, else the SDK's profile file; None if neither (and not
    ``required``)."""
    secret_id, secret_key = src.get("secret_id"), src.get("secret_key")
    if secret_id is None and secret_key is None:
        credential = _profile_credential()
        if credential is not None:
            return TencentTC3(credential)
        if not required:
            return None
    secret_id = _required(src, "secret_id", why)
    secret_key = _required(src, "secret_key", why)
    token = src.get("session_token")
    session_token = None if token is None else check_secret(*token)
    credential = tencent_credential(check_secret(*secret_id), check_secret(*secret_key), session_token)
    return TencentTC3(credential)


def _profile_credential() -> object | None:
    """The credential in Tencent's profile file (``~/.tencentcloud/credentials``), as the SDK reads it."""
    from dli_kernel.client.tc3 import require_sdk

    require_sdk()
    from tencentcloud.common.credential import ProfileCredential

    try:
        return ProfileCredential().get_credential()
    except Exception:  # a broken file: the message below asks for the variables instead
        return None


def _auth(src: _Sources, dialect: str, project_id: str | None) -> AuthBase | None:
    explicit = src.get("auth")
    if explicit is not None:
        scheme = check_choice(*explicit, AUTH_SCHEMES)
        why = f"auth {scheme!r} in {src.path}"
        if scheme in ("bearer", "iam"):
            secret = check_secret(*_required(src, "token", why))
            return BearerToken(secret) if scheme == "bearer" else IamToken(secret)
        if scheme == "basic":
            return _basic(src, why)
        if scheme == "aksk":
            return _aksk(src, why, project_id)
        if scheme == "tc3":
            return _tc3(src, why)
        return None
    if dialect == "dlc":
        return _tc3(src, "dialect dlc (Tencent Cloud signs every request)")
    # Inferred from the credentials given. AK/SK are read only for DLI: the SDK's variables are often set
    # for other tools and must not turn a Livy endpoint's requests into signed ones.
    if dialect == "dli":
        has_ak, has_sk = src.get("ak") is not None, src.get("sk") is not None
        if has_ak or has_sk:
            return _aksk(src, "AK/SK signing (one of the keys is set)", project_id)
    token = src.get("token")
    if token is not None:
        value = check_secret(*token)
        return IamToken(value) if dialect == "dli" else BearerToken(value)
    if src.get("username") is not None or src.get("password") is not None:
        return _basic(src, "HTTP Basic auth (a user name or password is set)")
    return None


def _endpoint(src: _Sources) -> Endpoint | None:
    found = src.get("dialect")
    dialect = None if found is None else check_choice(*found, DIALECTS)
    url = src.get("url")
    if url is None:
        if found is not None and dialect not in ("local", "dlc"):
            raise ConfigError(
                f"{found[1]} is {dialect!r} but no URL is set: set {src.names('url')}, or remove the "
                "dialect to use the embedded server."
            )
        return None  # the embedded server
    url_value = check_url(*url)
    dialect = dialect or "livy"

    project_id = None
    # The project id is part of DLI's paths, and AK/SK signing sends it (X-Project-Id) wherever it is set.
    signs = str(src.file_values.get("auth", "")).strip().lower() == "aksk"
    found_project = src.get("project_id") if dialect == "dli" or signs else None
    if found_project is not None:
        project_id = check_project_id(*found_project)
    elif dialect == "dli":
        raise ConfigError(f"dialect dli needs a project id: set {src.names('project_id')}.")

    region = None
    if dialect == "dlc":
        region = check_region(*_required(src, "region", "dialect dlc"))
    headers = src.get("headers")
    return Endpoint(
        ca_bundle=_ca_bundle(src),
        url=url_value,
        dialect=dialect,
        project_id=project_id,
        region=region,
        auth=_auth(src, dialect, project_id),
        headers={} if headers is None else check_headers(*headers),
    )


def _ca_bundle(src: _Sources) -> str | None:
    found = src.get("ca_bundle")
    return None if found is None else check_ca_bundle(*found)


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


def _defaults(src: _Sources, embedded_dlc: bool = False) -> SessionSpec:
    values: dict[str, Any] = {"kind": DEFAULT_KIND, "heartbeat_timeout_s": DEFAULT_HEARTBEAT_S}
    if embedded_dlc:
        values["cluster_name"] = EMBEDDED_ENGINE  # DLC names an engine; the embedded server has one
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
    embedded_dialect = "local"
    region = endpoint.region if endpoint is not None else None
    if endpoint is None:
        found = src.get("dialect")
        if found is not None and check_choice(*found, DIALECTS) == "dlc":
            embedded_dialect = "dlc"
            found_region = src.get("region")
            region = None if found_region is None else check_region(*found_region)
    defaults = _defaults(src, embedded_dlc=embedded_dialect == "dlc")
    found_level = src.get("log_level")
    log_level = DEFAULT_LOG_LEVEL if found_level is None else check_choice(*found_level, LOG_LEVELS)
    return Settings(
        endpoint=endpoint,
        defaults=defaults,
        source=src.describe(),
        embedded_dialect=embedded_dialect,
        region=region,
        ca_bundle=endpoint.ca_bundle if endpoint is not None else _ca_bundle(src),
        log_level=log_level,
        share_driver=_flag(src.get("share_driver")),
    )


def _flag(found: tuple[Any, str] | None) -> bool:
    """A yes/no setting: true or false in the file, 1 or 0 (true/false, yes/no) in the environment."""
    if found is None:
        return False
    value, where = found
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where} must be true or false (in the environment 1 or 0; got {value!r}).")
