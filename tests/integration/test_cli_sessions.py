"""``dli-kernel sessions list|info|logs|kill`` run as commands in a subprocess against the real server:
configured through DLI_KERNEL_* variables as a kernel is, and found through the state dir's server.json.

One session is shared by the tests in order, and the last one kills it with the command itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dli_kernel.client.dialects import LOCAL_PROJECT
from tests.integration.conftest import Server, wait_until

NAME = f"cli-{uuid.uuid4().hex[:8]}"
# The paths the local dialect speaks (DLI's): a session's id there is DLI's uuid, not Livy's number.
PREFIX = f"/v2.0/{LOCAL_PROJECT}"
QUEUE = "cli-queue"


@pytest.fixture(scope="module")
def configured(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a shell configured for the server as a kernel is."""
    home = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DLI_KERNEL_", "HUAWEICLOUD_SDK_"))}
    env.update(
        DLI_KERNEL_URL=server.url,
        DLI_KERNEL_DIALECT="local",
        DLI_KERNEL_TOKEN=server.token,
        JUPYTER_CONFIG_DIR=str(home / "config"),  # no user config file gets in the way
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),  # nor the user's own embedded server
    )
    return env


@pytest.fixture(scope="module")
def session(server: Server) -> Iterator[str]:
    created = server.create(
        PREFIX, kind="pyspark", name=NAME, cluster_name=QUEUE, heartbeatTimeoutInSecond=600
    )
    ident = str(created["id"])
    try:
        server.wait_state(ident, ("idle",), PREFIX)
        output = server.run(
            ident, "import sys; print('printed-by-the-cli-test', file=sys.__stderr__, flush=True)", PREFIX
        )
        assert output["status"] == "ok", output
        yield ident
    finally:
        server.delete(f"{PREFIX}/sessions/{ident}")  # already killed by the last test, where all went well


def dli_kernel(server: Server, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "dli_kernel", "sessions", *argv],
        env=env,
        stdin=subprocess.DEVNULL,  # not a terminal: kill needs -f
        capture_output=True,
        text=True,
        timeout=120,
    )
    for text in (done.stdout, done.stderr):
        assert server.token not in text
        assert "Traceback" not in text
    return done


def test_list_with_filters(server: Server, configured: dict[str, str], session: str) -> None:
    done = dli_kernel(server, configured, "list", "--name", NAME.upper(), "--state", "idle,busy")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    header, *rows, note = done.stdout.splitlines()
    assert header.split()[:4] == ["name", "id", "state", "kind"]
    assert [row.split()[:4] for row in rows] == [[NAME, session, "idle", "pyspark"]] and note == "1 row"

    done = dli_kernel(
        server, configured, "list", "--json", "--kind", "python", "--id", session, "--cluster", QUEUE
    )
    assert done.returncode == 0 and [item["name"] for item in json.loads(done.stdout)] == [NAME]

    done = dli_kernel(server, configured, "list", "--name", NAME, "--owner", "no-such-user")
    assert done.returncode == 0 and done.stdout.startswith("No session matches ")


def test_list_through_the_state_dirs_server_json(
    server: Server, configured: dict[str, str], session: str
) -> None:
    env = {k: v for k, v in configured.items() if not k.startswith("DLI_KERNEL_")}
    done = dli_kernel(server, env, "list", "--json", "--state-dir", str(server.state_dir), "--name", NAME)
    assert done.returncode == 0, done.stderr
    assert [item["id"] for item in json.loads(done.stdout)] == [session]


def test_info(server: Server, configured: dict[str, str], session: str) -> None:
    done = dli_kernel(server, configured, "info", session)
    assert done.returncode == 0, done.stderr
    pairs = (re.split(r"\s{2,}", line, maxsplit=1) for line in done.stdout.splitlines())
    rows = dict(pair for pair in pairs if len(pair) == 2)
    assert (rows["id"], rows["name"], rows["state"], rows["kind"]) == (session, NAME, "idle", "pyspark")
    shown: dict[str, Any] = json.loads(dli_kernel(server, configured, "info", session, "--json").stdout)
    assert shown["id"] == session and shown["server"]["name"] == NAME
    if "links" in server.get("/version").json().get("extensions", []):
        # The Spark UI and driver log as links that open in a browser without the token.
        assert "open in a browser for" in done.stdout
        signed = shown["browserLinks"]
        assert signed["expiresIn"] > 0 and signed["sparkUiUrl"] != shown["sparkUiUrl"]
        assert rows["Spark UI"].startswith(server.url) and rows["Spark UI"] != shown["sparkUiUrl"]
        assert requests.get(signed["driverLogUrl"], timeout=30).status_code == 200


def test_logs(server: Server, configured: dict[str, str], session: str) -> None:
    done = dli_kernel(server, configured, "logs", session, "--from", "0", "-n", "100000")
    assert done.returncode == 0, done.stderr
    everything = done.stdout.splitlines()
    assert "printed-by-the-cli-test" in everything
    done = dli_kernel(server, configured, "logs", session, "-n", "5")
    assert done.returncode == 0 and done.stdout.splitlines() == everything[-5:]
    done = dli_kernel(server, configured, "logs", session, "--from", "0", "-n", "100000", "--level", "warn")
    assert done.returncode == 0, done.stderr
    # condensed as a cell's stream is: the user's print stays, Spark's INFO chatter goes
    assert "printed-by-the-cli-test" in done.stdout
    assert len(done.stdout.splitlines()) < len(everything)


def test_errors_are_one_sentence(server: Server, configured: dict[str, str], session: str) -> None:
    done = dli_kernel(server, configured, "info", "999999")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("dli-kernel sessions info: there is no session 999999 on ")
    assert done.stderr.count("\n") == 1

    wrong = {**configured, "DLI_KERNEL_TOKEN": "not-the-token"}
    done = dli_kernel(server, wrong, "list")
    assert done.returncode == 1 and "401" in done.stderr and "DLI_KERNEL_TOKEN" in done.stderr
    assert "not-the-token" not in done.stderr

    done = dli_kernel(server, configured, "kill", session)  # stdin is not a terminal
    assert done.returncode == 2 and "add -f" in done.stderr
    assert server.get(f"{PREFIX}/sessions/{session}").json()["state"] == "idle"


def test_kill(server: Server, configured: dict[str, str], session: str) -> None:
    done = dli_kernel(server, configured, "kill", session, "-f")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"Session {session} killed.\n", "")

    def ended() -> bool:
        answer = server.get(f"{PREFIX}/sessions/{session}")
        return answer.status_code == 404 or answer.json()["state"] in ("killed", "dead", "success")

    wait_until(ended, f"session {session} to end")
    done = dli_kernel(server, configured, "kill", session, "-f")
    assert done.returncode in (0, 1) and done.stdout + done.stderr
    assert "already ended" in done.stdout or "there is no session" in done.stderr
    done = dli_kernel(server, configured, "list", "--name", NAME)
    assert done.stdout.startswith("No session matches ")  # only live sessions without --state
