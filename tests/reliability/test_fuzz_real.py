"""A short pass of the fuzz (tests/reliability/fuzzing.py) against a real ``dli-kernel server`` process
with a real PySpark session: a few hundred requests, on every operation that neither makes nor ends a
session (each of those is a JVM start or stop, which the in-process fuzz covers with fake drivers) nor is
DLC's (the in-process fuzz signs those). Generated statements run on the real driver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Server

schemathesis = pytest.importorskip("schemathesis")
from tests.reliability.fuzzing import Fuzz, Named  # noqa: E402

pytestmark = pytest.mark.integration

EXAMPLES = 10  # per operation and generation mode
MIN_REQUESTS = 300
LEFT_OUT = {
    "POST /sessions",
    "POST /v2.0/{project_id}/sessions",
    "DELETE /sessions/{session_id}",
    "DELETE /v2.0/{project_id}/sessions/{session_id}",
    "POST /",
}


@dataclass
class Real:
    """The fuzz's Target: a real server, as its operator, with one live session."""

    server: Server
    session: Named
    dlc: None = None
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.url = self.server.url
        self.http = requests.Session()
        self.headers = {"Authorization": f"Bearer {self.server.token}"}

    def sessions(self) -> tuple[list[Named], list[Named]]:
        return [self.session], []


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    root: Path = tmp_path_factory.mktemp("real-fuzz")
    server = Server(root / "state")
    try:
        made = server.create(kind="pyspark", name="真实-fuzz", heartbeatTimeoutInSecond=0)
        server.wait_state(made["id"], ("idle",))
        server.run(made["id"], "1 + 1")
        yield Real(server, Named(str(made["id"]), made["uuid"], made["name"]))
    finally:
        for session in server.live_sessions():
            server.delete(f"/sessions/{session['id']}")
        server.stop()


@pytest.mark.timeout(300)  # a JVM start and about 20 s of requests
def test_a_real_server_answers_no_fuzzed_request_with_a_server_error(
    real: Real, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{real.url}/openapi.json", headers=real.headers, timeout=30)
    document = real.http.get(f"{real.url}/openapi.json", headers=real.headers, timeout=30).json()
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if op.label not in LEFT_OUT]
    fuzz = Fuzz(real, document, EXAMPLES)
    seconds = fuzz.fire_at(operations)
    found = fuzz.found()
    with capsys.disabled():
        print(f"\nreal server {fuzz.summary(seconds)}", *found, sep="\n")
    # The session took every statement the fuzz sent and still runs code.
    assert real.server.run(real.session.id, "21 * 2")["data"]["text/plain"] == "42"
    assert fuzz.requests >= MIN_REQUESTS
    assert not found, f"{len(found)} kinds of bad answers:\n" + "\n".join(found)
