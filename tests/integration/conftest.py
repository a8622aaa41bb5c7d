"""One real embedded server (real PySpark, real HTTP on 127.0.0.1) shared by the integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from dli_kernel.install import install
from dli_kernel.protocol import ENDED_STATES, STATEMENT_DONE

T = TypeVar("T")

TEAM = ("alice", "bob")  # the users of the shared server besides its operator (server.json's token, an admin)


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.1) -> T | None:
    """``check()``'s first truthy value, or None once ``timeout`` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)
    return value


def wait_until(
    check: Callable[[], T | None], what: str | Callable[[], str], timeout: float = 60, interval: float = 0.1
) -> T:
    """Wait for a state: ``check()``'s first truthy value; fail saying ``what`` was awaited if it never
    comes. ``check`` may itself fail early, when what it sees means the state can no longer come."""
    value = poll(check, timeout, interval)
    if not value:
        described = what() if callable(what) else what
        raise AssertionError(f"waited {timeout:g} s for {described}")
    return value


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

    def __init__(
        self,
        state_dir: Path,
        extra_args: tuple[str, ...] = (),
        pool: int = 0,
        users: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.users = users or {}  # user name -> token, for a server started with --users
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
        assert self.process.stdout is not None  # a pipe, as asked
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
        seen: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            seen.update(self.get(f"{prefix}/sessions/{session_id}").json())
            if seen["state"] in states:
                return seen
            assert seen["state"] not in ENDED_STATES, f"session {session_id} ended: {seen['log']}"
            return None

        return wait_until(
            reached, lambda: f"session {session_id} to be {states}: stuck in {seen['state']}", timeout, 0.2
        )

    def submit(self, session_id: object, code: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        response = self.post(f"{prefix}/sessions/{session_id}/statements", json={"code": code, **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def statement(self, session_id: object, statement_id: int, prefix: str = "") -> dict[str, Any]:
        return self.get(f"{prefix}/sessions/{session_id}/statements/{statement_id}").json()

    def wait_statement(
        self,
        session_id: object,
        statement_id: int,
        prefix: str = "",
        timeout: float = 180,
        states: tuple[str, ...] = STATEMENT_DONE,
    ) -> dict[str, Any]:
        """The statement once it is in one of ``states`` (by default: once it is done). Waiting for a
        state it can no longer reach, because it is done, fails at once."""
        seen: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            seen.update(self.statement(session_id, statement_id, prefix))
            if seen["state"] in states:
                return seen
            assert seen["state"] not in STATEMENT_DONE, f"statement {statement_id} ended: {seen}"
            return None

        return wait_until(
            reached,
            lambda: f"statement {statement_id} to be {states}: stuck in {seen['state']}",
            timeout,
            0.05,
        )

    def run(self, session_id: object, code: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        """Run a statement to completion and return its output."""
        statement = self.submit(session_id, code, prefix, **extra)
        return self.wait_statement(session_id, statement["id"], prefix)["output"]

    def live_sessions(self) -> list[dict[str, Any]]:
        return self.get("/sessions").json()["sessions"]

    def as_user(self, name: str) -> requests.Session:
        """A requests session carrying the token of user ``name`` of the users file instead."""
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.users[name]}"
        return http

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        if self.process.stdout is not None:
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
    """Wait until the driver ``pid`` and every process it started are gone; whether they went."""
    return poll(lambda: not (pid_alive(pid) or group_alive(pid)), timeout) is not None


def new_sessions(server: Server, before: set[int]) -> list[dict[str, Any]]:
    """The live sessions whose ids are not in ``before``."""
    return [s for s in server.live_sessions() if s["id"] not in before]


def wait_no_new_sessions(server: Server, before: set[int]) -> None:
    wait_until(
        lambda: not new_sessions(server, before), "the kernel's session to end with the kernel", 60, 0.2
    )


# -- states a test waits for before it interrupts or cancels ----------------------------------------


def spark_ui(server: Server, session: dict[str, Any], path: str, **params: str) -> Any:
    """``path`` of the REST API of the session's Spark UI, through the server's proxy (with its token)."""
    # A long timeout: while a statement's tasks hold every core, the UI answers slowly.
    url = f"{session['appInfo']['sparkUiUrl']}/api/v1/applications{path}"
    return server.http.get(url, params=params, timeout=60).json()


def spark_jobs(server: Server, session_id: object, status: str) -> list[dict[str, Any]]:
    """The session's Spark jobs in ``status``, from its driver's Spark UI (whose store lags a little)."""
    session = server.get(f"/sessions/{session_id}").json()
    return spark_ui(server, session, f"/{session['appId']}/jobs", status=status)


def still_running(server: Server, session_id: object, statement_id: int, waiting_for: str) -> None:
    statement = server.statement(session_id, statement_id)
    assert statement["state"] == "running", f"it stopped while the test waited for {waiting_for}: {statement}"


def wait_spark_tasks(server: Server, session_id: object, statement_id: int, timeout: float = 120) -> dict:
    """Wait until the running statement has a Spark job with tasks running; that job."""
    server.wait_statement(session_id, statement_id, states=("running",), timeout=timeout)
    what = f"statement {statement_id}'s Spark tasks to start"

    def job_with_tasks() -> dict[str, Any] | None:
        still_running(server, session_id, statement_id, what)
        return next((j for j in spark_jobs(server, session_id, "running") if j["numActiveTasks"] > 0), None)

    return wait_until(job_with_tasks, what, timeout, 0.2)


def wait_no_spark_jobs(server: Server, session_id: object, timeout: float = 15) -> None:
    wait_until(
        lambda: not spark_jobs(server, session_id, "running"),
        "the cancelled statement's Spark job to stop",
        timeout,
        0.2,
    )


def wait_marker(
    server: Server, session_id: object, statement_id: int, marker: Path, timeout: float = 120
) -> None:
    """Wait until the running statement has created the file ``marker``: it got as far as that line."""
    what = f"statement {statement_id} to reach the line that creates {marker.name}"

    def created() -> bool:
        still_running(server, session_id, statement_id, what)
        return marker.exists()

    wait_until(created, what, timeout, 0.05)


def add_users(users_file: Path, state_dir: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Users added to ``users_file`` with ``dli-kernel users add``: their tokens, by name."""
    tokens = {}
    for name in names:
        command = [sys.executable, "-m", "dli_kernel", "users", "add", name]
        done = subprocess.run(
            [*command, "--users", str(users_file), "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        tokens[name] = done.stdout.strip()
    return tokens


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server, with the users alice and bob (tests/integration/test_team.py); the token of
    server.json is its operator's, an admin's, which every other test uses."""
    root = tmp_path_factory.mktemp("server")
    state_dir = root / "state"
    users_file = root / "users.json"
    users = add_users(users_file, state_dir, TEAM)
    server = Server(state_dir, ("--users", str(users_file)), users=users)
    yield server
    leaked = server.live_sessions()
    for session in leaked:
        server.delete(f"/sessions/{session['id']}")
    code = server.stop()
    assert not leaked, f"tests left sessions behind: {[s['id'] for s in leaked]}"
    assert all(wait_gone(pid, timeout=5) for pid in driver_pids(state_dir)), "a driver outlived the server"
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert not (state_dir / "server.json").exists()
    logged = server.stderr_path.read_text(errors="replace")
    assert all(token not in logged for token in (server.token, *server.users.values()))


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
