"""A shared server for the team tests: the real SessionManager over fake drivers (so the isolation under
test is the manager's own, not a fake's), behind the real app, with three users: alice and bob, who see
only their own sessions, and root, an admin.

Each of alice's and bob's sessions holds a finished Arrow statement (0) and a finished SQL statement (1),
and every trace of it a leak could show carries a marker: its name, its log, its results.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.testclient import TestClient

from dli_kernel.protocol import DLC_API_VERSION, DLC_SERVICE, DLC_SIGN_ALGORITHM, SQL_RESULT_MIME, result_path
from dli_kernel.server import tc3
from dli_kernel.server.app import create_app
from dli_kernel.server.driver_process import ExecutionResult
from dli_kernel.server.manager import ManagedSession, SessionManager
from dli_kernel.server.principal import Principal
from tests.unit.manager_fakes import FakeDriver, FakeLauncher, make_manager, wait_state

if TYPE_CHECKING:  # the TestClient's response: httpx2's, or httpx's with an older Starlette
    from httpx2 import Response

BASE_URL = "http://127.0.0.1:8998"
PROJECT = "proj-1"
SERVER_TOKEN = "the-operators-token"  # no user's: with a Users object the single token opens nothing

ALICE = Principal("alice")
BOB = Principal("bob")
ROOT = Principal("root", admin=True)
TOKENS = {"alice": "alice-token-1234", "bob": "bob-token-5678", "root": "root-token-9012"}
PRINCIPALS = {"alice": ALICE, "bob": BOB, "root": ROOT}
# DLC's SecretId -> SecretKey, per user
DLC_IDS = {"alice": "AKIDalice", "bob": "AKIDbob", "root": "AKIDroot"}
DLC_KEYS = {"alice": "alice-dlc-key", "bob": "bob-dlc-key", "root": "root-dlc-key"}


class TeamUsers:
    """The ``Users`` of the tests: a token and a DLC key pair for each of alice, bob and root."""

    def __init__(self, principals: dict[str, Principal] | None = None) -> None:
        self.principals = dict(principals or PRINCIPALS)

    def bearer(self, token: str) -> Principal | None:
        for name, known in TOKENS.items():
            if token == known:
                return self.principals[name]
        return None

    def dlc_key(self, secret_id: str) -> tuple[str, Principal] | None:
        for name, known in DLC_IDS.items():
            if secret_id == known:
                return DLC_KEYS[name], self.principals[name]
        return None

    def named(self, name: str) -> Principal | None:
        return self.principals.get(name)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


@dataclass
class Owned:
    """A user's session and the markers of what only its owner (and admins) may see."""

    user: str
    session: ManagedSession

    @property
    def markers(self) -> list[str]:
        s = self.session
        return [
            s.uuid,
            s.spec.name or "",
            s.app_id or "",
            f"{self.user}-LOG-MARKER",
            f"{self.user}-RESULT-MARKER",
            f"{self.user}-SQL-MARKER",
            f"{self.user}-ARROW-MARKER",
        ]

    def key(self, template: str) -> str:
        """How the paths of ``template``'s family name the session."""
        return self.session.uuid if template.startswith("/v2.0/") else str(self.session.id)

    def fingerprint(self) -> tuple[Any, ...]:
        """What any use of the session would change."""
        s = self.session
        statements = tuple((st.state, st.output is None) for st in s.statements)
        driver = s.driver
        calls = len(driver.calls) if isinstance(driver, FakeDriver) else 0
        return (s.state, s.last_touch, statements, s.log.size(), calls)


@dataclass
class Team:
    manager: SessionManager
    launcher: FakeLauncher
    client: TestClient
    owned: dict[str, Owned] = field(default_factory=dict)

    def request(self, user: str | None, method: str, url: str, **kwargs: Any) -> Response:
        headers = {**(auth(user) if user else {}), **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)

    def create(self, user: str, name: str, dli: bool = False, **body: Any) -> ManagedSession:
        """A session ``user`` made over HTTP, once it is idle."""
        prefix = f"/v2.0/{PROJECT}" if dli else ""
        spec = {"kind": "pyspark", "name": name, **body}
        if dli:
            spec.setdefault("cluster_name", "c1")
        reply = self.request(user, "POST", f"{prefix}/sessions", json=spec)
        assert reply.status_code == 201, reply.text
        session = self.manager.get(str(reply.json()["livy_id" if dli else "id"]))
        wait_state(self.manager, session, "idle")
        return session

    def run(self, user: str, session: ManagedSession, result: ExecutionResult, **body: Any) -> int:
        """A statement ``user`` submits over HTTP, which the session's driver finishes with ``result``."""
        reply = self.request(user, "POST", f"/sessions/{session.id}/statements", json=body)
        assert reply.status_code == 201, reply.text
        driver = session.driver
        assert isinstance(driver, FakeDriver)
        driver.next_run().finish(result)
        statement = session.statements[reply.json()["id"]]
        wait_state(self.manager, session, "available", statement=statement)
        wait_state(self.manager, session, "idle")
        return statement.id

    def populate(self, user: str, name: str, dli: bool = False) -> Owned:
        """A session of ``user`` with an Arrow result (0), a SQL result (1) and a line in its log."""
        session = self.create(user, name, dli)
        arrow = ExecutionResult(status="ok", data={"text/plain": f"{user}-RESULT-MARKER"})
        statement = self.run(user, session, arrow, code="df", resultFormat="arrow")
        path = session.workdir / result_path(statement)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{user}-ARROW-MARKER".encode())
        rows = {
            "schema": {"type": "struct", "fields": [{"name": "v", "type": "string", "nullable": True}]},
            "data": [[f"{user}-SQL-MARKER"]],
            "total": 1,
            "truncated": False,
        }
        sql = ExecutionResult(status="ok", data={SQL_RESULT_MIME: rows})
        self.run(user, session, sql, code="select 1", kind="sql")
        session.log.append(f"{user}-LOG-MARKER")
        owned = Owned(user, session)
        self.owned[user] = owned
        return owned

    # -- DLC ---------------------------------------------------------------------------------------

    def dlc(
        self,
        action: str,
        params: dict[str, Any],
        secret_id: str | None,
        key: str = "",
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """An action signed as Tencent's SDK signs it (``secret_id`` None: unsigned); DLC's Response."""
        body = json.dumps(params).encode()
        now = int(time.time())
        date = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        sent = {
            "content-type": "application/json",
            "host": "testserver",  # the TestClient's Host header, which the signature covers
            "x-tc-action": action,
            "x-tc-version": DLC_API_VERSION,
            "x-tc-timestamp": str(now),
        }
        if secret_id is not None:
            signed = ("content-type", "host")
            signature = tc3.signature(key, "POST", "/", "", sent, signed, body, str(now), date)
            sent["authorization"] = (
                f"{DLC_SIGN_ALGORITHM} Credential={secret_id}/{date}/{DLC_SERVICE}/{tc3.TERMINATOR}, "
                f"SignedHeaders={';'.join(signed)}, Signature={signature}"
            )
        reply = self.client.post("/", content=body, headers={**sent, **(headers or {})})
        assert reply.status_code == 200, reply.text
        answer = reply.json()["Response"]
        uuid.UUID(answer["RequestId"])
        return answer

    def dlc_as(self, user: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.dlc(action, params, DLC_IDS[user], DLC_KEYS[user])


@contextlib.contextmanager
def team_server(tmp_path: Path, users: TeamUsers | None = None, **settings: Any) -> Iterator[Team]:
    """The shared server, empty; ``settings`` are the ServerSettings' (limits, body sizes)."""
    launcher = FakeLauncher()
    manager = make_manager(tmp_path, launcher, **settings)
    app = create_app(manager, SERVER_TOKEN, BASE_URL, users=users or TeamUsers())
    try:
        with TestClient(app) as client:
            yield Team(manager, launcher, client)
    finally:
        manager.close()
