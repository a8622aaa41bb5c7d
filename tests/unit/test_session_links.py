"""Browser links on the client and in ``%session``: ``SessionsClient.links`` asks only a server that lists
the ``links`` extension; ``%session`` and ``%session ui`` show the signed links and how long they open,
and against other servers the URLs as the server reports them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from dli_kernel.client import ClientError, SessionInfo, SessionsClient
from dli_kernel.client.dialects import SessionLinks
from dli_kernel.kernel.magics import session as session_module
from dli_kernel.kernel.magics.runner import StatementRunner
from dli_kernel.kernel.magics.session import SessionMagics
from dli_kernel.protocol import EXT_LINKS, EXT_WAIT
from dli_kernel.spec import SessionSpec

SIGNED_UI = "http://127.0.0.1:8998/sessions/3/ui/?link=abc.def"
SIGNED_LOG = "http://127.0.0.1:8998/sessions/3/driver-log?link=ghi.jkl"
REPORTED_UI = "http://127.0.0.1:8998/sessions/3/ui"
REPORTED_LOG = "http://127.0.0.1:8998/sessions/3/driver-log"


def client_for(httpserver: HTTPServer, extensions: list[str]) -> SessionsClient:
    httpserver.expect_request("/version").respond_with_json({"extensions": extensions})
    return SessionsClient(httpserver.url_for("/").rstrip("/"), "livy", retry_delays=(0.0, 0.0))


def test_the_client_asks_a_server_that_lists_the_extension(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sessions/3/links", method="POST").respond_with_json(
        {"id": 3, "sparkUiUrl": SIGNED_UI, "driverLogUrl": SIGNED_LOG, "expiresIn": 600, "expiresAt": 1}
    )
    with client_for(httpserver, [EXT_WAIT, EXT_LINKS]) as client:
        assert client.links(3) == SessionLinks(SIGNED_UI, SIGNED_LOG, 600)


def test_the_client_never_asks_a_server_without_it(httpserver: HTTPServer) -> None:
    with client_for(httpserver, [EXT_WAIT]) as client:
        assert client.links(3) is None
    assert [request.path for request, _ in httpserver.log] == ["/version"]


@pytest.mark.parametrize(
    "body",
    [{}, [], {"sparkUiUrl": "javascript:alert(1)", "expiresIn": True}, {"sparkUiUrl": 3, "expiresIn": -1}],
)
def test_an_odd_answer_gives_no_links(httpserver: HTTPServer, body: Any) -> None:
    assert SessionLinks.from_json(body) == SessionLinks(None, None, 0)
    httpserver.expect_request("/sessions/3/links", method="POST").respond_with_json(body)
    with client_for(httpserver, [EXT_WAIT, EXT_LINKS]) as client:
        assert client.links(3) is None  # links that expire at once would open nothing


# -- %session ---------------------------------------------------------------------------------------


class FakeClient:
    def __init__(self, links: SessionLinks | Exception | None) -> None:
        self._links = links
        self.url = "http://127.0.0.1:8998"

    def get_session(self, session_id: str) -> SessionInfo:
        return SessionInfo(
            id="3", state="idle", kind="pyspark", spark_ui_url=REPORTED_UI, driver_log_url=REPORTED_LOG
        )

    def links(self, session_id: str) -> SessionLinks | None:
        if isinstance(self._links, Exception):
            raise self._links
        return self._links


def magics(links: SessionLinks | Exception | None) -> SessionMagics:
    info = SimpleNamespace(id="3")
    holder = SimpleNamespace(client=FakeClient(links), spec=SessionSpec(), session=SimpleNamespace(info=info))
    return SessionMagics(None, StatementRunner(holder))  # type: ignore[arg-type]


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    bundles: list[dict[str, str]] = []
    monkeypatch.setattr(session_module, "publish_display_data", bundles.append)
    return bundles


def test_info_shows_the_signed_links_and_how_long_they_open(shown: list[dict[str, str]]) -> None:
    magics(SessionLinks(SIGNED_UI, SIGNED_LOG, 600)).session("")
    text, page = shown[0]["text/plain"], shown[0]["text/html"]
    assert SIGNED_UI in text and SIGNED_LOG in text and REPORTED_LOG + "\n" not in text
    assert "open in a browser for 10 min" in text
    assert f'href="{SIGNED_UI.replace("&", "&amp;")}"' in page


@pytest.mark.parametrize("links", [None, ClientError("no answer")])
def test_info_without_links_shows_the_urls_as_reported(shown: list[dict[str, str]], links: Any) -> None:
    magics(links).session("")
    text = shown[0]["text/plain"]
    assert REPORTED_UI in text and REPORTED_LOG in text and "open in a browser" not in text


def test_ui_shows_the_signed_link_and_how_long_it_opens(
    shown: list[dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    magics(SessionLinks(SIGNED_UI, SIGNED_LOG, 600)).session("ui")
    (bundle,) = shown
    assert bundle["text/plain"].startswith(f"Spark UI: {SIGNED_UI} (opens for 10 min")
    assert "(opens for 10 min" in bundle["text/html"] and SIGNED_UI in bundle["text/html"]
    assert "header" not in capsys.readouterr().out


@pytest.mark.parametrize("links", [None, ClientError("no answer")])
def test_ui_without_links_shows_the_url_as_reported_and_no_add_on(
    shown: list[dict[str, str]], capsys: pytest.CaptureFixture[str], links: Any
) -> None:
    magics(links).session("ui")
    assert shown[0]["text/plain"] == f"Spark UI: {REPORTED_UI}"
    assert capsys.readouterr().out == ""
