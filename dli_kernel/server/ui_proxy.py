"""Each session's Spark UI, served under the server's own token (or a browser link's cookie, see
``dli_kernel.server.links``): ``/sessions/{id}/ui/...`` forwards to the driver's UI, which listens on the
loopback only, and streams its answer back.

The UI makes its links with the prefix a proxy names in ``X-Forwarded-Context`` (Spark's support for Apache
Knox), so its pages, their scripts and its REST API stay under the prefix; its redirects name its own
address, which is rewritten here. Only GET and HEAD are forwarded, and never the caller's credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route

from dli_kernel.server.answers import JSONAnswer
from dli_kernel.server.manager import SessionManager
from dli_kernel.server.params import requested_session
from dli_kernel.server.principal import Principal

log = logging.getLogger("dli_kernel.server")

# Connecting to a loopback port is instant when the UI is up; a page or an event log may take a while.
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 60.0
CHUNK = 64 * 1024
# What a request may tell the UI: never its credentials (the server's token, cookies).
REQUEST_HEADERS = (
    "accept",
    "accept-encoding",
    "accept-language",
    "if-modified-since",
    "if-none-match",
    "range",
    "user-agent",
)
# What of the UI's answer goes back: its content and the headers that keep its pages safe; not the
# hop-by-hop ones, nor cookies.
RESPONSE_HEADERS = (
    "accept-ranges",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-length",
    "content-range",
    "content-security-policy",
    "content-type",
    "etag",
    "expires",
    "last-modified",
    "location",
    "referrer-policy",
    "strict-transport-security",
    "vary",
    "x-content-type-options",
    "x-frame-options",
    "x-xss-protection",
)
# Characters a path keeps as they are when it is sent on: RFC 3986's pchar without the percent sign.
PATH_SAFE = "/:@!$&'()*+,;=-._~"


def ui_path(session_id: int) -> str:
    """Where the server serves a session's Spark UI (the Livy path, which every family's clients can use);
    without its final slash, as Spark's own UI address has none, so that callers may append a path."""
    return f"/sessions/{session_id}/ui"


def driver_log_path(session_id: int) -> str:
    """Where the server serves a session's driver log as text for a browser (the Livy path, as above;
    ``endpoints.driver_log``)."""
    return f"/sessions/{session_id}/driver-log"


def ui_routes() -> list[Mount]:
    """The proxy, mounted at every session's UI prefix; its one route answers GET and HEAD.

    A mount, not a route of the app's table: the table's tests build each route's URL from its session and
    statement ids, and this one takes any path after them (tests/unit/test_ui_proxy.py covers it)."""
    return [Mount("/sessions/{session_id}/ui", routes=[Route("/{path:path}", spark_ui, methods=["GET"])])]


def upstream_url(ui_url: str, path: str, query: str) -> str:
    """The driver's UI address for a path under the proxy's prefix."""
    url = f"{ui_url.rstrip('/')}/{quote(path.lstrip('/'), safe=PATH_SAFE)}"
    return f"{url}?{query}" if query else url


def proxied_location(location: str, ui_url: str, prefix: str) -> str:
    """A redirect of the UI's, as the caller must follow it: to the UI's own address becomes to the
    prefix; one elsewhere, or relative to the page, stays as it is."""
    ui, target = urlsplit(ui_url), urlsplit(location)
    if target.scheme or target.netloc:
        if (target.scheme, target.netloc) != (ui.scheme, ui.netloc):
            return location
    elif not target.path.startswith("/"):
        return location
    path = target.path or "/"
    if path != prefix and not path.startswith(prefix + "/"):
        path = prefix + path
    return urlunsplit(("", "", path, target.query, target.fragment))


def response_headers(upstream: Mapping[str, str], ui_url: str, prefix: str) -> dict[str, str]:
    """The UI's headers worth passing on (``upstream`` looks names up in any case), its redirect made ours."""
    headers = {name: upstream[name] for name in RESPONSE_HEADERS if name in upstream}
    if "location" in headers:
        headers["location"] = proxied_location(headers["location"], ui_url, prefix)
    return headers


def request_headers(incoming: Headers, prefix: str) -> dict[str, str]:
    headers = {name: incoming[name] for name in REQUEST_HEADERS if name in incoming}
    # Without it, requests would ask for gzip and hand a caller that did not ask for it compressed bytes.
    headers.setdefault("accept-encoding", "identity")
    headers["x-forwarded-context"] = prefix
    return headers


class Upstream:
    """One request to a driver's UI, on its own connection: closed once its answer has been passed on."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self._http = requests.Session()
        self._http.trust_env = False  # a loopback address: no HTTP_PROXY, no .netrc credentials
        try:
            self.response = self._http.request(
                method,
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except BaseException:
            self._http.close()
            raise

    def chunks(self) -> Iterator[bytes]:
        """The body as the UI sent it (still compressed if it was): a UI that stops answering ends it."""
        try:
            yield from self.response.raw.stream(CHUNK, decode_content=False)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as err:
            log.warning("the Spark UI stopped answering mid-body: %s", type(err).__name__)
        finally:
            self.close()

    def close(self) -> None:
        self.response.close()
        self._http.close()


async def spark_ui(request: Request) -> Response:
    viewer = request.user
    assert isinstance(viewer, Principal)  # the token check put them there
    manager: SessionManager = request.app.state.manager
    session = await run_in_threadpool(requested_session, manager, request.path_params["session_id"], viewer)
    ui_url = session.ui_url
    if not ui_url or session.ended:
        state = session.state
        return JSONAnswer({"msg": f"session {session.id} has no Spark UI now: it is {state}."}, 409)
    # Under the app's root path, not the mount's (which ends in the session's key as the caller wrote it).
    prefix = request.scope.get("app_root_path", "") + ui_path(session.id)
    url = upstream_url(ui_url, request.path_params.get("path", ""), request.url.query)
    headers = request_headers(request.headers, prefix)
    try:
        upstream = await run_in_threadpool(Upstream, request.method, url, headers)
    except requests.Timeout:
        msg = f"the Spark UI of session {session.id} did not answer within {READ_TIMEOUT:.0f} s."
        return JSONAnswer({"msg": msg}, 504)
    except requests.RequestException as err:
        msg = f"the Spark UI of session {session.id} could not be reached ({type(err).__name__})."
        return JSONAnswer({"msg": msg}, 502)
    answer = upstream.response
    headers = response_headers(answer.headers, ui_url, prefix)
    if request.method == "HEAD" or answer.status_code in (204, 304):
        await run_in_threadpool(upstream.close)
        return Response(status_code=answer.status_code, headers=headers)
    return StreamingResponse(
        upstream.chunks(),
        status_code=answer.status_code,
        headers=headers,
        background=BackgroundTask(upstream.close),
    )
