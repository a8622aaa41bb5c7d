"""Signed browser links against the real server and a real session: a browser without the token (a plain
``requests.Session``) opens the Spark UI link, follows its redirect and loads the UI's pages and assets
with the cookie alone; the log link shows the session's log as text; a changed link opens nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dli_kernel.client import SessionsClient
from dli_kernel.client.auth import BearerToken
from dli_kernel.client.dialects import SessionLinks
from tests.integration.conftest import Server
from tests.integration.test_tls import ca_and_pair, tls_server  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def session(server: Server) -> Iterator[dict[str, Any]]:
    created = server.create(kind="pyspark", name="browser-links", heartbeatTimeoutInSecond=900)
    server.wait_state(created["id"], ("idle",))
    server.run(created["id"], "spark.range(10).count()")  # a job, for the UI's jobs page
    yield server.get(f"/sessions/{created['id']}").json()
    assert server.delete(f"/sessions/{created['id']}").status_code == 200


@pytest.fixture(scope="module")
def links(server: Server, session: dict) -> SessionLinks:
    with SessionsClient(server.url, "livy", auth=BearerToken(server.token)) as client:
        found = client.links(session["id"])
    assert found is not None and found.spark_ui and found.driver_log
    assert found.expires_in > 0 and server.token not in found.spark_ui + found.driver_log
    return found


def browser() -> requests.Session:
    """A browser as the server sees one: no token, keeps cookies, follows redirects."""
    http = requests.Session()
    http.trust_env = False
    return http


def test_the_ui_link_opens_the_ui_and_its_assets_with_the_cookie_alone(
    server: Server, session: dict, links: SessionLinks
) -> None:
    http = browser()
    prefix = f"{server.url}/sessions/{session['id']}/ui"
    assert links.spark_ui is not None
    opened = http.get(links.spark_ui, timeout=60)
    assert opened.history and opened.history[0].status_code == 303
    assert opened.status_code == 200 and "text/html" in opened.headers["Content-Type"]
    assert "link=" not in opened.url and opened.url.startswith(prefix + "/")
    page = http.get(prefix + "/jobs/", timeout=60)
    assert page.status_code == 200 and "Spark Jobs" in page.text
    assets = re.findall(r'(?:href|src)="(/[^"]*/static/[^"]*)"', page.text)
    assert assets, page.text[:500]
    asset = http.get(server.url + assets[0], timeout=60)
    assert asset.status_code == 200 and asset.content
    api = http.get(f"{prefix}/api/v1/applications", timeout=60).json()
    assert [app["id"] for app in api] == [session["appId"]]
    # The cookie is no token: the API refuses it.
    for path in (f"/sessions/{session['id']}", f"/sessions/{session['id']}/log", "/sessions"):
        assert http.get(server.url + path, timeout=60).status_code == 401, path
    assert http.post(f"{server.url}/sessions/{session['id']}/links", timeout=60).status_code == 401


def test_the_log_link_shows_the_sessions_log_as_text(
    server: Server, session: dict, links: SessionLinks
) -> None:
    assert links.driver_log is not None
    page = browser().get(links.driver_log, timeout=60)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/plain")
    first = server.get(f"/sessions/{session['id']}/log", params={"from": 0, "size": 20}).json()["log"]
    assert first and page.text.splitlines()[: len(first)] == first
    assert session["appInfo"]["driverLogUrl"] == f"{server.url}/sessions/{session['id']}/driver-log"


def test_a_changed_link_opens_nothing_and_says_what_to_do(server: Server, links: SessionLinks) -> None:
    assert links.spark_ui is not None and links.driver_log is not None
    for url in (links.spark_ui, links.driver_log):
        changed = url[:-1] + ("A" if url[-1] != "A" else "B")
        reply = browser().get(changed, timeout=60)
        assert reply.status_code == 401 and "%session ui" in reply.text
        assert "set-cookie" not in reply.headers


def test_another_user_gets_no_link_to_the_session(server: Server, session: dict) -> None:
    if not server.users:
        pytest.skip("the shared server has no users file")
    bob = server.as_user("bob")
    assert bob.post(f"{server.url}/sessions/{session['id']}/links", timeout=60).status_code == 404


def test_over_tls_the_link_sets_a_secure_cookie(request: pytest.FixtureRequest) -> None:
    secure: Server = request.getfixturevalue("tls_server")  # test_tls's, imported above
    ca = request.getfixturevalue("ca_and_pair")[0]
    created = secure.create(kind="pyspark", name="tls-links")
    try:
        secure.wait_state(created["id"], ("idle",))
        found = secure.post(f"/sessions/{created['id']}/links").json()
        assert found["driverLogUrl"].startswith("https://")
        http = browser()
        http.verify = str(ca)
        opened = http.get(found["driverLogUrl"], timeout=60)
        assert opened.status_code == 200 and opened.history[0].status_code == 303
        assert "secure" in opened.history[0].headers["set-cookie"].lower()
        assert [cookie.secure for cookie in http.cookies] == [True]
    finally:
        assert secure.delete(f"/sessions/{created['id']}").status_code == 200
