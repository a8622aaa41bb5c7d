"""Verifying Tencent Cloud's TC3-HMAC-SHA256 request signatures, as DLC's action API checks them.

The embedded server plays DLC with its own token as the SecretKey, so a client signs with
``Credential(any_secret_id, server_token)``. Written with hashlib/hmac so that the server does not need
Tencent's SDK; tests/unit/test_tc3.py holds it to the SDK's own signer byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "dlc"
TERMINATOR = "tc3_request"
MAX_SKEW = 300  # seconds a request's X-TC-Timestamp may be from the server's clock, as Tencent allows
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
REQUIRED_SIGNED = ("content-type", "host")

_AUTHORIZATION = re.compile(
    ALGORITHM + r"\s+Credential=(?P<id>[^/,\s]*)/(?P<date>[^/,\s]+)/(?P<service>[^/,\s]+)/(?P<end>[^/,\s]+)"
    r"\s*,\s*SignedHeaders=(?P<headers>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*",
    re.ASCII,
)
_FORM = (
    f"'Authorization: {ALGORITHM} Credential=<SecretId>/<yyyy-mm-dd>/{SERVICE}/{TERMINATOR}, "
    "SignedHeaders=content-type;host, Signature=<hex>'"
)


class SignatureError(Exception):
    """A request whose signature does not hold; ``code`` is Tencent's error code, ``str()`` the sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Authorization:
    secret_id: str
    date: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str | None) -> Authorization:
    if not value:
        raise SignatureError(
            "AuthFailure.SignatureFailure",
            f"the request is not signed: send {_FORM}, signed with the server token as the SecretKey.",
        )
    match = _AUTHORIZATION.fullmatch(value.strip())
    if match is None:
        raise SignatureError(
            "AuthFailure.InvalidAuthorization", f"the Authorization header is not of the form {_FORM}."
        )
    if match["end"] != TERMINATOR:
        raise SignatureError(
            "AuthFailure.InvalidAuthorization", f"the credential scope must end in '/{TERMINATOR}'."
        )
    signed = tuple(match["headers"].lower().split(";"))
    missing = [name for name in REQUIRED_SIGNED if name not in signed]
    if missing:
        raise SignatureError(
            "AuthFailure.InvalidAuthorization",
            f"SignedHeaders must include {' and '.join(REQUIRED_SIGNED)} (missing: {', '.join(missing)}).",
        )
    return Authorization(match["id"], match["date"], match["service"], signed, match["signature"].lower())


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signature(
    secret_key: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...],
    payload: bytes,
    timestamp: str,
    date: str,
    service: str = SERVICE,
) -> str:
    """The hex signature of a request; ``headers`` are keyed by lower-case name.

    Header values are trimmed and lower-cased, as Tencent's signing guide says (its Python SDK signs only
    content-type and host, whose values are lower case already).
    """
    canonical_headers = "".join(
        f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed_headers
    )
    canonical_request = "\n".join(
        (
            method.upper(),
            path,
            query,
            canonical_headers,
            ";".join(signed_headers),
            hashlib.sha256(payload).hexdigest(),
        )
    )
    scope = f"{date}/{service}/{TERMINATOR}"
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), TERMINATOR)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(
    secret_key: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    payload: bytes,
    now: float,
) -> str:
    """The SecretId of a correctly signed, fresh request; SignatureError otherwise.

    ``headers`` must look names up case-insensitively (Starlette's Headers do).
    """
    auth = parse_authorization(headers.get("authorization"))
    raw_timestamp = headers.get("x-tc-timestamp", "")
    if not raw_timestamp.strip().isdigit():
        raise SignatureError(
            "AuthFailure.SignatureFailure",
            f"X-TC-Timestamp must be the request's Unix time in seconds (got {raw_timestamp!r}).",
        )
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > MAX_SKEW:
        raise SignatureError(
            "AuthFailure.SignatureExpire",
            f"the request's X-TC-Timestamp {timestamp} is more than {MAX_SKEW} seconds from the server's "
            f"time {int(now)}; check the client's clock and sign the request again.",
        )
    if auth.service != SERVICE:
        raise SignatureError(
            "AuthFailure.SignatureFailure",
            f"the credential scope names service {auth.service!r}; this server signs as {SERVICE!r}.",
        )
    expected_date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    if auth.date != expected_date:
        raise SignatureError(
            "AuthFailure.SignatureFailure",
            f"the credential date {auth.date!r} is not the UTC date of X-TC-Timestamp ({expected_date}).",
        )
    if headers.get("x-tc-content-sha256", "").strip().upper() == UNSIGNED_PAYLOAD:
        # The SDK signs only content-type and host: with an unsigned body, one captured signature would
        # let anyone run any code here for five minutes.
        raise SignatureError(
            "AuthFailure.SignatureFailure",
            "this server needs the body signed: turn off unsignedPayload in the client's HttpProfile.",
        )
    lowered = {name: headers.get(name, "") for name in auth.signed_headers}
    expected = signature(
        secret_key,
        method,
        path,
        query,
        lowered,
        auth.signed_headers,
        payload,
        raw_timestamp.strip(),
        auth.date,
    )
    # Constant time: how long a refusal takes says nothing about how much of the signature was right.
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError(
            "AuthFailure.SignatureFailure",
            "the signature does not match: sign the request with the server token as the SecretKey "
            "(it is in the server's server.json).",
        )
    return auth.secret_id
