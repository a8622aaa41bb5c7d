"""Checks of the values a user configures the client with (URLs, ids, secrets, headers, a CA bundle).

Each takes the value and ``where`` it came from (a variable, or a key of a file) and returns the value to
use, or raises :class:`~dli_kernel.client.errors.ConfigError` with one sentence naming ``where`` and what is
accepted. A secret's value is never shown.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from dli_kernel.client.errors import ConfigError
from dli_kernel.client.sessions_client import shown_url
from dli_kernel.spec import json_type

_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REGION = re.compile(r"[a-z][a-z0-9-]*")


def check_choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    choice = value.strip().lower() if isinstance(value, str) else None
    if choice in choices:
        return choice
    raise ConfigError(f"{where} must be one of {', '.join(choices)} (got {value!r}).")


def check_url(value: object, where: str) -> str:
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


def check_project_id(value: object, where: str) -> str:
    if isinstance(value, str) and _PROJECT_ID.fullmatch(value):
        return value
    raise ConfigError(
        f"{where} must be a project id made of letters, digits, '.', '_' and '-' (got {value!r})."
    )


def check_region(value: object, where: str) -> str:
    if isinstance(value, str) and _REGION.fullmatch(value.strip()):
        return value.strip()
    raise ConfigError(f"{where} must be a region such as ap-guangzhou (got {value!r}).")


def check_secret(value: object, where: str) -> str:
    """A token or key that goes into a header as it is: printable ASCII without spaces."""
    if isinstance(value, str) and value and value.isascii() and value.isprintable() and " " not in value:
        return value
    raise ConfigError(
        f"{where} must be a non-empty string of printable ASCII characters without spaces "
        "(its value is not shown)."
    )


def check_basic(value: object, where: str, secret: bool) -> str:
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


def check_headers(value: object, where: str) -> dict[str, str]:
    if isinstance(value, dict) and all(
        isinstance(name, str) and name.strip() and isinstance(text, str) for name, text in value.items()
    ):
        return dict(value)
    # Values are not shown: custom headers often carry API keys.
    raise ConfigError(
        f'{where} must be an object mapping header names to string values, such as {{"X-Requested-By": '
        f'"me"}} (values are not shown).'
    )


def check_ca_bundle(value: object, where: str) -> str:
    """The CA certificates (a PEM file, or a folder of them as ``c_rehash`` leaves it) that the server's
    certificate must be signed by, as an absolute path for ``requests``' ``verify``."""
    path = Path(value.strip()).expanduser() if isinstance(value, str) and value.strip() else None
    if path is None or not (path.is_file() or path.is_dir()):
        got = f"{value!r}, which does not exist" if isinstance(value, str) else json_type(value)
        raise ConfigError(
            f"{where} must name the file of the CA certificate (PEM) that signed the server's certificate "
            f"(got {got})."
        )
    if path.is_file():
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError, ValueError):
            raise ConfigError(
                f"{where} names {path}, which holds no PEM certificate (-----BEGIN CERTIFICATE-----)."
            ) from None
    return str(path.resolve())
