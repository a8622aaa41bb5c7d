"""One real embedded server (real PySpark, real HTTP on 127.0.0.1) shared by the integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dli_kernel.install import install

TERMINAL = ("error", "dead", "killed", "success")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


class Server:
    """A ``dli-kernel server`` process and a requests session that carries its token.

    Without a warm pool unless ``pool`` says so: most tests are about the cold path (starting, queued while
    starting, delete while starting), and a pool would hand them ready drivers; tests/integration/
    test_fast_paths.py runs its own servers with one.
    """

    def __init__(self, state_dir: Path, extra_args: tuple[str, ...] = (), pool: int = 0) -> None:
        self.state_dir = state_dir
        self.stderr_path = state_dir.parent / f"{state_dir.name}-stderr.log"
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dli_kernel",
                "server",
                "--port",
                "0",
                "--state-dir",
                str(state_dir),
                "--pool",
                str(pool),
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.banner = self.process.stdout.readline()
        info = json.loads((state_dir / "server.json").read_text())
        self.url, self.token, self.pid = info["url"], info["token"], info["pid"]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    # -- raw HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return self.http.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    # -- helpers -------------------------------------------------------------------------------

    def create(self, prefix: str = "", expect: int = 201, **body: Any) -> dict[str, Any]:
        response = self.post(f"{prefix}/sessions", json=body)
        assert response.status_code == expect, response.text
        return response.json()

    def wait_state(
        self, session_id: object, states: tuple[str, ...], prefix: str = "", timeout: float = 180
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            session = self.get(f"{prefix}/sessions/{session_id}").json()
            if session["state"] in states:
                return session
            assert time.monotonic() < deadline, f"session {session_id} stuck in {session['state']}"
            assert session["state"] not in TERMINAL, f"session {session_id} ended: {session['log']}"
            time.sleep(0.2)

    def submit(self, session_id: object, code: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        response = self.post(f"{prefix}/sessions/{session_id}/statements", json={"code": code, **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def wait_statement(
        self, session_id: object, statement_id: int, prefix: str = "", timeout: float = 180
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            statement = self.get(f"{prefix}/sessions/{session_id}/statements/{statement_id}").json()
            if statement["state"] not in ("waiting", "running", "cancelling"):
                return statement
            assert time.monotonic() < deadline, f"statement {statement_id} stuck in {statement['state']}"
            time.sleep(0.05)

    def run(self, session_id: object, code: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        """Run a statement to completion and return its output."""
        statement = self.submit(session_id, code, prefix, **extra)
        return self.wait_statement(session_id, statement["id"], prefix)["output"]

    def live_sessions(self) -> list[dict[str, Any]]:
        return self.get("/sessions").json()["sessions"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process.stdout.close()
        self._stderr.close()
        return code


def driver_pid(server: Server, session_id: int) -> int:
    return int((server.state_dir / "sessions" / str(session_id) / "driver.pid").read_text())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the driver's group (the kernel and its Spark JVM) is still running."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def driver_pids(state_dir: Path) -> list[int]:
    """Every driver a server on ``state_dir`` started: sessions' and pooled ones."""
    pids = []
    for pid_file in [*state_dir.glob("sessions/*/driver.pid"), *state_dir.glob("pool/*/driver.pid")]:
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pid_file.read_text()))
    return pids


def wait_gone(pid: int, timeout: float = 30) -> bool:
    """Wait until the driver ``pid`` and every process it started are gone."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) or group_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def wait_no_new_sessions(server: Server, before: set[int]) -> None:
    deadline = time.monotonic() + 60
    while [s for s in server.live_sessions() if s["id"] not in before]:
        assert time.monotonic() < deadline, "the kernel's session outlived the kernel"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state_dir = tmp_path_factory.mktemp("server") / "state"
    server = Server(state_dir)
    yield server
    leaked = server.live_sessions()
    for session in leaked:
        server.delete(f"/sessions/{session['id']}")
    code = server.stop()
    assert not leaked, f"tests left sessions behind: {[s['id'] for s in leaked]}"
    assert all(wait_gone(pid, timeout=5) for pid in driver_pids(state_dir)), "a driver outlived the server"
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert not (state_dir / "server.json").exists()
    assert server.token not in server.stderr_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def pyspark(server: Server) -> Iterator[int]:
    """One pyspark session shared by the tests that only run statements on it."""
    # Tests that use it run minutes apart: a heartbeat timeout as long as a whole run keeps it alive.
    yield from idle_session(server, "pyspark", "shared-pyspark", heartbeat=7200)


def idle_session(server: Server, kind: str, name: str, heartbeat: int) -> Iterator[int]:
    """For a fixture: a session of ``kind``, ready to run statements, deleted when the fixture ends."""
    session = server.create(kind=kind, name=name, heartbeatTimeoutInSecond=heartbeat)
    server.wait_state(session["id"], ("idle",))
    yield session["id"]
    assert server.delete(f"/sessions/{session['id']}").status_code == 200


@pytest.fixture(scope="session")
def kernel_env(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    prefix = tmp_path_factory.mktemp("jupyter")
    install(prefix=str(prefix))
    env = dict(os.environ)
    env.update(
        DLI_KERNEL_URL=server.url,
        DLI_KERNEL_DIALECT="local",
        DLI_KERNEL_TOKEN=server.token,
        JUPYTER_CONFIG_DIR=str(prefix / "config"),  # no user config file gets in the way
        JUPYTER_RUNTIME_DIR=str(prefix / "runtime"),  # nor the user's own embedded server
    )
    return {"env": env, "kernels": str(prefix / "share" / "jupyter" / "kernels")}
