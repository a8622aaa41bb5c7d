"""The server the fuzz suite fires at: the real app and the real SessionManager, served by uvicorn on a
loopback port, over fake drivers that answer each statement at once (no Java), with two users.

Real parts wherever the fuzz can reach them fast: the HTTP server, the middleware (token, body size), the
routes, the manager's rules and its SQLite store. Only the driver is fake: a real one is a JVM, and the
suite's thousand-plus requests against real drivers would not fit a CI run.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from dli_kernel.server.driver_process import ExecutionResult
from dli_kernel.server.manager import ManagedSession, SessionManager
from dli_kernel.server.principal import Principal
from tests.unit.manager_fakes import FakeDriver, FakeLauncher, make_manager

FUZZER, OTHER = "fuzzer", "other"
TOKENS = {FUZZER: "fuzzer-token-0f3a9c", OTHER: "other-token-77b2e1"}
DLC_KEYS = {FUZZER: "fuzzer-dlc-key-5d1e"}
MAX_SESSIONS = 6  # the fuzzer's live sessions: creates beyond it are 429s, which the fuzz meets too
TIMEOUT = 30.0  # seconds one request may take; a long-poll is capped far below it (see test_fuzz)


class StubUi(BaseHTTPRequestHandler):
    """Stands in for a driver's Spark UI: a small page for any GET, a redirect for /jobs (as Spark's
    root does), so the proxy's answers are the server's own, not a refused connection's."""

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", f"http://{self.headers.get('Host')}/jobs/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        page = b"<html>stub Spark UI</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class InstantDriver(FakeDriver):
    """A fake driver that finishes each statement as soon as it starts, echoing its code; its Spark UI
    is ``ui_url``."""

    ui_url = "http://127.0.0.1:4040"

    def call(self, expression: str, setup: str = "", timeout: float | None = None) -> Any:
        answer = super().call(expression, setup, timeout)
        if isinstance(answer, str) and "sparkUiUrl" in answer:
            answer = json.dumps({**json.loads(answer), "sparkUiUrl": self.ui_url})
        return answer

    def execute(
        self,
        code: str,
        on_text: Callable[[str], None] | None = None,
        on_started: Callable[[str], None] | None = None,
        data: dict[str, Any] | None = None,
        keep_final_newline: bool = False,
    ) -> ExecutionResult:
        threading.Thread(target=self._finish_next, daemon=True).start()
        return super().execute(code, on_text, on_started, data, keep_final_newline)

    def _finish_next(self) -> None:
        run = self.next_run()
        run.started.wait(5)
        run.finish(text=f"ran {len(run.code)} characters")


class InstantLauncher(FakeLauncher):
    def __call__(self, workdir: Path, log_path: Path, env: dict[str, str]) -> FakeDriver:
        workdir.mkdir(parents=True, exist_ok=True)
        driver = InstantDriver(workdir, self)
        self.drivers.append(driver)
        return driver


class FuzzUsers:
    """Two plain users (no admin): the fuzzer, with a DLC key too, and another, whose session the fuzzer
    must never reach."""

    def bearer(self, token: str) -> Principal | None:
        return next((Principal(name) for name, known in TOKENS.items() if token == known), None)

    def dlc_key(self, secret_id: str) -> tuple[str, Principal] | None:
        key = DLC_KEYS.get(secret_id)
        return (key, Principal(secret_id)) if key else None

    def named(self, name: str) -> Principal | None:
        return Principal(name) if name in TOKENS else None


def auth(user: str = FUZZER) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


@dataclass
class Served:
    url: str
    manager: SessionManager
    http: requests.Session

    def request(self, method: str, path: str, user: str = FUZZER, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.url + path, headers=auth(user), timeout=TIMEOUT, **kwargs)

    def seed(self, name: str, user: str = FUZZER) -> ManagedSession:
        """An idle session of ``user``, made over HTTP, with one finished statement (id 0)."""
        made = self.request("POST", "/sessions", user, json={"kind": "pyspark", "name": name})
        assert made.status_code == 201, made.text
        session = self.manager.get(str(made.json()["id"]))
        ran = self.request("POST", f"/sessions/{session.id}/statements", user, json={"code": "1 + 1"})
        assert ran.status_code == 201, ran.text
        deadline = time.monotonic() + 10
        while session.state != "idle" or session.statements[0].state != "available":
            assert time.monotonic() < deadline, f"seeded session stuck in {session.state}"
            time.sleep(0.01)
        return session

    def live(self, user: str) -> list[ManagedSession]:
        return [s for s in self.manager.list() if s.owner == user and not s.ended]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    uvicorn = pytest.importorskip("uvicorn")  # here, not at import: this folder's other tests need no server
    from dli_kernel.server.app import create_app

    tmp_path = tmp_path_factory.mktemp("fuzz")
    ui = ThreadingHTTPServer(("127.0.0.1", 0), StubUi)
    threading.Thread(target=ui.serve_forever, daemon=True).start()
    InstantDriver.ui_url = f"http://127.0.0.1:{ui.server_address[1]}"
    manager = make_manager(tmp_path, InstantLauncher(), max_sessions_per_user=MAX_SESSIONS, reap_every=0.2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = create_app(manager, "no-ones-token", url, users=FuzzUsers())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        with requests.Session() as http:
            yield Served(url, manager, http)
    finally:
        server.should_exit = True
        thread.join(10)
        manager.close()
        ui.shutdown()
        ui.server_close()
