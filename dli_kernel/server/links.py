"""Browser links to a session's Spark UI and driver log that open without the server's token.

A caller who sees a session asks ``POST /sessions/{id}/links`` with their token and gets URLs that carry a
signature (``?link=...``) made with the server's own key (``link-secret`` in the state dir, mode 0600; it
is never the token nor made from it). The signature binds the user, the session, the one path the link
opens and when it stops opening (``LINK_TTL``). Opening a link (``BrowserLinks.admit``, asked by the token
check) leaves a cookie signed the same way for that path alone, HttpOnly, SameSite=Lax, Secure under TLS,
with its own expiry (``COOKIE_TTL``), and redirects to the clean URL: the UI's relative links and assets
then load with the cookie. A link or cookie opens only GET and HEAD on its own path, never the API, and
only while its user still exists; the route then checks that they still see the session, as for a token.
The routes that issue links and serve the log page are ``endpoints.session_links`` and ``driver_log``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import Scope

from dli_kernel.protocol import LINK_COOKIE, LINK_PARAM
from dli_kernel.server.manager import ManagedSession
from dli_kernel.server.principal import Principal
from dli_kernel.server.secret_file import SecretFileError, secret_file
from dli_kernel.server.ui_proxy import PATH_SAFE, driver_log_path, ui_path
from dli_kernel.server.users import Users

log = logging.getLogger("dli_kernel.server")

LINK_TTL = 600  # seconds a link opens: long enough to click, short enough that a copied one soon dies
COOKIE_TTL = 12 * 3600  # seconds an opened page keeps working: a working day in one browser tab
_VERSION = 1
_LINK, _COOKIE = "link", "cookie"
_DOMAIN = b"dli-kernel browser link\0"  # what this key signs and nothing else
# A signed value: its payload and its signature, both base64url without padding. Anything else is junk.
_SIGNED = re.compile(r"([A-Za-z0-9_-]{1,2048})\.([A-Za-z0-9_-]{43})")
# The paths a link may open: a session's UI (and all under it), its driver log page.
_BROWSER_PATH = re.compile(r"/sessions/([1-9][0-9]{0,17}|0)/(?:ui/(.*)|driver-log)", re.DOTALL)
Target = tuple[int, str]  # a session and the one path of it a link or cookie opens
Query = list[tuple[str, str]]

_RENEW = "run %session ui (or %session) in the notebook for a new link."
EXPIRED_LINK = f"This link has expired (links open for {LINK_TTL // 60} min): {_RENEW}"
EXPIRED_COOKIE = f"Your access to this page has expired: {_RENEW}"
NOT_VALID = f"This link is not valid (cut short or changed): {_RENEW}"
OTHER_PAGE = f"This link opens another session or page than this one: {_RENEW}"
NO_USER = f"The user this link was made for can no longer use this server: {_RENEW}"
NO_KEY = "The server cannot use its link key; ask its operator to look at the server's log."


def browser_scope(path: str) -> tuple[int, str] | None:
    """The session and the path a link or cookie must be for to open ``path``: a UI page's is the UI's
    prefix, the log page's is itself. None: no link opens it (an API path, or ``.``/``..`` segments)."""
    match = _BROWSER_PATH.fullmatch(path)
    if match is None:
        return None
    session_id, under_ui = int(match[1]), match[2]
    if under_ui is None:
        return session_id, driver_log_path(session_id)
    if any(part in (".", "..") for part in under_ui.split("/")):
        return None
    return session_id, ui_path(session_id) + "/"


def link_key(path: Path) -> bytes:
    """The server's link key: read from ``path``, or made there (random, mode 0600) if there is none, so
    that links outlive a restart."""
    return secret_file(path, "a link key", ", which ends the links and pages opened so far")


@dataclass(frozen=True)
class Grant:
    """What a valid link or cookie says: who, which session, the one path it opens, until when."""

    kind: str
    user: str
    session_id: int
    path: str
    expires: int


class Refused(Exception):
    """A link or cookie that opens nothing: the status and the one sentence the browser shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and checks links and cookies with the key at ``key_file``, read on first need (an app built
    for a route table, or one that never issues a link, makes no file)."""

    def __init__(
        self, key_file: Path | None = None, key: bytes | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._key_file, self._key = key_file, key
        self._clock = clock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LinkSigner(key_file={str(self._key_file)!r})"

    def now(self) -> int:
        return int(self._clock())

    def _secret(self) -> bytes:
        with self._lock:
            if self._key is None:
                if self._key_file is None:
                    raise SecretFileError("no link key file was given to the server.")
                try:
                    self._key = link_key(self._key_file)
                except SecretFileError as err:
                    # The operator's to fix: users are told only to ask them (NO_KEY).
                    log.error("%s Browser links can be neither made nor opened until then.", err)
                    raise
            return self._key

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret(), _DOMAIN + payload.encode(), hashlib.sha256).digest())

    def sign(self, kind: str, user: str, session_id: int, path: str, ttl: int) -> tuple[str, int]:
        """The signed value and when it stops opening (seconds since the epoch)."""
        expires = self.now() + ttl
        fields = [_VERSION, kind, user, session_id, path, expires]
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}", expires

    def verify(self, value: str, kind: str) -> Grant:
        """The grant of a value this server signed for ``kind``; Refused for anything else."""
        expired = EXPIRED_LINK if kind == _LINK else EXPIRED_COOKIE
        match = _SIGNED.fullmatch(value)
        if match is None or not hmac.compare_digest(self._mac(match[1]), match[2]):
            raise Refused(401, NOT_VALID)
        try:
            fields = json.loads(_unb64(match[1]))
        except (ValueError, binascii.Error):  # signed by us, so only a key shared with older code
            raise Refused(401, NOT_VALID) from None
        grant = _grant(fields)
        if grant is None or grant.kind != kind:
            raise Refused(401, NOT_VALID)
        if self.now() >= grant.expires:
            raise Refused(401, expired)
        return grant


def _grant(fields: Any) -> Grant | None:
    if not isinstance(fields, list) or len(fields) != 6 or fields[0] != _VERSION:
        return None
    _, kind, user, session_id, path, expires = fields
    if not (isinstance(kind, str) and isinstance(user, str) and isinstance(path, str)):
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (session_id, expires)):
        return None
    return Grant(kind, user, session_id, path, expires)


def _cookie_values(header: str) -> list[str]:
    """Every value the Cookie header gives ours: a browser sends one per path that matches."""
    values = []
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == LINK_COOKIE and value:
            values.append(value.strip('"'))
    return values


def _refusal(refused: Refused, scope_path: str | None = None) -> Response:
    response = PlainTextResponse(refused.args[0] + "\n", status_code=refused.status)
    response.headers["cache-control"] = "no-store"
    if refused.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    if scope_path is not None:  # a cookie that opens nothing is dropped, so the next link starts clean
        response.delete_cookie(LINK_COOKIE, path=scope_path, httponly=True, samesite="lax")
    return response


class BrowserLinks:
    """Issues a session's links, and opens a browser's request with a link or a cookie."""

    def __init__(self, signer: LinkSigner, users: Users) -> None:
        self.signer = signer
        self._users = users

    def issue(self, viewer: Principal, session: ManagedSession, base_url: str) -> dict[str, Any]:
        """The links ``viewer`` may open for ``session``: its Spark UI while it has one, its driver log."""
        log_link, expires = self._link(viewer, session.id, driver_log_path(session.id))
        ui = None
        if session.ui_url and not session.ended:
            ui, _ = self._link(viewer, session.id, ui_path(session.id) + "/")
        return {
            "sparkUiUrl": None if ui is None else base_url + ui,
            "driverLogUrl": base_url + log_link,
            "expiresIn": LINK_TTL,
            "expiresAt": expires,
        }

    def _link(self, viewer: Principal, session_id: int, path: str) -> tuple[str, int]:
        """A link to ``path``, which is also the path its cookie opens (see ``browser_scope``)."""
        value, expires = self.signer.sign(_LINK, viewer.name, session_id, path, LINK_TTL)
        return f"{path}?{urlencode({LINK_PARAM: value})}", expires

    def admit(self, scope: Scope) -> Principal | Response | None:
        """For a request without a token: the user a link or cookie opens it for, an answer (the redirect
        that sets the cookie, or a refusal), or None when it carries neither or is no browser page."""
        if scope["method"] not in ("GET", "HEAD"):
            return None
        target = browser_scope(scope["path"])
        if target is None:
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        links = [value for name, value in query if name == LINK_PARAM]
        cookies = _cookie_values(Headers(scope=scope).get("cookie", ""))
        if not links and not cookies:
            return None
        try:
            if links:
                return self._open(scope, target, links[0], cookies, query)
            return self._first_valid(cookies, target)
        except Refused as refused:
            return _refusal(refused, target[1] if cookies else None)
        except SecretFileError:
            return _refusal(Refused(503, NO_KEY))

    def _check(self, value: str, kind: str, target: Target) -> Grant:
        grant = self.signer.verify(value, kind)
        if (grant.session_id, grant.path) != target:
            raise Refused(403, OTHER_PAGE)
        return grant

    def _principal(self, grant: Grant) -> Principal:
        principal = self._users.named(grant.user)
        if principal is None:
            raise Refused(403, NO_USER)
        return principal

    def _first_valid(self, cookies: list[str], target: Target) -> Principal:
        refused: Refused | None = None
        for value in cookies:
            try:
                return self._principal(self._check(value, _COOKIE, target))
            except Refused as err:
                refused = refused or err
        assert refused is not None  # there was at least one cookie
        raise refused

    def _open(self, scope: Scope, target: Target, link: str, cookies: list[str], query: Query) -> Response:
        """A link: checked, then a redirect to the clean URL that sets the cookie. A link that no longer
        opens, in a browser whose cookie still does (a page reloaded from history), goes there too."""
        clean = quote(scope["path"], safe=PATH_SAFE)
        rest = [(name, value) for name, value in query if name != LINK_PARAM]
        if rest:
            clean += "?" + urlencode(rest)
        try:
            grant = self._check(link, _LINK, target)
        except Refused:
            if cookies:
                with contextlib.suppress(Refused):
                    self._first_valid(cookies, target)
                    return _redirect(clean)
            raise
        principal = self._principal(grant)
        value, _ = self.signer.sign(_COOKIE, principal.name, grant.session_id, grant.path, COOKIE_TTL)
        response = _redirect(clean)
        response.set_cookie(
            LINK_COOKIE,
            value,
            max_age=COOKIE_TTL,
            path=grant.path,
            secure=scope.get("scheme") == "https",
            httponly=True,
            samesite="lax",
        )
        return response


def _redirect(location: str) -> Response:
    response = RedirectResponse(location, status_code=303)
    # The link's signature must not follow the user elsewhere in a Referer, nor stay in a cache.
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["cache-control"] = "no-store"
    return response
