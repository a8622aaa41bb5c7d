"""Signed browser links (``dli_kernel.server.links``) in process: the signature and its expiry, opening a
link (a redirect that leaves a cookie for one path), what the cookie opens and what it never does, and
that no link, cookie or junk makes the server fail."""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pytest_httpserver import HTTPServer
from starlette.testclient import TestClient
from werkzeug import Request as WRequest
from werkzeug import Response as WResponse

from dli_kernel.protocol import EXT_LINKS, LINK_COOKIE, LINK_PARAM, LINK_SECRET_FILE
from dli_kernel.server.app import create_app
from dli_kernel.server.auth import REFUSED
from dli_kernel.server.links import (
    COOKIE_TTL,
    EXPIRED_COOKIE,
    EXPIRED_LINK,
    LINK_TTL,
    NO_KEY,
    NO_USER,
    NOT_VALID,
    OTHER_PAGE,
    LinkSigner,
    Refused,
    browser_scope,
    link_key,
)
from dli_kernel.server.principal import operator_name
from dli_kernel.server.secret_file import SecretFileError
from dli_kernel.server.users import SingleToken, User, UsersFile, hash_token, write_users
from dli_kernel.spec import SessionSpec
from tests.unit.fake_manager import LOG_LINES, FakeManager, FakeSession
from tests.unit.team_fakes import TOKENS, TeamUsers, auth

BASE_URL = "http://127.0.0.1:8998"
KEY = b"0" * 64
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Links:
    manager: FakeManager
    users: TeamUsers
    clock: Clock
    api: TestClient  # sends tokens
    browser: TestClient  # sends no token: only what the server's answers give it
    alices: FakeSession
    bobs: FakeSession
    ui: HTTPServer

    def links(self, user: str = "alice", session: FakeSession | None = None) -> dict[str, Any]:
        session = session or self.alices
        reply = self.api.post(f"/sessions/{session.id}/links", headers=auth(user))
        assert reply.status_code == 200, reply.text
        return reply.json()

    def open(self, url: str, **kwargs: Any) -> Any:
        split = urlsplit(url)
        return self.browser.get(f"{split.path}?{split.query}", follow_redirects=False, **kwargs)


def make_links(
    tmp_path: Path, httpserver: HTTPServer, base_url: str = "http://testserver"
) -> Iterator[Links]:
    manager = FakeManager(tmp_path)
    alices = manager.add_session(SessionSpec(kind="pyspark", name="alices"))
    bobs = manager.add_session(SessionSpec(kind="pyspark", name="bobs"))
    bobs.owner = "bob"
    for session in (alices, bobs):
        session.ui_url = httpserver.url_for("/").rstrip("/")
    users, clock = TeamUsers(), Clock()
    signer = LinkSigner(tmp_path / LINK_SECRET_FILE, clock=clock)
    app = create_app(manager, "unused-token", BASE_URL, users=users, signer=signer)
    with TestClient(app, base_url=base_url) as api, TestClient(app, base_url=base_url) as browser:
        yield Links(manager, users, clock, api, browser, alices, bobs, httpserver)


@pytest.fixture
def world(tmp_path: Path, httpserver: HTTPServer) -> Iterator[Links]:
    yield from make_links(tmp_path, httpserver)


def ui_page(world: Links, path: str = "/jobs/", body: str = "<html>Spark Jobs</html>") -> list[WRequest]:
    seen: list[WRequest] = []

    def page(request: WRequest) -> WResponse:
        seen.append(request)
        kind = "text/css" if path.endswith(".css") else "text/html"
        return WResponse(body, content_type=kind)

    world.ui.expect_request(path).respond_with_handler(page)
    return seen


def link_value(url: str) -> str:
    return parse_qs(urlsplit(url).query)[LINK_PARAM][0]


def with_value(url: str, value: str) -> str:
    split = urlsplit(url)
    return f"{split.path}?{LINK_PARAM}={value}"


def forged(value: str, **changes: Any) -> str:
    """``value`` with fields of its payload changed and its signature kept."""
    payload, signature = value.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    names = ["version", "kind", "user", "session_id", "path", "expires"]
    for name, new in changes.items():
        fields[names.index(name)] = new
    encoded = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).decode()
    return f"{encoded.rstrip('=')}.{signature}"


# -- the signature ------------------------------------------------------------------------------------


def test_a_signed_value_verifies_until_it_expires_and_never_after() -> None:
    clock = Clock()
    signer = LinkSigner(key=KEY, clock=clock)
    value, expires = signer.sign("link", "alice", 3, "/sessions/3/ui/", LINK_TTL)
    assert expires == START + LINK_TTL
    clock.now = START + LINK_TTL - 1
    grant = signer.verify(value, "link")
    assert (grant.user, grant.session_id, grant.path) == ("alice", 3, "/sessions/3/ui/")
    clock.now = START + LINK_TTL
    with pytest.raises(Refused) as refused:
        signer.verify(value, "link")
    assert (refused.value.status, str(refused.value)) == (401, EXPIRED_LINK)
    assert "%session ui" in EXPIRED_LINK and f"{LINK_TTL // 60} min" in EXPIRED_LINK


def test_any_changed_character_and_another_key_or_kind_refuse_the_value() -> None:
    signer = LinkSigner(key=KEY, clock=Clock())
    value, _ = signer.sign("link", "bob", 1, "/sessions/1/ui/", LINK_TTL)
    for index, char in enumerate(value):
        if char == ".":
            continue
        changed = value[:index] + ("A" if char != "A" else "B") + value[index + 1 :]
        with pytest.raises(Refused, match="not valid"):
            signer.verify(changed, "link")
    with pytest.raises(Refused, match="not valid"):
        LinkSigner(key=b"1" * 64, clock=Clock()).verify(value, "link")
    with pytest.raises(Refused, match="not valid"):
        signer.verify(value, "cookie")  # a link is no cookie: it cannot be kept for 12 h


@pytest.mark.parametrize(
    "junk",
    ["", ".", "..", "a.b", "x" * 5000, "é.é", "a" * 43, f"{'a' * 10}.{'b' * 43}", "%00.%00", "a.b.c"],
)
def test_junk_is_refused_as_not_valid(junk: str) -> None:
    with pytest.raises(Refused) as refused:
        LinkSigner(key=KEY).verify(junk, "link")
    assert (refused.value.status, str(refused.value)) == (401, NOT_VALID)


def test_the_key_is_made_once_private_and_outlives_the_signer(tmp_path: Path) -> None:
    path = tmp_path / "state" / LINK_SECRET_FILE
    value, _ = LinkSigner(path).sign("link", "alice", 0, "/sessions/0/driver-log", LINK_TTL)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes().strip()
    assert key.decode() not in value and len(key) >= 64
    assert LinkSigner(path).verify(value, "link").user == "alice"  # after a restart
    assert link_key(path) == key
    os.chmod(path, 0o644)
    with pytest.raises(Exception, match="chmod 600"):
        link_key(path)


def test_a_key_that_cannot_be_read_or_made_says_which_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "state").write_text("a file where the state dir should be")
    with pytest.raises(SecretFileError, match="link-secret cannot be read: Not a directory"):
        link_key(tmp_path / "state" / LINK_SECRET_FILE)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(SecretFileError, match="link-secret cannot be made: No space left on device"):
        link_key(tmp_path / "other" / LINK_SECRET_FILE)


def test_an_unusable_key_is_a_503_that_names_no_file_and_the_log_says_why(
    world: Links, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / LINK_SECRET_FILE
    key.write_text("0" * 64 + "\n")
    key.chmod(0o644)  # another OS user could read it: refused, not used
    issued = world.api.post(f"/sessions/{world.alices.id}/links", headers=auth("alice"))
    assert issued.status_code == 503 and "operator" in issued.json()["msg"]
    opened = world.browser.get(f"/sessions/{world.alices.id}/driver-log?{LINK_PARAM}={'a' * 10}.{'b' * 43}")
    assert opened.status_code == 503 and opened.text.strip() == NO_KEY
    for reply in (issued, opened):
        assert str(tmp_path) not in reply.text and "0" * 64 not in reply.text
    assert f"{key} can be read by other OS users" in caplog.text and "0" * 64 not in caplog.text
    key.chmod(0o600)  # fixed: links work again, without a restart
    assert world.api.post(f"/sessions/{world.alices.id}/links", headers=auth("alice")).status_code == 200


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/sessions/3/ui/", (3, "/sessions/3/ui/")),
        ("/sessions/3/ui/static/app.css", (3, "/sessions/3/ui/")),
        ("/sessions/3/driver-log", (3, "/sessions/3/driver-log")),
        ("/sessions/3/ui", None),
        ("/sessions/3/ui/../log", None),
        ("/sessions/3/ui/./jobs/", None),
        ("/sessions/03/ui/", None),
        ("/sessions/3/log", None),
        ("/sessions/3", None),
        ("/sessions/3/statements", None),
        ("/v2.0/p/sessions/3/ui/", None),
        ("/sessions/alices/ui/", None),
    ],
)
def test_only_a_sessions_ui_and_log_pages_take_a_link(path: str, scope: tuple[int, str] | None) -> None:
    assert browser_scope(path) == scope


# -- issuing and opening links -------------------------------------------------------------------------


def test_the_server_lists_the_extension_and_the_session_names_the_text_log(world: Links) -> None:
    assert EXT_LINKS in world.api.get("/version", headers=auth("alice")).json()["extensions"]
    session = world.api.get(f"/sessions/{world.alices.id}", headers=auth("alice")).json()
    assert session["appInfo"]["driverLogUrl"] == f"{BASE_URL}/sessions/{world.alices.id}/driver-log"


def test_links_name_the_pages_carry_no_token_and_say_how_long_they_open(world: Links) -> None:
    links = world.links()
    assert links["id"] == world.alices.id and links["expiresIn"] == LINK_TTL
    assert links["expiresAt"] == START + LINK_TTL
    assert links["sparkUiUrl"].startswith(f"{BASE_URL}/sessions/{world.alices.id}/ui/?{LINK_PARAM}=")
    assert links["driverLogUrl"].startswith(f"{BASE_URL}/sessions/{world.alices.id}/driver-log?{LINK_PARAM}=")
    assert all(token not in json.dumps(links) for token in TOKENS.values())
    dli = world.api.post(f"/v2.0/p/sessions/{world.alices.uuid}/links", headers=auth("alice")).json()
    assert dli["id"] == world.alices.uuid and dli["sparkUiUrl"].startswith(f"{BASE_URL}/sessions/0/ui/?")


def test_a_session_without_a_ui_gets_only_its_log_link(world: Links) -> None:
    world.alices.ui_url = None
    links = world.links()
    assert links["sparkUiUrl"] is None and links["driverLogUrl"]


def test_a_ui_link_redirects_to_the_clean_url_with_a_cookie_for_that_ui_only(world: Links) -> None:
    reply = world.open(world.links()["sparkUiUrl"])
    assert reply.status_code == 303
    assert reply.headers["location"] == "/sessions/0/ui/"
    assert reply.headers["referrer-policy"] == "no-referrer" and reply.headers["cache-control"] == "no-store"
    cookie = reply.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path", "samesite"} <= attributes and "secure" not in attributes
    assert f"Max-Age={COOKIE_TTL}" in cookie and "Path=/sessions/0/ui/" in cookie
    assert "samesite=lax" in cookie.lower()


def test_under_tls_the_cookie_is_secure(tmp_path: Path, httpserver: HTTPServer) -> None:
    for world in make_links(tmp_path, httpserver, base_url="https://testserver"):
        reply = world.open(world.links()["sparkUiUrl"])
        assert reply.status_code == 303 and "secure" in reply.headers["set-cookie"].lower()


def test_with_the_cookie_the_ui_pages_and_assets_load_and_the_ui_never_sees_it(world: Links) -> None:
    page, asset = ui_page(world, "/jobs/"), ui_page(world, "/static/webui.css", "body{}")
    world.open(world.links()["sparkUiUrl"])  # the browser keeps the cookie
    assert world.browser.get("/sessions/0/ui/jobs/").text == "<html>Spark Jobs</html>"
    css = world.browser.get("/sessions/0/ui/static/webui.css")
    assert css.status_code == 200 and css.text == "body{}"
    assert world.browser.head("/sessions/0/ui/jobs/").status_code == 200
    for seen in (*page, *asset):
        assert "Cookie" not in seen.headers and "Authorization" not in seen.headers


def test_the_cookie_opens_no_api_route_and_no_other_method(world: Links) -> None:
    world.open(world.links()["sparkUiUrl"])
    world.open(world.links()["driverLogUrl"])
    (cookie,) = {c.value for c in world.browser.cookies.jar if c.path == "/sessions/0/ui/"}
    sent = {"Cookie": f"{LINK_COOKIE}={cookie}"}
    for method, path in [
        ("GET", "/sessions"),
        ("GET", "/sessions/0"),
        ("GET", "/sessions/0/log"),
        ("GET", "/sessions/0/statements"),
        ("POST", "/sessions/0/statements"),
        ("POST", "/sessions/0/links"),
        ("DELETE", "/sessions/0"),
        ("GET", "/version"),
        ("POST", "/sessions/0/ui/jobs/"),
        ("GET", "/v2.0/p/sessions/0"),
    ]:
        reply = world.api.request(method, path, headers=sent, json={"code": "1"})
        assert reply.status_code == 401, (method, path)
        assert reply.json() == {"msg": REFUSED}
    assert world.alices.state == "idle"
    # The UI's cookie is not the log page's, and the other way round.
    other = world.api.get("/sessions/0/driver-log", headers=sent)
    assert other.status_code == 403 and other.text.strip() == OTHER_PAGE


def test_a_link_opens_only_its_own_session_and_page(world: Links) -> None:
    links = world.links()
    ui, log = link_value(links["sparkUiUrl"]), link_value(links["driverLogUrl"])
    for path, value in [
        ("/sessions/1/ui/", ui),  # another session
        ("/sessions/0/driver-log", ui),  # another page of the session
        ("/sessions/0/ui/", log),
        ("/sessions/1/driver-log", log),
    ]:
        reply = world.open(with_value(path, value))
        assert reply.status_code == 403 and reply.text.strip() == OTHER_PAGE, path
        assert "set-cookie" not in reply.headers


def test_bob_can_neither_get_alices_links_nor_turn_his_into_hers(world: Links) -> None:
    reply = world.api.post("/sessions/0/links", headers=auth("bob"))
    assert reply.status_code == 404
    assert world.api.post("/sessions/987/links", headers=auth("bob")).json() == {
        "msg": reply.json()["msg"].replace("'0'", "'987'")
    }
    bobs = link_value(world.links("bob", world.bobs)["sparkUiUrl"])
    for value in (
        forged(bobs, user="alice"),
        forged(bobs, session_id=0, path="/sessions/0/ui/"),
        forged(bobs, user="root"),
        forged(bobs, expires=START + 10**6),
        forged(bobs, kind="cookie"),
    ):
        for path in ("/sessions/0/ui/", "/sessions/1/ui/"):
            refused = world.open(with_value(path, value))
            assert refused.status_code == 401 and refused.text.strip() == NOT_VALID
    # His own link, at her UI's path, opens nothing either.
    assert world.open(with_value("/sessions/0/ui/", bobs)).status_code == 403


def test_an_expired_link_and_an_expired_cookie_say_to_ask_for_a_new_one(world: Links) -> None:
    ui_page(world, "/")
    links = world.links()
    world.clock.now = START + LINK_TTL
    reply = world.open(links["sparkUiUrl"])
    assert reply.status_code == 401 and reply.text.strip() == EXPIRED_LINK
    world.clock.now = START
    assert world.open(links["sparkUiUrl"]).status_code == 303
    world.clock.now = START + COOKIE_TTL - 1
    assert world.browser.get("/sessions/0/ui/").status_code == 200
    world.clock.now = START + COOKIE_TTL
    expired = world.browser.get("/sessions/0/ui/")
    assert expired.status_code == 401 and expired.text.strip() == EXPIRED_COOKIE
    assert "%session ui" in expired.text


def test_a_stale_link_in_a_browser_whose_cookie_still_opens_goes_to_the_page(world: Links) -> None:
    links = world.links()
    world.open(links["driverLogUrl"])
    world.clock.now = START + LINK_TTL + 60  # the tab reloaded from history, link long expired
    reply = world.open(links["driverLogUrl"])
    assert reply.status_code == 303 and reply.headers["location"] == "/sessions/0/driver-log"
    assert "set-cookie" not in reply.headers


def test_a_removed_user_s_link_and_cookie_open_nothing(world: Links) -> None:
    links = world.links()
    world.open(links["driverLogUrl"])
    del world.users.principals["alice"]
    assert world.browser.get("/sessions/0/driver-log").text.strip() == NO_USER
    reply = world.open(links["sparkUiUrl"])
    assert reply.status_code == 403 and reply.text.strip() == NO_USER


def test_a_user_who_no_longer_sees_the_session_gets_what_a_missing_one_gets(world: Links) -> None:
    links = world.links()
    world.open(links["driverLogUrl"])
    world.alices.owner = "carol"
    reply = world.browser.get("/sessions/0/driver-log")
    assert reply.status_code == 404 and "does not exist" in reply.json()["msg"]


@pytest.mark.parametrize(
    "query",
    [
        f"{LINK_PARAM}=",
        f"{LINK_PARAM}=.",
        f"{LINK_PARAM}=%FF%FE",
        f"{LINK_PARAM}=%00",
        f"{LINK_PARAM}={'A' * 10000}",
        f"{LINK_PARAM}=a.b&{LINK_PARAM}=c.d",
        f"{LINK_PARAM}={'a' * 20}.{'b' * 43}",
    ],
)
@pytest.mark.parametrize("path", ["/sessions/0/ui/", "/sessions/0/driver-log", "/sessions/99/ui/x"])
def test_junk_links_are_refused_never_a_500(world: Links, path: str, query: str) -> None:
    reply = world.browser.get(f"{path}?{query}", follow_redirects=False)
    assert reply.status_code == 401 and reply.text.strip() == NOT_VALID


@pytest.mark.parametrize(
    "cookie",
    [f"{LINK_COOKIE}=junk", f'{LINK_COOKIE}="a.b"', f"{LINK_COOKIE}={'x' * 5000}", f"a=b; {LINK_COOKIE}=.;"],
)
def test_junk_cookies_are_refused_and_dropped_never_a_500(world: Links, cookie: str) -> None:
    reply = world.browser.get("/sessions/0/ui/", headers={"Cookie": cookie})
    assert reply.status_code == 401 and reply.text.strip() == NOT_VALID
    assert "Max-Age=0" in reply.headers["set-cookie"] or "expires=" in reply.headers["set-cookie"].lower()


def test_a_cookie_of_another_name_is_no_credential(world: Links) -> None:
    reply = world.browser.get("/sessions/0/ui/", headers={"Cookie": "session=abc"})
    assert reply.status_code == 401 and reply.json() == {"msg": REFUSED}


# -- the log page ------------------------------------------------------------------------------------


def test_the_log_page_is_the_whole_log_or_its_last_lines_as_text(world: Links) -> None:
    reply = world.open(world.links()["driverLogUrl"] + "&lines=3")
    assert reply.status_code == 303 and reply.headers["location"] == "/sessions/0/driver-log?lines=3"
    last = world.browser.get("/sessions/0/driver-log?lines=3")
    assert last.headers["content-type"].startswith("text/plain")
    assert last.headers["x-content-type-options"] == "nosniff"
    assert last.text == "".join(f"line {n}\n" for n in range(LOG_LINES - 3, LOG_LINES))
    whole = world.browser.get("/sessions/0/driver-log")
    assert whole.text == world.alices.log_path.read_text()
    for bad in ("0", "x", "-1"):
        refused = world.browser.get(f"/sessions/0/driver-log?lines={bad}")
        assert refused.status_code == 400 and "'lines'" in refused.json()["msg"]


def test_the_log_page_takes_a_token_too(world: Links) -> None:
    reply = world.api.get("/sessions/0/driver-log?lines=1", headers=auth("alice"))
    assert reply.status_code == 200 and reply.text == f"line {LOG_LINES - 1}\n"
    assert world.api.get("/sessions/0/driver-log", headers=auth("bob")).status_code == 404


# -- the server's own users: one token, or a users file and the operator --------------------------------


def test_on_a_one_person_server_the_operators_link_opens(tmp_path: Path) -> None:
    manager = FakeManager(tmp_path)
    session = manager.add_session(SessionSpec(kind="pyspark"))
    session.owner = operator_name()
    app = create_app(manager, "the-token", BASE_URL)
    with TestClient(app) as api, TestClient(app) as browser:
        links = api.post(f"/sessions/{session.id}/links", headers={"Authorization": "Bearer the-token"})
        url = urlsplit(links.json()["driverLogUrl"])
        page = browser.get(f"{url.path}?{url.query}")
        assert page.status_code == 200 and page.text == session.log_path.read_text()
    assert stat.S_IMODE((tmp_path / "state" / LINK_SECRET_FILE).stat().st_mode) == 0o600


def test_with_a_users_file_a_removed_users_link_stops_opening(tmp_path: Path) -> None:
    path, clock = tmp_path / "users.json", Clock()
    write_users(path, [User("alice", hash_token("alice-token")), User("bob", hash_token("bob-token"))])
    users = UsersFile(path, operator=SingleToken("op-token", operator_name()), dlc_secret=KEY, clock=clock)
    manager = FakeManager(tmp_path)
    session = manager.add_session(SessionSpec(kind="pyspark"))  # alice's
    app = create_app(manager, "op-token", BASE_URL, users=users)
    opened: dict[str, str] = {}
    with TestClient(app) as api:
        for token in ("alice-token", "op-token"):  # hers, and the operator's (an admin, in no file line)
            reply = api.post(f"/sessions/{session.id}/links", headers={"Authorization": f"Bearer {token}"})
            url = urlsplit(reply.json()["driverLogUrl"])
            opened[token] = f"{url.path}?{url.query}"
            with TestClient(app) as browser:
                assert browser.get(opened[token]).status_code == 200, token
        write_users(path, [User("bob", hash_token("bob-token"))])
        clock.now += 60  # the server looks at the file again
        with TestClient(app) as browser:
            gone = browser.get(opened["alice-token"])
            assert gone.status_code == 403 and gone.text.strip() == NO_USER
            assert browser.get(opened["op-token"]).status_code == 200
