"""The standing fuzz of every route (tests/reliability/fuzzing.py) against the in-process server of
conftest.py: the real app, routes, middleware and SessionManager over drivers that answer at once, as a
user with a Bearer token (and a DLC key). A fixed seed and budget: 50 valid and 50 invalid cases for each
operation of both path families, the Spark UI proxy and DLC's ``POST /``, each maybe with one hostile
change; at least 1,000 requests. No answer may be a 5xx, and every refusal must be JSON; the test fails
listing every kind of bad answer with the first request that got it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import requests

from dli_kernel.server.manager import ManagedSession
from tests.reliability.conftest import DLC_KEYS, FUZZER, OTHER, TIMEOUT, Served, auth

schemathesis = pytest.importorskip("schemathesis")
from dli_kernel.client.tc3 import TencentTC3, tencent_credential  # noqa: E402
from tests.reliability.fuzzing import PROJECT, Fuzz, Named  # noqa: E402

EXAMPLES = 50  # per operation and generation mode: at most 100 requests an operation
MIN_REQUESTS = 1000
SEEDS = 2  # live sessions of the fuzzer's that the path parameters name


def named(session: ManagedSession) -> Named:
    return Named(str(session.id), session.uuid, session.spec.name or "")


@dataclass
class InProcess:
    """The fuzz's Target: the conftest's server, as its user ``fuzzer``."""

    served: Served
    headers: dict[str, str] = field(default_factory=auth)
    seeds: list[ManagedSession] = field(default_factory=list)
    others: list[ManagedSession] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url, self.http = self.served.url, self.served.http
        self.dlc: TencentTC3 | None = TencentTC3(tencent_credential(FUZZER, DLC_KEYS[FUZZER]))
        self.others = [self.served.seed("他人的会话", OTHER)]

    def sessions(self) -> tuple[list[Named], list[Named]]:
        """Two live seeded sessions of the fuzzer's (a DELETE may have ended one), named in Chinese (a
        non-Latin-1 name), and no other: the fuzzer's creates meet its session limit only after them."""
        self.seeds = [s for s in self.seeds if not s.ended]
        for extra in self.served.live(FUZZER):
            if extra not in self.seeds:
                self.served.manager.delete(extra)
        while len(self.seeds) < SEEDS:
            self.seeds.append(self.served.seed(f"种子-{time.monotonic_ns()}"))
        return [named(s) for s in self.seeds], [named(s) for s in self.others]


@pytest.mark.timeout(180)  # a run takes 20-40 s
def test_no_route_answers_a_server_error_or_a_refusal_that_is_not_json(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", headers=auth(), timeout=TIMEOUT)
    document = served.request("GET", "/openapi.json").json()
    operations = [result.ok() for result in schema.get_all_operations()]
    target = InProcess(served)
    fuzz = Fuzz(target, document, EXAMPLES)
    seconds = fuzz.fire_at(operations)
    found = fuzz.found()
    with capsys.disabled():
        print(f"\n{fuzz.summary(seconds)}", *found, sep="\n")
    # What a stored bad value would break for everyone (a session's name, a statement's code) still works.
    lists = [
        "/sessions",
        f"/v2.0/{PROJECT}/sessions",
        *(f"/sessions/{s.id}/statements" for s in target.seeds),
    ]
    for path in lists:
        after: requests.Response = served.request("GET", path)
        assert after.status_code == 200, (path, after.text)
    # schemathesis leaves out the document's own route, which it just read
    documented = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    assert set(fuzz.per_operation) == documented - {"GET /openapi.json"}, "every operation was fired at"
    assert fuzz.requests >= MIN_REQUESTS
    assert not found, f"{len(found)} kinds of bad answers:\n" + "\n".join(found)
