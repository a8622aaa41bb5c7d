"""The DLC action API's replay guard: X-TC-Action is not signed by the SDK, so one captured signed request
must not serve as another action that changes something, and a create must not run twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dli_kernel.server import tc3
from dli_kernel.server.app import create_app
from dli_kernel.server.manager import ManagedSession
from dli_kernel.spec import SessionSpec
from tests.unit.fake_manager import FakeManager

pytest.importorskip("tencentcloud.dlc.v20210125.dlc_client")
from tests.unit.test_dlc_server import TOKEN, Dlc

SIG = "ab" * 32


def test_a_signature_first_seen_as_a_read_is_refused_for_a_change_later() -> None:
    guard = tc3.ReplayGuard(grace=2.0)
    guard.check(SIG, "DescribeNotebookSession", now=1000.0)
    for action in ("DeleteNotebookSession", "CancelNotebookSessionStatement", "CreateNotebookSession"):
        with pytest.raises(tc3.SignatureError) as caught:
            guard.check(SIG, action, now=1003.0)
        assert caught.value.code == "AuthFailure.SignatureFailure"
        assert "already used for DescribeNotebookSession" in str(caught.value)
    # other reads of the same body are harmless, and the same read again is a client's retry
    guard.check(SIG, "DescribeNotebookSessionLog", now=1003.0)
    guard.check(SIG, "DescribeNotebookSession", now=1003.0)


def test_requests_signed_in_the_same_second_may_share_a_signature() -> None:
    # a client describing a statement and cancelling it within one second signs both bodies alike
    guard = tc3.ReplayGuard(grace=2.0)
    guard.check(SIG, "DescribeNotebookSessionStatement", now=1000.0)
    guard.check(SIG, "CancelNotebookSessionStatement", now=1000.9)


@pytest.mark.parametrize("action", sorted(tc3.CHANGES))
def test_the_same_action_sent_again_with_its_signature_is_not_refused(action: str) -> None:
    # TC3 signs whole seconds and carries no nonce: one cell run twice within a second is two identical
    # signed requests, and both must run
    guard = tc3.ReplayGuard(grace=2.0)
    guard.check(SIG, action, now=1000.0)
    guard.check(SIG, action, now=1000.1)
    guard.check(SIG, action, now=1010.0)


def test_signatures_are_forgotten_after_the_window_and_beyond_the_capacity() -> None:
    guard = tc3.ReplayGuard(window=600, capacity=3)
    guard.check(SIG, "CreateNotebookSession", now=1000.0)
    guard.check(SIG, "CreateNotebookSession", now=1000.0 + 600)  # expired: a new request as far as we know
    for n in range(10):
        guard.check(f"{n:064x}", "DescribeNotebookSessions", now=1700.0)
    assert len(guard) <= 3


def test_the_guard_is_thread_safe() -> None:
    guard = tc3.ReplayGuard(grace=2.0)
    guard.check(SIG, "DescribeNotebookSession", now=1000.0)
    refused: list[int] = []
    barrier = threading.Barrier(8)

    def replay(n: int) -> None:
        barrier.wait()
        guard.check(f"{n:064x}", "DescribeNotebookSessions", now=1003.0)  # new signatures are recorded
        try:
            guard.check(SIG, "DeleteNotebookSession", now=1003.0)
        except tc3.SignatureError:
            refused.append(n)

    threads = [threading.Thread(target=replay, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sorted(refused) == list(range(8)) and len(guard) == 9


# -- end to end, with the SDK's signatures ---------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path) -> FakeManager:
    return FakeManager(tmp_path)


@pytest.fixture
def client(manager: FakeManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(tc3, "REPLAY_GRACE", 0.0)  # as if the replay came seconds after the capture
    with TestClient(create_app(manager, TOKEN, "http://127.0.0.1:8998")) as client:
        yield client


@pytest.fixture
def session(manager: FakeManager) -> ManagedSession:
    session = manager.add_session(SessionSpec(kind="pyspark", name="nb", cluster_name="engine-a"))
    manager.add_statement(session)
    return session


def replay(client: TestClient, first: str, then: str, params: dict) -> tuple[dict, dict]:
    """Sends a request signed by the SDK as ``first``, then the very same bytes as ``then``."""
    from tencentcloud.common.credential import Credential
    from tencentcloud.common.http.request import RequestInternal
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.dlc.v20210125.dlc_client import DlcClient

    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint="testserver"))
    request = RequestInternal("testserver", "POST", "/", header={})
    DlcClient(Credential("AKIDcarol", TOKEN), "ap-guangzhou", profile)._build_req_inter(
        first, params, request
    )
    answers = []
    for action in (first, then):
        headers = {**request.header, "X-TC-Action": action}
        answers.append(client.post("/", content=request.data.encode(), headers=headers).json()["Response"])
    return answers[0], answers[1]


def test_a_describe_replayed_as_a_delete_deletes_nothing(
    client: TestClient, manager: FakeManager, session: ManagedSession
) -> None:
    first, again = replay(
        client, "DescribeNotebookSession", "DeleteNotebookSession", {"SessionId": session.uuid}
    )
    assert "Error" not in first
    assert again["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert session.state == "idle" and "delete" not in manager.calls.names


def test_a_statement_sent_twice_in_one_second_runs_twice(
    client: TestClient, manager: FakeManager, session: ManagedSession
) -> None:
    params = {"SessionId": session.uuid, "Code": "counter += 1"}
    first, again = replay(client, "CreateNotebookSessionStatement", "CreateNotebookSessionStatement", params)
    assert "Error" not in first and "Error" not in again
    assert [code for code, *_ in manager.submitted] == ["counter += 1", "counter += 1"]


def test_an_honest_clients_requests_all_pass(manager: FakeManager, session: ManagedSession) -> None:
    # within one second the SDK signs the describe and the delete of one session alike
    with TestClient(create_app(manager, TOKEN, "http://127.0.0.1:8998")) as client:
        dlc = Dlc(client, manager)
        dlc.call("DescribeNotebookSession", {"SessionId": session.uuid})
        for code in ("1", "1"):  # one cell run twice: two identical signed requests
            dlc.call("CreateNotebookSessionStatement", {"SessionId": session.uuid, "Code": code})
        dlc.call("DeleteNotebookSession", {"SessionId": session.uuid})
    assert session.state == "killed"
