"""The network between client and server fails: a statement never runs twice, and is never lost silently.

A fault proxy (fault_proxy.py) sits between the client and the server and drops, resets, cuts short or
delays chosen requests or their answers. First against a small fake Livy (fast, no Java), then against the
real embedded server with a real Spark session, whose code counts its own runs in a variable (``n``), with
the SessionsClient and with a real PySpark kernel started by jupyter_client.

A POST is not idempotent. When its answer is lost the client looks at the session's statements: found, it
goes on with it; not found, it says so and does not send it again. GETs and DELETEs are retried.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dli_kernel.client import ConnectionFailed, SessionsClient
from dli_kernel.spec import SessionSpec
from tests.integration.conftest import wait_until
from tests.reliability.fault_proxy import MODES, FaultProxy, Kernel, figure, kernel_environment

POST_STATEMENTS = r"/statements$"
GET_STATEMENT = r"/statements/\d+(\?|$)"
# Faults after which the statement surely reached the server, and those after which it surely did not.
LANDED = ("drop_answer", "reset_answer", "truncate", "delay")
NOT_SENT = ("drop", "reset")
TIMEOUT = (5.0, 1.5)  # the clients' connect and read timeouts: LONG_DELAY outlasts the read
RETRIES = (0.05, 0.1, 0.2)
LONG_DELAY = 2.0


# -- a fake Livy: statements that finish at once -----------------------------------------------------


class FakeLivy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LivyHandler)
        self.statements: list[dict[str, Any]] = []
        self.hide_for = 0.0  # seconds a new statement is left out of the list: a server still recording it
        self.made: list[float] = []
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _LivyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeLivy

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            statement = {
                "id": len(self.server.statements),
                "code": body["code"],
                "state": "available",
                "output": {"status": "ok", "execution_count": 0, "data": {"text/plain": "done"}},
            }
            self.server.statements.append(statement)
            self.server.made.append(time.monotonic())
        self._answer(201, {**statement, "state": "waiting", "output": None})  # done by the first GET

    def do_GET(self) -> None:
        with self.server.lock:
            every = list(self.server.statements)
            shown = time.monotonic() - self.server.hide_for
            listed = [s for s, made in zip(every, self.server.made, strict=True) if made <= shown]
        one = re.fullmatch(r"/sessions/1/statements/(\d+)", self.path.split("?")[0])
        if one:
            self._answer(200, every[int(one.group(1))])
        else:
            self._answer(200, {"total_statements": len(listed), "statements": listed})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def livy() -> Iterator[FakeLivy]:
    server = FakeLivy()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_proxy(livy: FakeLivy) -> Iterator[FaultProxy]:
    with FaultProxy(livy.url) as proxy:
        yield proxy


def _client(url: str, token: str | None = None) -> SessionsClient:
    """A Livy client with short timeouts and retries; against the real server (``token``) it long-polls."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    extensions = None if token else ()
    return SessionsClient(
        url, "livy", headers=headers, timeout=TIMEOUT, retry_delays=RETRIES, extensions=extensions
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_faulted_statement_post_runs_once_or_says_it_was_not_sent(
    mode: str, livy: FakeLivy, fake_proxy: FaultProxy
) -> None:
    fake_proxy.fault(mode, "POST", POST_STATEMENTS, delay=LONG_DELAY)
    with _client(fake_proxy.url) as client:
        client.track(1)
        if mode in NOT_SENT:
            with pytest.raises(ConnectionFailed, match="was not sent again"):
                client.submit(1, "x = 1")
        else:
            assert client.submit(1, "x = 1").code == "x = 1"
        assert client.submit(1, "y = 2").code == "y = 2"  # the next statement goes as usual

    ran = [s["code"] for s in livy.statements]
    assert ran == (["y = 2"] if mode in NOT_SENT else ["x = 1", "y = 2"])
    assert fake_proxy.count("POST", POST_STATEMENTS) == 2  # never sent a second time


@pytest.mark.parametrize("mode", MODES)
def test_a_faulted_statement_get_is_asked_again(mode: str, livy: FakeLivy, fake_proxy: FaultProxy) -> None:
    with _client(fake_proxy.url) as client:
        client.track(1)
        submitted = client.submit(1, "x = 1")
        fake_proxy.fault(mode, "GET", GET_STATEMENT, delay=LONG_DELAY)
        assert client.get_statement(1, submitted.id).state == "available"

    assert fake_proxy.count("GET", GET_STATEMENT) == 2  # LONG_DELAY outlasts the read timeout too


def test_a_cut_short_answer_is_a_client_error_not_a_library_one(fake_proxy: FaultProxy) -> None:
    """requests' ChunkedEncodingError is no ConnectionError: it used to leave the client untranslated, so
    the statement POST was neither resolved nor reported in the client's terms."""
    fake_proxy.fault("truncate", "GET", r"/statements$", times=len(RETRIES) + 1)
    with _client(fake_proxy.url) as client, pytest.raises(ConnectionFailed, match="the answer broke off"):
        client.list_statements(1)


def test_a_lost_answer_whose_statement_is_not_listed_at_once_is_found_on_a_second_look(
    livy: FakeLivy, fake_proxy: FaultProxy
) -> None:
    """A server still recording the statement when the client looks: the client looks again, after each
    of its retry delays, before it says it does not know (here a statement is listed 0.2 s after its POST)."""
    livy.hide_for = 0.2
    fake_proxy.fault("drop_answer", "POST", POST_STATEMENTS)
    with _client(fake_proxy.url) as client:
        client.track(1)
        assert client.submit(1, "x = 1").id == 0
    assert [s["code"] for s in livy.statements] == ["x = 1"]
    assert fake_proxy.count("GET", r"/statements$") > 1


def test_a_kernel_cell_that_loses_track_of_its_statement_says_it_may_still_run(
    livy: FakeLivy, fake_proxy: FaultProxy
) -> None:
    """Every GET of the statement fails, retries included: the cell's error says the statement was
    started and may still be running, rather than only that a GET failed."""
    from dli_kernel.client import SessionInfo
    from dli_kernel.kernel.remote_session import RemoteSession

    with _client(fake_proxy.url) as client:
        session = RemoteSession.attach(client, SessionInfo(id="1", state="idle"), SessionSpec())
        fake_proxy.fault("reset", "GET", GET_STATEMENT, times=len(RETRIES) + 1)
        with pytest.raises(ConnectionFailed) as caught:
            session.run("x = 1")
        session.close()
    assert str(caught.value).endswith(
        "Statement 0 was started on session 1 and may still be running; this cell stopped following it, "
        "so its output is not shown here."
    )
    assert [s["code"] for s in livy.statements] == ["x = 1"]


# -- the real server, a real Spark session ----------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.integration.conftest import Server, driver_pids, wait_gone

    state_dir = tmp_path_factory.mktemp("faultproxy") / "state"
    server = Server(state_dir, pool=1)
    yield server
    for session in server.live_sessions():
        server.delete(f"/sessions/{session['id']}")
    server.stop()
    assert all(wait_gone(pid, timeout=15) for pid in driver_pids(state_dir)), "a driver outlived the server"


@pytest.fixture(scope="module")
def counted(real_server: Any) -> Iterator[int]:
    """A pyspark session whose statements count their runs in ``n``."""
    session = real_server.create(kind="pyspark", name="counted", heartbeatTimeoutInSecond=3600)
    real_server.wait_state(session["id"], ("idle",))
    assert real_server.run(session["id"], "n = 0")["status"] == "ok"
    yield session["id"]
    real_server.delete(f"/sessions/{session['id']}")


@pytest.fixture(scope="module")
def proxy(real_server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(real_server.url) as proxy:
        yield proxy


def _runs(server: Any, session_id: int) -> int:
    """``n`` in the session, read straight from the server."""
    return int(server.run(session_id, "n")["data"]["text/plain"])


def _landed(server: Any, session_id: int, code: str) -> int:
    listed = server.get(f"/sessions/{session_id}/statements").json()["statements"]
    return sum(1 for s in listed if s["code"].strip() == code.strip())  # a cell's code ends in a newline


@pytest.mark.integration
@pytest.mark.parametrize("mode", MODES)
def test_real_server_statement_runs_once_whatever_happens_to_its_post(
    mode: str, real_server: Any, counted: int, proxy: FaultProxy
) -> None:
    code = f"n += 1  # {mode}"
    before = _runs(real_server, counted)
    proxy.clear()
    proxy.fault(mode, "POST", POST_STATEMENTS, delay=LONG_DELAY)
    with _client(proxy.url, real_server.token) as client:
        client.track(counted)
        began = time.monotonic()
        if mode in NOT_SENT:
            with pytest.raises(ConnectionFailed, match="was not sent again") as caught:
                client.submit(counted, code)
            outcome = f"ConnectionFailed: {caught.value}"
        else:
            statement = client.wait_statement(counted, client.submit(counted, code).id, timeout=60)
            assert statement.state == "available" and statement.code == code
            outcome = f"statement {statement.id} {statement.state}"
        figure(f"POST statement, {mode}: {outcome} ({time.monotonic() - began:.2f} s)")

    assert proxy.count("POST", POST_STATEMENTS) == 1  # sent once, never again
    expected = 0 if mode in NOT_SENT else 1
    assert _landed(real_server, counted, code) == expected
    assert _runs(real_server, counted) == before + expected


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["drop", "reset_answer", "truncate", "delay"])
def test_real_server_faulted_gets_are_asked_again(
    mode: str, real_server: Any, counted: int, proxy: FaultProxy
) -> None:
    code = f"n += 1  # GET {mode}"
    before = _runs(real_server, counted)
    proxy.clear()
    with _client(proxy.url, real_server.token) as client:
        client.track(counted)
        submitted = client.submit(counted, code)
        proxy.fault(mode, "GET", GET_STATEMENT, times=2, delay=LONG_DELAY)
        proxy.fault(mode, "GET", r"/statements$", delay=LONG_DELAY)
        assert client.wait_statement(counted, submitted.id, timeout=60).state == "available"
        assert [s.code for s in client.list_statements(counted)][-1] == code
    assert _runs(real_server, counted) == before + 1


@pytest.mark.integration
def test_real_server_create_and_delete_whose_answers_are_lost(real_server: Any, proxy: FaultProxy) -> None:
    """A create whose answer is lost is found by its name, not started twice; a DELETE whose answer is
    lost is sent again and finds the session gone, which counts as done."""
    proxy.clear()
    proxy.fault("reset_answer", "POST", r"/sessions$")
    with _client(proxy.url, real_server.token) as client:
        info = client.create_session(SessionSpec(kind="pyspark", name="lost-answer", heartbeat_timeout_s=600))
        named = [s for s in real_server.live_sessions() if s["name"] == "lost-answer"]
        assert [s["id"] for s in named] == [int(info.id)]
        proxy.fault("drop_answer", "DELETE", rf"/sessions/{info.id}$")
        client.delete_session(info.id)
    assert proxy.count("POST", r"/sessions$") == 1 and proxy.count("DELETE", r"/sessions/") == 2
    # A DELETE sent again while the first still stops the driver finds it ending (404) and returns first.
    wait_until(
        lambda: real_server.get(f"/sessions/{info.id}").json()["state"] == "killed", "the session to end", 60
    )


# -- a real kernel through the proxy ------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(real_server: Any, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    env, kernels = kernel_environment(proxy.url, real_server.token, tmp_path_factory.mktemp("jupyter"))
    before = {s["id"] for s in real_server.live_sessions()}
    # The kernel asks for its session as it starts, and the create loses its answer.
    proxy.clear()
    proxy.fault("drop_answer", "POST", r"/sessions$")
    kernel = Kernel(env, kernels)
    yield kernel
    # The kernel's DELETE of its session loses its answer: the session ends all the same (the kernel may be
    # stopped by jupyter_client before it sends it again, and need not).
    proxy.clear()
    proxy.fault("reset_answer", "DELETE", r"/sessions/[^/]+$")
    kernel.shutdown()
    wait_until(
        lambda: not [s for s in real_server.live_sessions() if s["id"] not in before],
        "the kernel's session to end with the kernel",
        60,
    )


def _kernel_session(server: Any) -> int:
    named = [s for s in server.live_sessions() if s["name"] not in ("counted", "lost-answer")]
    assert len(named) == 1, named
    return int(named[0]["id"])


@pytest.mark.integration
def test_kernel_through_faults(real_server: Any, proxy: FaultProxy, kernel: Kernel) -> None:
    # The session's create lost its answer: the kernel found it by its name and started no second one.
    reply, text = kernel.execute("n = 0\nn")
    assert (reply["status"], text.strip()) == ("ok", "0"), text
    session = _kernel_session(real_server)
    assert proxy.count("POST", r"/sessions$") == 1

    # A statement POST whose answer is lost (or cut short): found among the statements, run once.
    for mode in ("reset_answer", "truncate"):
        proxy.fault(mode, "POST", POST_STATEMENTS)
        reply, text = kernel.execute(f"n += 1  # {mode}\nn")
        assert reply["status"] == "ok", text
        assert _landed(real_server, session, f"n += 1  # {mode}\nn") == 1
    assert _runs(real_server, session) == 2

    # A POST that never reached the server: the cell says so in one error, and nothing ran.
    proxy.fault("reset", "POST", POST_STATEMENTS)
    began = time.monotonic()
    reply, text = kernel.execute("n += 100")
    assert reply["status"] == "error" and reply["ename"] == "ConnectionFailed", text
    assert "was not sent again" in reply["evalue"]
    figure(f"kernel, POST reset: {reply['ename']}: {reply['evalue']} ({time.monotonic() - began:.2f} s)")
    assert _landed(real_server, session, "n += 100") == 0 and _runs(real_server, session) == 2

    # The statement's GETs fail more often than the client retries: the cell says the statement may still
    # be running; it does run, once, and the next cell sees its effect.
    code = "import time\ntime.sleep(1)\nn += 1"
    proxy.fault("drop", "GET", GET_STATEMENT, times=5)
    began = time.monotonic()
    reply, text = kernel.execute(code)
    assert reply["status"] == "error" and "may still be running" in reply["evalue"], text
    figure(f"kernel, statement GETs dropped 5 times: {reply['evalue']} ({time.monotonic() - began:.2f} s)")
    reply, text = kernel.execute("import time\ntime.sleep(2)\nn")  # queued behind it, on the same session
    assert (reply["status"], text.strip()) == ("ok", "3"), text
    assert _landed(real_server, session, code) == 1

    # A slow network: answers late, but in time.
    proxy.fault("delay", "GET", GET_STATEMENT, times=3, delay=1.0)
    reply, text = kernel.execute("n")
    assert (reply["status"], text.strip()) == ("ok", "3"), text
