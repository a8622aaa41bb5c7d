"""Authentication schemes for the sessions APIs, as ``requests`` auth objects (``session.auth = ...``).

Decision on Huawei's SDK (checked with huaweicloudsdkcore 3.1.219 in a scratch venv): AK/SK signing is
implemented here with the standard library (hmac, hashlib, urllib.parse), and tests/unit/test_auth.py compares
it with the SDK's own ``Signer`` (``SDK-HMAC-SHA256``) on the same requests; the SDK is only in the ``test``
extra. Reasons: the SDK would add 9 distributions the kernel does not otherwise need (huaweicloudsdkcore,
pymongo pinned ``==4.18.2``, dnspython, simplejson, PyYAML, pyasn1, defusedxml, requests-toolbelt, six:
about 9 MB, 18 MB on disk with bytecode) for ~60 lines of signing; an exact pymongo pin would conflict with
any other pymongo in a user's notebook environment; and its signer works on its own ``SdkRequest``, not on
the ``requests.PreparedRequest`` that is really sent. ``requests`` itself is no conflict: the SDK takes it
only through requests-toolbelt (``requests>=2.0.1,<3``), and ours is ``>=2.31``.

No scheme ever shows a secret in its ``repr``/``str`` or in the message of an exception it raises.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, unquote, urljoin, urlsplit, urlunsplit

from requests import PreparedRequest, Response
from requests.auth import AuthBase

__all__ = ["BearerToken", "HuaweiAkSk", "IamToken"]

_ALGORITHM = "SDK-HMAC-SHA256"
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CONTENT_SHA256 = "X-Sdk-Content-Sha256"
# The SDK hashes these bodies and sends every other Content-Type as UNSIGNED-PAYLOAD.
_HASHED_CONTENT_TYPES = ("application/json", "application/bson")
# Never signed: intermediaries may legitimately change them (hop-by-hop), requests recomputes Content-Length
# after auth (the SDK never has it when it signs either), and Authorization is the signature's own header.
_UNSIGNED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Secret:
    """A string that shows as ``***`` in repr/str, so also in debuggers and tracebacks with locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


def _checked(owner: str, name: str, value: object) -> str:
    """Return ``value`` if it can go into an HTTP header; the errors never echo the value."""
    if not isinstance(value, str):
        raise TypeError(f"{owner} needs {name} as a str, not {type(value).__name__}.")
    if not value:
        raise ValueError(f"{owner} needs a non-empty {name}.")
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise ValueError(f"{owner} needs {name} as printable ASCII without spaces.")
    return value


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, parts.hostname, port or _DEFAULT_PORTS.get(scheme)


class _DropOnForeignRedirect:
    """Mixin: drop ``_dropped`` headers before requests follows a redirect to another origin.

    requests strips only ``Authorization`` on such redirects and forwards every other header as it was.
    """

    _dropped: tuple[str, ...] = ()

    def _guard(self, r: PreparedRequest) -> None:
        if self._on_response not in r.hooks["response"]:
            r.register_hook("response", self._on_response)

    def _on_response(self, resp: Response, *args: object, **kwargs: object) -> Response:
        req = resp.request
        if resp.is_redirect and req is not None and req.url:
            target = urljoin(req.url, resp.headers["location"])
            if _origin(target) != _origin(req.url):
                for name in self._dropped:
                    req.headers.pop(name, None)
        return resp


class BearerToken(AuthBase):
    """``Authorization: Bearer <token>``: the embedded server, or Livy behind a gateway."""

    def __init__(self, token: str) -> None:
        self._token = _Secret(_checked("BearerToken", "token", token))

    def __call__(self, r: PreparedRequest) -> PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return r

    def __repr__(self) -> str:
        return "BearerToken(token=***)"

    __str__ = __repr__


class IamToken(_DropOnForeignRedirect, AuthBase):
    """``X-Auth-Token: <token>``: a Huawei Cloud IAM token for DLI."""

    _dropped = ("X-Auth-Token",)

    def __init__(self, token: str) -> None:
        self._token = _Secret(_checked("IamToken", "token", token))

    def __call__(self, r: PreparedRequest) -> PreparedRequest:
        r.headers["X-Auth-Token"] = self._token.reveal()
        self._guard(r)
        return r

    def __repr__(self) -> str:
        return "IamToken(token=***)"

    __str__ = __repr__


def _encode(text: str) -> str:
    return quote(text, safe="~")


def _canonical_uri(path: str) -> str:
    # As the SDK: decode the whole path (so %2F becomes a separator), re-encode each segment, and always end
    # with "/" (so /a and /a/ sign alike).
    uri = "/".join(_encode(segment) for segment in unquote(path or "/").split("/"))
    return uri if uri.endswith("/") else uri + "/"


def _canonical_query(query: str) -> str | None:
    """The SDK's canonical query (pairs sorted by their decoded text, then encoded); None if undecodable."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return None
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(pairs))


def _header_text(value: str | bytes) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None
    return str(value).strip()


class HuaweiAkSk(_DropOnForeignRedirect, AuthBase):
    """Huawei Cloud AK/SK request signing (``SDK-HMAC-SHA256``), as huaweicloudsdkcore's ``Signer`` does it.

    It signs the request as requests will send it, and adjusts it the way the SDK sends it: the query string
    is rewritten in canonical form (sorted, ``%20`` for spaces), a str body is sent as UTF-8, non-ASCII header
    values as UTF-8 bytes, ``Host`` is set from the URL unless given, and a Content-Type other than JSON/BSON
    gets ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD``. Every header is signed except hop-by-hop ones,
    Content-Length and names with ``_``. Each call stamps a fresh ``X-Sdk-Date`` from ``now`` (a naive
    datetime is taken as UTC); the SDK would keep one already present, but a re-signed retry must not reuse an
    old date. Redirects are not re-signed (requests never re-applies custom auth), so send signed requests
    without following redirects; a redirect to another origin at least drops ``X-Security-Token``, ``Host``.
    """

    _dropped = ("Authorization", "Host", "X-Security-Token")

    def __init__(
        self,
        ak: str,
        sk: str,
        project_id: str | None = None,
        security_token: str | None = None,
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._ak = _checked("HuaweiAkSk", "ak (access key id)", ak)
        self._sk = _Secret(_checked("HuaweiAkSk", "sk (secret access key)", sk))
        self._project_id = None if project_id is None else _checked("HuaweiAkSk", "project_id", project_id)
        self._security_token = (
            None
            if security_token is None
            else _Secret(_checked("HuaweiAkSk", "security_token", security_token))
        )
        self._now = now

    def __repr__(self) -> str:
        token = "None" if self._security_token is None else "***"
        return (
            f"HuaweiAkSk(ak={self._ak[:4] + '…'!r}, sk=***, project_id={self._project_id!r}, "
            f"security_token={token})"
        )

    __str__ = __repr__

    def _date(self) -> str:
        moment = self._now()
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        return moment.strftime(_DATE_FORMAT)

    def __call__(self, r: PreparedRequest) -> PreparedRequest:
        headers = r.headers
        headers.pop("Authorization", None)
        if self._project_id is not None:
            headers["X-Project-Id"] = self._project_id
        if self._security_token is not None:
            headers["X-Security-Token"] = self._security_token.reveal()
        date = headers["X-Sdk-Date"] = self._date()
        url = urlsplit(r.url or "")
        if "Host" not in headers:
            headers["Host"] = url.netloc.rpartition("@")[2]
        content_type = _header_text(headers.get("Content-Type", ""))
        if content_type and not content_type.startswith(_HASHED_CONTENT_TYPES):
            headers[_CONTENT_SHA256] = "UNSIGNED-PAYLOAD"

        query = _canonical_query(url.query)
        if query is None:
            raise ValueError("HuaweiAkSk cannot sign a query string that is not UTF-8 percent-encoded.")
        r.url = urlunsplit(url._replace(query=query))

        canonical: dict[str, str] = {}
        for name, value in list(headers.items()):
            if "_" in name or name.lower() in _UNSIGNED_HEADERS:
                continue
            text = _header_text(value)
            if text is None:
                raise ValueError(f"HuaweiAkSk cannot sign header {name!r}: its value is not UTF-8.")
            canonical[name.lower()] = text
            headers[name] = text if text.isascii() else text.encode("utf-8")
        signed = sorted(canonical)

        body = r.body
        if isinstance(body, str):
            body = r.body = body.encode("utf-8")
            if "Content-Length" in headers:
                headers["Content-Length"] = str(len(body))
        if not body:
            payload_hash = _EMPTY_SHA256
        elif _CONTENT_SHA256.lower() in canonical:
            payload_hash = canonical[_CONTENT_SHA256.lower()]
        elif isinstance(body, bytes | bytearray):
            payload_hash = hashlib.sha256(body).hexdigest()
        else:
            raise TypeError(
                f"HuaweiAkSk signs a JSON or untyped body only as str or bytes, not {type(body).__name__}; "
                "send streams with a non-JSON Content-Type (UNSIGNED-PAYLOAD)."
            )

        canonical_request = "\n".join(
            [
                (r.method or "GET").upper(),
                _canonical_uri(url.path),
                query,
                "".join(f"{name}:{canonical[name]}\n" for name in signed),
                ";".join(signed),
                payload_hash,
            ]
        )
        string_to_sign = "\n".join(
            [_ALGORITHM, date, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
        )
        signature = hmac.new(
            self._sk.reveal().encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        headers["Authorization"] = (
            f"{_ALGORITHM} Access={self._ak}, SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
        self._guard(r)
        return r
