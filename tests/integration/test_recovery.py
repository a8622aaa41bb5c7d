"""A server that crashes or restarts brings live sessions back and reports the rest dead."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.integration.conftest import Server, driver_pid, pid_alive, wait_gone


def _stored_states(state_dir: Path) -> dict[int, str]:
    with sqlite3.connect(state_dir / "sessions.db") as db:
        return {
            sid: json.loads(record)["state"] for sid, record in db.execute("SELECT id, record FROM sessions")
        }


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_crash_restart_and_clean_stop(state_dir: Path) -> None:
    first = Server(state_dir)
    try:
        survivor = first.create(kind="pyspark", name="survivor")["id"]
        victim = first.create(kind="sql", name="victim")["id"]
        first.wait_state(survivor, ("idle",))
        first.wait_state(victim, ("idle",))
        assert first.run(survivor, "a = 41") == {
            "status": "ok",
            "execution_count": 0,
            "data": {"text/plain": ""},
            "jupyterOutputs": [],  # the outputs extension: an assignment shows nothing
        }
        survivor_pid, victim_pid = driver_pid(first, survivor), driver_pid(first, victim)
    finally:
        first.stop(signal.SIGKILL)  # a crash: no clean-up at all
    assert pid_alive(survivor_pid) and pid_alive(victim_pid)
    os.killpg(victim_pid, signal.SIGKILL)  # this driver does not outlive the crash
    assert wait_gone(victim_pid)

    second = Server(state_dir, ("--keep-sessions",))
    try:
        assert second.get(f"/sessions/{survivor}/state").json()["state"] in ("recovering", "idle")
        recovered = second.wait_state(survivor, ("idle",), timeout=60)
        assert recovered["name"] == "survivor" and recovered["appId"].startswith("local-")
        history = second.get(f"/sessions/{survivor}/statements").json()
        assert [s["code"] for s in history["statements"]] == ["a = 41"]
        assert second.run(survivor, "a + 1")["data"]["text/plain"] == "42"
        assert second.wait_state(victim, ("dead",), timeout=60)["state"] == "dead"
        log = "\n".join(second.get(f"/sessions/{victim}/log").json()["log"])
        assert "did not survive the server restart" in log
    finally:
        second.stop()  # --keep-sessions: the driver stays for the next server
    assert pid_alive(survivor_pid)

    third = Server(state_dir)
    try:
        third.wait_state(survivor, ("idle",), timeout=60)
        assert third.run(survivor, "a * 2")["data"]["text/plain"] == "82"
        assert [s["id"] for s in third.live_sessions()] == [survivor]
    finally:
        third.stop()  # a clean stop without --keep-sessions ends every session
    assert wait_gone(survivor_pid)
    assert _stored_states(state_dir) == {survivor: "success", victim: "dead"}
    assert not (state_dir / "server.json").exists()
