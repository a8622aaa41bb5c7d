"""Verifying Tencent Cloud's TC3-HMAC-SHA256 request signatures, as DLC's action API checks them.

The key a signature is checked with is the caller's to find (``verify`` takes it): on the embedded server
it is the server token for any SecretId, or a team user's own key (``users.py``). Written with hashlib/hmac
so that the server does not need Tencent's SDK; tests/unit/test_tc3.py holds it to the SDK's own signer
byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from dli_kernel.protocol import DLC_SERVICE as SERVICE
from dli_kernel.protocol import DLC_SIGN_ALGORITHM as ALGORITHM
from dli_kernel.spec import parse_number, shown

TERMINATOR = "tc3_request"
MAX_SKEW = 300  # seconds a request's X-TC-Timestamp may be from the server's clock, as Tencent allows
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
REQUIRED_SIGNED = ("content-type", "host")
# Actions that change something: a signature first seen with another action is refused for these.
CHANGES = frozenset(
    {
        "CreateNotebookSession",
        "CreateNotebookSessionStatement",
        "DeleteNotebookSession",
        "CancelNotebookSessionStatement",
    }
)
# One sentence for every SecretId, known or not: which SecretIds (user names) a server knows is not told.
MISMATCH = (
    "the signature does not match: sign the request with your SecretId and SecretKey (on a one-person "
    "server, the server token from its server.json as the SecretKey; on a shared one, the pair its operator "
    "gave you with 'dli-kernel users dlc-key')."
)
REPLAY_CAPACITY = 100_000  # signatures remembered at most: a bound on memory, far above any real rate
# Seconds within which one signature may serve two different actions: an honest client's requests signed
# in the same second arrive that close together; a captured request replayed later does not.
REPLAY_GRACE = 2.0

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
            f"the request is not signed: send {_FORM}, signed with your SecretKey.",
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
) -> Authorization:
    """The Authorization of a correctly signed, fresh request (its SecretId and signature);
    SignatureError otherwise.

    ``headers`` must look names up case-insensitively (Starlette's Headers do).
    """
    auth = parse_authorization(headers.get("authorization"))
    raw_timestamp = headers.get("x-tc-timestamp", "")
    timestamp = parse_number(raw_timestamp.strip())
    if timestamp is None:
        raise SignatureError(
            "AuthFailure.SignatureFailure",
            f"X-TC-Timestamp must be the request's Unix time in seconds, in ASCII digits "
            f"(got {shown(raw_timestamp)}).",
        )
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
        raise SignatureError("AuthFailure.SignatureFailure", MISMATCH)
    return auth


class ReplayGuard:
    """Signatures seen in the last ``window`` seconds, and the action each was first sent as.

    The SDK signs only content-type and host, so X-TC-Action is not covered by the signature: a captured
    DescribeNotebookSession could be sent again as DeleteNotebookSession while its timestamp is fresh. So
    a signature is refused for an action that changes something (CHANGES) if it was first seen with
    another action ``grace`` seconds or more before. The grace lets honest clients through: two requests
    with the same body signed in the same second share a signature (a describe and then a cancel of one
    statement, say), and both reach the server within moments. The same action sent again with the same
    signature is not refused: TC3 signs whole seconds and carries no nonce, so a notebook running one cell
    twice within a second sends two identical signed requests, and both must run. A request is only as
    private as its channel, as the bearer token of the other paths is: a server off loopback needs TLS in
    front of it. A client that also signs x-tc-action cannot collide across actions at all. Thread-safe;
    when full, the oldest signatures are forgotten first.
    """

    def __init__(
        self, window: float = 2 * MAX_SKEW, capacity: int = REPLAY_CAPACITY, grace: float | None = None
    ) -> None:
        # Twice the skew: a timestamp up to MAX_SKEW ahead of the clock stays valid for 2 * MAX_SKEW.
        self._window = window
        self._capacity = capacity
        self._grace = REPLAY_GRACE if grace is None else grace
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()  # signature -> (action, first seen)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, signature: str, action: str, now: float) -> None:
        """Record ``signature`` as sent for ``action``; SignatureError if it is a replay to refuse."""
        with self._lock:
            # Entries are added in time order and kept for one window, so the expired ones are in front.
            while self._seen:
                seen = next(iter(self._seen.values()))[1]
                if seen + self._window > now and len(self._seen) < self._capacity:
                    break
                self._seen.popitem(last=False)
            first = self._seen.get(signature)
            if first is None:
                self._seen[signature] = (action, now)
                return
        first_action, first_seen = first
        if first_action != action and action in CHANGES and now - first_seen >= self._grace:
            raise SignatureError(
                "AuthFailure.SignatureFailure",
                f"this signature was already used for {first_action}, and X-TC-Action is not signed, so "
                f"it is not accepted for {action}: sign the request again (a new X-TC-Timestamp), or sign "
                "x-tc-action too.",
            )
