"""A real session's Spark UI through the server's proxy, behind its token; and a session with the shortest
heartbeat timeout the server accepts, kept alive by the kernel's own session object while it idles."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests

from dli_kernel.client import SessionsClient
from dli_kernel.client.auth import BearerToken
from dli_kernel.kernel.remote_session import RemoteSession
from dli_kernel.spec import MIN_HEARTBEAT_TIMEOUT_S, SessionSpec
from tests.integration.conftest import Server, driver_pid


@pytest.fixture(scope="module")
def session(server: Server) -> Iterator[dict[str, Any]]:
    created = server.create(kind="pyspark", name="ui-proxy", heartbeatTimeoutInSecond=900)
    server.wait_state(created["id"], ("idle",))
    # A job, so that the UI has a job page to show.
    server.run(created["id"], "spark.range(10).count()")
    yield server.get(f"/sessions/{created['id']}").json()
    assert server.delete(f"/sessions/{created['id']}").status_code == 200


def test_the_session_names_the_proxy_and_its_ui_binds_the_loopback(server: Server, session: dict) -> None:
    session_id = session["id"]
    assert session["appInfo"]["sparkUiUrl"] == f"{server.url}/sessions/{session_id}/ui"
    dli = server.get(f"/v2.0/p/sessions/{session['uuid']}").json()
    assert dli["appInfo"]["sparkUiUrl"] == session["appInfo"]["sparkUiUrl"]
    ui = spark_ui_listener(driver_pid(server, session_id))
    assert ui.ip.removeprefix("::ffff:") == "127.0.0.1", f"the driver's Spark UI listens on {ui.ip}:{ui.port}"


def spark_ui_listener(pid: int) -> Any:
    """The address the Spark UI of the driver ``pid`` (its process group: the kernel and its JVM) listens
    on: of the group's listening ports, the one that answers as Spark's REST API."""
    group = {p.pid for p in psutil.process_iter() if _pgid(p.pid) == pid}
    listening = [c.laddr for c in psutil.net_connections("tcp") if c.pid in group and c.status == "LISTEN"]
    for address in listening:
        host = address.ip.removeprefix("::ffff:")  # IPv4 on an IPv6 socket, as Java binds it
        host = "127.0.0.1" if host == "0.0.0.0" else host
        with contextlib.suppress(requests.RequestException, ValueError):
            if isinstance(
                requests.get(f"http://{host}:{address.port}/api/v1/applications", timeout=30).json(), list
            ):
                return address
    raise AssertionError(f"no Spark UI among the driver's listening ports {listening}")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_pages_links_and_the_rest_api_stay_under_the_prefix(server: Server, session: dict) -> None:
    ui, prefix = session["appInfo"]["sparkUiUrl"], f"/sessions/{session['id']}/ui"
    root = server.get(prefix + "/", allow_redirects=False)
    assert root.status_code in (301, 302, 303, 307, 308)
    assert root.headers["Location"].startswith(prefix + "/jobs")  # the UI's redirect, made ours
    page = server.get(prefix + "/jobs/")
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    links = re.findall(r'(?:href|src)="(/[^"]*)"', page.text)
    assert links and all(link.startswith(prefix + "/") for link in links), links
    static = next(link for link in links if "/static/" in link)
    assert server.get(static).status_code == 200
    apps = server.http.get(ui + "/api/v1/applications", timeout=60).json()  # as clients build it
    assert [app["id"] for app in apps] == [session["appId"]]
    jobs = server.get(f"{prefix}/api/v1/applications/{session['appId']}/jobs").json()
    assert jobs and jobs[0]["status"] == "SUCCEEDED"
    assert server.request("HEAD", prefix + "/jobs/").status_code == 200


def test_without_the_token_or_as_another_user_the_ui_is_not_there(server: Server, session: dict) -> None:
    environment = f"{session['appInfo']['sparkUiUrl']}/environment/"
    bare = requests.get(environment, timeout=30)
    assert bare.status_code == 401 and "spark.driver.host" not in bare.text
    if not server.users:
        pytest.skip("the shared server has no users file")
    as_bob = server.as_user("bob").get(environment, timeout=30)
    missing = server.as_user("bob").get(f"{server.url}/sessions/999999/ui/environment/", timeout=30)
    assert (as_bob.status_code, missing.status_code) == (404, 404)
    assert as_bob.json()["msg"] == missing.json()["msg"].replace("999999", str(session["id"]))


def test_the_shortest_allowed_heartbeat_keeps_an_idle_kernel_session(server: Server) -> None:
    """Bounded: the session starts, then idles a timeout and a third with nothing but the kernel's beats."""
    spec = SessionSpec(kind="pyspark", name="shortest-heartbeat", heartbeat_timeout_s=MIN_HEARTBEAT_TIMEOUT_S)
    assert server.create(heartbeatTimeoutInSecond=MIN_HEARTBEAT_TIMEOUT_S - 1, expect=400)["msg"].startswith(
        "heartbeatTimeoutInSecond must be 0 (off) or at least 60 seconds"
    )
    with SessionsClient(server.url, "livy", auth=BearerToken(server.token)) as client:
        remote = RemoteSession(client, spec)
        remote.start()
        try:
            info = remote.wait_ready(timeout=300)
            # A timeout and a third with nothing but the heartbeat thread naming the session (listing
            # sessions is no heartbeat).
            time.sleep(MIN_HEARTBEAT_TIMEOUT_S * 4 / 3)
            listed = {s["id"]: s for s in server.live_sessions()}
            assert listed.get(int(info.id), {}).get("state") == "idle", server.get(
                f"/sessions/{info.id}"
            ).text
            statement, cancelled = remote.run("21 * 2")
            assert (statement.state, cancelled) == ("available", False)
        finally:
            remote.close()
