"""Unit tests for dli_kernel.embedded: finding or starting the user's embedded server.

Most tests are fast: a tiny HTTP server in a thread stands for a running embedded server, and a shell
script put in place of the Python interpreter stands for a server that fails to start. The last three
start real `dli-kernel server` processes (no session, so no Spark) in tmp state dirs and stop every one
they started.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from dli_kernel import embedded
from dli_kernel.client import ConfigError
from dli_kernel.client.auth import BearerToken
from dli_kernel.config import Endpoint
from dli_kernel.embedded import START_LOCK, default_state_dir, embedded_endpoint

TOKEN = "tok-SECRET-1234"


# -- helpers ---------------------------------------------------------------------------------------


def headers_sent(auth: Any, url: str = "http://h.example.com/sessions") -> dict[str, str]:
    request = requests.Request("GET", url, auth=auth).prepare()
    return dict(request.headers)


def server_pids(state_dir: Path) -> set[int]:
    """Pids of `dli-kernel server` processes for ``state_dir`` (Linux /proc)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dli_kernel" in argv and b"server" in argv and str(state_dir).encode() in argv:
            pids.add(int(entry.name))
    return pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop(pid: int) -> None:
    """SIGTERM the server and wait for it to end (its reaper thread in this process collects it)."""
    if gone(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while not gone(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.02)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh state dir; every server started on it is stopped afterwards."""
    directory = tmp_path / "state"
    try:
        yield directory
    finally:
        info = directory / "server.json"
        pids = server_pids(directory)
        if info.exists():
            pids.add(json.loads(info.read_text())["pid"])
        for pid in pids:
            stop(pid)


def server_info(state_dir: Path) -> dict[str, Any]:
    return json.loads((state_dir / "server.json").read_text())


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# -- finding a running server (a stand-in answers GET /version) -------------------------------------


class _VersionHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        good = self.path == "/version" and self.headers.get("Authorization") == f"Bearer {TOKEN}"
        self.send_response(200 if good else 401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def version_server() -> Iterator[str]:
    """The URL of a loopback server that answers ``GET /version`` with 200 only for TOKEN."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _VersionHandler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_server_file(state_dir: Path, info: Any) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    text = info if isinstance(info, str) else json.dumps(info)
    (state_dir / "server.json").write_text(text)


def test_a_running_server_is_found_and_proxies_are_ignored(
    tmp_path: Path, version_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy meant for the internet (here: one that does not exist) must not hide a server on loopback.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    write_server_file(tmp_path, {"url": version_server + "/", "token": TOKEN, "pid": os.getpid()})
    endpoint = embedded_endpoint(tmp_path, start=False)
    assert (endpoint.url, endpoint.dialect, endpoint.embedded) == (version_server, "local", True)
    assert endpoint.project_id is None and endpoint.headers == {}
    assert headers_sent(endpoint.auth)["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(endpoint)


@pytest.mark.parametrize(
    "change",
    [
        {"token": "not-the-token"},  # the server refuses it
        {"pid": None},  # replaced by a pid that is gone, below
        {"pid": True},
        {"pid": 0},
        {"pid": -1},
        {"pid": "self"},
        {"token": 5},
        {"token": "has a space"},  # cannot go into a header
        {"url": None},
    ],
    ids=lambda change: ",".join(f"{key}={value!r}" for key, value in change.items()),
)
def test_a_server_file_that_does_not_lead_to_a_live_server_is_not_used(
    tmp_path: Path, version_server: str, change: dict[str, Any]
) -> None:
    info = {"url": version_server, "token": TOKEN, "pid": os.getpid(), **change}
    if change == {"pid": None}:
        info["pid"] = dead_pid()
    if info["url"] is None:
        del info["url"]
    write_server_file(tmp_path, info)
    with pytest.raises(ConfigError, match=r"^no embedded server is running for "):
        embedded_endpoint(tmp_path, start=False)


@pytest.mark.parametrize("text", ["", '{"url": "http://127.0.0.1:1", "tok', "[]", "null"])
def test_a_half_written_or_foreign_server_file_is_not_used(tmp_path: Path, text: str) -> None:
    write_server_file(tmp_path, text)
    with pytest.raises(ConfigError, match=r"^no embedded server is running for "):
        embedded_endpoint(tmp_path, start=False)


def test_the_default_state_dir_is_in_the_jupyter_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    assert default_state_dir() == tmp_path / "runtime" / "dli-kernel"
    with pytest.raises(ConfigError) as info:
        embedded_endpoint(start=False)
    assert str(info.value).startswith(
        f"no embedded server is running for {tmp_path / 'runtime' / 'dli-kernel'}: "
    )


# -- starting one: what a kernel is told when it cannot ---------------------------------------------


def test_without_the_server_extra_nothing_is_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_SERVER_MODULES", ("uvicorn", "dli_kernel_no_such_module"))
    with pytest.raises(ConfigError) as info:
        embedded_endpoint(tmp_path / "state", timeout=5)
    assert str(info.value) == (
        "no endpoint is configured and the embedded server needs the server extra "
        "(dli_kernel_no_such_module missing): pip install 'dli-kernel[server]', or set DLI_KERNEL_URL to use "
        "Livy or DLI."
    )
    assert not (tmp_path / "state").exists()


def test_a_start_lock_held_past_the_deadline(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    lock = tmp_path / START_LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another kernel, busy starting the server
        started = time.monotonic()
        with pytest.raises(ConfigError) as info:
            embedded_endpoint(tmp_path, timeout=0.3)
        assert time.monotonic() - started >= 0.3
    finally:
        os.close(fd)
    assert str(info.value) == (
        f"another process held {tmp_path.resolve() / START_LOCK} until the deadline while starting the "
        "embedded server; try again, or remove the file if no dli-kernel process is running."
    )
    assert not (tmp_path / "server.log").exists()  # nothing was started


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a shell script in the interpreter's place, so `python -m dli_kernel server` runs the script."""

    def install(body: str) -> Path:
        script = tmp_path / "fake-python"
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        monkeypatch.setattr(sys, "executable", str(script))
        return script

    return install


def test_a_server_that_exits_at_once_is_reported_with_its_own_log_lines(tmp_path: Path, fake_python) -> None:
    state_dir = tmp_path / "state"
    write_server_file(state_dir, {"url": "http://127.0.0.1:9", "token": "stale", "pid": dead_pid()})
    (state_dir / "server.log").write_text("an earlier server's line\n")
    fake_python('echo "cannot open the store" >&2\nexit 3\n')
    with pytest.raises(ConfigError) as info:
        embedded_endpoint(state_dir, timeout=30)
    first_line, _, tail = str(info.value).partition("\n")
    resolved = state_dir.resolve()
    assert first_line == (
        f"the embedded server (dli-kernel server --port 0 --state-dir {resolved}) exited with code 3 before "
        f"it was ready; the last lines of {resolved / 'server.log'}:"
    )
    assert tail == "cannot open the store"  # only what this start wrote
    assert not (state_dir / "server.json").exists()  # the stale file was removed before the start


def test_a_server_that_is_not_ready_by_the_deadline_is_stopped(tmp_path: Path, fake_python) -> None:
    state_dir = tmp_path / "state"
    pid_file = tmp_path / "fake.pid"
    fake_python(f'echo $$ > {pid_file}\necho "still starting" >&2\nexec sleep 60\n')
    with pytest.raises(ConfigError) as info:
        embedded_endpoint(state_dir, timeout=1)
    first_line, _, tail = str(info.value).partition("\n")
    assert first_line == (
        "the embedded server did not become ready within 1 s, so it was stopped; "
        f"the last lines of {state_dir.resolve() / 'server.log'}:"
    )
    assert tail == "still starting"
    assert gone(int(pid_file.read_text()))


# -- real `dli-kernel server` processes -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_embedded_endpoint_starts_one_server_and_reuses_it(state_dir: Path) -> None:
    # A stale server.json from a server that died: its pid is gone, its URL answers nothing.
    state_dir.mkdir()
    stale_pid = dead_pid()
    stale = {"url": "http://127.0.0.1:9", "token": "stale", "pid": stale_pid, "state_dir": str(state_dir)}
    (state_dir / "server.json").write_text(json.dumps(stale))

    # Two kernels starting at once share one new server.
    barrier = threading.Barrier(2)
    results: list[Endpoint | BaseException] = []

    def kernel() -> None:
        barrier.wait()
        try:
            results.append(embedded_endpoint(state_dir, timeout=30))
        except BaseException as err:  # reported by the assertions below
            results.append(err)

    threads = [threading.Thread(target=kernel) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    assert all(isinstance(result, Endpoint) for result in results), results
    first, second = results
    info = server_info(state_dir)
    assert info["pid"] != stale_pid and info["url"] != stale["url"]
    assert server_pids(state_dir) == {info["pid"]}
    for endpoint in (first, second):
        assert (endpoint.url, endpoint.dialect, endpoint.embedded) == (info["url"], "local", True)
        assert endpoint.project_id is None and endpoint.headers == {}
        assert isinstance(endpoint.auth, BearerToken)
        assert headers_sent(endpoint.auth)["Authorization"] == f"Bearer {info['token']}"
    assert info["token"] not in repr(first)

    with first.client() as client:
        assert client.list_sessions() == []

    # Later kernels reuse it, also those that may not start one; the process is detached (own session).
    again = embedded_endpoint(state_dir, timeout=30)
    assert again.url == first.url
    assert embedded_endpoint(state_dir, start=False).url == first.url
    assert server_info(state_dir)["pid"] == info["pid"]
    assert server_pids(state_dir) == {info["pid"]}
    assert os.getsid(info["pid"]) == info["pid"] != os.getsid(0)


def test_embedded_endpoint_without_start_and_no_server(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "server.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9", "token": "t", "pid": dead_pid()})
    )
    with pytest.raises(ConfigError) as info:
        embedded_endpoint(state_dir, start=False)
    message = str(info.value)
    assert message.startswith(f"no embedded server is running for {state_dir.resolve()}: ")
    assert "dli-kernel server" in message and message.endswith(".")
    assert not server_pids(state_dir)


@pytest.mark.timeout(60)
def test_embedded_endpoint_reports_a_server_that_exits_early(state_dir: Path) -> None:
    # The server cannot open its store: it exits before writing server.json.
    (state_dir / "sessions.db").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        embedded_endpoint(state_dir, timeout=30)
    message = str(info.value)
    first_line, _, tail = message.partition("\n")
    assert first_line.startswith(
        f"the embedded server (dli-kernel server --port 0 --state-dir {state_dir.resolve()})"
    )
    assert "exited with code 1 before it was ready" in first_line
    assert f"the last lines of {state_dir.resolve() / 'server.log'}:" in first_line
    assert tail and tail != "(nothing)"  # the server's own words from server.log
    assert not (state_dir / "server.json").exists()
    assert not server_pids(state_dir)
