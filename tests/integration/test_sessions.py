"""Sessions over both path families: create, list, get, delete, states, resources, auth, bad input."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from dli_kernel import __version__
from dli_kernel.protocol import SESSION_STATES
from tests.integration.conftest import Server, driver_pid, spark_ui, wait_gone, wait_until

DLI = "/v2.0/proj-1"


def test_version(server: Server) -> None:
    reply = server.get("/version")
    assert reply.status_code == 200
    # Compared as numbers: as strings, "0.10.0" would be older than "0.5.0".
    assert tuple(int(part) for part in reply.json()["version"].split(".")) >= (0, 5, 0)
    assert reply.json()["dli_kernel"] == __version__


def test_livy_session_object_and_lookups(server: Server, pyspark: int) -> None:
    session = server.get(f"/sessions/{pyspark}").json()
    assert session["id"] == pyspark and session["kind"] == "pyspark" and session["state"] == "idle"
    assert session["appId"].startswith("local-")
    assert isinstance(session["log"], list) and session["log"]
    assert session["owner"] and session["proxyUser"] is None
    # The Spark UI is a real page on loopback.
    ui = session["appInfo"]["sparkUiUrl"]
    assert ui.startswith("http://127.0.0.1:")
    assert spark_ui(server, session, "")[0]["id"] == session["appId"]
    # Tier A by default, all of it reported.
    assert (session["sc_type"], session["driverMemory"], session["executorMemory"]) == ("A", "7 GB", "4 GB")
    assert (session["driverCores"], session["executorCores"], session["numExecutors"]) == (2, 1, 6)
    by_name = server.get("/sessions/shared-pyspark").json()
    assert by_name["id"] == pyspark
    assert server.get(f"/sessions/{pyspark}/state").json() == {"id": pyspark, "state": "idle"}
    # Visible on the DLI paths by its uuid.
    dli = server.get(f"{DLI}/sessions/{session['uuid']}").json()
    assert dli["id"] == session["uuid"] and dli["livy_id"] == pyspark


def test_dli_create_reports_tier_and_customized(server: Server) -> None:
    created = server.create(DLI, kind="pyspark", cluster_name="cluster-b", sc_type="B", name="dli-b")
    assert uuid.UUID(created["id"])
    assert created["sc_type"] == "B" and created["cluster_name"] == "cluster-b"
    assert created["state"] in ("not_started", "starting")
    assert abs(created["create_time"] - time.time() * 1000) < 60_000
    assert (created["driverMemory"], created["executorMemory"], created["numExecutors"]) == (
        "7 GB",
        "8 GB",
        7,
    )

    custom = server.create(
        DLI,
        kind="sql",
        cluster_name="cluster-c",
        sc_type="C",
        driverMemory="2048 MB",
        numExecutors=2,
        conf={"spark.sql.shuffle.partitions": "4"},
    )
    assert custom["sc_type"] == "CUSTOMIZED"
    assert (custom["driverMemory"], custom["numExecutors"], custom["executorMemory"]) == ("2 GB", 2, "8 GB")

    listed = server.get(f"{DLI}/sessions", params={"cluster_name": "cluster-b"}).json()
    assert [s["id"] for s in listed["sessions"]] == [created["id"]] and listed["total"] == 1
    livy_ids = {s["uuid"] for s in server.live_sessions()}
    assert {created["id"], custom["id"]} <= livy_ids

    # A sql session runs kind-less statements as SQL; its conf reached Spark; tier C sizes local mode.
    ready = server.wait_state(custom["id"], ("idle",), prefix=DLI)
    assert ready["appId"].startswith("local-")
    rows = server.run(custom["id"], "SET spark.sql.shuffle.partitions", prefix=DLI)
    assert rows["data"]["application/json"]["data"] == [["spark.sql.shuffle.partitions", "4"]]
    master = server.run(custom["id"], "sc.master", prefix=DLI, kind="pyspark")
    assert master["data"]["text/plain"] == "'local[4]'"  # 2 executors x 2 cores (tier C)

    for session in (created, custom):
        assert server.delete(f"{DLI}/sessions/{session['id']}").json() == {"msg": "deleted"}
        assert server.get(f"{DLI}/sessions/{session['id']}").json()["state"] == "killed"


def test_statement_posted_while_starting_is_queued(server: Server) -> None:
    session = server.create(kind="pyspark")
    statement = server.submit(session["id"], "'queued ' + spark.version")
    assert statement["state"] == "waiting" and statement["output"] is None
    done = server.wait_statement(session["id"], statement["id"])
    assert done["output"]["data"]["text/plain"].startswith("'queued ")
    server.delete(f"/sessions/{session['id']}")


def test_delete_while_starting_kills_the_driver(server: Server) -> None:
    session = server.create(kind="pyspark")
    server.wait_state(session["id"], ("starting",))
    pid = driver_pid(server, session["id"])
    assert server.delete(f"/sessions/{session['id']}").status_code == 200
    assert wait_gone(pid)
    assert server.get(f"/sessions/{session['id']}").json()["state"] == "killed"
    second = server.delete(f"/sessions/{session['id']}")
    assert second.status_code == 404 and "already ended" in second.json()["msg"]
    assert session["id"] not in [s["id"] for s in server.live_sessions()]
    assert session["id"] in [
        s["id"] for s in server.get("/sessions", params={"state": "killed"}).json()["sessions"]
    ]


def test_heartbeat_expiry_deletes_the_session(server: Server) -> None:
    session = server.create(kind="pyspark", heartbeatTimeoutInSecond=60)  # the least the server takes
    pid = driver_pid_when_started(server, session["id"])

    def expired() -> bool:  # GET /sessions is no heartbeat, so it may poll
        dead = server.get("/sessions", params={"state": "dead"}).json()["sessions"]
        return any(s["id"] == session["id"] for s in dead)

    wait_until(expired, "the session to expire", 150, 0.5)
    assert wait_gone(pid)
    log = "\n".join(server.get(f"/sessions/{session['id']}/log").json()["log"])
    assert "heartbeatTimeoutInSecond=60" in log
    refused = server.post(f"/sessions/{session['id']}/statements", json={"code": "1"})
    assert refused.status_code == 409 and "is dead" in refused.json()["msg"]


def driver_pid_when_started(server: Server, session_id: int) -> int:
    path = server.state_dir / "sessions" / str(session_id) / "driver.pid"
    wait_until(path.exists, f"session {session_id}'s driver to start", 30, 0.05)
    return driver_pid(server, session_id)


def test_start_failure_is_error_with_reason_in_log(server: Server) -> None:
    session = server.create(kind="pyspark", conf={"spark.master": "bogus://nowhere"})

    def settled() -> str | None:
        state = server.get(f"/sessions/{session['id']}/state").json()["state"]
        return state if state in ("error", "idle") else None

    assert wait_until(settled, "the session to start or fail", 120, 0.2) == "error"
    log = "\n".join(
        server.get(f"/sessions/{session['id']}/log", params={"from": 0, "size": 1000}).json()["log"]
    )
    assert "Master must either be yarn or start with spark, k8s, or local" in log
    assert "start-up failed" in log
    refused = server.post(f"/sessions/{session['id']}/statements", json={"code": "1"})
    assert refused.status_code == 409 and "start a new session" in refused.json()["msg"]


def test_duplicate_live_name_is_refused(server: Server, pyspark: int) -> None:
    reply = server.post("/sessions", json={"kind": "pyspark", "name": "shared-pyspark"})
    assert reply.status_code == 400 and "already exists" in reply.json()["msg"]


# -- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/sessions", {}),
        ("/sessions", {"Authorization": "Bearer wrong"}),
        ("/sessions", {"Authorization": "Basic abc"}),
        ("/version", {}),
        (f"{DLI}/sessions", {"X-Auth-Token": "wrong"}),
    ],
)
def test_requests_without_the_token_are_refused(server: Server, path: str, headers: dict) -> None:
    reply = requests.get(server.url + path, headers=headers, timeout=10)
    assert reply.status_code == 401
    assert "token" in reply.json()["msg"]
    assert server.token not in reply.text


def test_x_auth_token_works_on_dli_paths_only(server: Server) -> None:
    headers = {"X-Auth-Token": server.token}
    assert requests.get(f"{server.url}{DLI}/sessions", headers=headers, timeout=10).status_code == 200
    assert requests.get(f"{server.url}/sessions", headers=headers, timeout=10).status_code == 401


def test_server_file_is_private(server: Server) -> None:
    assert (server.state_dir / "server.json").stat().st_mode & 0o777 == 0o600
    assert server.url in server.banner and server.token not in server.banner


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "body", "needle"),
    [
        ("", {"kind": "sparkr"}, "kind must be one of"),
        ("", {"kind": "pyspark", "driverMemory": "2048"}, "driverMemory"),
        ("", {"kind": "pyspark", "executorMemory": "lots"}, "executorMemory"),
        ("", {"kind": "pyspark", "numExecutors": 0}, "numExecutors"),
        ("", {"kind": "pyspark", "driverCores": "two"}, "driverCores"),
        ("", {"kind": "pyspark", "bogus": 1}, "bogus"),
        ("", {"kind": "pyspark", "conf": "x=1"}, "conf"),
        ("", {"kind": "pyspark", "heartbeatTimeoutInSecond": -1}, "heartbeatTimeoutInSecond"),
        ("", [1, 2], "JSON object"),
        (DLI, {"kind": "pyspark"}, "cluster_name"),
        (DLI, {"kind": "pyspark", "cluster_name": "c", "sc_type": "D"}, "sc_type"),
        (DLI, {"kind": "pyspark", "cluster_name": "c", "name": "n" * 129}, "128"),
        (DLI, {"kind": "pyspark", "cluster_name": "c", "queue": "q"}, "queue"),
    ],
)
def test_bad_create_requests_get_a_clear_400(server: Server, prefix: str, body: object, needle: str) -> None:
    before = len(server.get("/sessions", params={"state": ",".join(SESSION_STATES)}).json()["sessions"])
    reply = server.post(f"{prefix}/sessions", json=body)
    assert reply.status_code == 400, reply.text
    msg = reply.json()["msg"]
    assert needle in msg and "\n" not in msg
    after = len(server.get("/sessions", params={"state": ",".join(SESSION_STATES)}).json()["sessions"])
    assert after == before  # nothing was created


def test_bad_json_body(server: Server) -> None:
    reply = server.post("/sessions", data="{kind: pyspark", headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["msg"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "'code' is required"),
        ({"code": 5}, "'code' is required"),
        ({"code": "1", "kind": "sparkr"}, "kind must be one of"),
        ({"code": "1", "maxRows": "ten"}, "maxRows"),
        ({"code": "1", "extra": True}, "extra"),
    ],
)
def test_bad_statement_requests(server: Server, pyspark: int, body: dict, needle: str) -> None:
    before = server.get(f"/sessions/{pyspark}/statements").json()["total_statements"]
    reply = server.post(f"/sessions/{pyspark}/statements", json=body)
    assert reply.status_code == 400 and needle in reply.json()["msg"]
    assert server.get(f"/sessions/{pyspark}/statements").json()["total_statements"] == before


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/sessions/999999", 404),
        ("GET", "/sessions/no-such-name", 404),
        ("DELETE", "/sessions/999999", 404),
        ("GET", "/sessions/999999/log", 404),
        ("POST", "/sessions/999999/statements", 404),
        ("GET", f"{DLI}/sessions/{uuid.uuid4()}", 404),
        ("GET", "/sessions?from=-1", 400),
        ("GET", "/sessions?size=many", 400),
        ("GET", "/sessions?state=sleeping", 400),
        ("GET", "/nowhere", 404),
        ("PUT", "/sessions", 405),
    ],
)
def test_unknown_ids_and_bad_parameters(server: Server, method: str, path: str, status: int) -> None:
    reply = server.request(method, path, json={"code": "1"} if method == "POST" else None)
    assert reply.status_code == status
    assert reply.json()["msg"].endswith(".")


def test_unknown_statement_id(server: Server, pyspark: int) -> None:
    for path in (f"/sessions/{pyspark}/statements/99999", f"/sessions/{pyspark}/statements/abc"):
        reply = server.get(path)
        assert reply.status_code == 404 and "does not exist" in reply.json()["msg"]
    assert server.post(f"/sessions/{pyspark}/statements/99999/cancel").status_code == 404


def test_bad_log_and_completion_parameters(server: Server, pyspark: int) -> None:
    assert server.get(f"/sessions/{pyspark}/log", params={"from": "x"}).status_code == 400
    reply = server.post(f"/sessions/{pyspark}/completion", json={"code": "sp", "cursor": 99})
    assert reply.status_code == 400 and "cursor" in reply.json()["msg"]
